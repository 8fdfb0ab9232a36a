"""User-facing errors: each says what went wrong and what to do; the CLI prints them without a traceback."""


class NilError(Exception):
    """Base class of every error a user can cause; the message must say what to do next."""


class ConfigError(NilError):
    """A skill.yaml / sweep file / option is invalid (the message names the key)."""


class RobotError(NilError):
    """Unknown robot, unreadable or invalid MJCF, missing floating root, camera that cannot see the robot."""


class SimulationError(NilError):
    """Non-finite physics state, simulator worker failure."""


class VideoError(NilError):
    """Problems with the reference video: unreadable, empty, bad fps, too short."""


class GeneratorError(NilError):
    """A video generator could not run (missing model, no GPU, bad model path)."""


class SegmentationError(NilError):
    """Reference masks are missing, empty, or fail the quality checks."""


class EncoderError(NilError):
    """A video encoder could not be loaded or fed."""


class TrainingError(NilError):
    """Training cannot start or must stop (missing inputs, NaN losses, bad device, size mismatch)."""


class CheckpointError(NilError):
    """No usable checkpoint (all corrupt or none written)."""


class MissingStageError(NilError):
    """A stage's inputs are not there yet; the message names the command to run first."""
