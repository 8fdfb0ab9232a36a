"""RobotSpec: what NIL needs to know about a robot, and how its MuJoCo model is prepared for NIL.

`RobotSpec.load_model()` returns the robot on a plain floor with fast visual settings and the
control mode baked into the actuators, so every backend (CPU MuJoCo, MuJoCo Warp) that loads the
model through it gets identical dynamics:

- torque (the paper's a_t = joint torques): every actuator is a direct motor; the action in [-1, 1]
  maps affinely onto its control range, i.e. onto [-limit, +limit] joint torque (times action_scale).
- pd: every joint actuator becomes a PD servo (kp, kd, force-limited to the joint's torque limit)
  whose target is q_init + action_scale * a; MuJoCo evaluates the PD law at every physics substep.

Both modes reduce to ctrl = ctrl_offset + ctrl_scale * action (see `ctrl_affine`).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from nil.gl import ensure_offscreen_gl

ensure_offscreen_gl()  # MUJOCO_GL must be chosen before mujoco is first imported

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from nil.errors import RobotError  # noqa: E402
from nil.robots.meshes import simplify_visual_meshes  # noqa: E402

# Fallback joint torque limit (N·m) for actuators that declare none (unlimited motors/servos).
DEFAULT_TORQUE_LIMIT = 100.0
FLOOR_NAME = "nil_floor"
FLOOR_RENDER_HALF_SIZE = 50.0  # metres; rendering only


def free_camera_basis(azimuth: float, elevation: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(forward, right, up) unit vectors of MuJoCo's free camera (degrees; image x = right, image y = -up)."""
    az, el = math.radians(azimuth), math.radians(elevation)
    fwd = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    up = np.array([-math.sin(el) * math.cos(az), -math.sin(el) * math.sin(az), math.cos(el)])
    return fwd, np.cross(fwd, up), up


@dataclass
class CameraSpec:
    """Tracking camera ("camera follows the agent"): looks at the root (+ lookat_z) from a fixed offset."""

    width: int = 224
    height: int = 224
    distance: float = 3.0
    elevation: float = -10.0  # degrees; negative looks down
    azimuth: float = 90.0  # degrees; 90 looks along +y, so a robot walking along +x crosses the image
    fovy: float = 45.0
    lookat_z: float = 0.0  # added to the root's height
    lookat_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # world offset of the look-at point (fitted)
    track: str = "root"  # "root": follows the root; "fixed": looks at the root's initial position


