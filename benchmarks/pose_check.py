"""Where a trained policy's pose departs from the teacher's: root height, roll, pitch and joint means.

Rolls the skill's policy for one deterministic episode in the evaluation simulator (same seed as
`nil eval`) and prints the root attitude and joint-angle statistics after the first `--skip` steps next to
the ground truth in reference/teacher.npz (evaluation only; a synthetic or user-supplied teacher).

    python benchmarks/pose_check.py runs/a1/seed0
    python benchmarks/pose_check.py runs/h1_sit/seed0 --trace 5   # + per-episode traces
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if "MENAGERIE_ROOT" not in os.environ and _SHARED.is_dir():
    os.environ["MENAGERIE_ROOT"] = str(_SHARED)


def attitude(qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(roll, pitch) in degrees of a free root's quaternion (w, x, y, z at qpos[:, 3:7])."""
    w, x, y, z = qpos[:, 3:7].T
    roll = np.degrees(np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y)))
    pitch = np.degrees(np.arcsin(np.clip(2 * (w * y - z * x), -1, 1)))
    return roll, pitch


def main() -> None:
    """Print the agent's and the teacher's pose statistics."""
    from nil.config import load_config
    from nil.evaluation.evaluate import eval_sim
    from nil.evaluation.rollout import policy_act_fn, run_episode
    from nil.paths import SkillPaths
    from nil.reference.bundle import load_teacher
    from nil.rl import load_policy
    from nil.robots import robot_from_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("skill", type=Path)
    ap.add_argument("--skip", type=int, default=10, help="steps of start-up left out of the statistics")
    ap.add_argument(
        "--trace",
        type=int,
        default=0,
        metavar="N",
        help="also print N episodes' root height, roll, pitch and x (every --every steps)",
    )
    ap.add_argument("--every", type=int, default=5, help="the traces' stride in control steps (default 5)")
    args = ap.parse_args()
    paths = SkillPaths(args.skill)
    cfg = load_config(paths.config)
    spec = robot_from_config(cfg)
    teacher = load_teacher(paths)
    horizon = len(teacher["qpos"]) - 1
    sim = eval_sim(spec, cfg, horizon)
    act = policy_act_fn(load_policy(paths, device="cpu"))
    try:
        ep = run_episode(sim, act, rgb=False)
        traces = (
            [ep, *(run_episode(sim, act, rgb=False) for _ in range(args.trace - 1))] if args.trace else []
        )
    finally:
        sim.close()
    teacher_q = np.asarray(teacher["qpos"], np.float64)
    if traces:
        shown = [("teacher", teacher_q)]
        shown += [
            (f"episode {i} ({e.length} steps{', fell' if e.fell else ''})", e.qpos)
            for i, e in enumerate(traces)
        ]
        stride = max(args.every, 1)
        for head, q in shown:
            roll, pitch = attitude(q)
            print(head)
            for label, v in (("height", q[:, 2]), ("roll", roll), ("pitch", pitch), ("x", q[:, 0])):
                print(f"  {label:6s} {np.round(v[::stride], 2 if label in ('height', 'x') else 0).tolist()}")
    k = args.skip
    rows = (("agent", ep.qpos), ("teacher", teacher_q[: len(ep.qpos)]))
    for name, q in rows:
        roll, pitch = attitude(q)
        print(
            f"{name:8s} height {q[k:, 2].mean():.3f} m  "
            f"roll {roll[k:].mean():+.1f} ± {roll[k:].std():.1f} deg  "
            f"pitch {pitch[k:].mean():+.1f} ± {pitch[k:].std():.1f} deg"
        )
    for name, q in rows:
        j = q[k:, 7:]
        print(f"{name:8s} joint mean {[round(float(v), 2) for v in j.mean(0)]}")
        print(f"{name:8s} joint sd   {[round(float(v), 2) for v in j.std(0)]}")


if __name__ == "__main__":
    main()
