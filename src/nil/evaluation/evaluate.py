"""`nil eval DIR`: deterministic rollouts of the policy and baselines -> metrics.json, side_by_side.mp4.

Rows of the metrics table:
- trained: the latest good checkpoint's policy (with rl.keep_best the best in-training eval's, train/best/),
  deterministic actions;
- baselines.random / baselines.zero: an untrained uniform-random policy and all-zero actions, in the same
  simulator from the same initial states, so the report can show what training gained;
- baselines.teacher: the ground truth's motion (reference/teacher.npz: the synthetic teacher's, or one a user
  put beside an imported video; only when it exists) replayed
  kinematically through the same renderer: its IoU is the best the (segmented) reference allows.
"""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from nil.config import SkillConfig, load_config
from nil.errors import ConfigError, MissingStageError, SegmentationError
from nil.evaluation.metrics import (
    HEADLINE,
    MIN_EPISODES,
    RAMP_FRACTION,
    RAMP_WINDOW_S,
    STILL_SPEED,
    aggregate_episodes,
    episode_metrics,
    spread_episodes,
)
from nil.evaluation.rollout import Episode, policy_act_fn, random_policy, run_episode, zero_policy
from nil.evaluation.summary import print_summary
from nil.evaluation.teacher import teacher_motion, teacher_row
from nil.io import atomic_write_json, sha256_file, sha256_json
from nil.paths import SkillPaths
from nil.reference.motion import MOTION_CORE, moving_region
from nil.sim.base import BatchedSim

