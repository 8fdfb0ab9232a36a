"""Placing scene objects: resolved once against the robot (`scene_key`), added to the MJCF at load time.

`scene_key(scene, spec)` measures the robot at its initial pose on the plain model (heading, standing
height, footprint), fills each object's defaults from that size and turns the object into world
coordinates; the result is a JSON string kept on `RobotSpec.scene`, so it travels to simulator worker
processes and into every cache key. `add_objects(mjspec, key)` is what `RobotSpec.load_model()` calls
on the MjSpec before compiling: static objects are bodies without joints; the balance board hinges
on its cylinder (one extra qpos/qvel after the robot's, so the robot's own indices do not move), and
every keyframe's root is lifted onto the board.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nil.errors import ConfigError

if TYPE_CHECKING:
    import mujoco

    from nil.config import SceneConfig
    from nil.robots.spec import RobotSpec

OBJECT_PREFIX = "nil_obj"  # body names: nil_obj{i}_{kind}, attached snippets nil_obj{i}/...
SCENE_VERSION = 1
_WOOD = (0.55, 0.38, 0.22, 1.0)
_METAL = (0.6, 0.6, 0.65, 1.0)


def robot_measures(spec: RobotSpec, model: mujoco.MjModel) -> dict[str, float]:
    """Root position and heading, standing height and the footprint's back/front edge at the initial pose."""
    import mujoco

    data = mujoco.MjData(model)
    data.qpos[:] = spec.initial_qpos(model)
    mujoco.mj_forward(model, data)
    root = spec.root_id(model)
    xmat = data.xmat[root].reshape(3, 3)
    yaw = math.atan2(xmat[1, 0], xmat[0, 0])
    geoms = np.flatnonzero(
        spec.robot_geom_mask(model) & ((model.geom_contype != 0) | (model.geom_conaffinity != 0))
    )
    pos = data.geom_xpos[geoms]
    r = model.geom_rbound[geoms]
    c, s = math.cos(-yaw), math.sin(-yaw)
    rel = pos[:, :2] - data.xpos[root, :2]
    local_x = c * rel[:, 0] - s * rel[:, 1]
    return {
        "x": float(data.xpos[root, 0]),
        "y": float(data.xpos[root, 1]),
        "root_z": float(data.xpos[root, 2]),
        "yaw": yaw,
        "height": float((pos[:, 2] + r).max()),
        "back": float((local_x - r).min()),
        "front": float((local_x + r).max()),
    }


def _plain_measures(spec: RobotSpec) -> dict[str, float]:
    """robot_measures on the robot without any scene objects (a board would lift it)."""
    import dataclasses

    plain = dataclasses.replace(spec, scene="")
    return robot_measures(plain, plain.load_model())


def default_bar_height(height: float) -> float:
    """Reach height: hands overhead, about 1.1 x the standing height (a person's is ~1.2-1.3 x)."""
    return 1.1 * height


def reach_height(height: float) -> float:
    """The highest bar a robot of this standing height can grab from its initial pose."""
    return 1.3 * height


def _resolve(i: int, obj: Any, rm: dict[str, float]) -> dict[str, Any]:
    """One object in world coordinates with every size filled in."""
    h = rm["height"]
    out: dict[str, Any] = {"index": i, "kind": obj.kind, "rgba": list(obj.rgba) if obj.rgba else None}
    if obj.kind == "chair":
        seat_h = obj.height or 0.27 * h
        width = obj.size or max(0.3, 0.25 * h)
        local = obj.pos or (round(rm["back"] - 0.02 - width / 2, 4), 0.0, 0.0)
        out.update(height=seat_h, size=width)
    elif obj.kind == "bar":
        out.update(
            height=obj.height or default_bar_height(h),
            size=obj.size or max(1.2, 1.0 * h),
            radius=obj.radius or 0.02,
        )
        local = obj.pos or (0.0, 0.0, 0.0)
    elif obj.kind == "board":
        out.update(size=obj.size or max(0.4, 0.4 * h), radius=obj.radius or 0.05, thickness=0.03)
        local = obj.pos or (0.0, 0.0, 0.0)
    else:
        if not obj.mjcf:
            raise ConfigError(
                f"scene.objects[{i}].mjcf: kind mjcf needs an MJCF snippet or a path to an .xml file"
            )
        text = obj.mjcf
        if text.strip().endswith((".xml", ".mjcf")) and "<" not in text:
            p = Path(text).expanduser()
            if not p.is_file():
                raise ConfigError(
                    f"scene.objects[{i}].mjcf: {p} does not exist; give an MJCF snippet or a file"
                )
            text = p.read_text()
        out["mjcf"] = text
        local = obj.pos or (0.0, 0.0, 0.0)
    out["local_pos"] = [float(v) for v in local]
    c, s = math.cos(rm["yaw"]), math.sin(rm["yaw"])
    out["pos"] = [
        rm["x"] + c * local[0] - s * local[1],
        rm["y"] + s * local[0] + c * local[1],
        float(local[2]),
    ]
    out["yaw"] = rm["yaw"] + math.radians(obj.yaw_deg)
    return out


