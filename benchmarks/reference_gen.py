"""Stage-1 speed: seconds per synthetic reference on CPU (ant, A1), and retiming throughput.

    python benchmarks/reference_gen.py                     # synthetic refs (224x224, 4 s) + retime throughput
    python benchmarks/reference_gen.py --robots ant --seconds 2 --size 128
    python benchmarks/reference_gen.py --tune unitree_a1   # the CPG grid search behind synthetic.TUNED

Numbers are wall-clock on whatever machine runs it; compare only within one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if "MENAGERIE_ROOT" not in os.environ and _SHARED.is_dir():
    os.environ["MENAGERIE_ROOT"] = str(_SHARED)


def bench_synthetic(robots: list[str], seconds: float, size: int) -> list[dict]:
    """One full `generate_reference` per robot (frame0, simulate + render, encode, retime, write)."""
    from nil.config import parse_config
    from nil.paths import SkillPaths
    from nil.reference.bundle import generate_reference

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for robot in robots:
            cfg = parse_config(
                {
                    "robot": {"name": robot},
                    "camera": {"width": size, "height": size},
                    "generator": {"name": "synthetic", "seconds": seconds},
                }
            )
            t0 = time.perf_counter()
            meta = generate_reference(SkillPaths(Path(tmp) / robot), cfg, force=True)
            total = time.perf_counter() - t0
            info = meta["generator_info"]
            rows.append(
                {
                    "robot": robot,
                    "size": size,
                    "seconds_of_motion": seconds,
                    "control_steps": info["control_steps"],
                    "raw_frames": meta["num_frames"],
                    "retimed_frames": meta["retimed_num_frames"],
                    "total_s": round(total, 2),
                    "teacher_sim_render_s": meta["wall_time_s"]["generate"],
                    "retime_s": meta["wall_time_s"]["retime"],
                    "sim_render_steps_per_s": round(
                        info["control_steps"] / meta["wall_time_s"]["generate"], 1
                    ),
                    "root_x_progress_m": info["root_x_progress_m"],
                    "fell": info["fell_at_step"] is not None,
                }
            )
    return rows


def bench_retime(size: int, frames: int) -> list[dict]:
    """Output frames per second of each retiming method, 25 -> 100 fps, on a moving textured pattern."""
    from nil.reference.retime import retime
    from nil.reference.video import Video

    yy, xx = np.mgrid[0:size, 0:size]
    src = np.stack(
        [
            np.stack([(xx * 3 + 4 * i) % 256, (yy * 5) % 256, ((xx + yy + 2 * i) * 2) % 256], -1)
            for i in range(frames)
        ]
    ).astype(np.uint8)
    video = Video(src, 25.0)
    rows = []
    for method in ("nearest", "flow"):
        t0 = time.perf_counter()
        out = retime(video, 100.0, method)
        dt = time.perf_counter() - t0
        rows.append(
            {
                "method": method,
                "size": size,
                "src_frames": frames,
                "out_frames": out.num_frames,
                "seconds": round(dt, 3),
                "out_frames_per_s": round(out.num_frames / dt, 1),
            }
        )
    return rows


def tune(robot: str, seconds: float = 3.0) -> list[dict]:
    """Grid search of the CPG: walks +x, stays upright above the fall height at 0.8x/1x/1.2x amplitude."""
    from nil.reference.generators.synthetic import CPGParams, rollout_physics
    from nil.robots import get_robot

    spec = get_robot(robot)
    rows = []
    for hz, swing, lift, kp in itertools.product(
        [1.0, 1.5, 2.0, 2.5], [0.25, 0.35, 0.5], [0.5, 0.7], [1.0, 2.0, 3.0]
    ):
        outs = []
        for amp in (0.8, 1.0, 1.2):
            r = rollout_physics(
                spec, CPGParams(gait_hz=hz, swing=swing, lift=lift, kp_scale=kp, amplitude=amp), seconds
            )
            pos, up = r["root_pos"], r["up_z"]
            if not np.isfinite(pos).all():
                break
            outs.append((pos[-1, 0] - pos[0, 0], abs(pos[-1, 1] - pos[0, 1]), pos[:, 2].min(), up.min()))
        if len(outs) < 3:
            continue
        upright = all(o[2] > spec.fall_height + 0.03 and o[3] > 0.85 for o in outs)
        rows.append(
            {
                "gait_hz": hz,
                "swing": swing,
                "lift": lift,
                "kp_scale": kp,
                "upright": upright,
                "score": round(min(o[0] - 2 * o[1] for o in outs), 3),
                "dx_m": [round(o[0], 2) for o in outs],
                "drift_m": [round(o[1], 2) for o in outs],
            }
        )
    rows.sort(key=lambda r: (not r["upright"], -r["score"]))
    return rows


def main() -> None:
    """Run the benchmark and print JSON rows."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robots", nargs="+", default=["ant", "unitree_a1"])
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds of teacher motion per reference")
    ap.add_argument("--size", type=int, default=224, help="render size (square)")
    ap.add_argument("--retime-frames", type=int, default=50)
    ap.add_argument("--tune", metavar="ROBOT", help="run the CPG grid search for ROBOT instead")
    args = ap.parse_args()
    if args.tune:
        for row in tune(args.tune)[:10]:
            print(json.dumps(row))
        return
    for row in bench_synthetic(args.robots, args.seconds, args.size):
        print(json.dumps({"bench": "synthetic_reference", **row}))
    for row in bench_retime(args.size, args.retime_frames):
        print(json.dumps({"bench": "retime", **row}))


if __name__ == "__main__":
    main()
