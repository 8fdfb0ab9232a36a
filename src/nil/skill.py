"""`nil init`: write a skill.yaml from a robot, a skill text and a preset."""

from __future__ import annotations

from pathlib import Path

from nil.config import SkillConfig, apply_overrides, parse_config, save_config
from nil.errors import ConfigError
from nil.paths import SkillPaths

# The CPU preset: what `nil demo` runs. S_V off (TimeSformer-base is ~0.35 clips/s on CPU), small SAC.
CPU_PRESET: dict = {
    "reward": {"use_video": False},
    "rl": {
        "algo": "sac",
        "replay_ratio": 1,
        "batch_size": 256,
        "actor_width": 256,
        "actor_depth": 2,
        "critic_width": 256,
        "critic_depth": 2,
    },
    "sim": {"backend": "mujoco", "num_envs": 4, "num_workers": 2},
}
# The paper's GPU setting: every reward term, BRO's networks (BroNet 512x2 critics, 256x1 actor, batch 128).
# BRO's replay ratio 10 is for one env; with 256 parallel envs we keep the update count per batched step
# bounded (0.0625 * 256 = 16 updates per step, batch 512), as massively parallel off-policy learners do.
GPU_PRESET: dict = {
    "reward": {"use_video": True, "zeta": 1.0, "beta": 1.0, "eta": 1.0},
    "rl": {
        "algo": "bro",
        "replay_ratio": 0.0625,
        "batch_size": 512,
        "actor_width": 256,
        "actor_depth": 1,
        "critic_width": 512,
        "critic_depth": 2,
        "total_steps": 1_000_000,
        "warmup_steps": 2_500,
        "reset_steps": [15001, 50001, 250001, 500001, 750001],
        "device": "cuda",
    },
    "segmenter": {"name": "sam2"},
    "sim": {"backend": "warp", "device": "cuda", "num_envs": 256},
}
PRESETS = {"cpu": CPU_PRESET, "gpu": GPU_PRESET}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def build_config(
    *,
    robot: str,
    skill: str,
    generator: str = "synthetic",
    video: Path | None = None,
    model: str | None = None,
    preset: str = "cpu",
    overrides: list[str] | None = None,
) -> SkillConfig:
    """The config `nil init` would write."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    data: dict = _merge(
        PRESETS[preset], {"robot": {"name": robot}, "skill": skill, "generator": {"name": generator}}
    )
    if video is not None:
        data["generator"]["path"] = str(Path(video).resolve())
    if model is not None:
        data["generator"]["model_id"] = model
    if generator == "file" and video is None:
        raise ConfigError("--generator file needs --video PATH (any video ffmpeg can read)")
    cfg = parse_config(data, "(nil init)")
    return apply_overrides(cfg, overrides or [])


def init_skill(
    directory: Path,
    *,
    robot: str,
    skill: str,
    generator: str = "synthetic",
    video: Path | None = None,
    model: str | None = None,
    preset: str = "cpu",
    overrides: list[str] | None = None,
    force: bool = False,
) -> Path:
    """Write DIR/skill.yaml; refuses to overwrite unless force."""
    paths = SkillPaths(Path(directory))
    if paths.config.exists() and not force:
        raise ConfigError(f"{paths.config} exists; pass --force to overwrite it")
    cfg = build_config(
        robot=robot,
        skill=skill,
        generator=generator,
        video=video,
        model=model,
        preset=preset,
        overrides=overrides,
    )
    from nil.robots import get_robot

    get_robot(cfg.robot.name, cfg.robot)  # fail now, not at `nil generate`, on an unknown robot
    out = save_config(cfg, paths.root)
    print(f"wrote {out}")
    return out
