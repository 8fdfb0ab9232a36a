"""The objects' own mask, from the robot's tracking camera (for e0, flat backgrounds, an object IoU)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nil.scene.build import object_geom_mask

if TYPE_CHECKING:
    import mujoco

    from nil.robots.spec import RobotSpec


def object_masks(model: mujoco.MjModel, spec: RobotSpec, qpos: np.ndarray) -> np.ndarray:
    """bool[T, H, W]: pixels of scene objects at each state qpos[t] (all False without objects)."""
    import mujoco

    from nil.sim.render import RobotRenderer

    qpos = np.atleast_2d(qpos)
    out = np.zeros((len(qpos), int(spec.camera.height), int(spec.camera.width)), bool)
    objects = object_geom_mask(model)
    if not objects.any():
        return out
    data = mujoco.MjData(model)
    with RobotRenderer(model, spec) as renderer:
        renderer._is_robot_geom = objects  # the same segmentation pass, with the objects as the foreground
        for t, q in enumerate(qpos):
            data.qpos[:] = q
            mujoco.mj_forward(model, data)
            renderer.render_into(data, None, out[t])
    return out


def render_object_mask(model: mujoco.MjModel, spec: RobotSpec, data: mujoco.MjData) -> np.ndarray:
    """bool[H, W]: pixels of scene objects at the state in `data`."""
    return object_masks(model, spec, data.qpos.copy())[0]
