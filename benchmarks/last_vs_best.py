"""What rl.keep_best buys: the best in-training eval's policy against the last one, on the same seeds.

A run trained with `rl.keep_best=true` holds both policies (train/best/ and train/checkpoints/). For each
seed folder this evaluates the last policy too, in a view folder beside it (`<seed>_last`: links to the
seed's reference and train/, and its skill.yaml with keep_best off), with the same `nil eval` protocol
and episodes as the seed's own eval/metrics.json (the best policy's). The training is the same run, so
the pair differs only in which checkpoint is scored.

    python benchmarks/last_vs_best.py /work/runs/h1sit90kbest/unitree_h1 --episodes 5
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if "MENAGERIE_ROOT" not in os.environ and _SHARED.is_dir():
    os.environ["MENAGERIE_ROOT"] = str(_SHARED)

KEYS = ("task_success", "falls", "mean_iou", "velocity_ratio", "root_traj_error", "task_return")


def last_view(seed_dir: Path) -> Path:
    """`<seed>_last/`: the seed's inputs and training linked, its config with rl.keep_best off."""
    from nil.config import load_config, save_config

    view = seed_dir.parent / f"{seed_dir.name}_last"
    view.mkdir(exist_ok=True)
    for entry in seed_dir.iterdir():
        if entry.name in ("eval", "skill.yaml"):
            continue
        link = view / entry.name
        if not link.exists():
            link.symlink_to(entry.resolve())
    cfg = load_config(seed_dir / "skill.yaml")
    cfg.rl = cfg.rl.model_copy(update={"keep_best": False})
    save_config(cfg, view)
    return view


def pair(seed_dir: Path, episodes: int) -> dict[str, Any]:
    """{best, last}: each policy's trained-row figures and step."""
    from nil.evaluation.evaluate import evaluate
    from nil.paths import SkillPaths

    best = json.loads(SkillPaths(seed_dir).metrics.read_text())
    if not str(best["policy"]["checkpoint"]).startswith("best/"):
        raise SystemExit(f"{seed_dir}: its eval is not of a best policy (trained without rl.keep_best?)")
    last = evaluate(SkillPaths(last_view(seed_dir)), episodes, baselines=(), write_video=False, quiet=True)
    return {
        name: {"step": m["policy"]["step"], **{k: m["trained"][k] for k in KEYS if k in m["trained"]}}
        for name, m in (("best", best), ("last", last))
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("robot_dir", type=Path, help="a benchmarks/imitation.py robot folder (seed0, seed1, ...)")
    ap.add_argument("--episodes", type=int, default=5)
    args = ap.parse_args()
    seeds = sorted(p for p in args.robot_dir.glob("seed*") if p.is_dir() and not p.name.endswith("_last"))
    for p in [p for p in seeds if not (p / "eval" / "metrics.json").exists()]:
        print(f"skipping {p}: not evaluated yet")
        seeds.remove(p)
    rows = {p.name: pair(p, args.episodes) for p in seeds}
    keys = [k for k in KEYS if all(k in r["best"] for r in rows.values())]
    print("| figure | best: mean ± sd (per seed) | last: mean ± sd (per seed) |")
    print("|---|---|---|")
    for k in ["step", *keys]:
        cells = []
        for which in ("best", "last"):
            v = [float(r[which][k]) for r in rows.values()]
            per = " / ".join(f"{x:.0f}" if k == "step" else f"{x:.2f}" for x in v)
            cells.append(f"{np.mean(v):.2f} ± {np.std(v):.2f} ({per})" if k != "step" else per)
        print(f"| {k} | {cells[0]} | {cells[1]} |")
    out = args.robot_dir / "last_vs_best.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
