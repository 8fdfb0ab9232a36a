"""Scenes that cannot work, refused before anything runs: one-line errors naming the setting."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import numpy as np

from nil.errors import ConfigError
from nil.scene.build import object_index_of_body, reach_height

if TYPE_CHECKING:
    import mujoco

    from nil.robots.spec import RobotSpec

PENETRATION_TOL = 0.01  # m; resting contact (a foot on the board) is allowed, overlap is not


def check_scene(spec: RobotSpec, model: mujoco.MjModel | None = None) -> None:
    """ConfigError when an object intersects the robot at its initial pose, or a bar is out of reach."""
    import mujoco

    if not spec.scene:
        return
    scene = json.loads(spec.scene)
    rm = scene["robot"]
    for o in scene["objects"]:
        if o["kind"] != "bar":
            continue
        i, reach = o["index"], reach_height(rm["height"])
        if o["height"] > reach:
            raise ConfigError(
                f"scene.objects[{i}].height: a bar at {o['height']:.2f} m is out of {spec.name}'s reach "
                f"(about {reach:.2f} m from its initial pose); lower it, or leave it empty for reach height"
            )
        dist = math.hypot(o["pos"][0] - rm["x"], o["pos"][1] - rm["y"])
        if dist > 0.4 * rm["height"]:
            raise ConfigError(
                f"scene.objects[{i}].pos: the bar is {dist:.2f} m from the robot, beyond its arms' reach "
                f"(about {0.4 * rm['height']:.2f} m); move it closer"
            )
    model = model if model is not None else spec.load_model()
    data = mujoco.MjData(model)
    data.qpos[:] = spec.initial_qpos(model)
    mujoco.mj_forward(model, data)
    robot = spec.robot_geom_mask(model)
    obj_of_geom = object_index_of_body(model)[model.geom_bodyid]
    worst: dict[int, float] = {}
    for c in range(data.ncon):
        con = data.contact[c]
        g1, g2 = int(con.geom[0]), int(con.geom[1])
        for a, b in ((g1, g2), (g2, g1)):
            if robot[a] and obj_of_geom[b] >= 0:
                k = int(obj_of_geom[b])
                worst[k] = min(worst.get(k, 0.0), float(con.dist))
    bad = {k: d for k, d in worst.items() if d < -PENETRATION_TOL}
    if bad:
        k = min(bad)
        kind = scene["objects"][k]["kind"]
        raise ConfigError(
            f"scene.objects[{k}].pos: the {kind} intersects {spec.name} at its initial pose (by "
            f"{-bad[k] * 100:.0f} cm); move it away from the robot"
        )


def objects_seen(spec: RobotSpec) -> np.ndarray:
    """bool[n_objects]: which objects have a geom in the loaded model (a sanity check for tests and eval)."""
    model = spec.load_model()
    idx = object_index_of_body(model)[model.geom_bodyid]
    n = len(json.loads(spec.scene)["objects"]) if spec.scene else 0
    return np.array([(idx == i).any() for i in range(n)], bool)