EVAL_VERSION = 4
BASELINES = ("random", "zero")
DEFAULT_EPISODES = MIN_EPISODES  # fewer is a setting (--episodes), noted in the printed table
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
    from nil.rl.checkpoint import policy_checkpoint

    ckpt, manifest = policy_checkpoint(paths, warn=None)
    return {
        "checkpoint": f"{ckpt.parent.name}/{ckpt.name}",
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


def evaluation_is_current(paths: SkillPaths, episodes: int = DEFAULT_EPISODES) -> bool:
    """True when metrics.json and side_by_side.mp4 exist and were made from exactly the current inputs."""
    if not (paths.metrics.exists() and paths.side_by_side.exists()):
        return False
    try:
        import json

        old = json.loads(paths.metrics.read_text())
        return old.get("cache_key") == eval_cache_key(paths, load_config(paths.config), episodes)
    except Exception:  # noqa: BLE001 - anything unreadable means: not current
        return False


def video_motion(paths: SkillPaths, spec: Any, ref_masks: np.ndarray) -> tuple[float | None, list[str]]:
    """(mean planar root speed [m/s] the reference video shows, warnings), from the floor flow alone.

    For references without a teacher (a video model's, a user's file): the only way to tell that the
    robot in it does not travel. None when the floor cannot be tracked (a flat background).
    """
    from nil.errors import VideoError
    from nil.reference.motion import reference_root_velocity

    try:
        vel = reference_root_velocity(paths, spec, ref_masks)
    except VideoError:
        return None, []
    speed = float(np.linalg.norm(np.asarray(vel, dtype=np.float64).mean(0)))
    if speed >= STILL_SPEED:
        return speed, []
    return speed, [
        f"the robot in the reference video does not travel ({speed:.3f} m/s from the floor's motion, below "
        f"{STILL_SPEED} m/s): there is no speed to imitate; check the reference video or the prompt"
    ]


def eval_sim(spec: Any, cfg: SkillConfig, horizon: int) -> BatchedSim:
    """The 1-env simulator every evaluation row runs in: the skill's backend in-process, seeded apart from
    training, so every policy (and every caller) starts from the same initial states."""
    from nil.sim import make_sim

    sim_cfg = cfg.sim.model_copy(update={"num_envs": 1, "num_workers": 0})
    return make_sim(spec, sim_cfg, num_envs=1, horizon=horizon, seed=cfg.seed + 10_007)


def _frame_list(iou: np.ndarray) -> list[float]:
    """A per-frame IoU as metrics.json stores it: plain floats, 4 decimals."""
    return [round(float(x), 4) for x in iou]


def evaluate(
    paths: SkillPaths,
    episodes: int = DEFAULT_EPISODES,
    *,
    force: bool = False,
    baselines: tuple[str, ...] = BASELINES,
    write_video: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    """Roll out the policy and the baselines; write eval/metrics.json (+ side_by_side.mp4); return it."""
    import json

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from nil.reference.bundle import load_meta, load_reference
    from nil.reference.segment import load_masks
    from nil.reward import task_reward
    from nil.reward.nil_reward import skill_reward
    from nil.rl import load_policy
    from nil.robots import robot_from_config
    from nil.scene.success import scene_task, task_metrics

    if episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {episodes}")
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
    moving = moving_region(ref_masks)  # where the legs move: `moving_iou` scores them apart from the body
    spec = robot_from_config(cfg)
    dt = 1.0 / float(spec.control_hz)
    horizon = ref.num_frames - 1
    policy = load_policy(paths, device="cpu")
    make_reward = skill_reward(paths, cfg, spec, ref_masks)  # the reward exactly as training builds it
    teacher = None
    if paths.teacher.exists():  # synthetic, or ground truth a user put beside an imported video
        from nil.reference.bundle import load_teacher

        teacher = load_teacher(paths)
    model = spec.load_model()
    jidx = joint_qpos_indices(model)
    if teacher is not None:
        ramp, teacher_speed, warnings = teacher_motion(teacher, dt)
        video_speed = None
    else:
        ramp, teacher_speed = 0, float("nan")
        video_speed, warnings = video_motion(paths, spec, ref_masks)
    task = scene_task(spec)  # sitting / hanging / balancing when the skill has a scene with a task

    def task_fn(batch):
        return task_reward(batch, cfg.reward.target_speed)

    names = ["trained", *baselines]
    results: dict[str, dict[str, float]] = {}
    spread: dict[str, dict[str, float]] = {}
    per_episode: dict[str, dict[str, list[float]]] = {}
    per_frame: dict[str, list[float]] = {}
    per_frame_mean: dict[str, list[float]] = {}  # the same, averaged over every episode of the row
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
            sim = eval_sim(spec, cfg, horizon)
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
                frames_by_ep: list[np.ndarray] = []
                for k in range(n_eps[name]):
                    prog.update(bar, description=f"{name} episode {k + 1}/{n_eps[name]}")
                    ep = run_episode(
                        sim,
                        act,
                        reward=reward,
                        task_fn=task_fn,
                        max_steps=horizon,
                        progress=lambda: prog.advance(bar),
                        # colour only where something reads it: the filmed episode, or the video term
                        rgb=cfg.reward.use_video or (write_video and name == "trained" and k == 0),
                    )
                    m, pf = episode_metrics(
                        ep,
                        ref_masks,
                        dt=dt,
                        joint_idx=jidx,
                        teacher_qpos=None if teacher is None else teacher["qpos"],
                        teacher_root=None if teacher is None else teacher.get("root_pos"),
                        ramp=ramp,
                        moving=moving,
                    )
                    m.update(task_metrics(spec, ep.qpos, ep.fell))  # scene tasks: success (nil.scene)
                    eps.append(m)
                    frames_by_ep.append(np.asarray(pf, np.float64))
                    if k == 0:
                        first[name] = ep
                per_frame[name] = _frame_list(frames_by_ep[0])
                # every episode's frames are scored (a fall's later frames as 0), so they stack
                per_frame_mean[name] = _frame_list(np.mean(frames_by_ep, axis=0))
                results[name] = aggregate_episodes(eps)
                spread[name] = spread_episodes(eps)
                per_episode[name] = {
                    k: [round(float(m[k]), 5) for m in eps] for k in HEADLINE if all(k in m for m in eps)
                }
            finally:
                sim.close()
    if teacher is not None:
        tm, tpf = teacher_row(
            spec, model, teacher, ref_masks, dt, cfg.reward.target_speed, ramp, moving=moving
        )
        results["teacher"] = tm
        spread["teacher"] = {k: 0.0 for k in tm}  # a replay is deterministic
        per_frame["teacher"] = per_frame_mean["teacher"] = _frame_list(tpf)

    if write_video:
        from nil.evaluation.video import compose_side_by_side, write_side_by_side

        ep = first["trained"]
        n = min(len(ep.rgb), ref.num_frames)
        frames = compose_side_by_side(ref.frames[:n], ep.rgb[:n], ref_masks[:n], ep.mask[:n])
        write_side_by_side(paths.side_by_side, frames, ref.fps)
    trained = results.pop("trained")
    sd = {"trained": spread.pop("trained"), **spread}
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
        "sd": sd,
        "per_episode": per_episode,
        "ramp_steps": ramp,
        "teacher_speed": None if teacher is None else round(teacher_speed, 5),
        "reference_speed_from_video": None if video_speed is None else round(video_speed, 5),
        "warnings": warnings,
        "scene_task": task,
        "gain_over_random": gain,
        "per_frame_iou": per_frame,
        "per_frame_iou_mean": per_frame_mean,
        "notes": {
            "mean_iou": "steps 1..T-1; steps after a fall count as IoU 0",
            "per_frame_iou": "IoU per step, as mean_iou counts it, of each row's first episode; "
            "per_frame_iou_mean: the same averaged over every episode of the row",
            "moving_iou": f"mean_iou with both masks cut to the reference's moving region (pixels the robot "
            f"covers in fewer than {MOTION_CORE:.0%} of the reference's frames): the legs, not the body",
            "velocity_ratio": f"agent / teacher mean forward velocity after the teacher's start-up ramp "
            f"(frames {ramp}..T: the ramp ends half a {RAMP_WINDOW_S} s window after the teacher's windowed "
            f"speed first reaches {RAMP_FRACTION:.0%} of its second-half mean), the agent's while alive",
            "sd": "population standard deviation over the evaluation episodes",
            "zero": "standing still: all-zero actions",
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


def eval_command(directory: Path, episodes: int = DEFAULT_EPISODES) -> dict[str, Any]:
    """CLI: evaluate DIR and print the metrics table and where the files went."""
    paths = SkillPaths(Path(directory))
    m = evaluate(paths, episodes)
    print_summary(m)
    print(f"metrics: {paths.metrics}")
    print(f"side-by-side video: {paths.side_by_side}")
    return m