_FILLED = {
    "chair": ("height", "size"),
    "bar": ("height", "size", "radius"),
    "board": ("size", "radius"),
    "mjcf": (),
}


def resolved_objects(scene: SceneConfig, spec: RobotSpec) -> list[dict[str, Any]]:
    """scene.objects with every default this robot gives them written out (what skill.yaml records)."""
    if not scene.objects:
        return []
    rm = _plain_measures(spec)
    out = []
    for i, obj in enumerate(scene.objects):
        placed = _resolve(i, obj, rm)
        d = obj.model_dump(mode="json")
        d["pos"] = [round(v, 4) for v in placed["local_pos"]]
        for key in _FILLED[obj.kind]:
            d[key] = round(float(placed[key]), 4)
        out.append(d)
    return out


def scene_key(scene: SceneConfig, spec: RobotSpec) -> str:
    """The scene resolved for this robot, as the JSON string `RobotSpec.scene` holds ("" for no objects)."""
    if not scene.objects:
        return ""
    rm = _plain_measures(spec)
    objects = [_resolve(i, o, rm) for i, o in enumerate(scene.objects)]
    if any(o.grip for o in scene.objects):
        import dataclasses

        from nil.scene.grip import grip_points

        plain = dataclasses.replace(spec, scene="")
        model = plain.load_model()
        for o, cfg in zip(objects, scene.objects, strict=True):
            o["grip_points"] = grip_points(model, plain, o, list(cfg.grip))
    lift = sum(o["radius"] * 2 + o["thickness"] for o in objects if o["kind"] == "board")
    out = {"version": SCENE_VERSION, "objects": objects, "robot_lift": lift, "robot": rm, "task": scene.task}
    return json.dumps(out, sort_keys=True)


def _quat_z(yaw: float) -> list[float]:
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def _box(body: Any, name: str, size: list[float], pos: list[float], rgba: list[float]) -> None:
    import mujoco

    body.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, size=size, pos=pos, rgba=rgba)


def object_body_name(obj: dict[str, Any]) -> str:
    """The body name of a resolved scene object: nil_obj{i}_{kind}."""
    return f"{OBJECT_PREFIX}{obj['index']}_{obj['kind']}"


def add_objects(mjspec: mujoco.MjSpec, key: str) -> mujoco.MjModel:
    """Add the objects of a `scene_key` to an MjSpec and compile it (ConfigError naming the object)."""
    place_objects(mjspec, key)
    try:
        return mjspec.compile()  # the grips' anchors are written after the last compile (robots.spec)
    except Exception as e:
        msg = " ".join(str(e).split())[:200]
        raise ConfigError(
            f"scene.objects: the model does not compile with them ({msg}); fix the scene section"
        ) from None


