"""The MJCF rebuild: the CPU backend's model plus the world camera MJWarp renders from; put_model checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import mujoco
import numpy as np

from nil.errors import RobotError, SimulationError
from nil.sim.warp_backend.status import import_warp

if TYPE_CHECKING:
    from nil.robots.spec import RobotSpec

CAMERA_NAME = "nil_track"


def _public_fields(obj: Any) -> Iterator[tuple[str, Any]]:
    """(name, value) of each public attribute of a MuJoCo struct that can be read (some raise)."""
    for k in dir(obj):
        if k.startswith("_"):
            continue
        try:
            v = getattr(obj, k)
        except Exception:
            continue
        yield k, v


def _model_arrays(model: mujoco.MjModel) -> dict[str, np.ndarray]:
    return {k: v for k, v in _public_fields(model) if isinstance(v, np.ndarray)}


def _copy_struct(dst: Any, src: Any) -> None:
    for k, v in _public_fields(src):
        if callable(v):
            continue
        if isinstance(v, np.ndarray):
            np.copyto(getattr(dst, k), v)
            continue
        try:
            setattr(dst, k, v)
        except (AttributeError, TypeError):
            pass


def tracking_model(spec: RobotSpec, base: mujoco.MjModel | None = None) -> mujoco.MjModel:
    """The CPU backend's model (spec.load_model()) plus one world camera that the tracking pose is written to.

    MuJoCo Warp renders model cameras only, while the GL renderer uses a free camera; a camera does not
    change the physics. The model is recompiled from the MJCF with the camera added (and the floor/light
    that load_model adds when the MJCF lacks them), then every array and option of spec.load_model() is
    copied over, so whatever the robot layer changes (control mode, visual settings) carries across.
    """
    if base is None:
        # MJWarp ray-traces meshes through a BVH: no need for the CPU renderer's decimated visual meshes,
        # and the exact meshes are what a fresh compile of the MJCF gives (physics is identical either way)
        exact = dataclasses.replace(spec, simplify_meshes=False) if hasattr(spec, "simplify_meshes") else spec
        base = exact.load_model()
    names = [mujoco.mj_id2name(base, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(base.ncam)]
    if CAMERA_NAME in names:
        model = base
    else:
        try:
            ms = mujoco.MjSpec.from_file(str(spec.mjcf_path))
            fresh = ms.compile()
        except Exception as e:
            raise RobotError(f"cannot load MJCF {spec.mjcf_path} for the warp backend: {e}") from None
        body_names = [mujoco.mj_id2name(base, mujoco.mjtObj.mjOBJ_BODY, i) for i in range(base.nbody)]
        # scene objects (nil.scene) come after the robot's bodies; they are placed again below
        obj_bodies, obj_geoms = 0, 0
        if getattr(spec, "scene", ""):
            from nil.scene.build import object_index_of_body

            in_obj = object_index_of_body(base) >= 0
            obj_bodies, obj_geoms = int(in_obj.sum()), int(in_obj[base.geom_bodyid].sum())
        if len(ms.bodies) == base.nbody - obj_bodies:  # both list the bodies depth-first, world first
            for body, name in zip(ms.bodies, body_names[: len(ms.bodies)], strict=True):
                if name and body.name != name:
                    body.name = name
        # the floor load_model adds to floor-less models
        for _ in range(base.ngeom - obj_geoms - fresh.ngeom):
            ms.worldbody.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 0.05])
        for _ in range(base.nlight - fresh.nlight):
            ms.worldbody.add_light(pos=[0, 0, 4.0], dir=[0, 0, -1.0])
        if getattr(spec, "scene", ""):  # the skill's scene objects, as load_model adds them (nil.scene)
            from nil.scene.build import place_objects

            place_objects(ms, spec.scene)
        ms.worldbody.add_camera(name=CAMERA_NAME, pos=[0, 0, 0])
        model = ms.compile()
        sizes = ("nq", "nv", "nu", "na", "nbody", "njnt", "ngeom", "nmesh", "nlight", "nmat", "ntex", "neq")
        bad = [s for s in sizes if getattr(model, s) != getattr(base, s)]
        if (
            not bad
            and [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, i) for i in range(model.nbody)]
            != body_names
        ):
            bad = ["body names"]
        if bad:
            raise SimulationError(
                f"the warp backend could not rebuild {spec.name}'s model ({', '.join(bad)} differ from "
                "RobotSpec.load_model()); use sim.backend=mujoco and report this"
            )
        dst = _model_arrays(model)
        src = _model_arrays(base)
        skip = ("name", "cam_", "text_", "paths")
        bad = [k for k, v in src.items() if not k.startswith(skip) and k in dst and dst[k].shape != v.shape]
        if bad:
            raise SimulationError(
                f"the warp backend could not rebuild {spec.name}'s model ({', '.join(bad[:5])} differ from "
                "RobotSpec.load_model()); use sim.backend=mujoco and report this"
            )
        for k, v in src.items():
            if not k.startswith(skip) and k in dst:
                np.copyto(dst[k], v)
        for sub in ("opt", "stat"):
            _copy_struct(getattr(model, sub), getattr(base, sub))
        for sub in ("global_", "quality", "headlight", "map", "scale", "rgba"):
            _copy_struct(getattr(model.vis, sub), getattr(base.vis, sub))
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA_NAME)
    model.cam_mode[cam] = mujoco.mjtCamLight.mjCAMLIGHT_FIXED
    model.cam_bodyid[cam] = 0
    model.cam_fovy[cam] = float(spec.camera.fovy)
    model.cam_projection[cam] = mujoco.mjtProjection.mjPROJ_PERSPECTIVE
    model.cam_intrinsic[cam] = 0.0
    model.cam_sensorsize[cam] = 0.0
    model.cam_resolution[cam] = (int(spec.camera.width), int(spec.camera.height))
    return model


def check_put_model(spec: RobotSpec) -> dict[str, Any]:
    """Load the model the CPU backend uses through mujoco_warp.put_model (on Warp's CPU device).

    Raises RobotError naming the unsupported feature, so CI fails instead of a user's GPU run.
    """
    wp, mjw = import_warp()
    model = tracking_model(spec)
    try:
        with wp.ScopedDevice("cpu"):
            mjw.put_model(model)
    except Exception as e:
        raise RobotError(
            f"robot {spec.name!r} uses a feature MuJoCo Warp does not support ({type(e).__name__}: {e}); "
            "use sim.backend=mujoco for it"
        ) from None
    return {
        "robot": spec.name,
        "nq": int(model.nq),
        "nv": int(model.nv),
        "nu": int(model.nu),
        "ngeom": int(model.ngeom),
        "nmesh": int(model.nmesh),
    }
