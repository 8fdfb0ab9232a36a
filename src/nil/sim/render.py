"""RobotRenderer: RGB + the exact robot mask from one tracking camera, with fast CPU render settings.

Both images come from ONE scene update (mjv_updateScene) and two passes over it: a normal colour
pass and a segmentation pass (mjRND_SEGMENT + mjRND_IDCOLOR). A segmentation pixel's colour encodes
(scene geom index + 1); it maps to the robot when that scene geom is a model geom (objtype mjOBJ_GEOM)
in the robot's body subtree. Shadows, reflections, skybox and MSAA are off (~10x faster on llvmpipe).
"""

from __future__ import annotations

import os

import mujoco
import numpy as np

from nil.errors import RobotError
from nil.gl import ensure_offscreen_gl
from nil.robots.spec import RobotSpec, free_camera_basis


def _check_gl_platform() -> None:
    """Fail clearly when mujoco was imported (choosing GLFW) before nil could pick EGL (headless)."""
    cls = mujoco.GLContext
    if "glfw" in getattr(cls, "__module__", "") and not os.environ.get("DISPLAY"):
        raise RobotError(
            "mujoco chose the GLFW backend but there is no display: set MUJOCO_GL=egl in the environment, or "
            "import nil (or call nil.gl.ensure_offscreen_gl()) before importing mujoco"
        )


