"""Stage 2 learner: SAC / BRO agents, replay buffer, checkpoints and the training loop (`nil train`)."""

from nil.rl.agents import BROAgent, Policy, SACAgent, make_agent
from nil.rl.checkpoint import load_policy
from nil.rl.observation import ObservationLayout
from nil.rl.replay import Batch, ReplayBuffer

__all__ = [
    "BROAgent",
    "Batch",
    "ObservationLayout",
    "Policy",
    "ReplayBuffer",
    "SACAgent",
    "load_policy",
    "make_agent",
    "train",
    "train_command",
]


def train(*args, **kwargs):  # noqa: ANN002, ANN003 - lazy: the trainer imports the sim/reward layers
    """See nil.rl.trainer.train."""
    from nil.rl.trainer import train as _train

    return _train(*args, **kwargs)


def train_command(*args, **kwargs):  # noqa: ANN002, ANN003
    """See nil.rl.trainer.train_command."""
    from nil.rl.trainer import train_command as _tc

    return _tc(*args, **kwargs)
