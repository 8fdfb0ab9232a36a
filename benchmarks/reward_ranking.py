"""Does the reward prefer the motion it was built from? The teacher's own actions against the trained policy.

For a synthetic reference (reference/teacher.npz holds the teacher's actions), this replays the teacher's
actions open-loop in the evaluation simulator and scores them with the skill's NIL reward, built exactly as
training builds it; it rolls the trained policy and standing still (zero actions) the same way. If the
trained policy out-scores the teacher, the reward pays for something other than the reference's motion, and
more training will not bring the policy closer to it. `--variant` scores the same kind of episodes under
other settings (any `section.key=value` overrides; meant for reward.*) without training anything.

    python benchmarks/reward_ranking.py runs/demo/ant_walking
    python benchmarks/reward_ranking.py runs/demo/ant_walking --variant reward.speed_sigma=0.5 \
        --variant "reward.speed_weight=0.5 reward.speed_sigma=0.5"

Evaluation only: it reads teacher.npz, which training never reads. The replay starts from the evaluation
simulator's reset (with its reset noise), so the teacher's replayed IoU is a little below its state replay's
(`nil eval`'s teacher row).
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


def teacher_act_fn(actions: np.ndarray):
    """Open-loop replay of teacher.npz's actions (action[k] led to frame k; action[0] is 0)."""
    import torch

    def act(batch: Any) -> Any:
        a = actions[min(int(batch.t[0]) + 1, len(actions) - 1)]  # the batch at frame t takes the step to t+1
        return torch.as_tensor(a, dtype=torch.float32)[None]

    return act


def episode_sums(ep: Any) -> dict[str, float]:
    """The episode's return and each weighted term's sum, plus the frame-exact IoU's mean."""
    out = {"return": float(np.sum(ep.reward_total)), "steps": int(ep.length)}
    for k, v in ep.reward_terms.items():
        if k.startswith("weighted/"):
            out[k.split("/", 1)[1]] = float(np.sum(v))
    exact = ep.reward_terms.get("raw/iou_exact", ep.reward_terms.get("raw/iou"))
    out["iou_exact_mean"] = float(np.mean(exact))
    return out


def score(skill_dir: Path, overrides: list[str], episodes: int) -> dict[str, Any]:
    """{teacher, policy, zero}: mean episode sums under the skill's config with `overrides` applied."""
    from nil.config import apply_overrides, load_config
    from nil.evaluation.evaluate import eval_sim
    from nil.evaluation.rollout import policy_act_fn, run_episode, zero_policy
    from nil.paths import SkillPaths
    from nil.reference.bundle import load_teacher
    from nil.reference.segment import load_masks
    from nil.reward.nil_reward import skill_reward
    from nil.rl import load_policy
    from nil.robots import robot_from_config

    paths = SkillPaths(skill_dir)
    cfg = apply_overrides(load_config(paths.config), overrides)
    spec = robot_from_config(cfg)
    teacher = load_teacher(paths)
    if "action" not in teacher:
        raise SystemExit(f"{paths.teacher}: no 'action' array (a teacher without actions cannot be replayed)")
    masks = load_masks(paths)
    sim = eval_sim(spec, cfg, len(masks) - 1)
    reward = skill_reward(paths, cfg, spec, masks)(sim)
    acts = {
        "teacher": teacher_act_fn(np.asarray(teacher["action"], np.float32)),
        "policy": policy_act_fn(load_policy(paths, device="cpu")),
        "zero": zero_policy(sim.action_dim),
    }
    rows: dict[str, Any] = {}
    try:
        for name, act in acts.items():
            eps = [episode_sums(run_episode(sim, act, reward=reward, rgb=False)) for _ in range(episodes)]
            rows[name] = {k: float(np.mean([e[k] for e in eps])) for k in eps[0]}
    finally:
        sim.close()
    rows["margin"] = rows["teacher"]["return"] - rows["policy"]["return"]
    return rows


def main() -> None:
    """Print each setting's returns and the teacher's margin over the policy."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("skill", type=Path, help="a trained skill folder with a synthetic reference")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar='"k=v [k=v ...]"',
        help="also score under these overrides (repeatable; one variant per flag)",
    )
    ap.add_argument("--episodes", type=int, default=3, help="episodes per row (own reset noise each)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    results = {}
    for variant in ["", *args.variant]:
        results[variant or "(skill.yaml)"] = score(args.skill, variant.split(), args.episodes)
    print(
        "| reward | teacher return | policy return | standing return | margin (teacher - policy) | "
        "IoU exact: teacher / policy | largest term gaps (teacher - policy) |"
    )
    print("|---|---:|---:|---:|---:|---|---|")
    for name, r in results.items():
        t, p, z = r["teacher"], r["policy"], r["zero"]
        gaps = {k: t[k] - p[k] for k in t if k not in ("return", "steps", "iou_exact_mean", "reg") and k in p}
        top = sorted(gaps.items(), key=lambda kv: -abs(kv[1]))[:3]
        print(
            f"| {name} | {t['return']:.2f} | {p['return']:.2f} | {z['return']:.2f} | {r['margin']:+.2f} | "
            f"{t['iou_exact_mean']:.3f} / {p['iou_exact_mean']:.3f} | "
            + ", ".join(f"{k} {v:+.2f}" for k, v in top)
            + " |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
