"""Robot presets and `get_robot`: a preset name or any MJCF path -> RobotSpec (with config overrides)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mujoco

from nil.config import CameraConfig, RobotConfig, SkillConfig
from nil.errors import RobotError
from nil.robots import infer
from nil.robots.spec import CameraSpec, RobotSpec

# Default action scale per control mode when neither the preset nor the config sets one.
_ACTION_SCALE = {"torque": 1.0, "pd": 0.5}


@dataclass(frozen=True)
class Preset:
    """A named robot: where its MJCF is and the spec values that differ from what inference gives."""

    name: str
    description: str
    kind: str  # "gymnasium" | "menagerie"
    entry: str  # file inside the gymnasium assets folder or the menagerie robot folder
    values: dict[str, Any] = field(default_factory=dict)
    camera: dict[str, Any] = field(default_factory=dict)


_HUMANOID_CAM = {"azimuth": 90.0, "elevation": -10.0}
_QUADRUPED_CAM = {"azimuth": 90.0, "elevation": -20.0}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "ant",
            "four-legged ant robot",
            "gymnasium",
            "ant.xml",
            # gymnasium's own standing pose (its <custom> init_qpos), put onto the floor
            {
                "init_qpos": (0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0, 1.0),
                "kp": 100.0,
                "kd": 2.0,
                "fall_height": 0.2,
                "max_tilt_deg": 80.0,
            },
            {"azimuth": 90.0, "elevation": -30.0},
        ),
        Preset(
            "unitree_h1",
            "Unitree H1 humanoid robot",
            "menagerie",
            "scene.xml",
            {
                "keyframe": "home",
                "root_body": "pelvis",
                "torso_body": "torso_link",
                "feet_bodies": ["left_ankle_link", "right_ankle_link"],
                "kp": 150.0,
                "kd": 5.0,
                "fall_height": 0.6,
                "max_tilt_deg": 60.0,
            },
            _HUMANOID_CAM,
        ),
        Preset(
            "unitree_g1",
            "Unitree G1 humanoid robot",
            "menagerie",
            "scene.xml",
            {
                "keyframe": "stand",
                "root_body": "pelvis",
                "torso_body": "torso_link",
                "feet_bodies": ["left_ankle_roll_link", "right_ankle_roll_link"],
                "kp": 100.0,
                "kd": 4.0,
                "fall_height": 0.45,
                "max_tilt_deg": 60.0,
            },
            _HUMANOID_CAM,
        ),
        Preset(
            "pal_talos",
            "PAL Robotics TALOS humanoid robot",
            "menagerie",
            "scene_motor.xml",
            {
                "feet_bodies": ["leg_left_6_link", "leg_right_6_link"],
                "kp": 300.0,
                "kd": 10.0,
                "fall_height": 0.65,
                "max_tilt_deg": 60.0,
            },
            _HUMANOID_CAM,
        ),
        Preset(
            "unitree_a1",
            "Unitree A1 quadruped robot",
            "menagerie",
            "scene.xml",
            {
                "keyframe": "home",
                "root_body": "trunk",
                "torso_body": "trunk",
                "feet_bodies": ["FR_calf", "FL_calf", "RR_calf", "RL_calf"],
                "kp": 40.0,
                "kd": 1.0,
                "fall_height": 0.12,
                "max_tilt_deg": 60.0,
            },
            _QUADRUPED_CAM,
        ),
        Preset(
            "unitree_go2",
            "Unitree Go2 quadruped robot",
            "menagerie",
            "scene.xml",
            {
                "keyframe": "home",
                "root_body": "base",
                "torso_body": "base",
                "feet_bodies": ["FL_calf", "FR_calf", "RL_calf", "RR_calf"],
                "kp": 40.0,
                "kd": 1.0,
                "fall_height": 0.12,
                "max_tilt_deg": 60.0,
            },
            _QUADRUPED_CAM,
        ),
    ]
}


def list_presets() -> list[str]:
    """Names of the robot presets (the zero-download `ant` first)."""
    return list(PRESETS)


def gymnasium_assets() -> Path:
    """Folder of the MJCF files shipped inside gymnasium."""
    try:
        import gymnasium
    except ImportError:
        raise RobotError("the 'ant' preset needs gymnasium (pip install gymnasium)") from None
    return Path(gymnasium.__file__).resolve().parent / "envs" / "mujoco" / "assets"


def resolve_menagerie(robot: str, entry: str, *, download: bool = True) -> tuple[Path, str]:
    """(path, source) of a menagerie model: MENAGERIE_ROOT first, else the mujoco-menagerie package."""
    root = os.environ.get("MENAGERIE_ROOT")
    if root:
        path = Path(root) / robot / entry
        if path.is_file():
            return path, f"MENAGERIE_ROOT={root}"
        raise RobotError(
            f"{path} does not exist: MENAGERIE_ROOT={root} has no {robot}/{entry}; "
            "point MENAGERIE_ROOT at a mujoco_menagerie checkout"
        )
    try:
        import mujoco_menagerie  # type: ignore[import-not-found]
    except ImportError:
        raise RobotError(
            f"robot {robot!r} comes from MuJoCo Menagerie: set MENAGERIE_ROOT to a mujoco_menagerie checkout, "
            "or pip install mujoco-menagerie (downloads the model on first use)"
        ) from None
    try:
        item = mujoco_menagerie.get(robot)
        if not download and not mujoco_menagerie.Cache().is_cached(item):
            raise RobotError(f"{robot!r} is not downloaded yet (mujoco-menagerie fetches it on first use)")
        path = Path(item.path()) / entry
    except RobotError:
        raise
    except Exception as e:
        raise RobotError(
            f"mujoco-menagerie could not provide {robot!r} ({e}); set MENAGERIE_ROOT to a local "
            "mujoco_menagerie checkout"
        ) from None
    if not path.is_file():
        raise RobotError(
            f"mujoco-menagerie's {robot} has no {entry}; set MENAGERIE_ROOT to a menagerie checkout"
        )
    return path, "mujoco-menagerie cache"


def preset_path(name: str, *, download: bool = True) -> tuple[Path, str]:
    """(MJCF path, source description) of a preset."""
    p = PRESETS[name]
    if p.kind == "gymnasium":
        path = gymnasium_assets() / p.entry
        if not path.is_file():
            raise RobotError(f"{path} is missing from the installed gymnasium; reinstall gymnasium>=1.0")
        return path, "gymnasium (installed package)"
    return resolve_menagerie(name, p.entry, download=download)


def _model_name(model: mujoco.MjModel) -> str:
    names = bytes(model.names)
    raw = names[: names.find(b"\0")].decode(errors="replace").strip()
    return raw or "custom"


def get_robot(
    name_or_path: str, overrides: RobotConfig | None = None, camera: CameraConfig | None = None
) -> RobotSpec:
    """A RobotSpec from a preset name or an MJCF path; None fields are inferred from the model."""
    values: dict[str, Any] = {}
    cam_values: dict[str, Any] = {}
    if name_or_path in PRESETS:
        preset = PRESETS[name_or_path]
        path, source = preset_path(name_or_path)
        name, description = preset.name, preset.description
        values.update(preset.values)
        cam_values.update(preset.camera)
    else:
        path = Path(name_or_path).expanduser()
        looks_like_path = path.suffix.lower() in (".xml", ".mjcf") or os.sep in name_or_path
        if not path.is_file():
            if looks_like_path:
                raise RobotError(f"cannot read MJCF file {name_or_path}: no such file")
            raise RobotError(
                f"unknown robot {name_or_path!r}: use one of {', '.join(list_presets())} or a path to an MJCF .xml"
            )
        path, source, name, description = path.resolve(), "path", path.stem, ""
    # config overrides win over preset values
    if overrides is not None:
        for key, val in overrides.model_dump(exclude={"name"}).items():
            if val is not None:
                values[key] = val
    if camera is not None:
        for key in ("distance", "elevation", "azimuth", "fovy"):
            if getattr(camera, key) is not None:
                cam_values[key] = getattr(camera, key)
        cam_values["width"], cam_values["height"] = camera.width, camera.height
    description = values.pop("description", None) or description
    mode = values.get("control_mode", "torque")
    values.setdefault("action_scale", _ACTION_SCALE[mode])
    cam = replace(
        CameraSpec(), **{k: v for k, v in cam_values.items() if k in CameraSpec.__dataclass_fields__}
    )
    spec = RobotSpec(
        name=name,
        description=description,
        mjcf_path=str(path),
        camera=cam,
        source=source,
        **{k: v for k, v in values.items() if k in RobotSpec.__dataclass_fields__},
    )
    return _complete(spec, explicit_distance="distance" in cam_values, explicit_fall="fall_height" in values)


def _complete(spec: RobotSpec, explicit_distance: bool, explicit_fall: bool) -> RobotSpec:
    """Fill what the preset/config left open from the model itself, and validate names."""
    model = spec.load_model()
    root = infer.find_root(model)
    if not spec.root_body:
        spec.root_body = infer.body_name(model, root)
    else:
        root = spec.root_id(model)
    if not spec.torso_body:
        spec.torso_body = spec.root_body
    spec.torso_id(model)
    if not spec.description:
        spec.description = f"{_model_name(model)} robot"
    spec.substeps(model)
    qpos = spec.initial_qpos(model)
    data = infer.forward_at(model, qpos)
    if not spec.feet_bodies:
        spec.feet_bodies = [infer.body_name(model, b) for b in infer.find_feet(model, data, root)]
    spec.feet_ids(model)
    if not explicit_fall:
        spec.fall_height = 0.5 * float(data.xpos[root, 2])
    if not explicit_distance:
        dist, lookat_z = infer.camera_framing(model, data, root, spec.camera.fovy, spec.camera.azimuth)
        spec.camera.distance, spec.camera.lookat_z = dist, lookat_z
    else:
        _, spec.camera.lookat_z = infer.camera_framing(
            model, data, root, spec.camera.fovy, spec.camera.azimuth
        )
    return spec


def robot_from_config(cfg: SkillConfig) -> RobotSpec:
    """The RobotSpec a skill config asks for (robot overrides and camera applied)."""
    return get_robot(cfg.robot.name, cfg.robot, cfg.camera)
