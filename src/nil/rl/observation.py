"""The policy's input, built from what the simulator gives: training, evaluation and export all use this.

Layout (in this order): the sim observation (nil.sim.base: [qpos[2:], qvel, t/horizon]), then
- with ``rl.obs_prev_action``: the previous action (SimBatch.action, the action applied in the last
  step; 0 after a reset). The action-rate penalty depends on it, so without it the reward is not a
  function of what the policy sees;
- with ``rl.gait_clock``: sin and cos of 2 pi t / P, where t counts control steps since the reset and
  P is the reference's gait period in control steps (estimated from the reference masks only, by
  nil.reference.motion.estimate_gait_period). t/horizon alone spans several gait cycles in one value.

The builder is stateless: everything comes from (obs, previous action, t), so a checkpoint stores the
layout as a plain dict (`to_dict`) and `from_dict` rebuilds the same builder for evaluation or export.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from nil.config import RLConfig
from nil.errors import TrainingError
from nil.sim.base import SimBatch


@dataclass(frozen=True)
class ObservationLayout:
    """How the policy input is built from the sim observation (see the module docstring)."""

    sim_obs_dim: int
    action_dim: int
    prev_action: bool = False
    gait_clock: bool = False
    gait_period_steps: float | None = None  # control steps per gait cycle (needed with gait_clock)

    def __post_init__(self) -> None:
        if self.gait_clock and not (self.gait_period_steps and self.gait_period_steps > 0):
            raise TrainingError(
                "rl.gait_clock needs a gait period > 0 (set rl.gait_period_s, or use a reference whose "
                "gait period can be estimated), or turn rl.gait_clock off"
            )

    @property
    def dim(self) -> int:
        """Size of the policy input."""
        return self.sim_obs_dim + self.action_dim * self.prev_action + 2 * self.gait_clock

    @property
    def plain(self) -> bool:
        """True when the policy input is the sim observation itself (the paper's layout)."""
        return not (self.prev_action or self.gait_clock)

    def build(
        self, obs: torch.Tensor, prev_action: torch.Tensor | None = None, t: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Policy input [N, dim] from sim obs [N, sim_obs_dim], previous action [N, A] and t [N]."""
        if obs.shape[-1] != self.sim_obs_dim:
            raise TrainingError(
                f"the sim observation has {obs.shape[-1]} values but the policy was built for "
                f"{self.sim_obs_dim}; use the robot and sim settings it was trained with"
            )
        if self.plain:
            return obs
        parts = [obs]
        if self.prev_action:
            if prev_action is None:
                raise TrainingError("this policy observes its previous action: pass prev_action")
            parts.append(prev_action.to(obs.device, obs.dtype))
        if self.gait_clock:
            if t is None:
                raise TrainingError("this policy observes a gait clock: pass t (control steps since reset)")
            angle = (2 * math.pi / float(self.gait_period_steps or 1.0)) * t.to(obs.device, obs.dtype)
            parts += [torch.sin(angle)[:, None], torch.cos(angle)[:, None]]
        return torch.cat(parts, dim=-1)

    def __call__(self, batch: SimBatch) -> torch.Tensor:
        """Policy input for a SimBatch."""
        return self.build(batch.obs, batch.action, batch.t)

    def to_dict(self) -> dict:
        """Plain dict for a checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None, sim_obs_dim: int, action_dim: int) -> ObservationLayout:
        """Rebuild from to_dict(); a checkpoint without one used the plain sim observation."""
        if not d:
            return cls(sim_obs_dim, action_dim)
        return cls(**d)


def layout_from_config(
    rl: RLConfig, sim_obs_dim: int, action_dim: int, gait_period_steps: float | None
) -> ObservationLayout:
    """The layout rl.obs_prev_action / rl.gait_clock ask for."""
    return ObservationLayout(
        sim_obs_dim=int(sim_obs_dim),
        action_dim=int(action_dim),
        prev_action=rl.obs_prev_action,
        gait_clock=rl.gait_clock,
        gait_period_steps=float(gait_period_steps) if gait_period_steps else None,
    )
