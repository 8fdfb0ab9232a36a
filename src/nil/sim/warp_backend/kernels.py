"""The backend's own Warp kernels (compiled once per process, into the module "nil_warp_backend")."""

# Warp kernel signatures are annotations built by calls (wp.array2d(dtype=...)), which Warp reads and
# mypy cannot: the one check this file opts out of.
# mypy: disable-error-code="valid-type, name-defined"

from __future__ import annotations

from functools import lru_cache
from typing import Any

from nil.sim.warp_backend.status import import_warp


@lru_cache(maxsize=1)
def kernels() -> dict[str, Any]:
    """name -> Warp kernel: tracking_camera, sanitize, apply_reset."""
    wp, _ = import_warp()

    @wp.kernel(module="nil_warp_backend")
    def tracking_camera(
        xpos: wp.array2d(dtype=wp.vec3),
        root: int,
        cam: int,
        lookat_z: float,
        offset: wp.vec3,
        cam_mat: wp.mat33,
        fixed: int,
        anchor: wp.vec3,
        cam_xpos: wp.array2d(dtype=wp.vec3),
        cam_xmat: wp.array2d(dtype=wp.mat33),
    ):
        w = wp.tid()
        p = xpos[w, root]
        if fixed != 0:
            p = anchor  # camera.track: fixed (nil.sim.render.camera_anchor)
        if not (wp.isfinite(p[0]) and wp.isfinite(p[1]) and wp.isfinite(p[2])):
            p = wp.vec3(0.0, 0.0, 0.0)  # as the GL renderer does
        cam_xpos[w, cam] = wp.vec3(p[0], p[1], p[2] + lookat_z) + offset
        cam_xmat[w, cam] = cam_mat

    @wp.kernel(module="nil_warp_backend")
    def sanitize(
        qpos: wp.array2d(dtype=float),
        qvel: wp.array2d(dtype=float),
        qpos0: wp.array(dtype=float),
        bad: wp.array(dtype=wp.int32),
    ):
        # A non-finite world would poison the shared scene BVH; put it back to the initial pose and flag it.
        w = wp.tid()
        ok = int(1)  # noqa: UP018 (Warp: a plain literal cannot be reassigned in a dynamic loop)
        for i in range(qpos.shape[1]):
            if not wp.isfinite(qpos[w, i]):
                ok = 0
        for i in range(qvel.shape[1]):
            if not wp.isfinite(qvel[w, i]):
                ok = 0
        if ok == 0:
            bad[w] = 1
            for i in range(qpos.shape[1]):
                qpos[w, i] = qpos0[i]
            for i in range(qvel.shape[1]):
                qvel[w, i] = 0.0

    @wp.kernel(module="nil_warp_backend")
    def apply_reset(
        reset: wp.array(dtype=bool),
        qpos_new: wp.array2d(dtype=float),
        qvel_new: wp.array2d(dtype=float),
        ctrl0: wp.array(dtype=float),
        qpos: wp.array2d(dtype=float),
        qvel: wp.array2d(dtype=float),
        ctrl: wp.array2d(dtype=float),
        bad: wp.array(dtype=wp.int32),
    ):
        # the reset pose (with its noise, drawn on the host by nil.sim.task) of the worlds being reset
        w = wp.tid()
        if not reset[w]:
            return
        for i in range(qpos.shape[1]):
            qpos[w, i] = qpos_new[w, i]
        for i in range(qvel.shape[1]):
            qvel[w, i] = qvel_new[w, i]
        for i in range(ctrl.shape[1]):
            ctrl[w, i] = ctrl0[i]
        bad[w] = 0

    return {"tracking_camera": tracking_camera, "sanitize": sanitize, "apply_reset": apply_reset}
