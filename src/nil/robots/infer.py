"""Infer a RobotSpec's bodies and camera from a compiled model: floating root, torso, feet, view distance."""

from __future__ import annotations

import math

import mujoco
import numpy as np

from nil.errors import RobotError

# Fraction of the image height the robot's largest side-view extent should fill.
_CAMERA_FILL = 0.6


def find_root(model: mujoco.MjModel) -> int:
    """Body id of the robot's floating root (first body with a free joint)."""
    free = np.flatnonzero(model.jnt_type == mujoco.mjtJoint.mjJNT_FREE)
    if free.size == 0:
        raise RobotError(
            "model has no floating root (no body with a <freejoint/>): NIL learns free-moving robots; "
            "add <freejoint/> to the robot's base body"
        )
    jnt = int(free[0])
    if model.jnt_qposadr[jnt] != 0:
        raise RobotError(
            "the robot's free joint must be the model's first joint (qpos[0:7]); put the robot before other "
            "free bodies in the MJCF"
        )
    return int(model.jnt_bodyid[jnt])


def body_name(model: mujoco.MjModel, bid: int) -> str:
    """Name of a body (load_model names every body)."""
    return mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, bid) or f"body{bid}"


def forward_at(model: mujoco.MjModel, qpos: np.ndarray) -> mujoco.MjData:
    """MjData with kinematics computed at qpos."""
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_forward(model, data)
    return data


def find_feet(model: mujoco.MjModel, data: mujoco.MjData, root: int) -> list[int]:
    """Lowest leaf bodies of the robot at the pose in `data` (within 10% of the robot's height)."""
    in_robot = model.body_rootid == model.body_rootid[root]
    has_child = np.zeros(model.nbody, dtype=bool)
    has_child[model.body_parentid[1:]] = True
    leaves = [b for b in range(1, model.nbody) if in_robot[b] and not has_child[b] and b != root]
    if not leaves:
        return []
    z = np.array([data.xpos[b, 2] for b in leaves])
    lo, hi = robot_bounds(model, data, root)
    tol = max(0.03, 0.1 * float(hi[2] - lo[2]))
    return [b for b, zb in zip(leaves, z, strict=True) if zb <= z.min() + tol]


def robot_bounds(model: mujoco.MjModel, data: mujoco.MjData, root: int) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds (lo[3], hi[3]) of the robot's geoms (bounding spheres) at the pose in `data`."""
    in_robot = (model.body_rootid == model.body_rootid[root])[model.geom_bodyid]
    idx = np.flatnonzero(in_robot & (model.geom_type != mujoco.mjtGeom.mjGEOM_PLANE))
    if idx.size == 0:
        p = data.xpos[root]
        return p - 0.1, p + 0.1
    pos, r = data.geom_xpos[idx], model.geom_rbound[idx][:, None]
    # rbound over-estimates long capsules/meshes a little; fine for framing
    return (pos - r).min(axis=0), (pos + r).max(axis=0)


def camera_framing(
    model: mujoco.MjModel, data: mujoco.MjData, root: int, fovy: float, azimuth: float
) -> tuple[float, float]:
    """(distance, lookat_z) so that the robot fills ~60% of the image height, centred vertically."""
    lo, hi = robot_bounds(model, data, root)
    height = float(hi[2] - lo[2])
    az = math.radians(azimuth)
    # horizontal extent across the image: along the camera's right axis (sin az, -cos az)
    right = np.array([math.sin(az), -math.cos(az)])
    span = float(abs((hi[:2] - lo[:2]) @ np.abs(right)))
    size = max(height, span, 0.2)
    distance = size / (_CAMERA_FILL * 2.0 * math.tan(math.radians(fovy) / 2.0))
    lookat_z = float((lo[2] + hi[2]) / 2.0 - data.xpos[root, 2])
    return distance, lookat_z
