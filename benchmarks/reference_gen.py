"""Stage-1 speed: seconds per synthetic reference on CPU (ant, A1), and retiming throughput.

    python benchmarks/reference_gen.py                     # synthetic refs (224x224, 4 s) + retime throughput
    python benchmarks/reference_gen.py --robots ant --seconds 2 --size 128
    python benchmarks/reference_gen.py --tune unitree_a1   # the CPG grid search behind nil.teachers.cpg.TUNED
    python benchmarks/reference_gen.py --measure unitree_a1 unitree_go2 unitree_h1  # teachers, physics only

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


# The control settings a teacher is checked in: the paper's torque control, and the pd control the CPU
# demo and the known-answer imitation benchmark use (at their 25 Hz, and at the default 100 Hz).
MODES = [("torque", 100.0), ("pd", 25.0), ("pd", 100.0)]


def _spec(robot: str, mode: str, hz: float):
    from nil.config import parse_config
    from nil.robots import robot_from_config

    return robot_from_config(parse_config({"robot": {"name": robot, "control_mode": mode, "control_hz": hz}}))


def measure(robots: list[str], seconds: float = 4.0) -> list[dict]:
    """Each robot's default teacher (generator.teacher: cpg) in physics only: speed after the 1 s ramp,
    contact-point foot slip of loaded feet, drift, fall time; at 0.8x / 1x / 1.2x amplitude."""
    from nil.config import parse_config
    from nil.teachers import make_teacher
    from nil.teachers.measure import measure_teacher

    rows = []
    for robot in robots:
        for mode, hz in MODES:
            spec = _spec(robot, mode, hz)
            model = spec.load_model()
            for amp in (0.8, 1.0, 1.2):
                gen = parse_config({"generator": {"gait_amplitude": amp}}).generator
                t0 = time.perf_counter()
                m = measure_teacher(spec, make_teacher("cpg", spec, model, gen), seconds, model=model)
                rows.append({"amplitude": amp, **m.to_dict(), "wall_s": round(time.perf_counter() - t0, 2)})
    return rows


def tune(robot: str, seconds: float = 3.0) -> list[dict]:
    """Grid search of the CPG: walks +x upright with little contact-point slip at 0.8x/1x/1.2x amplitude,
    in every control setting of MODES (the robot preset's gains)."""
    from nil.teachers.cpg import CPG, CPGParams
    from nil.teachers.measure import measure_teacher

    specs = [_spec(robot, mode, hz) for mode, hz in MODES]
    models = [s.load_model() for s in specs]
    if len(specs[0].feet_bodies) == 2:
        return tune_biped(specs, models, seconds)
    rows = []
    for hz, swing, lift, kp, duty in itertools.product(
        [2.0, 2.5, 3.0], [0.25, 0.3, 0.35], [0.5, 0.7], [1.0, 2.0], [0.0, 0.3]
    ):
        outs = []
        for spec, model in zip(specs, models, strict=True):
            for amp in (0.8, 1.0, 1.2):
                p = CPGParams(gait_hz=hz, swing=swing, lift=lift, kp_scale=kp, duty_bias=duty, amplitude=amp)
                outs.append(measure_teacher(spec, CPG(spec, model, p), seconds, model=model))
        upright = all(o.fell_at_s is None and o.min_up_z > 0.85 for o in outs)
        speed = min(o.speed_x for o in outs[1::3])  # amplitude 1 in every mode
        slip = max(o.slip for o in outs[1::3])
        rows.append(
            {
                "gait_hz": hz,
                "swing": swing,
                "lift": lift,
                "kp_scale": kp,
                "duty_bias": duty,
                "upright": upright,
                "score": round(speed - 3 * max(0.0, slip - 0.12) - max(o.drift_y for o in outs), 3),
                "speed_mps": [round(o.speed_x, 2) for o in outs[1::3]],
                "slip_mps": [round(o.slip, 3) for o in outs[1::3]],
            }
        )
    rows.sort(key=lambda r: (not r["upright"], -r["score"]))
    return rows


def tune_biped(specs: list, models: list, seconds: float) -> list[dict]:
    """Grid search of the biped walker's foot placement (the gains behind nil.teachers.biped defaults)."""
    from nil.teachers.biped import TUNED_BIPED, BipedParams, BipedWalker
    from nil.teachers.measure import measure_teacher

    rows = []
    base = TUNED_BIPED.get(specs[0].name, {})
    for place_d, place_v, lead, swing in itertools.product(
        [0.3, 0.6, 1.0], [0.1, 0.2], [0.0, 0.02], [0.1, 0.15]
    ):
        outs = []
        for spec, model in zip(specs, models, strict=True):
            for amp in (0.8, 1.0, 1.2):
                p = BipedParams(
                    **base, place_d=place_d, place_v=place_v, lead=lead, swing=swing, amplitude=amp
                )
                outs.append(measure_teacher(spec, BipedWalker(spec, model, p), seconds, model=model))
        upright = all(o.fell_at_s is None and o.min_up_z > 0.85 for o in outs)
        rows.append(
            {
                "place_d": place_d,
                "place_v": place_v,
                "lead": lead,
                "swing": swing,
                "upright": upright,
                "score": round(
                    min(o.speed_x for o in outs) - 2 * max(0.0, max(o.slip for o in outs) - 0.15), 3
                ),
                "speed_mps": [round(o.speed_x, 2) for o in outs[1::3]],
                "slip_mps": [round(o.slip, 3) for o in outs[1::3]],
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
    ap.add_argument(
        "--measure", nargs="+", metavar="ROBOT", help="measure the robots' teachers in physics only"
    )
    args = ap.parse_args()
    if args.measure:
        for row in measure(args.measure, args.seconds):
            print(json.dumps({"bench": "teacher_gait", **row}))
        return
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
