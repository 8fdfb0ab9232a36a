"""How much of each joint's motion the tracking camera cannot see (for `reward.unseen_joint_coef`).

A hinge turning by dq moves each geom it carries by dq * (axis x lever), the lever running from the joint's
anchor to the geom. The part of that displacement along the camera's viewing ray
changes no pixel: a side camera sees a thigh swing (axis along the ray, the limb moves in the image plane)
and misses a hip abduction (axis across the ray, the limb moves towards the lens). The video therefore
says nothing about the second, and a policy is free to use it (the A1 walks with its hips splayed).

A joint's unseen fraction = sum over its geoms of |(axis x lever) . ray| / sum of |axis x lever|, in the
reset pose (far geoms, which sweep more pixels, count more): 0 for a motion wholly in the image plane, 1 for
one wholly along the ray. A slide joint's is |axis . ray|. The penalty weighs a joint by the fraction
squared, the share of its squared displacement that lies along the ray: a vertical motion seen from 20 deg
above (0.34, so 0.12) stays nearly free, an abduction seen side-on (0.9, so 0.8) does not. Read from the
MJCF and the camera only, never from a reference or a teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import mujoco
import numpy as np

from nil.robots.spec import free_camera_basis

if TYPE_CHECKING:
    from nil.robots.spec import RobotSpec


@dataclass(frozen=True)
class UnseenJoints:
    """The robot's hinge and slide joints: where they sit in qpos, their reset angle, and how unseen."""

    names: tuple[str, ...]
    qpos_adr: np.ndarray  # [J] int, index into qpos
    rest: np.ndarray  # [J] float, the reset pose's value
    unseen: np.ndarray  # [J] float in [0, 1]


def _subtree_geoms(model: mujoco.MjModel, body: int) -> np.ndarray:
    """Indices of the geoms on `body` and every body below it."""
    inside = np.zeros(model.nbody, dtype=bool)
    inside[body] = True
    for b in range(body + 1, model.nbody):  # MuJoCo numbers a parent before its children
        inside[b] = inside[model.body_parentid[b]]
    return np.flatnonzero(inside[model.geom_bodyid])


def unseen_joints(spec: RobotSpec, model: mujoco.MjModel | None = None) -> UnseenJoints:
    """Every hinge/slide joint's unseen fraction under `spec.camera`, in the robot's reset pose."""
    model = spec.load_model() if model is None else model
    data = mujoco.MjData(model)
    data.qpos[:] = spec.initial_qpos(model)
    mujoco.mj_forward(model, data)
    ray, _, _ = free_camera_basis(spec.camera.azimuth, spec.camera.elevation)
    names, adrs, rest, unseen = [], [], [], []
    for j in range(model.njnt):
        kind = int(model.jnt_type[j])
        if kind not in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
            continue
        axis = np.asarray(data.xaxis[j], dtype=np.float64)
        if kind == mujoco.mjtJoint.mjJNT_SLIDE:
            frac = abs(float(axis @ ray))
        else:
            geoms = _subtree_geoms(model, int(model.jnt_bodyid[j]))
            move = np.cross(axis, data.geom_xpos[geoms] - data.xanchor[j])  # [G, 3] per unit angle
            size = float(np.linalg.norm(move, axis=1).sum())
            # geoms on the axis (a wheel spinning about its own centre) do not move: call the joint seen
            frac = float(np.abs(move @ ray).sum()) / size if size > 1e-9 else 0.0
        adr = int(model.jnt_qposadr[j])
        names.append(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) or f"joint{j}")
        adrs.append(adr)
        rest.append(float(data.qpos[adr]))
        unseen.append(min(frac, 1.0))
    return UnseenJoints(
        tuple(names), np.asarray(adrs, dtype=np.int64), np.asarray(rest), np.asarray(unseen, dtype=np.float64)
    )
