"""Deterministic evaluation rollouts in a one-env simulator, recording all the metrics and videos need."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from nil.errors import SimulationError
from nil.reward.base import Reward
from nil.sim.base import BatchedSim, SimBatch

if TYPE_CHECKING:
    from nil.rl.agents import Policy

ActFn = Callable[[SimBatch], torch.Tensor]  # the batch sim.reset()/step() returned -> action [1, A]


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

    def act(batch: SimBatch) -> torch.Tensor:
        n = batch.obs.shape[0]
        return (torch.rand((n, action_dim), generator=gen) * 2 - 1).to(batch.obs.device)

    return act


def zero_policy(action_dim: int) -> ActFn:
    """All-zero actions (the robot holds its default / goes limp, depending on the control mode)."""

    def act(batch: SimBatch) -> torch.Tensor:
        return torch.zeros((batch.obs.shape[0], action_dim), device=batch.obs.device)

    return act


def policy_act_fn(policy: Policy) -> ActFn:
    """Wrap a trained nil.rl Policy as an ActFn: deterministic actions, its input built as in training."""

    def act(batch: SimBatch) -> torch.Tensor:
        return policy.act_batch(batch, deterministic=True)

    return act


def run_episode(
    sim: BatchedSim,
    act: ActFn,
    *,
    reward: Reward | None = None,
    task_fn: Callable[[SimBatch], torch.Tensor] | None = None,
    max_steps: int | None = None,
    progress: Callable[[], None] | None = None,
    rgb: bool = True,
) -> Episode:
    """Reset env 0 of a 1-env sim and roll `act` until it falls or reaches the horizon.

    `reward` is called on every post-step batch, as in training; `task_fn(batch) -> [N]` the walking task
    reward. `rgb=False` renders only the masks (Episode.rgb is then all zero): for episodes that are
    neither filmed nor scored by a term that reads colour.
    """
    if sim.num_envs != 1:
        raise SimulationError(f"evaluation rollouts use a 1-env simulator, got {sim.num_envs} envs")
    sim.set_render(rgb)
    batch = sim.reset()
    if reward is not None:
        reward.reset(None, batch)  # the reset frame starts the episode; no transition earns its reward
    frames: list[np.ndarray] = []
    mask: list[np.ndarray] = []
    qpos: list[np.ndarray] = []
    qvel: list[np.ndarray] = []
    root: list[np.ndarray] = []
    up: list[float] = []
    actions: list[np.ndarray] = []
    totals: list[float] = []
    task: list[float] = []
    terms: dict[str, list[float]] = {}

    def record(b: SimBatch) -> None:
        frames.append(_np(b.rgb[0]))
        mask.append(_np(b.mask[0]).astype(bool))
        qpos.append(_np(b.qpos[0]).astype(np.float64))
        qvel.append(_np(b.qvel[0]).astype(np.float64))
        root.append(_np(b.root_pos[0]).astype(np.float64))
        up.append(float(b.torso_up_z[0]))

    record(batch)
    limit = max_steps if max_steps is not None else (sim.horizon or 1000)
    fell = nonfinite = False
    for _ in range(limit):
        a = act(batch)
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
        rgb=np.stack(frames),
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
