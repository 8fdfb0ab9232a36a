"""NIL: no-data imitation learning of robot motor skills from generated reference videos."""

__version__ = "0.1.0"
