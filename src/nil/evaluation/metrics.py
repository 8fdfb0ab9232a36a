"""Evaluation metrics on plain arrays: DTW joint RMSE, root-trajectory error, velocity ratio, IoU, totals.

Everything here is numpy on hand-made or recorded trajectories, so it is tested on known answers
(a trajectory against a time-shifted copy of itself, the teacher against itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nil.errors import NilError


@dataclass
class DTWResult:
    """An optimal warping path between two sequences and its per-pair squared-error statistics."""

    path: np.ndarray  # [K, 2] int64 index pairs (i into a, j into b), monotone
    total_sq: float  # sum over the path of ||a_i - b_j||^2
    dim: int  # feature dimension of a and b

    @property
    def rmse(self) -> float:
        """Root mean squared per-feature error along the path."""
        return math.sqrt(self.total_sq / max(len(self.path) * self.dim, 1))


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise NilError(f"{name} must be a non-empty [T, D] array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise NilError(f"{name} contains NaN or inf; the rollout diverged (check the physics / the policy)")
    return x


def dtw(a: np.ndarray, b: np.ndarray, *, slack: int | None = None, window: int | None = None) -> DTWResult:
    """Dynamic time warping of a [Ta,D] against b [Tb,D] with squared-Euclidean local cost.

    `slack` frames at either end of either sequence may stay unmatched (default: 10 % of the shorter
    length), so a copy shifted by up to `slack` frames aligns at zero cost, while a sequence cannot
    collapse onto a short piece of the other. `window` is a Sakoe-Chiba band around the diagonal
    (default: unlimited).
    """
    a = _as_2d(a, "a")
    b = _as_2d(b, "b")
    if a.shape[1] != b.shape[1]:
        raise NilError(f"cannot align sequences of {a.shape[1]} and {b.shape[1]} features")
    ta, tb = len(a), len(b)
    if slack is None:
        slack = int(0.1 * min(ta, tb))
    slack = max(0, min(int(slack), ta - 1, tb - 1))
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    inf = float("inf")
    # Padded accumulator: acc[i + 1, j + 1] is the best cost of a path ending at (i, j). Cells on one
    # anti-diagonal depend only on the two before it, so each diagonal is one vectorised step.
    acc = np.full((ta + 1, tb + 1), inf)
    steps = np.zeros((ta, tb), dtype=np.int8)  # 0 diagonal, 1 from (i-1, j), 2 from (i, j-1), 3 start
    scale = tb / ta
    for k in range(ta + tb - 1):
        i = np.arange(max(0, k - tb + 1), min(k, ta - 1) + 1)
        j = k - i
        cand = np.stack([acc[i, j], acc[i, j + 1], acc[i + 1, j]])  # diag, up, left
        start = ((i == 0) & (j <= slack)) | ((j == 0) & (i <= slack))
        cand = np.concatenate([cand, np.where(start, 0.0, inf)[None]])
        s = cand.argmin(0)
        best = cand[s, np.arange(len(i))]
        if window is not None:
            best = np.where(np.abs(j - i * scale) > window, inf, best)
        acc[i + 1, j + 1] = best + cost[i, j]
        steps[i, j] = s
    acc = acc[1:, 1:]
    ends = [(ta - 1, j) for j in range(tb - 1 - slack, tb)] + [
        (i, tb - 1) for i in range(ta - 1 - slack, ta - 1)
    ]
    # The end with the lowest cost per matched pair, so leaving frames unmatched is not rewarded twice.
    best_end, best_val, best_path = None, inf, None
    for end in ends:
        if not np.isfinite(acc[end]):
            continue
        path = _backtrack(steps, end)
        val = acc[end] / len(path)
        if val < best_val - 1e-15:
            best_end, best_val, best_path = end, val, path
    if best_end is None or best_path is None:
        raise NilError("DTW found no alignment inside the window; widen `window`")
    return DTWResult(path=best_path, total_sq=float(acc[best_end]), dim=a.shape[1])


def _backtrack(steps: np.ndarray, end: tuple[int, int]) -> np.ndarray:
    i, j = end
    out = [(i, j)]
    while True:
        s = steps[i, j]
        if s == 3:
            break
        if s == 0:
            i, j = i - 1, j - 1
        elif s == 1:
            i -= 1
        else:
            j -= 1
        out.append((i, j))
    return np.asarray(out[::-1], dtype=np.int64)


def joint_rmse_dtw(
    agent_joints: np.ndarray, teacher_joints: np.ndarray, *, slack: int | None = None
) -> float:
    """Joint-angle RMSE (same unit as the inputs, radians for hinges) after DTW alignment."""
    return dtw(agent_joints, teacher_joints, slack=slack).rmse


def forward_distance(root_x: np.ndarray) -> float:
    """Displacement along +x between the first and last sample."""
    x = np.asarray(root_x, dtype=np.float64).reshape(-1)
    if len(x) < 2:
        return 0.0
    return float(x[-1] - x[0])


def mean_forward_velocity(root_x: np.ndarray, dt: float) -> float:
    """Average +x velocity over the trajectory: (x_T - x_0) / (T dt)."""
    x = np.asarray(root_x, dtype=np.float64).reshape(-1)
    if dt <= 0:
        raise NilError(f"dt must be positive, got {dt}")
    if len(x) < 2:
        return 0.0
    return float((x[-1] - x[0]) / ((len(x) - 1) * dt))


# The start-up ramp: a teacher starts from the standing reset pose, so its first frames are slower than its
# gait. Velocities are compared after the ramp, which ends half a window after the teacher's forward speed,
# averaged over a centred RAMP_WINDOW_S window, first reaches RAMP_FRACTION of its mean speed over the
# second half of the clip (never later than half the clip; no cut when the first window is already at speed).
RAMP_WINDOW_S = 0.5
RAMP_FRACTION = 0.9
# Below this mean forward speed [m/s] after the ramp a reference "does not move": no velocity ratio exists.
STILL_SPEED = 0.05


def ramp_end(
    root_x: np.ndarray, dt: float, *, window_s: float = RAMP_WINDOW_S, fraction: float = RAMP_FRACTION
) -> int:
    """Index of the first frame after the start-up ramp of a forward trajectory (0 when it has none)."""
    x = np.asarray(root_x, dtype=np.float64).reshape(-1)
    if dt <= 0:
        raise NilError(f"dt must be positive, got {dt}")
    n = len(x) - 1  # last frame index
    if n < 4:
        return 0
    cap = n // 2
    half = n // 2
    v_steady = (x[n] - x[half]) / ((n - half) * dt)
    if v_steady <= 0:
        return 0  # not moving forward: no ramp to cut (callers report "does not move")
    h = max(1, min(int(round(window_s / dt / 2)), n // 4))
    t = np.arange(h, n - h + 1)
    v_centred = (x[t + h] - x[t - h]) / (2 * h * dt)
    reached = np.flatnonzero(v_centred >= fraction * v_steady)
    if len(reached) == 0:
        return cap
    if reached[0] == 0:
        return 0  # already at speed over the first window: no ramp worth cutting
    return int(min(t[reached[0]] + h, cap))


def velocity_after(root_x: np.ndarray, dt: float, start: int) -> float:
    """Mean +x velocity from frame `start` to the last frame (0 when fewer than two frames remain)."""
    x = np.asarray(root_x, dtype=np.float64).reshape(-1)
    return mean_forward_velocity(x[start:], dt) if len(x) - start >= 2 else 0.0


def velocity_ratio(
    agent_root_x: np.ndarray,
    teacher_root_x: np.ndarray,
    dt: float,
    teacher_dt: float | None = None,
    *,
    start: int = 0,
) -> float:
    """Agent mean forward velocity / the teacher's, both from frame `start` on (1 = as fast as the teacher).

    The agent's velocity is taken over the frames it lived; one that fell before `start` scores 0.
    """
    tdt = teacher_dt or dt
    tv = velocity_after(teacher_root_x, tdt, start)
    if abs(tv) < 1e-9:
        raise NilError("the teacher does not move forward; a velocity ratio is undefined for it")
    return velocity_after(agent_root_x, dt, int(round(start * tdt / dt))) / tv


def root_trajectory_error(agent_root_xy: np.ndarray, teacher_root_xy: np.ndarray) -> float:
    """Mean horizontal distance between the two root paths, both taken relative to their start, step by step.

    Compared over the common length: an agent that falls early is scored on the steps it lived.
    """
    a = _as_2d(agent_root_xy, "agent_root_xy")[:, :2]
    b = _as_2d(teacher_root_xy, "teacher_root_xy")[:, :2]
    n = min(len(a), len(b))
    a = a[:n] - a[0]
    b = b[:n] - b[0]
    return float(np.linalg.norm(a - b, axis=1).mean())


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame IoU of two [T,H,W] (or [H,W]) bool mask stacks; two empty masks count as IoU 1."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise NilError(
            f"mask shapes differ: {a.shape} vs {b.shape}; reference masks must match the render size"
        )
    axes = tuple(range(a.ndim - 2, a.ndim))
    inter = np.logical_and(a, b).sum(axis=axes)
    union = np.logical_or(a, b).sum(axis=axes)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def moving_iou(
    ref_masks: np.ndarray, masks: np.ndarray, moving: np.ndarray, n: int | None = None
) -> np.ndarray:
    """[T_ref-1] per-step IoU of steps 1..n inside the `moving` region ([H,W] bool); steps past n are 0.

    Both masks are cut to the region, so an agent that covers the reference's static core (the body a
    robot standing still covers too) earns nothing there: only the moving part is compared.
    """
    t_ref = len(ref_masks)
    n = min(len(masks) - 1, t_ref - 1) if n is None else n
    out = np.zeros(max(t_ref - 1, 0))
    if n > 0:
        out[:n] = mask_iou(ref_masks[1 : n + 1] & moving, np.asarray(masks[1 : n + 1], dtype=bool) & moving)
    return out


# A figure is a mean over at least this many evaluation episodes: one episode is an anecdote.
MIN_EPISODES = 5
# The figures a result is read from, with their spread over episodes (per_episode in metrics.json).
HEADLINE = (
    "mean_iou",
    "moving_iou",
    "velocity_ratio",
    "velocity_after_ramp",
    "root_traj_error",
    "falls",
    "task_reward",
    "task_success",
)

# Which end of a metric is worse, for the "worst episode" column.
WORSE_IS_LOWER = {
    "mean_iou",
    "moving_iou",
    "velocity_ratio",
    "velocity_after_ramp",
    "task_reward",
    "task_success",
    "task_success_rate",
    "task_env_return",
}


def worst(values: list[float], key: str) -> float:
    """The worst of several runs' (or episodes') values of a metric: lowest, or highest for errors/falls."""
    return min(values) if key in WORSE_IS_LOWER else max(values)


def spread_episodes(episodes: list[dict[str, float]]) -> dict[str, float]:
    """Population standard deviation of every scalar metric over episodes (0 for a single episode)."""
    out: dict[str, float] = {}
    for k, mean in aggregate_episodes(episodes).items():
        vals = [float(ep[k]) for ep in episodes if isinstance(ep.get(k), (int, float, bool, np.number))]
        out[k] = float(np.sqrt(np.mean((np.asarray(vals) - mean) ** 2)))
    return out


def summarize(values: list[float] | np.ndarray) -> dict[str, float]:
    """Mean / std / min / max of per-episode numbers (NaNs ignored)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}


