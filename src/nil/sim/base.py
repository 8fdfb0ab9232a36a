"""The BatchedSim protocol and SimBatch: the seam between simulator backends and everything above them.

Everything in a SimBatch is a torch tensor on `sim.device`. A batch is valid until the next call to
step()/reset() (backends may reuse buffers): clone what you keep.

Conventions every backend follows (and tests check):
- obs = [qpos[2:], qvel, phase] float32: the root's x/y are dropped (translation invariance), `phase`
  is t / horizon so the policy knows which reference frame it is matched against (horizon None -> 0).
- action in [-1, 1]^action_dim (clipped); the robot spec maps it to torques or PD targets.
- No auto-reset: when terminated | truncated, the caller reads the final batch, then calls
  reset(env_ids) for those envs. reset() returns a full batch in which only env_ids changed.
- t counts control steps since the env's reset (0 for the frame returned by reset()).
- truncated = t >= horizon (when a horizon is set); terminated = the robot's fall rule fired or the
  state went non-finite (the latter also sets `nonfinite`).
- Feet (nil.sim.task): foot_force is the normal load of a foot's contacts with anything that is not the
  robot; foot_contact = that load > a small fraction of the robot's weight; foot_vel_xy is the horizontal
  velocity of the foot at its contact points (load-weighted) while in contact, else of the foot body's
  centre of mass. The rules live once in nil.sim.task; backends only step physics and render.
- step(a) == step_async(a) then step_wait(); between the two the caller must not read the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Protocol, runtime_checkable

import torch


@dataclass
class SimBatch:
    """One control step of N envs; see the module docstring for conventions."""

    obs: torch.Tensor  # [N, obs_dim] float32
    rgb: torch.Tensor  # [N, H, W, 3] uint8
    mask: torch.Tensor  # [N, H, W] bool, True on robot pixels
    terminated: torch.Tensor  # [N] bool (fell, or non-finite state)
    truncated: torch.Tensor  # [N] bool (t reached the horizon)
    t: torch.Tensor  # [N] int64 control steps since reset
    # state for the regularisers, the task term and evaluation
    qpos: torch.Tensor  # [N, nq] float32
    qvel: torch.Tensor  # [N, nv] float32
    joint_vel: torch.Tensor  # [N, nv - 6] float32 (qvel without the free root)
    # [N, nu] float32 joint torques of the actuators (actuator_force x gear) in the last step
    torque: torch.Tensor
    action: torch.Tensor  # [N, action_dim] float32 the (clipped) action of the last step (0 after reset)
    prev_action: torch.Tensor  # [N, action_dim] float32 the action before that (0 after reset)
    foot_contact: torch.Tensor  # [N, n_feet] bool
    foot_vel_xy: torch.Tensor  # [N, n_feet, 2] float32 horizontal world-frame velocity at the contact point
    torso_up_z: torch.Tensor  # [N] float32 world-z component of the torso's up axis (1 = upright)
    root_pos: torch.Tensor  # [N, 3] float32
    root_lin_vel: torch.Tensor  # [N, 3] float32 world frame
    nonfinite: torch.Tensor  # [N] bool physics produced NaN/inf (env was terminated)
    # [N, n_feet] float32 normal contact force on each foot (N); hand-built batches (tests) may omit it
    foot_force: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    def __post_init__(self) -> None:
        if self.foot_force.shape != self.foot_contact.shape and self.foot_force.numel() == 0:
            # a batch built without loads (a test's hand-made batch): loaded exactly where in contact
            self.foot_force = self.foot_contact.to(torch.float32)

    def clone(self) -> SimBatch:
        """Deep copy of every tensor (to keep a batch across step())."""
        return SimBatch(**{f.name: getattr(self, f.name).clone() for f in fields(self)})

    def to(self, device: torch.device | str) -> SimBatch:
        """Move every tensor to `device`."""
        return SimBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def index(self, idx: torch.Tensor | slice) -> SimBatch:
        """Select envs (a view where torch allows it)."""
        return SimBatch(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


@runtime_checkable
class BatchedSim(Protocol):
    """N parallel envs of one robot; every output is a torch tensor on `device`."""

    num_envs: int
    device: torch.device
    obs_dim: int
    action_dim: int
    image_hw: tuple[int, int]
    horizon: int | None

    def reset(self, env_ids: torch.Tensor | None = None) -> SimBatch:
        """Reset all envs (None) or the given env indices, with the configured pose noise."""
        ...

    def step(self, action: torch.Tensor) -> SimBatch:
        """Apply action [N, action_dim] for one control step (several physics substeps) and render."""
        ...

    def step_async(self, action: torch.Tensor) -> None:
        """Start step(action); the worker backend computes while the caller works. Finish with step_wait()."""
        ...

    def step_wait(self) -> SimBatch:
        """Finish the step started by step_async() and return its batch."""
        ...

    def seed(self, seed: int) -> None:
        """Reseed every env's reset-noise generator (a resumed run calls this with a new seed)."""
        ...

    def set_render(self, rgb: bool) -> None:
        """rgb=False skips the colour pass (batch.rgb stays all zero); the robot mask is always rendered."""
        ...

    def set_horizon(self, horizon: int | None) -> None:
        """Set the truncation horizon (the retimed reference length)."""
        ...

    def close(self) -> None:
        """Stop workers and free renderers; safe to call twice."""
        ...