def place_objects(mjspec: mujoco.MjSpec, key: str) -> None:
    """Add the objects of a `scene_key` to an MjSpec (not compiled; the warp backend's rebuild uses this)."""
    import mujoco

    scene = json.loads(key)
    for o in scene["objects"]:
        name = object_body_name(o)
        pos, quat = o["pos"], _quat_z(o["yaw"])
        if o["kind"] == "mjcf":
            try:
                child = mujoco.MjSpec.from_string(
                    f"<mujoco><worldbody><body name='object'>{o['mjcf']}</body></worldbody></mujoco>"
                )
                frame = mjspec.worldbody.add_frame(pos=pos, quat=quat)
                mjspec.attach(child, prefix=f"{OBJECT_PREFIX}{o['index']}/", frame=frame)
            except Exception as e:
                msg = " ".join(str(e).split())[:200]
                raise ConfigError(
                    f"scene.objects[{o['index']}].mjcf: not a valid MJCF snippet ({msg})"
                ) from None
            continue
        body = mjspec.worldbody.add_body(name=name, pos=pos, quat=quat)
        if o["kind"] == "chair":
            h, w, t = o["height"], o["size"], 0.03
            rgba = o["rgba"] or list(_WOOD)
            _box(body, f"{name}_seat", [w / 2, w / 2, t / 2], [0, 0, h - t / 2], rgba)
            for k, (sx, sy) in enumerate([(1, 1), (1, -1), (-1, 1), (-1, -1)]):
                _box(
                    body,
                    f"{name}_leg{k}",
                    [0.02, 0.02, (h - t) / 2],
                    [sx * (w / 2 - 0.02), sy * (w / 2 - 0.02), (h - t) / 2],
                    rgba,
                )
            # the backrest stands behind the seat (the robot faces +x, away from it)
            _box(body, f"{name}_back", [t / 2, w / 2, 0.4 * w], [-w / 2 + t / 2, 0, h + 0.4 * w], rgba)
        elif o["kind"] == "bar":
            h, length, r = o["height"], o["size"], o["radius"]
            rgba = o["rgba"] or list(_METAL)
            # no posts: a post on the camera's side would hide the robot; the static bar needs none
            body.add_geom(
                name=f"{name}_bar",
                type=mujoco.mjtGeom.mjGEOM_CAPSULE,
                size=[r, 0, 0],
                fromto=[0, -length / 2, h, 0, length / 2, h],
                rgba=rgba,
                friction=[1.5, 0.02, 0.01],
            )
            if o.get("grip_points"):
                from nil.scene.grip import add_grips

                add_grips(mjspec, o)
        elif o["kind"] == "board":
            r, length, t = o["radius"], o["size"], o["thickness"]
            rgba = o["rgba"] or list(_WOOD)
            # the cylinder lies along the robot's heading, so the board rocks left-right
            body.add_geom(
                name=f"{name}_roller",
                type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                size=[r, length / 3, 0],
                pos=[0, 0, r],
                quat=[math.sqrt(0.5), 0, math.sqrt(0.5), 0],
                rgba=list(_METAL),
            )
            deck = body.add_body(name=f"{name}_deck", pos=[0, 0, 2 * r])
            deck.add_joint(
                name=f"{name}_tilt",
                type=mujoco.mjtJoint.mjJNT_HINGE,
                axis=[1, 0, 0],
                range=[-0.35, 0.35],
                damping=0.5,
            )
            deck.add_geom(
                name=f"{name}_top",
                type=mujoco.mjtGeom.mjGEOM_BOX,
                size=[0.3 * length / 2 + 0.1, length / 2, t / 2],
                pos=[0, 0, t / 2],
                rgba=rgba,
                mass=2.0,
            )
    lift = float(scene.get("robot_lift", 0.0))
    if lift:
        for k in mjspec.keys:
            q = list(k.qpos)
            if len(q) >= 3:
                q[2] += lift
                k.qpos = q


def object_index_of_body(model: mujoco.MjModel) -> np.ndarray:
    """int[nbody]: the scene object (index in scene.objects) each body belongs to, -1 for the robot/world."""
    import mujoco

    out = np.full(model.nbody, -1, np.int64)
    for b in range(model.nbody):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b) or ""
        if name.startswith(OBJECT_PREFIX):
            digits = ""
            for ch in name[len(OBJECT_PREFIX) :]:
                if not ch.isdigit():
                    break
                digits += ch
            if digits:
                out[b] = int(digits)
    # bodies nested in an object (an attached snippet's children) belong to it too
    for b in range(1, model.nbody):
        if out[b] < 0 and out[model.body_parentid[b]] >= 0:
            out[b] = out[model.body_parentid[b]]
    return out


def object_geom_mask(model: mujoco.MjModel) -> np.ndarray:
    """bool[ngeom]: geoms of scene objects (for the optional object mask)."""
    return object_index_of_body(model)[model.geom_bodyid] >= 0