def aggregate_episodes(episodes: list[dict[str, float]]) -> dict[str, float]:
    """Average every scalar metric over episodes (a key missing in some episodes: over those that have it)."""
    keys: list[str] = []
    for ep in episodes:
        keys += [k for k in ep if k not in keys]
    out: dict[str, float] = {}
    for k in keys:
        vals = [
            float(ep[k]) for ep in episodes if k in ep and isinstance(ep[k], (int, float, bool, np.number))
        ]
        if vals:
            out[k] = float(np.mean(vals))
    return out


def episode_metrics(
    ep,
    ref_masks: np.ndarray,
    *,
    dt: float,
    joint_idx: np.ndarray | None = None,
    teacher_qpos: np.ndarray | None = None,
    teacher_root: np.ndarray | None = None,
    teacher_dt: float | None = None,
    ramp: int | None = None,
    moving: np.ndarray | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Scalar metrics of one recorded Episode against the reference masks (and the teacher when given).

    IoU is taken on steps 1..T-1 (the steps the reward sees; frame 0 is the shared reset pose). `mean_iou`
    counts the steps after a fall as 0, so falling early cannot score well; `mean_iou_alive` ignores them.
    With a teacher, velocities are compared after its start-up ramp (`ramp` frames, default `ramp_end`
    of the teacher's root x); a teacher slower than STILL_SPEED there gets no `velocity_ratio`.
    With `moving` (the reference's moving region, `nil.reference.motion.moving_region`), `moving_iou` is
    the same IoU with both masks cut to that region: the legs' match, apart from the body that standing
    still matches too. Returns (metrics, per-step IoU over the whole horizon [T-1]).
    """
    t_ref = len(ref_masks)
    n = min(ep.length, t_ref - 1)
    per_step = np.zeros(max(t_ref - 1, 0))
    if n > 0:
        per_step[:n] = mask_iou(ref_masks[1 : n + 1], ep.mask[1 : n + 1])
    root_x = ep.root_pos[:, 0]
    m: dict[str, float] = {
        "mean_iou": float(per_step.mean()) if len(per_step) else float("nan"),
        "mean_iou_alive": float(per_step[:n].mean()) if n else 0.0,
        "episode_length": float(ep.length),
        "falls": float(ep.fell),
        "forward_distance": forward_distance(root_x),
        "mean_velocity": mean_forward_velocity(root_x, dt),
    }
    if moving is not None:
        m["moving_iou"] = (
            float(moving_iou(ref_masks, ep.mask, moving, n).mean()) if len(per_step) else float("nan")
        )
    if len(ep.reward_total):
        m["nil_return"] = float(np.sum(ep.reward_total))
    terms = ep.reward_terms or {}
    reg_keys = [k for k in terms if k.startswith("weighted/reg_")]
    if "weighted/reg" in terms:
        m["reg_total"] = float(np.sum(terms["weighted/reg"]))
    elif reg_keys:
        m["reg_total"] = float(sum(np.sum(terms[k]) for k in reg_keys))
    for k in reg_keys:
        m["reg/" + k.split("/", 1)[1]] = float(np.sum(terms[k]))
    if "raw/video" in terms:
        m["video_similarity"] = float(np.mean(terms["raw/video"]))
    if ep.task is not None and len(ep.task):
        m["task_reward"] = float(np.sum(ep.task))
    if teacher_qpos is not None:
        tdt = teacher_dt or dt
        if teacher_root is None:
            teacher_root = teacher_qpos[:, :3]
        if ramp is None:
            ramp = ramp_end(teacher_root[:, 0], tdt)
        start = int(round(ramp * tdt / dt))
        m["velocity_after_ramp"] = velocity_after(root_x, dt, start)
        if velocity_after(teacher_root[:, 0], tdt, ramp) >= STILL_SPEED:
            m["velocity_ratio"] = velocity_ratio(root_x, teacher_root[:, 0], dt, tdt, start=ramp)
        m["root_traj_error"] = root_trajectory_error(ep.root_pos[:, :2], teacher_root[:, :2])
        if joint_idx is not None and len(joint_idx):
            m["joint_rmse_dtw"] = joint_rmse_dtw(ep.qpos[:, joint_idx], teacher_qpos[:, joint_idx])
    return m, per_step
