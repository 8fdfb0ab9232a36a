"""Test fakes that implement the project's seams: FakeSim (nil.sim.base.BatchedSim) and FakeReward (Reward).

Both are cheap enough for 1024 envs and deterministic given their seed, so loop tests can assert exact
schedules. tests/test_rl.py checks them against the protocols; other areas may append their own fakes.
"""

from __future__ import annotations

import time
from dataclasses import fields

import torch

from nil.reward.base import RewardOutput
from nil.sim.base import SimBatch

_SIMBATCH_FIELDS = {f.name for f in fields(SimBatch)}


class FakeSim:
    """N envs of x' = x + 0.1 a (x in R^A); obs = [x, phase]; falls when |x_0| > fall; truncates at horizon.

    Bookkeeping for tests: `reset_calls` (the env ids of every reset, None = all), `seeds` (every seed()
    call), `episode_lengths` (length of every finished episode, read at reset), `steps` (batched steps).
    With `set_render(True)` the RGB frames are a constant grey (`RGB_VALUE`), else all zero.
    """

    RGB_VALUE = 30

    def __init__(
        self,
        num_envs: int = 4,
        action_dim: int = 2,
        horizon: int | None = 10,
        hw: int = 8,
        step_sleep: float = 0.0,
        fall: float = 2.0,
        seed: int = 0,
    ) -> None:
        self.num_envs, self.action_dim, self.horizon = num_envs, action_dim, horizon
        self.obs_dim = action_dim + 1
        self.device = torch.device("cpu")
        self.image_hw = (hw, hw)
        self.step_sleep, self.fall = step_sleep, fall
        self.gen = torch.Generator().manual_seed(seed)
        self.x = torch.zeros(num_envs, action_dim)
        self.t = torch.zeros(num_envs, dtype=torch.long)
        self.last_action = torch.zeros(num_envs, action_dim)
        self.prev_action = torch.zeros(num_envs, action_dim)
        self.render_rgb = True
        self.closed = False
        self.seeds: list[int] = []
        self.reset_calls: list[list[int] | None] = []
        self.episode_lengths: list[int] = []
        self.steps = 0
        self._pending: torch.Tensor | None = None

    # -- the pinned extras of BatchedSim ---------------------------------------------------------------
    def seed(self, seed: int) -> None:
        """Reseed the reset-noise RNG."""
        self.seeds.append(int(seed))
        self.gen.manual_seed(int(seed))

    def set_render(self, rgb: bool) -> None:
        """False: batch.rgb is all zero (the mask is always 'rendered')."""
        self.render_rgb = bool(rgb)

    def step_async(self, action: torch.Tensor) -> None:
        """Start a step; step_wait() finishes it."""
        if self._pending is not None:
            raise RuntimeError("step_async called twice without step_wait")
        self._pending = action.detach().to(self.device, torch.float32).clone()

    def step_wait(self) -> SimBatch:
        """Finish the step started by step_async()."""
        if self._pending is None:
            raise RuntimeError("step_wait without step_async")
        action, self._pending = self._pending, None
        return self._advance(action)

    # -- BatchedSim ------------------------------------------------------------------------------------
    def set_horizon(self, horizon: int | None) -> None:
        """Truncation horizon."""
        self.horizon = horizon

    def reset(self, env_ids: torch.Tensor | None = None) -> SimBatch:
        """Reset all envs (None) or env_ids, with N(0, 0.05^2) noise on x."""
        if self._pending is not None:
            raise RuntimeError("reset while a step is in flight")
        ids = torch.arange(self.num_envs) if env_ids is None else torch.as_tensor(env_ids).long().cpu()
        self.reset_calls.append(None if env_ids is None else ids.tolist())
        if env_ids is not None or self.steps > 0:
            self.episode_lengths += self.t[ids].tolist()
        self.x[ids] = 0.05 * torch.randn(len(ids), self.action_dim, generator=self.gen)
        self.t[ids] = 0
        self.last_action[ids] = 0
        self.prev_action[ids] = 0
        f = torch.zeros(self.num_envs, dtype=torch.bool)
        return self._batch(f, f.clone())

    def step(self, action: torch.Tensor) -> SimBatch:
        """step_async + step_wait."""
        self.step_async(action)
        return self.step_wait()

    def close(self) -> None:
        """Nothing to free."""
        self.closed = True

    # -- internals -------------------------------------------------------------------------------------
    def _advance(self, action: torch.Tensor) -> SimBatch:
        if self.step_sleep:
            time.sleep(self.step_sleep)
        a = action.clamp(-1, 1)
        self.x = self.x + 0.1 * a
        self.t = self.t + 1
        self.prev_action = self.last_action
        self.last_action = a.clone()
        self.steps += 1
        terminated = self.x[:, 0].abs() > self.fall
        truncated = self.t >= self.horizon if self.horizon else torch.zeros(self.num_envs, dtype=torch.bool)
        return self._batch(terminated, truncated)

    def _batch(self, terminated: torch.Tensor, truncated: torch.Tensor) -> SimBatch:
        n, a = self.num_envs, self.action_dim
        phase = (self.t.float() / self.horizon).unsqueeze(1) if self.horizon else torch.zeros(n, 1)
        h, w = self.image_hw
        z = torch.zeros
        rgb = z(n, h, w, 3, dtype=torch.uint8)
        if self.render_rgb:
            rgb.fill_(self.RGB_VALUE)
        values = dict(
            obs=torch.cat([self.x, phase], 1).float(),
            rgb=rgb,
            mask=z(n, h, w, dtype=torch.bool),
            terminated=terminated,
            truncated=truncated,
            t=self.t.clone(),
            qpos=z(n, 7 + a),
            qvel=z(n, 6 + a),
            joint_vel=z(n, a),
            torque=z(n, a),
            action=self.last_action.clone(),
            prev_action=self.prev_action.clone(),
            foot_contact=z(n, 2, dtype=torch.bool),
            foot_vel_xy=z(n, 2, 2),
            foot_force=z(n, 2),
            torso_up_z=torch.ones(n),
            root_pos=z(n, 3),
            root_lin_vel=z(n, 3),
            nonfinite=z(n, dtype=torch.bool),
        )
        missing = _SIMBATCH_FIELDS - values.keys()
        if missing:  # SimBatch grew a field: FakeSim must fill it too
            raise TypeError(f"FakeSim does not fill SimBatch fields {sorted(missing)}")
        return SimBatch(**{k: v for k, v in values.items() if k in _SIMBATCH_FIELDS})