class RobotRenderer:
    """Renders (rgb [H,W,3] uint8, mask [H,W] bool) of a robot from its tracking camera."""

    def __init__(self, model: mujoco.MjModel, spec: RobotSpec, max_geom: int = 2000) -> None:
        ensure_offscreen_gl()
        self.model, self.spec = model, spec
        cam = spec.camera
        self.width, self.height = int(cam.width), int(cam.height)
        if model.vis.global_.offwidth < self.width or model.vis.global_.offheight < self.height:
            raise RobotError(
                "the model's offscreen buffer is smaller than the camera; load it with spec.load_model()"
            )
        self._gl = None
        self._ctx = None
        try:
            _check_gl_platform()
            self._gl = mujoco.GLContext(self.width, self.height)
            self._gl.make_current()
            self._ctx = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
        except RobotError:
            raise
        except Exception as e:  # no usable OpenGL
            self.close()
            raise RobotError(
                f"cannot create an OpenGL context ({e}); set MUJOCO_GL=egl (before mujoco is "
                "imported) and install libEGL (Mesa); `nil doctor` shows the GL backend"
            ) from None
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
        self._scene = mujoco.MjvScene(model, maxgeom=max_geom)
        self._opt = mujoco.MjvOption()
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        self._cam.distance = float(cam.distance)
        self._cam.elevation = float(cam.elevation)
        self._cam.azimuth = float(cam.azimuth)
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        flags = self._scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        flags[mujoco.mjtRndFlag.mjRND_FOG] = 0
        self._root = spec.root_id(model)
        self._is_robot_geom = spec.robot_geom_mask(model)
        self._lookat_z = float(cam.lookat_z)
        self._lookat_offset = np.asarray(cam.lookat_offset, dtype=np.float64)
        self._anchor = camera_anchor(spec, model)
        # scratch buffers (GL rows are bottom-up; we flip on the copy out)
        self._rgb_buf = np.empty((self.height, self.width, 3), np.uint8)
        self._seg_buf = np.empty((self.height, self.width, 3), np.uint8)
        self._segid = np.empty((self.height, self.width), np.int32)
        self._lut: np.ndarray | None = None
        self._lut_ngeom = -1

    # ----------------------------------------------------------------------
    def _update(self, data: mujoco.MjData) -> None:
        p = data.xpos[self._root] if self._anchor is None else self._anchor
        if not np.all(np.isfinite(p)):
            p = np.zeros(3)
        o = self._lookat_offset
        self._cam.lookat[:] = (p[0] + o[0], p[1] + o[1], p[2] + self._lookat_z + o[2])
        mujoco.mjv_updateScene(
            self.model, data, self._opt, None, self._cam, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )

    def _segment_lut(self) -> np.ndarray:
        """bool[ngeom_scene + 1]: segid -> robot pixel (0 = background); cached while the layout holds."""
        n = self._scene.ngeom
        if self._lut is not None and n == self._lut_ngeom:
            return self._lut
        lut = np.zeros(n + 1, dtype=bool)
        geoms = self._scene.geoms
        for i in range(n):
            g = geoms[i]
            if (
                g.segid >= 0
                and g.objtype == mujoco.mjtObj.mjOBJ_GEOM
                and 0 <= g.objid < self._is_robot_geom.size
            ):
                lut[g.segid + 1] = self._is_robot_geom[g.objid]
        self._lut, self._lut_ngeom = lut, n
        return lut

    def render_into(
        self, data: mujoco.MjData, rgb_out: np.ndarray | None, mask_out: np.ndarray | None
    ) -> None:
        """Render into preallocated rgb_out [H,W,3] uint8 and mask_out [H,W] bool; either may be None."""
        if self._ctx is None or self._gl is None:
            raise RuntimeError("RobotRenderer is closed")
        self._gl.make_current()
        # re-bind our offscreen buffer every time: creating another MjrContext in this process leaves
        # this one drawing into a stale framebuffer state (black frames) until it is bound again
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
        self._update(data)
        flags = self._scene.flags
        if rgb_out is not None:
            mujoco.mjr_render(self._rect, self._scene, self._ctx)
            mujoco.mjr_readPixels(self._rgb_buf, None, self._rect, self._ctx)
            np.copyto(rgb_out, self._rgb_buf[::-1])
        if mask_out is not None:
            flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 1
            flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 1
            try:
                mujoco.mjr_render(self._rect, self._scene, self._ctx)
                mujoco.mjr_readPixels(self._seg_buf, None, self._rect, self._ctx)
            finally:
                flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 0
                flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 0
            seg = self._seg_buf
            segid = self._segid
            np.copyto(segid, seg[..., 0])
            if self._scene.ngeom >= 255:  # ids above 255 spill into the green/blue channels
                segid |= seg[..., 1].astype(np.int32) << 8
                segid |= seg[..., 2].astype(np.int32) << 16
            lut = self._segment_lut()
            np.clip(segid, 0, lut.size - 1, out=segid)
            np.take(lut, segid[::-1], out=mask_out)

    def set_camera(
        self,
        *,
        distance: float,
        azimuth: float,
        elevation: float,
        fovy: float,
        lookat_offset: tuple[float, float, float] | np.ndarray = (0.0, 0.0, 0.0),
    ) -> None:
        """Move the tracking camera (the camera fit renders many candidate cameras with one context)."""
        self._cam.distance, self._cam.azimuth, self._cam.elevation = distance, azimuth, elevation
        self._lookat_offset = np.asarray(lookat_offset, dtype=np.float64)
        self.model.vis.global_.fovy = float(fovy)  # the free camera's field of view is the model's

    def render(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        """(rgb [H,W,3] uint8, mask [H,W] bool, True on robot pixels) of the current state."""
        rgb = np.empty((self.height, self.width, 3), np.uint8)
        mask = np.empty((self.height, self.width), bool)
        self.render_into(data, rgb, mask)
        return rgb, mask

    def close(self) -> None:
        """Free the GL context (safe to call twice)."""
        if self._ctx is not None and self._gl is not None:
            # as_current restores whichever context was current: close() may run from the garbage
            # collector in the middle of another renderer's GL calls.
            try:
                if hasattr(self._gl, "as_current"):
                    with self._gl.as_current():
                        self._ctx.free()
                else:
                    self._gl.make_current()
                    self._ctx.free()
            except Exception:
                pass
        self._ctx = None
        if self._gl is not None:
            try:
                self._gl.free()
            except Exception:
                pass
        self._gl = None

    def __enter__(self) -> RobotRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def camera_anchor(spec: RobotSpec, model: mujoco.MjModel) -> np.ndarray | None:
    """The point a `camera.track: fixed` camera follows in place of the root: the root's world position at
    the initial pose (the same for e0, the synthetic reference and every env). None: it tracks the root."""
    if spec.camera.track == "root":
        return None
    if spec.camera.track != "fixed":
        raise RobotError(f"camera.track must be 'root' or 'fixed', got {spec.camera.track!r}")
    data = mujoco.MjData(model)
    data.qpos[:] = spec.initial_qpos(model)
    mujoco.mj_kinematics(model, data)
    return data.xpos[spec.root_id(model)].copy()


def camera_position(spec: RobotSpec, lookat: np.ndarray) -> np.ndarray:
    """World position of the tracking camera for a given lookat point (for tests and other backends)."""
    c = spec.camera
    fwd, _, _ = free_camera_basis(c.azimuth, c.elevation)
    return np.asarray(lookat, float) - c.distance * fwd
