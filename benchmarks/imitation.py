"""Known-answer imitation benchmark: teacher motion -> rendered reference -> NIL learns from pixels -> scored.

For each robot, a synthetic teacher (a simulated gait) is rendered into the reference video; NIL then
runs its whole pipeline (flow segmentation of the rendered video, IoU + regulariser reward, SAC) with no
access to the teacher's states, and the trained policy is scored against the teacher's ground truth:
velocity ratio (agent / teacher mean forward velocity), mean mask IoU, joint-angle RMSE after DTW, and
the walking task reward relative to the teacher's (the analogue of the paper's NIL / expert ratios).
A random-action policy in the same simulator is the baseline. Wall-clock covers every stage.

    python benchmarks/imitation.py                       # ant and unitree_a1 at the demo budget
    python benchmarks/imitation.py --robots ant --steps 20000 --out /tmp/nil_bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if "MENAGERIE_ROOT" not in os.environ and _SHARED.is_dir():
    os.environ["MENAGERIE_ROOT"] = str(_SHARED)

# The paper's NIL / expert env.-reward ratios (CVPR table): H1 396.1/400, A1 290.3/300, Talos 352.8/400, G1 356.9/400.
PAPER = {
    "unitree_h1": 396.1 / 400,
    "unitree_a1": 290.3 / 300,
    "pal_talos": 352.8 / 400,
    "unitree_g1": 356.9 / 400,
}

# Per-robot additions to the demo config (the demo's budget otherwise).
ROBOT_OVERRIDES: dict[str, list[str]] = {
    "ant": [],
    "unitree_a1": ["robot.name=unitree_a1"],
    "unitree_go2": ["robot.name=unitree_go2"],
}


def run_one(robot: str, out: Path, steps: int | None, extra: list[str], fresh: bool) -> dict:
    """Run the pipeline for one robot and return the benchmark row."""
    import shutil

    from nil.config import save_config
    from nil.evaluation.pipeline import demo_config, run_skill

    skill = out / f"{robot}_walking"
    if fresh and skill.exists():
        shutil.rmtree(skill)
    if not (skill / "skill.yaml").exists():
        save_config(demo_config([*ROBOT_OVERRIDES.get(robot, [f"robot.name={robot}"]), *extra]), skill)
    t0 = time.perf_counter()
    m = run_skill(skill, steps=steps)
    wall = time.perf_counter() - t0
    tr, rnd = m["trained"], m["baselines"]["random"]
    teacher = m["baselines"].get("teacher", {})
    row = {
        "robot": robot,
        "steps": m["policy"]["step"],
        "horizon": m["horizon"],
        "control_hz": m["control_hz"],
        "velocity_ratio": tr.get("velocity_ratio"),
        "velocity_ratio_random": rnd.get("velocity_ratio"),
        "mean_iou": tr.get("mean_iou"),
        "mean_iou_random": rnd.get("mean_iou"),
        "mean_iou_teacher": teacher.get("mean_iou"),
        "joint_rmse_dtw": tr.get("joint_rmse_dtw"),
        "joint_rmse_dtw_random": rnd.get("joint_rmse_dtw"),
        "task_reward": tr.get("task_reward"),
        "task_reward_teacher": teacher.get("task_reward"),
        "task_ratio": (tr["task_reward"] / teacher["task_reward"]) if teacher.get("task_reward") else None,
        "falls": tr.get("falls"),
        "wall_s": wall,
        "stage_seconds": m.get("stage_seconds"),
        "stages": m.get("stages"),
        "report": m.get("report"),
    }
    return row


def _f(v, nd=2) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def markdown(rows: list[dict]) -> str:
    """The results as a markdown table."""
    lines = [
        "| robot | env steps | velocity ratio (random) | mean IoU (random / teacher) | joint RMSE DTW rad (random) "
        "| task reward / teacher's | paper NIL/expert | wall-clock |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['robot']} | {r['steps']} | {_f(r['velocity_ratio'])} ({_f(r['velocity_ratio_random'])}) "
            f"| {_f(r['mean_iou'])} ({_f(r['mean_iou_random'])} / {_f(r['mean_iou_teacher'])}) "
            f"| {_f(r['joint_rmse_dtw'])} ({_f(r['joint_rmse_dtw_random'])}) | {_f(r['task_ratio'])} "
            f"| {_f(PAPER.get(r['robot']))} | {r['wall_s'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run each robot, print the table, write results.json."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robots", nargs="+", default=["ant", "unitree_a1"])
    ap.add_argument("--steps", type=int, default=None, help="env steps (default: the demo budget)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/nil_bench_imitation"))
    ap.add_argument("--set", dest="extra", nargs="*", default=[], help="extra config overrides key=value")
    ap.add_argument(
        "--resume", action="store_true", help="reuse existing skill folders (default: start fresh)"
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for robot in args.robots:
        rows.append(run_one(robot, args.out, args.steps, args.extra, fresh=not args.resume))
        (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    print()
    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(markdown(rows))
    print(f"results: {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