@dataclass
class RobotSpec:
    """One robot: model source, initial pose, key bodies, control, fall rule, camera."""

    name: str
    description: str
    mjcf_path: str
    keyframe: str | None = None  # None: the model's first keyframe if any, else qpos0 (or init_qpos)
    root_body: str = ""
    torso_body: str = ""
    feet_bodies: list[str] = field(default_factory=list)
    control_mode: str = "torque"  # "torque" | "pd"
    action_scale: float = (
        1.0  # torque: fraction of the torque limit; pd: radians of target offset per unit action
    )
    kp: float = 100.0
    kd: float = 2.0
    control_hz: float = 100.0
    fall_height: float = 0.3  # root z below this terminates
    max_tilt_deg: float = 60.0  # torso tilt above this terminates
    camera: CameraSpec = field(default_factory=CameraSpec)
    init_qpos: tuple[float, ...] | None = (
        None  # explicit initial joint angles (qpos[7:]) when there is no keyframe
    )
    # actuated-joint angles (actuator order) over the keyframe's: a task that starts from another pose
    # (the hanging preset starts with the hands on the bar); the robot is put back onto the floor
    initial_pose: tuple[float, ...] | None = None
    source: str = "path"  # where the model came from (preset registry, MENAGERIE_ROOT, path)
    simplify_meshes: bool = (
        True  # decimate dense visual-only meshes (renders ~identical, several x faster on CPU)
    )
    scene: str = ""  # placed scene objects as JSON (nil.scene.build.scene_key); "" = the plain floor

    # ------------------------------------------------------------------ model
    def load_model(self) -> mujoco.MjModel:
        """The robot on a plain floor, fast visual settings, the control mode applied (a fresh copy)."""
        model = copy.deepcopy(
            _base_model(self.mjcf_path, _mtime(self.mjcf_path), bool(self.simplify_meshes), self.scene)
        )
        _apply_visual(model, self.camera)
        self._apply_control(model)
        return model

    def root_id(self, model: mujoco.MjModel) -> int:
        """Body id of the floating root."""
        return _body_id(model, self.root_body, "root_body")

    def torso_id(self, model: mujoco.MjModel) -> int:
        """Body id of the torso (tilt is measured on it)."""
        return _body_id(model, self.torso_body, "torso_body")

    def feet_ids(self, model: mujoco.MjModel) -> list[int]:
        """Body ids of the feet."""
        return [_body_id(model, f, "feet_bodies") for f in self.feet_bodies]

    def initial_qpos(self, model: mujoco.MjModel) -> np.ndarray:
        """The initial pose (keyframe, else init_qpos/qpos0 with the robot put onto the floor), with
        robot.initial_pose's actuated joints over it."""
        qpos = self._source_qpos(model)
        if self.initial_pose is None:
            return qpos
        vals = np.asarray(self.initial_pose, dtype=float)
        if vals.shape != (model.nu,):
            raise RobotError(
                f"robot.initial_pose has {vals.size} values, but {self.name} has {model.nu} actuated joints; "
                "give one angle per actuator (in actuator order) or leave it empty"
            )
        qpos = qpos.copy()
        qpos[model.jnt_qposadr[model.actuator_trnid[:, 0]]] = vals
        return _put_on_floor(model, qpos, self.root_id(model))

    def _source_qpos(self, model: mujoco.MjModel) -> np.ndarray:
        if self.keyframe is not None:
            kid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, self.keyframe)
            if kid < 0:
                names = [
                    mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_KEY, i) or str(i) for i in range(model.nkey)
                ]
                if self.keyframe.isdigit() and int(self.keyframe) < model.nkey:
                    kid = int(self.keyframe)
                else:
                    raise RobotError(
                        f"robot {self.name!r} has no keyframe {self.keyframe!r} (it has {names or 'none'}); "
                        "set robot.keyframe to one of them or leave it empty"
                    )
            return model.key_qpos[kid].copy()
        if model.nkey > 0 and self.init_qpos is None:
            return model.key_qpos[0].copy()
        qpos = model.qpos0.copy()
        if self.init_qpos is not None:
            vals = np.asarray(self.init_qpos, dtype=float)
            # the robot's own coordinates come first; a scene object's joints (nil.scene) follow them
            robot_jnt = self.robot_body_mask(model)[model.jnt_bodyid]
            n_robot = int(model.nq) - int(sum(_jnt_nq(model, int(j)) for j in np.flatnonzero(~robot_jnt)))
            if vals.shape[0] != n_robot - 7:
                raise RobotError(
                    f"robot {self.name!r}: init_qpos has {vals.shape[0]} values but the model has "
                    f"{n_robot - 7} "
                    "joint coordinates after the free root"
                )
            qpos[7:n_robot] = vals
        return _put_on_floor(model, qpos, self.root_id(model))

    def robot_body_mask(self, model: mujoco.MjModel) -> np.ndarray:
        """bool[nbody]: bodies in the root's subtree."""
        root = self.root_id(model)
        return model.body_rootid == model.body_rootid[root]

    def robot_geom_mask(self, model: mujoco.MjModel) -> np.ndarray:
        """bool[ngeom]: geoms that belong to the robot (the mask is made of these)."""
        return self.robot_body_mask(model)[model.geom_bodyid]

    def foot_geom_index(self, model: mujoco.MjModel) -> np.ndarray:
        """int64[ngeom]: index into feet_bodies of the foot whose subtree holds each geom (-1: none)."""
        out = np.full(model.ngeom, -1, np.int64)
        for k, foot in enumerate(self.feet_ids(model)):
            in_sub = np.zeros(model.nbody, bool)
            in_sub[foot] = True
            for b in range(foot + 1, model.nbody):  # children come after their parent in MuJoCo's body order
                in_sub[b] |= in_sub[model.body_parentid[b]]
            out[in_sub[model.geom_bodyid]] = k
        return out

    def substeps(self, model: mujoco.MjModel) -> int:
        """Physics steps per control step (control period / timestep, must be a whole number)."""
        ratio = 1.0 / (self.control_hz * model.opt.timestep)
        n = round(ratio)
        if n < 1 or abs(ratio - n) > 1e-6 * max(1.0, ratio):
            raise RobotError(
                f"robot {self.name!r}: control rate {self.control_hz} Hz is not a whole multiple of the "
                "physics "
                f"timestep {model.opt.timestep} s; set robot.control_hz to 1/(k*timestep), e.g. "
                f"{1.0 / (max(1, n) * model.opt.timestep):g}"
            )
        return n

    def action_dim(self, model: mujoco.MjModel) -> int:
        """Size of the action vector (one per actuator)."""
        return int(model.nu)

    def torque_limits(self, model: mujoco.MjModel) -> np.ndarray:
        """float[nu]: joint-space torque limit of each actuator as the model declares it (load_model's)."""
        return _torque_limits(model)

    def ctrl_affine(self, model: mujoco.MjModel) -> tuple[np.ndarray, np.ndarray]:
        """(offset[nu], scale[nu]) so that ctrl = offset + scale * action for action in [-1, 1]."""
        lo, hi = model.actuator_ctrlrange[:, 0].copy(), model.actuator_ctrlrange[:, 1].copy()
        if self.control_mode == "pd":
            q0 = self.initial_qpos(model)
            jnt = model.actuator_trnid[:, 0]
            offset = q0[model.jnt_qposadr[jnt]].astype(np.float64)
            scale = np.full(model.nu, float(self.action_scale))
            return offset, scale
        mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0
        return mid, half * float(self.action_scale)

    def to_dict(self) -> dict:
        """Plain dict (JSON-able) of the spec."""
        d = asdict(self)
        d["init_qpos"] = list(self.init_qpos) if self.init_qpos is not None else None
        d["initial_pose"] = list(self.initial_pose) if self.initial_pose is not None else None
        return d

    # ---------------------------------------------------------------- control
    def _apply_control(self, model: mujoco.MjModel) -> None:
        if model.nu == 0:
            raise RobotError(
                f"robot {self.name!r} has no actuators; NIL needs motors on the joints to control"
            )
        if self.control_mode not in ("torque", "pd"):
            raise RobotError(f"control_mode must be 'torque' or 'pd', got {self.control_mode!r}")
        limits = _torque_limits(model)
        fixed, none_ = mujoco.mjtGain.mjGAIN_FIXED, mujoco.mjtBias.mjBIAS_NONE
        if self.control_mode == "torque":
            for i in range(model.nu):
                is_motor = model.actuator_gaintype[i] == fixed and model.actuator_biastype[i] == none_
                if is_motor and model.actuator_ctrllimited[i]:
                    continue  # already a limited motor: keep its own range and gear
                gear = abs(model.actuator_gear[i, 0]) or 1.0
                model.actuator_gaintype[i] = fixed
                model.actuator_gainprm[i, :] = 0.0
                model.actuator_gainprm[i, 0] = 1.0
                model.actuator_biastype[i] = none_
                model.actuator_biasprm[i, :] = 0.0
                model.actuator_ctrllimited[i] = 1
                model.actuator_ctrlrange[i] = (-limits[i] / gear, limits[i] / gear)
                model.actuator_dyntype[i] = mujoco.mjtDyn.mjDYN_NONE
            return
        # pd: PD servo on each joint actuator; MuJoCo evaluates it every substep (kp*(target-q) - kd*qd).
        for i in range(model.nu):
            if model.actuator_trntype[i] != mujoco.mjtTrn.mjTRN_JOINT:
                raise RobotError(
                    f"robot {self.name!r}: actuator {i} does not drive a joint directly; "
                    "use control_mode torque"
                )
            jnt = model.actuator_trnid[i, 0]
            model.actuator_gear[i, :] = 0.0
            model.actuator_gear[i, 0] = 1.0
            model.actuator_gaintype[i] = fixed
            model.actuator_gainprm[i, :] = 0.0
            model.actuator_gainprm[i, 0] = self.kp
            model.actuator_biastype[i] = mujoco.mjtBias.mjBIAS_AFFINE
            model.actuator_biasprm[i, :] = 0.0
            model.actuator_biasprm[i, 1] = -self.kp
            model.actuator_biasprm[i, 2] = -self.kd
            model.actuator_dyntype[i] = mujoco.mjtDyn.mjDYN_NONE
            if model.jnt_limited[jnt]:
                model.actuator_ctrllimited[i] = 1
                model.actuator_ctrlrange[i] = model.jnt_range[jnt]
            else:
                model.actuator_ctrllimited[i] = 0
            model.actuator_forcelimited[i] = 1
            model.actuator_forcerange[i] = (-limits[i], limits[i])


