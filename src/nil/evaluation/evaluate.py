"""`nil eval DIR`: deterministic rollouts of the trained policy (and of baselines), metrics.json, side_by_side.mp4.

Rows of the metrics table:
- trained: the latest good checkpoint's policy, deterministic actions;
- baselines.random / baselines.zero: an untrained uniform-random policy and all-zero actions, in the same
  simulator from the same initial states, so the report can show what training gained;
- baselines.teacher: the synthetic teacher's own motion (only when reference/teacher.npz exists) replayed
  kinematically through the same renderer: its IoU is the best the (segmented) reference allows.
"""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from nil.config import SkillConfig, load_config
from nil.errors import MissingStageError, SegmentationError
from nil.evaluation.metrics import aggregate_episodes, episode_metrics, mask_iou, mean_forward_velocity
from nil.evaluation.rollout import Episode, policy_act_fn, random_policy, run_episode, zero_policy
from nil.io import atomic_write_json, sha256_file, sha256_json
from nil.paths import SkillPaths

EVAL_VERSION = 2
BASELINES = ("random", "zero")
RANDOM_EPISODES = 3  # the random baseline is noisy: average at least this many episodes


def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def joint_qpos_indices(model) -> np.ndarray:
    """qpos indices of the actuated-style joints (hinge and slide), i.e. everything but free/ball roots."""
    import mujoco

    keep = {
        int(mujoco.mjtJoint.mjJNT_HINGE),
        int(mujoco.mjtJoint.mjJNT_SLIDE),
    }  # mujoco 4 enums != numpy ints
    idx = [int(model.jnt_qposadr[j]) for j in range(model.njnt) if int(model.jnt_type[j]) in keep]
    return np.asarray(idx, dtype=np.int64)


def _checkpoint_fingerprint(paths: SkillPaths) -> dict[str, Any]:
    from nil.rl.checkpoint import latest_good

    ckpt, manifest = latest_good(paths.checkpoints, names=["policy"], warn=None)
    return {
        "checkpoint": ckpt.name,
        "step": manifest.get("step"),
        "policy_sha256": (manifest.get("files") or {}).get("policy.pt", {}).get("sha256"),
    }


def eval_cache_key(paths: SkillPaths, cfg: SkillConfig, episodes: int) -> str:
    """Hash of everything the evaluation depends on: policy weights, reference, masks, teacher, config."""
    files = {}
    for p in (paths.retimed, paths.masks, paths.teacher):
        files[p.name] = sha256_file(p) if p.exists() else None
    relevant = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in ("rl",)}
    return sha256_json(
        {
            "version": EVAL_VERSION,
            "policy": _checkpoint_fingerprint(paths),
            "files": files,
            "cfg": relevant,
            "episodes": int(episodes),
        }
    )


def evaluation_is_current(paths: SkillPaths, episodes: int = 1) -> bool:
    """True when metrics.json and side_by_side.mp4 exist and were made from exactly the current inputs."""
    if not (paths.metrics.exists() and paths.side_by_side.exists()):
        return False
    try:
        import json

        old = json.loads(paths.metrics.read_text())
        return old.get("cache_key") == eval_cache_key(paths, load_config(paths.config), episodes)
    except Exception:  # noqa: BLE001 - anything unreadable means: not current
        return False


