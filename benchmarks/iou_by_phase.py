"""Where in the episode a policy's IoU is won or lost: the start, the rest of the ramp, after the ramp.

`nil eval` keeps a per-frame IoU for each policy (eval/metrics.json, `per_frame_iou_mean`: the mean over every
eval episode of the trained policy and of the random and standing-still baselines, and the teacher's replay;
a frame after a fall counts 0; metrics.json files written before it have `per_frame_iou`, the first episode
only, which is used then and said so). A mean IoU just under
standing still's can hide a policy that matches the gait well and loses a few frames at the start, or one
that starts well and then drifts; this splits the mean by phase so the two read apart. The ramp is the
teacher's start-up (`ramp_steps`, the frames the velocity figures leave out).

    python benchmarks/iou_by_phase.py /work/runs/go2s25_s*/unitree_go2/seed*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROWS = ("trained", "zero", "random", "teacher")
NAMES = {"trained": "trained", "zero": "standing", "random": "random", "teacher": "teacher"}


def phase_means(per_frame: np.ndarray, ramp: int, start: int = 5) -> dict[str, float]:
    """Mean IoU over frames [0, start), [start, ramp), [ramp, T) and all T frames (NaN for an empty span)."""
    iou = np.asarray(per_frame, dtype=np.float64)
    n = len(iou)
    start = min(max(start, 0), n)
    ramp = min(max(ramp, start), n)
    spans = {"start": (0, start), "ramp": (start, ramp), "after_ramp": (ramp, n), "all": (0, n)}
    return {k: float(iou[a:b].mean()) if b > a else float("nan") for k, (a, b) in spans.items()}


def main() -> None:
    """Print each seed folder's IoU by phase, trained against the baselines."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("seeds", nargs="+", type=Path, help="skill folders with eval/metrics.json")
    ap.add_argument("--start", type=int, default=5, help="frames counted as the start (default 5)")
    args = ap.parse_args()
    print("| seed folder | policy | frames 0..s | s..ramp | after the ramp | all |")
    print("|---|---|---:|---:|---:|---:|")
    for seed in args.seeds:
        metrics = json.loads((seed / "eval" / "metrics.json").read_text())
        per_frame = metrics.get("per_frame_iou_mean")
        if not per_frame:
            per_frame = metrics.get("per_frame_iou")
            print(f"({seed}: first eval episode only; `nil eval {seed}` again for every episode's mean)")
        if not per_frame:
            raise SystemExit(f"{seed}/eval/metrics.json has no per_frame_iou; re-run `nil eval {seed}`")
        ramp = int(metrics.get("ramp_steps") or 0)
        for row in ROWS:
            if row not in per_frame:
                continue
            m = phase_means(np.asarray(per_frame[row]), ramp, args.start)
            print(
                f"| {seed} | {NAMES[row]} | {m['start']:.3f} | {m['ramp']:.3f} | {m['after_ramp']:.3f} "
                f"| {m['all']:.3f} |"
            )
        print(f"(s = {args.start}, ramp = {ramp} frames)")


if __name__ == "__main__":
    main()