# -------------------------------------------------------------------- helpers
def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0


def _jnt_nq(model: mujoco.MjModel, j: int) -> int:
    """qpos size of joint j (free 7, ball 4, slide/hinge 1)."""
    sizes = {int(mujoco.mjtJoint.mjJNT_FREE): 7, int(mujoco.mjtJoint.mjJNT_BALL): 4}
    return sizes.get(int(model.jnt_type[j]), 1)


def _body_id(model: mujoco.MjModel, name: str, what: str) -> int:
    bid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name) if name else -1
    if bid < 0:
        raise RobotError(
            f"body {name!r} ({what}) is not in the model; set robot.{what} to an existing body name"
        )
    return bid


def _torque_limits(model: mujoco.MjModel) -> np.ndarray:
    out = np.full(model.nu, DEFAULT_TORQUE_LIMIT)
    for i in range(model.nu):
        gear = abs(model.actuator_gear[i, 0]) or 1.0
        is_motor = (
            model.actuator_gaintype[i] == mujoco.mjtGain.mjGAIN_FIXED
            and model.actuator_biastype[i] == mujoco.mjtBias.mjBIAS_NONE
        )
        jnt = model.actuator_trnid[i, 0]
        joint_trn = model.actuator_trntype[i] == mujoco.mjtTrn.mjTRN_JOINT
        if model.actuator_forcelimited[i]:
            out[i] = np.abs(model.actuator_forcerange[i]).max() * gear
        elif is_motor and model.actuator_ctrllimited[i]:
            out[i] = np.abs(model.actuator_ctrlrange[i]).max() * gear * abs(model.actuator_gainprm[i, 0])
        elif joint_trn and model.jnt_actfrclimited[jnt]:
            out[i] = np.abs(model.jnt_actfrcrange[jnt]).max()
    return out


