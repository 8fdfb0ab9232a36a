"""The Reward protocol: the seam between the reward and its callers (the trainer, evaluation rollouts).

A reward may keep per-env state (NILReward keeps a frame history for the video term), so a caller
tells it where episodes start: `reset(env_ids, batch)` with the batch that `sim.reset(env_ids)`
returned. That one call both forgets the old episode and primes the new one from its reset frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from nil.sim.base import SimBatch


@dataclass
class RewardOutput:
    """total [N], terms "raw/<name>" / "weighted/<name>" [N]; video_valid [N] bool: where S_V was defined."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    video_valid: torch.Tensor | None = None


@runtime_checkable
class Reward(Protocol):
    """A batched reward over N envs: reset (and prime) envs at episode starts, then call it on every step."""

    def reset(self, env_ids: torch.Tensor | None, batch: SimBatch) -> None:
        """Start new episodes for env_ids (all when None) from `batch`, the batch sim.reset(env_ids) returned.

        Envs not in env_ids keep their state; the reset frame earns no reward.
        """
        ...

    def __call__(self, batch: SimBatch) -> RewardOutput:
        """The reward of every env for the batch sim.step() returned."""
        ...
