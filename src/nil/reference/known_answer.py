"""Known-answer references for the camera fit and the segmenters: videos whose camera and masks are known.

`render_clip` moves the robot kinematically (the root glides forward, every joint swings on a
sinusoid starting from the initial pose; no physics, so nothing can fall) and renders it from any tracking
camera, returning the exact masks beside the frames. `restyle` puts it on another background (a
grey gradient, or the simulator's own textured floor kept) and stamps a watermark, as video
services do. Tests and benchmarks/camera_fit.py import such a clip with the `file` generator into a
skill whose camera is the default, and check that the fit recovers `perturbed(default)`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from nil.reference.calibrate import Camera

if TYPE_CHECKING:
    from nil.robots.spec import RobotSpec


def perturbed(cam: Camera) -> Camera:
    """Issue 14's perturbation: distance x1.5, azimuth +40, elevation +15 deg, off-centre look-at, fovy 60."""
    _, right, up = _axes(cam.azimuth + 40.0, cam.elevation + 15.0)
    d = cam.distance * 1.5
    off = 0.12 * d * right + 0.06 * d * up  # the robot sits left of and below the image centre
    return Camera(d, cam.azimuth + 40.0, cam.elevation + 15.0, 60.0, tuple(float(v) for v in off))  # type: ignore[arg-type]


def _axes(az: float, el: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from nil.robots.spec import free_camera_basis

    return free_camera_basis(az, el)


def render_clip(
    spec: RobotSpec,
    camera: Camera,
    *,
    hw: tuple[int, int],
    num_frames: int,
    fps: float,
    speed: float = 0.3,
    amplitude: float = 0.25,
    gait_hz: float = 1.5,
) -> tuple[np.ndarray, np.ndarray]:
    """(rgb [T,H,W,3] uint8, masks [T,H,W] bool) of a kinematic gait seen by `camera` (tracking the root)."""
    import mujoco

    from nil.sim.render import RobotRenderer

    small = replace(spec, camera=replace(spec.camera, height=int(hw[0]), width=int(hw[1])))
    model = small.load_model()
    data = mujoco.MjData(model)
    q0 = small.initial_qpos(model)
    rgb = np.empty((num_frames, *hw, 3), np.uint8)
    masks = np.empty((num_frames, *hw), bool)
    hinge = [
        j
        for j in range(model.njnt)
        if int(model.jnt_type[j]) in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
    ]
    with RobotRenderer(model, small) as r:
        r.set_camera(
            distance=camera.distance,
            azimuth=camera.azimuth,
            elevation=camera.elevation,
            fovy=camera.fovy,
            lookat_offset=camera.lookat_offset,
        )
        for t in range(num_frames):
            s = t / fps
            q = q0.copy()
            q[0] += speed * s
            for i, j in enumerate(hinge):
                adr = model.jnt_qposadr[j]
                phase = i * math.pi / 2  # starts at the initial pose, as a teacher does
                q[adr] += amplitude * (math.sin(2 * math.pi * gait_hz * s + phase) - math.sin(phase))
            data.qpos[:] = q
            mujoco.mj_forward(model, data)
            r.render_into(data, rgb[t], masks[t])
    return rgb, masks


def grey_gradient(hw: tuple[int, int], top: int = 70, bottom: int = 205) -> np.ndarray:
    """[H,W,3] uint8 vertical grey gradient (a studio backdrop)."""
    col = np.linspace(top, bottom, hw[0], dtype=np.float32)[:, None, None]
    return np.broadcast_to(col, (*hw, 3)).astype(np.uint8)


def tiled_floor(hw: tuple[int, int], tile: int = 14) -> np.ndarray:
    """[H,W,3] uint8 light floor tiles with grout lines and a little grain (a lab or studio floor)."""
    H, W = hw
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.array([214, 204, 186], np.float32)
    shade = np.where(((yy // tile) + (xx // tile)) % 2 == 0, 1.0, 0.93)[..., None]
    img = base * shade + np.random.default_rng(0).normal(0.0, 3.0, (H, W, 1))
    lines = (yy % tile == 0) | (xx % tile == 0)
    img[lines] = (150, 140, 128)
    return np.clip(img, 0, 255).astype(np.uint8)


def stamp_watermark(frames: np.ndarray, text: str = "AI VIDEO") -> np.ndarray:
    """Frames with a semi-transparent white text watermark bottom right (as video services add)."""
    T, H, W = frames.shape[:3]
    layer = np.zeros((H, W), np.uint8)
    scale = max(0.3, W / 420.0)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    org = (W - tw - max(3, W // 40), H - max(3, H // 30))
    cv2.putText(layer, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1, cv2.LINE_AA)
    a = (layer.astype(np.float32) / 255.0 * 0.8)[None, :, :, None]
    return (frames.astype(np.float32) * (1 - a) + 255.0 * a + 0.5).astype(np.uint8)


def restyle(
    rgb: np.ndarray, masks: np.ndarray, background: str = "gradient", watermark: bool = True
) -> np.ndarray:
    """Frames on another background ("gradient": a grey gradient, "tiles": a tiled floor pasted behind the
    robot, "scene": the simulator's rendered floor kept), with a watermark."""
    out = rgb
    if background in ("gradient", "tiles"):
        bg = grey_gradient(rgb.shape[1:3]) if background == "gradient" else tiled_floor(rgb.shape[1:3])
        out = np.where(masks[..., None], rgb, bg[None]).astype(np.uint8)
    elif background != "scene":
        raise ValueError(f"background must be 'gradient', 'tiles' or 'scene', got {background!r}")
    return stamp_watermark(out) if watermark else np.ascontiguousarray(out)


def azimuth_error(fit: float, true: float, period: float = 360.0) -> float:
    """|fit - true| in degrees modulo `period` (90 for the ant's four-fold symmetry)."""
    d = (fit - true) % period
    return float(min(d, period - d))


def apparent_size(cam: Camera) -> float:
    """distance * tan(fovy / 2): how large the robot looks (distance and fovy trade along it)."""
    return cam.distance * math.tan(math.radians(cam.fovy) / 2.0)


def root_in_image(cam: Camera, spec: RobotSpec) -> tuple[float, float]:
    """Where the robot's look-at base point (root + lookat_z) appears, in image fractions from the centre."""
    fwd, right, up = _axes(cam.azimuth, cam.elevation)
    rel = -np.asarray(cam.lookat_offset)  # the base point relative to the look-at point
    depth = cam.distance + float(rel @ fwd)
    half = math.tan(math.radians(cam.fovy) / 2.0) * depth
    return float(rel @ right) / (2 * half), -float(rel @ up) / (2 * half)


def fit_errors(fit: Camera, true: Camera, spec: RobotSpec, period: float = 360.0) -> dict[str, float]:
    """How far a fitted camera is from the true one, in the terms the stated tolerances use.

    az_err modulo `period` (the robot's symmetry; az_err_360 over the full circle), el_err and fovy_err in
    degrees, size_err and dist_err as fractions, root_err: where the root appears, in frame fractions.
    """
    fx, fy = root_in_image(fit, spec)
    tx, ty = root_in_image(true, spec)
    return {
        "az_err": azimuth_error(fit.azimuth, true.azimuth, period),
        "az_err_360": azimuth_error(fit.azimuth, true.azimuth, 360.0),
        "el_err": abs(fit.elevation - true.elevation),
        "size_err": abs(apparent_size(fit) / apparent_size(true) - 1),
        "dist_err": abs(fit.distance / true.distance - 1),
        "fovy_err": abs(fit.fovy - true.fovy),
        "root_err": max(abs(fx - tx), abs(fy - ty)),
    }
