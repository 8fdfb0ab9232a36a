"""Robot presets and `get_robot`: a preset name or any MJCF path -> RobotSpec (with config overrides)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

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
                # at kp 150 the legs sag under the 50 kg body and the biped teacher cannot hold its
                # balance in pd mode; 300 is within the range H1 locomotion controllers use
                "kp": 300.0,
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
                "kp": 100.0,  # the menagerie position actuators' kp; 40 left the pd gait shuffling
                "kd": 2.0,
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
                "kp": 100.0,
                "kd": 2.0,
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
        import mujoco_menagerie
    except ImportError:
        raise RobotError(
            f"robot {robot!r} comes from MuJoCo Menagerie: set MENAGERIE_ROOT to a mujoco_menagerie "
            "checkout, or pip install mujoco-menagerie (downloads the model on first use)"
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
                f"unknown robot {name_or_path!r}: use one of {', '.join(list_presets())} or a path to an "
                "MJCF .xml"
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
        cam_values["lookat_offset"] = tuple(float(v) for v in camera.lookat_offset)
        cam_values["track"] = camera.track
    if values.get("initial_pose") is not None:
        values["initial_pose"] = tuple(float(v) for v in values["initial_pose"])
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
    """The RobotSpec a skill config asks for (robot overrides, camera and scene objects applied)."""
    spec = get_robot(cfg.robot.name, cfg.robot, cfg.camera)
    if cfg.scene.objects:
        from nil.scene.build import scene_key
        from nil.scene.check import check_scene

        spec.scene = scene_key(cfg.scene, spec)
        check_scene(spec)
        if cfg.camera.distance is None:  # frame a bar above the robot too
            scene = json.loads(spec.scene)
            top = max([o["height"] for o in scene["objects"] if o["kind"] == "bar"], default=0.0)
            grow = top / scene["robot"]["height"]
            if grow > 1.0:
                spec.camera.distance *= 1.15 * grow
                spec.camera.lookat_z += 0.5 * (top - scene["robot"]["height"])
    return spec


# ------------------------------------------------------- task presets (the paper's whole-body skills)
# skill-text keyword -> (scene.task, object kind, the object's name in the prompt)
_TASK_WORDS = {
    "sit": ("sitting", "chair", "on a chair"),
    "hang": ("hanging", "bar", "from a horizontal bar"),
    "balanc": ("balancing", "board", "on a balance board"),
}
_REACH: dict[str, float | None] = {
    "shoulder_pitch": -2.0,
    "left_shoulder_roll": 0.8,
    "right_shoulder_roll": -0.8,
    "elbow": 0.5,
}
# keyframe-teacher poses by joint-name fragment (radians; the other joints keep the initial pose)
_TASK_POSES: dict[str, dict[str, float | None]] = {  # None: keep that joint's initial angle
    "sitting": {"hip_pitch": -1.5, "knee": 1.6, "ankle_roll": None, "ankle": -0.3},
    # hanging: the initial pose reaches up (arms raised and spread) to the bar; the task tucks the legs
    "reach": _REACH,
    "hanging": {**_REACH, "hip_pitch": -1.2, "knee": 1.8},
    "balancing": {},  # the balance teacher (nil.teachers.biped) holds the initial pose by feedback
}
_TASK_TIMES = {"sitting": [0.2, 1.5], "hanging": [0.2, 1.0]}
# sitting and hanging run in pd mode (it trained better than torque on sitting, docs/benchmarks.md) with
# the action range of sitting's best arm, widened where the goal pose lies further (G1: 1.6 to sit, 1.8
# to tuck)
_TASK_ACTION_SCALE = 1.2
_SIT_TILT_COEF = 5.0
# rl.keep_best (beyond the paper): sitting's in-training eval return peaks before the end and the best
# policy sat more often; on balancing the best was the last policy (docs/benchmarks.md). Hanging is
# unmeasured with it, so it keeps the last policy. A `paper` skill keeps the paper's learner (nil.skill)
_KEEP_BEST = ("sitting", "balancing")
# the bodies whose end grips a bar (nil.scene.grip) when a preset makes a hanging scene
_HANDS = {
    "unitree_h1": ["left_elbow_link", "right_elbow_link"],
    "unitree_g1": ["left_wrist_yaw_link", "right_wrist_yaw_link"],
}
TASK_ROBOTS = ("unitree_h1", "unitree_g1")  # robots whose task poses are set (any robot gets the scene)


def task_of_skill(skill: str) -> tuple[str, str, str] | None:
    """(task, object kind, object words) when the skill text names a whole-body task, else None."""
    text = skill.lower()
    return next((v for k, v in _TASK_WORDS.items() if k in text), None)


def task_pose(spec: RobotSpec, model: mujoco.MjModel, task: str) -> list[float]:
    """Joint targets (actuator order) of a task's pose: the initial pose with the task's joints moved."""
    q0 = spec.initial_qpos(model)
    out = []
    for i in range(model.nu):
        jnt = int(model.actuator_trnid[i, 0])
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, jnt) or ""
        val = next((v for frag, v in _TASK_POSES[task].items() if frag in name), None)
        out.append(round(float(q0[model.jnt_qposadr[jnt]] if val is None else val), 4))
    return out


def _bar_at_reach(robot: str) -> dict[str, Any]:
    """A gripped bar where the robot's hands are in its reach pose, the hanging preset's initial pose: its
    height, its forward position and the gripping hands (scene.objects[0] of a hanging preset)."""
    from nil.scene.grip import hand_tip_world

    spec = get_robot(robot)
    model = spec.load_model()
    spec.initial_pose = tuple(task_pose(spec, model, "reach"))
    data = mujoco.MjData(model)
    data.qpos[:] = spec.initial_qpos(model)
    mujoco.mj_kinematics(model, data)
    hands = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, b) for b in _HANDS[robot]]
    tip = np.mean([hand_tip_world(model, data, b) for b in hands], axis=0)
    root = data.xpos[spec.root_id(model)]
    return {
        "height": round(float(tip[2]), 3),
        "pos": (round(float(tip[0] - root[0]), 3), 0.0, 0.0),
        "grip": list(_HANDS[robot]),
    }


def task_preset(robot: str, skill: str, generator: str = "synthetic") -> dict[str, Any]:
    """Config values for a whole-body skill ("sitting on a chair" ...): the scene, a prompt naming the
    object and (synthetic generator, H1/G1) a keyframe teacher from the initial pose to the task's pose."""
    found = task_of_skill(skill)
    if found is None:
        return {}
    task, kind, words = found
    out: dict[str, Any] = {"scene": {"objects": [{"kind": kind}], "task": task}}
    if task == "hanging" and robot in _HANDS:
        out["scene"]["objects"][0].update(_bar_at_reach(robot))
    # these skills do not repeat: the gait clock (on in the demo preset) would stop the run on such a
    # reference. The speed cue reads the sitting teacher's step back to the chair, but trained with it the
    # H1 fell more and sat less (docs/benchmarks.md, "H1 sitting"), so a task preset turns both off
    out["reward"] = {"speed_weight": 0.0}
    out["rl"] = {"gait_clock": False}
    if words.split()[-1] not in skill.lower():
        out["prompt_template"] = "The {robot} agent is {skill} " + words + ", camera follows the agent."
    if generator == "synthetic" and robot in TASK_ROBOTS and task == "balancing":
        out["generator"] = {"teacher": "balance"}  # feedback: a held pose falls off the rocking deck
    elif generator == "synthetic" and robot in TASK_ROBOTS and task == "hanging":
        # from the home pose the H1 tips backward before its hands reach the bar, even with the balance
        # teacher's feedback under the reach (docs/benchmarks.md, "Teachers"): the hanging task starts
        # with the hands on the bar (gripped at the first step), and the teacher tucks the legs
        spec = get_robot(robot)
        model = spec.load_model()
        reach, hang = task_pose(spec, model, "reach"), task_pose(spec, model, "hanging")
        out["robot"] = {"initial_pose": reach, "control_mode": "pd", "action_scale": _pd_scale(reach, hang)}
        out["generator"] = {
            "teacher": "keyframes",
            "keyframes": [reach, hang],
            "keyframe_times": _TASK_TIMES[task],
        }
    elif generator == "synthetic" and robot in TASK_ROBOTS:
        spec = get_robot(robot)
        model = spec.load_model()
        first = spec.keyframe or "0"
        start = task_pose(spec, model, "balancing")  # = the initial pose: no joint moved
        goal = task_pose(spec, model, task)
        out["generator"] = {
            "teacher": "keyframes",
            "keyframes": [first if spec.keyframe else start, goal],
            "keyframe_times": _TASK_TIMES[task],
        }
        # pd with a range that reaches the seat, and a stiffer tilt penalty: the arm that sat most often
        # in torque/pd, tilt and budget trials (docs/benchmarks.md, "H1 sitting on a chair, trained")
        out["robot"] = {"control_mode": "pd", "action_scale": _pd_scale(start, goal)}
        out["reward"]["tilt_coef"] = _SIT_TILT_COEF
    if task in _KEEP_BEST:
        out["rl"]["keep_best"] = True
    return out


def _pd_scale(start: list[float], goal: list[float]) -> float:
    """A pd action range that reaches `goal` from `start` (targets are start + scale * action), at least
    the range the H1 tasks trained best with, rounded up to 0.1."""
    out = float(np.abs(np.subtract(goal, start)).max())
    return max(_TASK_ACTION_SCALE, math.ceil(10 * out - 1e-6) / 10)
