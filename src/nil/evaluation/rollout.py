"""Deterministic evaluation rollouts in a one-env simulator, recording everything the metrics and videos need."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from nil.errors import SimulationError

ActFn = Callable[[torch.Tensor, int], torch.Tensor]  # (obs [1, D], t) -> action [1, A]


@dataclass
class Episode:
    """One recorded episode: frame 0 is the reset state, frames 1..length follow the actions."""

    rgb: np.ndarray  # [L+1, H, W, 3] uint8
    mask: np.ndarray  # [L+1, H, W] bool
    qpos: np.ndarray  # [L+1, nq]
    qvel: np.ndarray  # [L+1, nv]
    root_pos: np.ndarray  # [L+1, 3]
    torso_up_z: np.ndarray  # [L+1]
    actions: np.ndarray  # [L, A]
    reward_total: np.ndarray  # [L] NIL reward per step (empty when no reward function was given)
    reward_terms: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [L]
    task: np.ndarray | None = None  # [L] walking task reward per step
    fell: bool = False
    nonfinite: bool = False

    @property
    def length(self) -> int:
        """Control steps taken."""
        return int(len(self.actions))


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu").numpy()


def random_policy(action_dim: int, seed: int) -> ActFn:
    """Uniform random actions in [-1, 1] from a seeded generator (the untrained baseline)."""
    gen = torch.Generator().manual_seed(seed)

    def act(obs: torch.Tensor, t: int) -> torch.Tensor:
        return (torch.rand((obs.shape[0], action_dim), generator=gen) * 2 - 1).to(obs.device)

    return act


def zero_policy(action_dim: int) -> ActFn:
    """All-zero actions (the robot holds its default / goes limp, depending on the control mode)."""

    def act(obs: torch.Tensor, t: int) -> torch.Tensor:
        return torch.zeros((obs.shape[0], action_dim), device=obs.device)

    return act


def policy_act_fn(policy) -> ActFn:
    """Wrap an nil.rl Policy (.act(obs, deterministic=True)) as an ActFn."""

    def act(obs: torch.Tensor, t: int) -> torch.Tensor:
        with torch.no_grad():
            return policy.act(obs, deterministic=True)

    return act


def run_episode(
    sim,
    act: ActFn,
    *,
    reward=None,
    task_fn: Callable | None = None,
    max_steps: int | None = None,
    progress: Callable[[], None] | None = None,
) -> Episode:
    """Reset env 0 of a 1-env sim and roll `act` until it falls or reaches the horizon.

    `reward` is a NILReward (called on every post-step batch, as in training); `task_fn(batch) -> [N]` the
    walking task reward.
    """
    if sim.num_envs != 1:
        raise SimulationError(f"evaluation rollouts use a 1-env simulator, got {sim.num_envs} envs")
    batch = sim.reset()
    if reward is not None:
        reward.reset()
        reward(batch)  # the reset frame starts the clip history; no transition earns its reward
    rgb, mask, qpos, qvel, root, up = [], [], [], [], [], []
    actions, totals, task = [], [], []
    terms: dict[str, list[float]] = {}

    def record(b) -> None:
        rgb.append(_np(b.rgb[0]))
        mask.append(_np(b.mask[0]).astype(bool))
        qpos.append(_np(b.qpos[0]).astype(np.float64))
        qvel.append(_np(b.qvel[0]).astype(np.float64))
        root.append(_np(b.root_pos[0]).astype(np.float64))
        up.append(float(b.torso_up_z[0]))

    record(batch)
    limit = max_steps if max_steps is not None else (sim.horizon or 1000)
    fell = nonfinite = False
    for t in range(limit):
        a = act(batch.obs, t)
        batch = sim.step(a)
        actions.append(_np(batch.action[0]).astype(np.float32))
        if reward is not None:
            out = reward(batch)
            totals.append(float(out.total[0]))
            for k, v in out.terms.items():
                terms.setdefault(k, []).append(float(v[0]))
        if task_fn is not None:
            task.append(float(task_fn(batch)[0]))
        record(batch)
        if progress is not None:
            progress()
        if bool(batch.terminated[0]):
            fell = True
            nonfinite = bool(batch.nonfinite[0])
            break
        if bool(batch.truncated[0]):
            break
    a_dim = int(sim.action_dim)
    return Episode(
        rgb=np.stack(rgb),
        mask=np.stack(mask),
        qpos=np.stack(qpos),
        qvel=np.stack(qvel),
        root_pos=np.stack(root),
        torso_up_z=np.asarray(up),
        actions=np.stack(actions) if actions else np.zeros((0, a_dim), np.float32),
        reward_total=np.asarray(totals),
        reward_terms={k: np.asarray(v) for k, v in terms.items()},
        task=np.asarray(task) if task_fn is not None else None,
        fell=fell,
        nonfinite=nonfinite,
    )