def _has_floor(model: mujoco.MjModel) -> bool:
    planes = (model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE) & (model.geom_bodyid == 0)
    return bool(planes.any())


def _unique_body_name(used: set[str], base: str) -> str:
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name


@lru_cache(maxsize=16)
def _base_model(path: str, mtime: float, simplify: bool = True, scene: str = "") -> mujoco.MjModel:
    """Compile the MJCF once: unnamed bodies get names, a floor and a light are added when missing,
    and (simplify) dense visual-only meshes are decimated."""
    p = Path(path)
    if not p.is_file():
        raise RobotError(
            f"cannot read MJCF file {path}: no such file; pass a preset name or an existing .xml path"
        )
    try:
        spec = mujoco.MjSpec.from_file(str(p))
    except Exception as e:  # mujoco raises ValueError with the parser message
        msg = str(e).strip().splitlines()
        raise RobotError(f"cannot load MJCF {path}: {' '.join(msg)[:300]}; fix the model file") from None
    used = {b.name for b in spec.bodies if b.name}
    for i, body in enumerate(spec.bodies):
        if body.name:
            continue
        geom_names = [g.name for g in body.geoms if g.name]
        base = geom_names[0].removesuffix("_geom") if geom_names else f"body{i + 1}"
        body.name = _unique_body_name(used, base)
    try:
        model = spec.compile()
    except Exception as e:
        raise RobotError(f"cannot compile MJCF {path}: {str(e).strip()[:300]}; fix the model file") from None
    changed = False
    if not _has_floor(model):
        spec.worldbody.add_geom(
            name=FLOOR_NAME, type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 0.05], rgba=[0.55, 0.58, 0.62, 1.0]
        )
        changed = True
    if model.nlight == 0:
        spec.worldbody.add_light(pos=[0, 0, 4.0], dir=[0, 0, -1.0], diffuse=[0.6, 0.6, 0.6])
        changed = True
    if changed:
        try:
            model = spec.compile()
        except Exception as e:
            raise RobotError(
                f"cannot compile MJCF {path} with a floor added: {str(e).strip()[:300]}"
            ) from None
    if scene:  # the skill's scene objects (nil.scene.build), placed before the meshes are simplified
        from nil.scene.build import add_objects

        model = add_objects(spec, scene)
    if simplify:
        model = simplify_visual_meshes(spec, model)
    if scene:  # every compile derives a connect's second anchor from qpos0: write the grips' own last
        import json

        from nil.scene.grip import set_grip_anchors

        set_grip_anchors(model, json.loads(scene)["objects"])
    return model


