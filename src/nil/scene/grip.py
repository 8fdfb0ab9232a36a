"""Gripping a bar (beyond the paper): a hand that comes near the bar holds on to it.

NIL's robots have no fingers in their action space, and contacts alone cannot hold a hand on a bar, so
`scene.objects[i].grip` names robot bodies (the hands) that grip it. Each becomes a MuJoCo `connect`
equality between a point of the hand (its farthest collision geom's centre, in the hand's frame) and a
point on the bar's axis (the hand's initial position projected onto it), inactive at reset. The
simulator switches a grip on once the two points come within `GRIP_RADIUS` (checked every control
step, `GripTable.update`); it stays on until the episode resets. Hand/bar contacts are excluded, since the
constraint holds the hand's centre on the bar's axis. The synthetic teacher grips the same way, through
the same simulator. CPU simulator only: the Warp backend refuses a scene with grips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nil.errors import ConfigError
from nil.scene.build import object_body_name

if TYPE_CHECKING:
    import mujoco

    from nil.robots.spec import RobotSpec

GRIP_RADIUS = 0.08  # m: a hand point this close to its bar point takes hold
GRIP_HOLD = 0.03  # m: a hand point this close to its bar point counts as on the bar (success measure)
GRIP_TAG = "_grip"  # equality names: nil_obj{i}_bar_grip{k}


def hand_tip_local(model: mujoco.MjModel, body: int) -> np.ndarray:
    """A hand body's grip point, in its frame: the centre of its collision geom farthest from its origin."""
    geoms = np.flatnonzero(
        (model.geom_bodyid == body) & ((model.geom_contype != 0) | (model.geom_conaffinity != 0))
    )
    if geoms.size == 0:
        geoms = np.flatnonzero(model.geom_bodyid == body)
    g = int(geoms[np.argmax(np.linalg.norm(model.geom_pos[geoms], axis=1))])
    return model.geom_pos[g].astype(float)


def hand_tip_world(model: mujoco.MjModel, data: mujoco.MjData, body: int) -> np.ndarray:
    """World position of a hand body's grip point (`hand_tip_local`) in `data` (after kinematics)."""
    return data.xpos[body] + data.xmat[body].reshape(3, 3) @ hand_tip_local(model, body)


def grip_name(obj: dict[str, Any], k: int) -> str:
    """The equality name of grip k of a bar: its body's name + GRIP_TAG + k."""
    return f"{object_body_name(obj)}{GRIP_TAG}{k}"


def grip_points(model: mujoco.MjModel, spec: RobotSpec, obj: dict[str, Any], names: list[str]) -> list[dict]:
    """For each gripping body: its hand point (body frame) and its bar point (bar frame), from the initial
    pose of the plain model. ConfigError naming scene.objects[i].grip for an unknown body or a non-bar."""
    import mujoco

    i = obj["index"]
    if not names:
        return []
    if obj["kind"] != "bar":
        raise ConfigError(
            f"scene.objects[{i}].grip: only a bar can be gripped, this object is a {obj['kind']}"
        )
    data = mujoco.MjData(model)
    data.qpos[:] = spec.initial_qpos(model)
    mujoco.mj_kinematics(model, data)
    robot = spec.robot_geom_mask(model)
    c, s = math.cos(obj["yaw"]), math.sin(obj["yaw"])
    out = []
    for name in names:
        b = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
        if b < 0 or not robot[model.geom_bodyid == b].any():
            raise ConfigError(
                f"scene.objects[{i}].grip: {spec.name} has no body {name!r} with a geom; name its hand bodies"
            )
        local = hand_tip_local(model, b)
        world = hand_tip_world(model, data, b)
        rel = world[:2] - np.asarray(obj["pos"][:2])
        along = -s * rel[0] + c * rel[1]  # the bar lies along its frame's y axis
        half = obj["size"] / 2
        out.append(
            {
                "body": name,
                "hand_local": [round(float(v), 6) for v in local],
                "bar_local": [0.0, round(float(np.clip(along, -half, half)), 6), float(obj["height"])],
            }
        )
    return out


def add_grips(mjspec: mujoco.MjSpec, obj: dict[str, Any]) -> None:
    """The (inactive) connect constraints and the hand/bar contact exclusions (the hand body and its parent)
    of one bar's grips."""
    import mujoco

    bar_body = object_body_name(obj)
    for k, gp in enumerate(obj.get("grip_points", [])):
        # the wrist above a small hand body (G1's) closes around the bar as well
        for body in (gp["body"], mjspec.body(gp["body"]).parent.name):
            mjspec.add_exclude(bodyname1=body, bodyname2=bar_body)
        mjspec.add_equality(
            name=grip_name(obj, k),
            type=mujoco.mjtEq.mjEQ_CONNECT,
            objtype=mujoco.mjtObj.mjOBJ_BODY,
            name1=gp["body"],
            name2=bar_body,
            active=False,
        )


def set_grip_anchors(model: mujoco.MjModel, objects: list[dict[str, Any]]) -> None:
    """Both anchors of every grip, into the compiled model (the compiler derives the second from qpos0)."""
    import mujoco

    for o in objects:
        for k, gp in enumerate(o.get("grip_points", [])):
            e = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_EQUALITY, grip_name(o, k))
            model.eq_data[e, 0:3] = gp["hand_local"]
            model.eq_data[e, 3:6] = gp["bar_local"]


@dataclass
class GripTable:
    """The grips of a model: equality ids, hand and bar bodies, both anchors (empty without a gripped bar)."""

    eq: np.ndarray
    hand: np.ndarray
    bar: np.ndarray
    hand_local: np.ndarray
    bar_local: np.ndarray

    @classmethod
    def of(cls, model: mujoco.MjModel) -> GripTable:
        import mujoco

        ids = [
            e
            for e in range(model.neq)
            if model.eq_type[e] == mujoco.mjtEq.mjEQ_CONNECT
            and GRIP_TAG in (mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_EQUALITY, e) or "")
        ]
        eq = np.asarray(ids, dtype=np.int64)
        return cls(
            eq,
            model.eq_obj1id[eq].astype(np.int64),
            model.eq_obj2id[eq].astype(np.int64),
            model.eq_data[eq, 0:3].copy(),
            model.eq_data[eq, 3:6].copy(),
        )

    def __len__(self) -> int:
        return int(self.eq.size)

    def distances(self, data: mujoco.MjData) -> np.ndarray:
        """float[n]: world distance between each grip's hand point and its bar point (after kinematics)."""
        xmat_h = data.xmat[self.hand].reshape(-1, 3, 3)
        xmat_b = data.xmat[self.bar].reshape(-1, 3, 3)
        hand = data.xpos[self.hand] + np.einsum("nij,nj->ni", xmat_h, self.hand_local)
        bar = data.xpos[self.bar] + np.einsum("nij,nj->ni", xmat_b, self.bar_local)
        return np.linalg.norm(hand - bar, axis=1)

    def update(self, data: mujoco.MjData) -> None:
        """Switch on every grip whose hand is within GRIP_RADIUS of its bar point (they never let go)."""
        if len(self):
            near = self.distances(data) < GRIP_RADIUS
            data.eq_active[self.eq[near]] = 1
