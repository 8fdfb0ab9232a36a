"""`nil init`: write a skill.yaml from a robot, a skill text and a preset, with every default resolved.

The config owns its defaults: section defaults are Field defaults (each algorithm's on its own variant),
presets are typed values (nil.presets), and what depends on the robot or the video model is filled in
here, when the config is built, by `resolve_defaults`: the robot's bodies, gains, control rate and fall
rule, the camera framing, SAC/BRO's target entropy (-|A|, -|A|/2), the teacher's gait frequency, and a
named diffusers family's native length, rate and guidance. So skill.yaml is the whole truth of a run;
the config's `derived` record says what was filled from what, so a changed robot re-derives its values.

Left null on purpose, because no value is used or it is only known later: robot.keyframe where the
robot has none (its preset pose); robot.initial_pose where the task starts in the keyframe's pose;
generator.num_frames for the synthetic teacher (its length is
`seconds`); a diffusers family `auto` on a hub id other than the default (read from its
model_index.json at `nil generate`, recorded in reference/meta.json) and the model input size
(CogVideoX's comes from its transformer config); rl.gait_period_s (estimated from the reference
masks); reward.nonfinite_reward (none: raise); sim.nconmax/njmax (sized from the model's contacts by
the Warp backend); options of a mode not in use (retime.rife_path, teacher_checkpoint, revisions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nil.config import (
    PLUGGABLE_SECTIONS,
    DiffusersGeneratorConfig,
    SkillConfig,
    SyntheticGeneratorConfig,
    apply_overrides,
    parse_config,
    save_config,
)
from nil.errors import ConfigError
from nil.paths import SkillPaths
from nil.presets import get_preset, merge_values

# robot-section keys filled from the RobotSpec (a keyframe only where the preset names one)
_ROBOT_KEYS = (
    "description",
    "keyframe",
    "root_body",
    "torso_body",
    "feet_bodies",
    "control_mode",
    "action_scale",
    "kp",
    "kd",
    "control_hz",
    "fall_height",
    "max_tilt_deg",
    "simplify_meshes",
)
_CAMERA_KEYS = ("distance", "elevation", "azimuth", "fovy")


def _diffusers_family(g: DiffusersGeneratorConfig) -> str | None:
    """The family a diffusers config names, or that a local pipeline folder's model_index.json states."""
    from nil.reference.generators.diffusers_i2v import family_from_class

    if g.family != "auto":
        return g.family
    if g.model_id == DiffusersGeneratorConfig.model_fields["model_id"].default:
        return "cogvideox"  # the default model, THUDM/CogVideoX-5b-I2V
    index = Path(g.model_id).expanduser() / "model_index.json"
    if index.is_file():
        try:
            return family_from_class(str(json.loads(index.read_text()).get("_class_name", "")))
        except (OSError, ValueError):
            return None
    return None  # a hub id: read at `nil generate` (no download here)


def resolve_defaults(cfg: SkillConfig) -> SkillConfig:
    """`cfg` with every robot-, algorithm- and model-derived default filled in and recorded in `derived`."""
    from nil.robots import robot_from_config

    spec = robot_from_config(cfg)
    model = spec.load_model()
    filled: dict[str, str] = {}
    data = cfg.model_dump(mode="json")

    def fill(key: str, value: Any, *sources: str) -> None:
        sec, _, name = key.partition(".")
        if data[sec].get(name) is None and value is not None:
            data[sec][name] = value
            filled[key] = "+".join(sources)

    for k in _ROBOT_KEYS:
        v = getattr(spec, k)
        fill(f"robot.{k}", float(v) if isinstance(v, float) else v, "robot.name")
    for k in _CAMERA_KEYS:
        fill(f"camera.{k}", float(getattr(spec.camera, k)), "robot.name")
    action_dim = spec.action_dim(model)
    per_dim = getattr(cfg.rl, "TARGET_ENTROPY_PER_ACTION", None)  # a plugin algorithm may have none
    if per_dim is not None:
        fill("rl.target_entropy", per_dim * action_dim, "robot.name", "rl.algo")
    g = cfg.generator
    if isinstance(g, SyntheticGeneratorConfig) and g.teacher == "cpg":
        from nil.teachers.cpg import default_gait_hz  # a biped's walker has its own frequency

        fill("generator.gait_hz", default_gait_hz(spec), "robot.name", "generator.name")
    if isinstance(g, DiffusersGeneratorConfig):
        fam_name = _diffusers_family(g)
        if fam_name is not None:
            from nil.reference.generators.diffusers_i2v import FAMILIES

            fam = FAMILIES[fam_name]
            src = ("generator.name", "generator.model_id", "generator.family")
            fill("generator.num_frames", fam.num_frames, *src)
            fill("generator.fps", float(fam.fps), *src)
            fill("generator.guidance", float(fam.guidance), *src)
    if cfg.scene.objects:  # the objects' sizes and places follow the robot's size (nil.scene)
        from nil.scene.build import resolved_objects

        data["scene"]["objects"] = resolved_objects(cfg.scene, spec)
        filled["scene.objects"] = "robot.name"
    # a pluggable section's variant defaults (SAC's pessimism, the teacher's fps ...) follow its name
    for sec, root in PLUGGABLE_SECTIONS.items():
        section = getattr(cfg, sec)
        for name in section.variant_defaults():
            filled.setdefault(f"{sec}.{name}", f"{sec}.{root.KEY}")
    sources = sorted({s for srcs in filled.values() for s in srcs.split("+")})
    old = cfg.derived
    data["derived"] = {
        "sources": {**old.sources, **{s: _value(data, s) for s in sources}},
        "fields": {**old.fields, **filled},
    }
    return parse_config(data, "(nil init)")


def _value(data: dict[str, Any], key: str) -> Any:
    sec, _, name = key.partition(".")
    return data[sec][name]


def build_config(
    *,
    robot: str,
    skill: str,
    generator: str = "synthetic",
    video: Path | None = None,
    model: str | None = None,
    preset: str = "cpu",
    overrides: list[str] | None = None,
    resolve: bool = True,
) -> SkillConfig:
    """The config `nil init` writes: the preset, the arguments, `--set`, then every default resolved."""
    extra: dict[str, Any] = {"robot": {"name": robot}, "skill": skill, "generator": {"name": generator}}
    if video is not None:
        extra["generator"]["path"] = str(Path(video).resolve())
    if model is not None:
        extra["generator"]["model_id"] = model
    if generator == "file" and video is None:
        raise ConfigError("--generator file needs --video PATH (any video ffmpeg can read)")
    from nil.robots.presets import task_preset  # whole-body skills: scene, prompt, keyframe teacher

    task = task_preset(robot, skill, generator)
    if preset == "paper":  # a task preset's switches beyond the paper give way to the paper's values
        from nil.presets import BEYOND_PAPER

        task = merge_values(task, BEYOND_PAPER)
    extra = merge_values(task, extra)
    base = get_preset(preset).overrides()
    if base.get("generator", {}).get("name", generator) != generator:
        base.pop("generator")  # another generator: the preset's generator options do not apply
    cfg = parse_config(merge_values(base, extra), "(nil init)")
    cfg = apply_overrides(cfg, overrides or [])
    return resolve_defaults(cfg) if resolve else cfg


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
    )  # resolving loads the robot: an unknown robot fails now, not at `nil generate`
    out = save_config(cfg, paths.root)
    print(f"wrote {out}")
    return out