def _apply_visual(model: mujoco.MjModel, cam: CameraSpec) -> None:
    """Fast CPU render settings (no MSAA), a large enough offscreen buffer, the camera's field of view."""
    model.vis.quality.offsamples = 0
    model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), int(cam.width))
    model.vis.global_.offheight = max(int(model.vis.global_.offheight), int(cam.height))
    model.vis.global_.fovy = float(cam.fovy)
    # Plane sizes only affect rendering (planes are infinite for collisions). An infinite floor
    # (size 0) costs llvmpipe ~10 ms a frame, more than the whole H1 robot; a finite 50 m floor
    # (far more than an episode walks) with a 10x10 render grid costs ~2 ms and differs only near
    # the horizon. With directional lights the grid spacing does not change the pixels.
    planes = (model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE) & (model.geom_bodyid == 0)
    size = model.geom_size[planes]
    size[:, :2] = np.where(size[:, :2] <= 0, FLOOR_RENDER_HALF_SIZE, size[:, :2])
    size[:, 2] = np.maximum(size[:, 2], np.maximum(1.0, size[:, :2].min(axis=1) / 10.0))
    model.geom_size[planes] = size


def _put_on_floor(model: mujoco.MjModel, qpos: np.ndarray, root: int, clearance: float = 0.002) -> np.ndarray:
    """Shift the root vertically so that the robot's lowest collision geom just touches the floor."""
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_forward(model, data)
    robot_bodies = model.body_rootid == model.body_rootid[root]
    robot_geoms = np.flatnonzero(robot_bodies[model.geom_bodyid])
    floors = np.flatnonzero((model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE) & (model.geom_bodyid == 0))
    if floors.size == 0 or robot_geoms.size == 0:
        return qpos
    gap = math.inf
    fromto = np.zeros(6)
    for g in robot_geoms:
        if model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0:
            continue
        gap = min(gap, mujoco.mj_geomDistance(model, data, int(g), int(floors[0]), 10.0, fromto))
    if math.isfinite(gap):
        qpos = qpos.copy()
        qpos[2] -= gap - clearance
    return qpos
