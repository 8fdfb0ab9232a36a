"""The report's figures as PNG bytes (matplotlib, Agg backend): training curves, per-frame IoU, mask quality.

Also reads the training scalars back from TensorBoard event files, since the curves are drawn from them.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    """The figure as PNG bytes; closes it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _pyplot().close(fig)
    return buf.getvalue()


def read_scalars(tb_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each scalar tag in the event files under tb_dir -> (steps, values); the last write per step wins."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb_dir = Path(tb_dir)
    if not tb_dir.exists():
        return {}
    merged: dict[str, dict[int, float]] = {}
    run_dirs = sorted({p.parent for p in tb_dir.rglob("events.out.tfevents.*")})
    for d in run_dirs:
        # no purging: a resumed run re-logs from its checkpoint step; the merge below keeps the last write
        acc = EventAccumulator(str(d), size_guidance={"scalars": 0}, purge_orphaned_data=False)
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            # events are in write order: a resumed run that re-logs a step overwrites the earlier value
            for ev in sorted(acc.Scalars(tag), key=lambda e: e.wall_time):
                merged.setdefault(tag, {})[int(ev.step)] = float(ev.value)
    out = {}
    for tag, by_step in merged.items():
        steps = np.array(sorted(by_step), dtype=np.int64)
        out[tag] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return out


def _group_tags(tags: list[str]) -> list[tuple[str, list[str]]]:
    raw = [t for t in tags if "raw/" in t]
    weighted = [t for t in tags if "weighted/" in t]
    used = set(raw) | set(weighted)
    episode = [t for t in tags if t not in used and ("episode" in t or "return" in t or "eval" in t)]
    used |= set(episode)
    rewardish = [t for t in tags if t not in used and "reward" in t]
    used |= set(rewardish)
    other = [t for t in tags if t not in used]
    groups = [
        ("Reward terms (raw, per step)", raw),
        ("Reward terms (weighted, per step)", weighted + rewardish),
        ("Episodes and evaluation", episode),
        ("Learner", other),
    ]
    return [(name, sorted(ts)) for name, ts in groups if ts]


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    if len(y) < 3 * n or n <= 1:
        return y
    k = np.ones(n) / n
    pad = np.concatenate([np.full(n - 1, y[0]), y])
    return np.convolve(pad, k, mode="valid")


def plot_scalar_groups(
    scalars: dict[str, tuple[np.ndarray, np.ndarray]], max_per_figure: int = 16
) -> list[tuple[str, bytes]]:
    """PNG figures (title, bytes) of the scalar curves, one figure per group of tags."""
    plt = _pyplot()
    figs = []
    for title, tags in _group_tags(list(scalars)):
        tags = tags[:max_per_figure]
        cols = min(4, len(tags))
        rows = math.ceil(len(tags) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.4 * rows), squeeze=False)
        for ax, tag in zip(axes.flat, tags, strict=False):
            x, y = scalars[tag]
            ax.plot(x, y, color="#9ab", lw=0.8)
            if len(y) > 30:
                ax.plot(x, _smooth(y, max(2, len(y) // 30)), color="#1f5fa8", lw=1.4)
            ax.set_title(tag, fontsize=8.5)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(tags) :]:
            ax.axis("off")
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        figs.append((title, _png(fig)))
    return figs


def plot_per_frame_iou(per_frame: dict[str, list[float]]) -> bytes | None:
    """PNG of per-frame IoU vs the reference for the trained policy and the baselines."""
    if not per_frame:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 2.8))
    for name, ys in per_frame.items():
        ax.plot(np.arange(len(ys)), ys, label=name, lw=1.3)
    ax.set_xlabel("control step t (reference frame)")
    ax.set_ylabel("mask IoU")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def plot_segmentation_quality(q: dict[str, Any]) -> bytes | None:
    """PNG of the per-frame mask area (relative to m0) and consecutive-frame IoU of the reference masks."""
    area, consec = q.get("area_ratio"), q.get("consecutive_iou")
    if not isinstance(area, list) or not area:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 2.6))
    axes[0].plot(area, color="#1f5fa8")
    axes[0].axhline(1.0, color="#999", lw=0.8, ls="--")
    axes[0].set_title("mask area / m0 area", fontsize=9)
    if isinstance(consec, list) and consec:
        axes[1].plot(np.arange(1, len(consec) + 1), consec, color="#2e7d32")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_title("IoU with the previous frame", fontsize=9)
    for ax in axes:
        ax.set_xlabel("reference frame", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)