def _teacher_replay(spec, model, qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the teacher's states through the agent's renderer: (rgb [T,H,W,3], mask [T,H,W], torso up_z [T])."""
    import mujoco

    from nil.sim.render import RobotRenderer

    data = mujoco.MjData(model)
    torso = spec.torso_id(model)
    rgbs, masks, ups = [], [], []
    with RobotRenderer(model, spec) as r:
        for q in qpos:
            data.qpos[:] = q
            data.qvel[:] = 0
            mujoco.mj_forward(model, data)
            rgb, mask = r.render(data)
            rgbs.append(rgb.copy())
            masks.append(mask.copy())
            ups.append(float(data.xmat[torso][8]))
    return np.stack(rgbs), np.stack(masks), np.asarray(ups)


def _teacher_metrics(
    spec, model, teacher: dict[str, np.ndarray], ref_masks: np.ndarray, dt: float, target_speed: float
) -> tuple[dict[str, float], np.ndarray]:
    from nil.reward import task_reward

    qpos = np.asarray(teacher["qpos"], dtype=np.float64)
    root = np.asarray(teacher.get("root_pos", qpos[:, :3]), dtype=np.float64)
    _, masks, ups = _teacher_replay(spec, model, qpos)
    per_step = mask_iou(ref_masks[1:], masks[1 : len(ref_masks)])
    if "qvel" in teacher:
        lin_vel = np.asarray(teacher["qvel"], dtype=np.float64)[:, :3]
    else:
        lin_vel = np.gradient(root, dt, axis=0)
    # task_reward reads only torso_up_z and root_lin_vel of a batch
    state = SimpleNamespace(
        torso_up_z=torch.as_tensor(ups[1:], dtype=torch.float32),
        root_lin_vel=torch.as_tensor(lin_vel[1:], dtype=torch.float32),
    )
    task = task_reward(state, target_speed)
    m = {
        "mean_iou": float(per_step.mean()),
        "mean_iou_alive": float(per_step.mean()),
        "episode_length": float(len(qpos) - 1),
        "falls": 0.0,
        "forward_distance": float(root[-1, 0] - root[0, 0]),
        "mean_velocity": mean_forward_velocity(root[:, 0], dt),
        "task_reward": float(task.sum()),
        "velocity_ratio": 1.0,
        "root_traj_error": 0.0,
        "joint_rmse_dtw": 0.0,
    }
    return m, per_step


def evaluate(
    paths: SkillPaths,
    episodes: int = 1,
    *,
    force: bool = False,
    baselines: tuple[str, ...] = BASELINES,
    write_video: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    """Roll out the trained policy and the baselines, write eval/metrics.json (+ side_by_side.mp4); return metrics."""
    import json

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from nil.reference.bundle import load_meta, load_reference
    from nil.reference.segment import load_masks
    from nil.reward import NILReward, load_encoder, reference_embeddings, task_reward
    from nil.rl import load_policy
    from nil.robots import robot_from_config
    from nil.sim import make_sim

    if episodes < 1:
        raise MissingStageError("--episodes must be at least 1")
    paths = paths if isinstance(paths, SkillPaths) else SkillPaths(Path(paths))
    cfg = load_config(paths.config)
    key = eval_cache_key(paths, cfg, episodes)
    if not force and paths.metrics.exists() and paths.side_by_side.exists():
        try:
            old = json.loads(paths.metrics.read_text())
            if old.get("cache_key") == key:
                if not quiet:
                    print(f"evaluation cached: {paths.metrics}")
                return old
        except json.JSONDecodeError:
            pass
    t_start = time.perf_counter()
    meta = load_meta(paths)
    ref = load_reference(paths)
    ref_masks = np.asarray(load_masks(paths), dtype=bool)
    if len(ref_masks) != ref.num_frames or ref_masks.shape[1:] != ref.hw:
        raise SegmentationError(
            f"reference masks {ref_masks.shape} do not match the retimed reference "
            f"({ref.num_frames} frames of {ref.hw}); run `nil segment {paths.root} --force`"
        )
    spec = robot_from_config(cfg)
    dt = 1.0 / float(spec.control_hz)
    horizon = ref.num_frames - 1
    policy = load_policy(paths, device="cpu")
    encoder = ref_emb = None
    if cfg.reward.use_video:
        encoder = load_encoder(cfg.encoder)
        ref_emb = reference_embeddings(paths, cfg.encoder, encoder)
    teacher = None
    if meta.get("synthetic") and paths.teacher.exists():
        from nil.reference.bundle import load_teacher

        teacher = load_teacher(paths)
    model = spec.load_model()
    jidx = joint_qpos_indices(model)
    sim_cfg = cfg.sim.model_copy(update={"num_envs": 1, "num_workers": 0})

    def make_reward(sim):
        return NILReward(
            cfg.reward,
            ref_masks=torch.from_numpy(ref_masks),
            num_envs=1,
            action_dim=sim.action_dim,
            device=sim.device,
            encoder=encoder,
            ref_embeddings=ref_emb,
            dt=dt,
        )

    def task_fn(batch):
        return task_reward(batch, cfg.reward.target_speed)

    names = ["trained", *baselines]
    results: dict[str, dict[str, float]] = {}
    per_frame: dict[str, list[float]] = {}
    first: dict[str, Episode] = {}
    n_eps = {name: max(episodes, RANDOM_EPISODES) if name == "random" else episodes for name in names}
    total = sum(n_eps.values()) * horizon
    with Progress(
        TextColumn("[bold]eval[/bold] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeRemainingColumn(),
        disable=quiet,
        transient=True,
    ) as prog:
        bar = prog.add_task("rollouts", total=total)
        for name in names:
            # A fresh simulator with the same seed per row: every policy starts from the same initial states.
            sim = make_sim(spec, sim_cfg, num_envs=1, horizon=horizon, seed=cfg.seed + 10_007)
            try:
                if name == "trained":
                    act = policy_act_fn(policy)
                elif name == "random":
                    act = random_policy(sim.action_dim, cfg.seed + 1)
                elif name == "zero":
                    act = zero_policy(sim.action_dim)
                else:
                    raise MissingStageError(f"unknown baseline {name!r}; use one of {BASELINES}")
                reward = make_reward(sim)
                eps = []
                for k in range(n_eps[name]):
                    prog.update(bar, description=f"{name} episode {k + 1}/{n_eps[name]}")
                    ep = run_episode(
                        sim,
                        act,
                        reward=reward,
                        task_fn=task_fn,
                        max_steps=horizon,
                        progress=lambda: prog.advance(bar),
                    )
                    m, pf = episode_metrics(
                        ep,
                        ref_masks,
                        dt=dt,
                        joint_idx=jidx,
                        teacher_qpos=None if teacher is None else teacher["qpos"],
                        teacher_root=None if teacher is None else teacher.get("root_pos"),
                    )
                    eps.append(m)
                    if k == 0:
                        first[name] = ep
                        per_frame[name] = [round(float(x), 4) for x in pf]
                results[name] = aggregate_episodes(eps)
            finally:
                sim.close()
    if teacher is not None:
        tm, tpf = _teacher_metrics(spec, model, teacher, ref_masks, dt, cfg.reward.target_speed)
        results["teacher"] = tm
        per_frame["teacher"] = [round(float(x), 4) for x in tpf]

    if write_video:
        from nil.evaluation.video import compose_side_by_side, write_side_by_side

        ep = first["trained"]
        n = min(len(ep.rgb), ref.num_frames)
        frames = compose_side_by_side(ref.frames[:n], ep.rgb[:n], ref_masks[:n], ep.mask[:n])
        write_side_by_side(paths.side_by_side, frames, ref.fps)
    trained = results.pop("trained")
    gain = {
        k: trained[k] - results["random"][k]
        for k in ("mean_iou", "mean_velocity", "task_reward", "nil_return")
        if "random" in results and k in trained and k in results["random"]
    }
    out: dict[str, Any] = {
        "skill": cfg.skill,
        "robot": spec.name,
        "prompt": meta.get("prompt"),
        "generator": meta.get("generator"),
        "synthetic": bool(meta.get("synthetic")),
        "episodes": episodes,
        "horizon": horizon,
        "baseline_episodes": {k: v for k, v in n_eps.items() if k != "trained"},
        "control_hz": float(spec.control_hz),
        "policy": {
            "checkpoint": _checkpoint_fingerprint(paths)["checkpoint"],
            "step": policy.step,
            "algo": getattr(policy, "algo", None),
        },
        "trained": trained,
        "baselines": results,
        "gain_over_random": gain,
        "per_frame_iou": per_frame,
        "notes": {
            "mean_iou": "steps 1..T-1; steps after a fall count as IoU 0",
            "task_reward": "HumanoidBench-style upright x forward-velocity reward summed over the episode "
            f"(target speed {cfg.reward.target_speed} m/s)",
            "teacher": "the synthetic teacher's motion replayed kinematically through the same renderer",
        },
        "cache_key": key,
        "wall_s": round(time.perf_counter() - t_start, 2),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_revision": _git_revision(),
    }
    atomic_write_json(paths.metrics, out)
    return out


def _print_summary(m: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    keys = [
        "mean_iou",
        "video_similarity",
        "task_reward",
        "mean_velocity",
        "forward_distance",
        "velocity_ratio",
        "joint_rmse_dtw",
        "root_traj_error",
        "reg_total",
        "falls",
        "episode_length",
    ]
    cols = [("trained", m["trained"])] + list((m.get("baselines") or {}).items())
    table = Table(title=f"{m['robot']} / {m['skill']}: {m['episodes']} episode(s), horizon {m['horizon']}")
    table.add_column("metric")
    for name, _ in cols:
        table.add_column(name, justify="right")
    for k in keys:
        if any(k in c for _, c in cols):
            table.add_row(k, *[f"{c[k]:.4g}" if k in c else "-" for _, c in cols])
    Console().print(table)


def eval_command(directory: Path, episodes: int = 1) -> dict[str, Any]:
    """CLI: evaluate DIR and print the metrics table and where the files went."""
    paths = SkillPaths(Path(directory))
    m = evaluate(paths, episodes)
    _print_summary(m)
    print(f"metrics: {paths.metrics}")
    print(f"side-by-side video: {paths.side_by_side}")
    return m