class FakeReward:
    """r = 1 - |a - target|_1 / A (best action: `target` in every dim); NaN after `nan_after` calls if set.

    Counts `calls` (reward evaluations) and records `resets` (env ids, None = all) with the batch's t there.
    `num_envs` 0 accepts batches of any size (the fake keeps no per-env state).
    """

    def __init__(self, target: float = 0.5, nan_after: int | None = None, num_envs: int = 0) -> None:
        self.target, self.nan_after, self.calls, self.num_envs = target, nan_after, 0, num_envs
        self.resets: list[list[int] | None] = []
        self.primed_t: list[int] = []  # t of the primed envs at each reset (0 when primed from a reset frame)

    def reset(self, env_ids: torch.Tensor | None, batch: SimBatch) -> None:
        """Forget those envs' state and prime them from the reset batch."""
        ids = None if env_ids is None else torch.as_tensor(env_ids).long().cpu().tolist()
        self.resets.append(ids)
        t = batch.t if ids is None else batch.t[ids]
        self.primed_t += t.tolist()

    def __call__(self, batch: SimBatch) -> RewardOutput:
        """Reward of every env."""
        self.calls += 1
        if self.num_envs and batch.action.shape[0] != self.num_envs:
            raise ValueError(
                f"batch has {batch.action.shape[0]} envs, FakeReward was built for {self.num_envs}"
            )
        raw = -(batch.action - self.target).abs().mean(1)
        total = 1.0 + raw
        if self.nan_after is not None and self.calls > self.nan_after:
            total = torch.full_like(total, float("nan"))
        return RewardOutput(total, {"raw/iou": raw, "weighted/iou": raw})
