"""Training logs: TensorBoard scalars (train/tb), a rich progress bar with ETA, and train/progress.json."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from nil.io import atomic_write_json


class ScalarMeans:
    """Sums of tensors (kept on their device, no sync per add) averaged when flushed."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, values: dict[str, torch.Tensor], weight: int = 1) -> None:
        """Accumulate scalar tensors (already means over their batch)."""
        for k, v in values.items():
            v = v.detach().float() * weight
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] += weight

    def flush(self) -> dict[str, float]:
        """Means since the last flush, as python floats."""
        out = {k: float(s) / self.counts[k] for k, s in self.sums.items()}
        self.sums.clear()
        self.counts.clear()
        return out


class TrainLogger:
    """TensorBoard writer + progress bar; `progress_bar=False` for quiet runs (tests, sweeps)."""

    def __init__(
        self,
        tb_dir: Path,
        total_steps: int,
        start_step: int = 0,
        progress_bar: bool = True,
        purge_step: int | None = None,
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events written after the checkpoint we resume from (they will be re-done)
        self.writer = SummaryWriter(str(tb_dir), purge_step=purge_step)
        self.progress: Progress | None = None
        if progress_bar:
            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.task = self.progress.add_task("train", total=total_steps, completed=start_step, info="")
            self.progress.start()

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Write scalars at env step `step`."""
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def advance(self, step: int, info: str = "") -> None:
        """Move the progress bar to `step`."""
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=info)

    def print(self, msg: str) -> None:
        """A line above the progress bar."""
        if self.progress is not None:
            self.progress.console.print(msg)
        else:
            print(msg)

    def close(self) -> None:
        """Flush TensorBoard and stop the bar."""
        self.writer.flush()
        self.writer.close()
        if self.progress is not None:
            self.progress.stop()


class RateMeter:
    """Env steps/s and updates/s over the last logging window."""

    def __init__(self) -> None:
        self.t, self.steps, self.updates = time.perf_counter(), 0, 0

    def rates(self, steps: int, updates: int) -> dict[str, float]:
        """Rates since the last call."""
        now = time.perf_counter()
        dt = max(now - self.t, 1e-9)
        out = {
            "perf/env_steps_per_s": (steps - self.steps) / dt,
            "perf/updates_per_s": (updates - self.updates) / dt,
        }
        self.t, self.steps, self.updates = now, steps, updates
        return out


def write_progress(path: Path, data: dict) -> None:
    """train/progress.json, atomically (read by the report)."""
    atomic_write_json(path, data)
