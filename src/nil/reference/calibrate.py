"""Fit the simulator's tracking camera to a reference video, so training renders from the video's viewpoint.

A video made outside NIL (or drifted by a video model) need not show the robot from e0's camera.
The fit finds the tracking camera (distance, azimuth, elevation, look-at offset, field of view)
whose render of the robot at its initial pose best overlaps the robot found in the video's frame 0
(``nil.reference.foreground``), by render and compare:

1. Coarse: the mask is rendered from a grid of azimuths x elevations at one distance; each render
   is aligned to the target by the scale and shift that match their areas and centroids (a change
   of distance is ~a scale about the image centre, a look-at offset ~a shift), scored by IoU.
2. Refine: the best few grid cells are refined by Nelder-Mead on a smoothed IoU over
   (apparent size, azimuth, elevation, two look-at offsets in the image plane, fovy). Apparent size
   ``distance * tan(fovy / 2)`` is one variable because distance and fovy trade almost exactly.

Renders are small (``COARSE_SIDE``/``FINE_SIDE`` pixels on the long side) and mask-only. The result
goes into skill.yaml's camera section and reference/meta.json's "calibration" entry (IoU before and
after, both cameras, the foreground's figures, time). ``nil calibrate DIR`` runs it on its own;
``nil generate`` runs it for non-synthetic generators when ``camera.calibrate`` is on.

Robots with symmetries have equivalent cameras (the ant looks the same every 90 deg of azimuth):
any of them trains the same, so the fit may return any.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from nil.errors import SegmentationError, VideoError
from nil.reference.segment.base import iou
from nil.robots.spec import free_camera_basis

if TYPE_CHECKING:
    from nil.config import CameraConfig, SkillConfig
    from nil.paths import SkillPaths
    from nil.robots.spec import CameraSpec, RobotSpec

COARSE_SIDE = 64
FINE_SIDE = 112
AZIMUTHS = tuple(range(0, 360, 15))
ELEVATIONS = (-80, -65, -50, -35, -20, -5, 10)
N_REFINE = 6  # grid cells refined
REFINE_EVALS = 50  # renders per refined cell ...
FINAL_EVALS = 140  # ... and for the best one again
FOVY_RANGE = (15.0, 110.0)
# Refined fits within this soft IoU of the best, at azimuths this far apart, are the same silhouette seen
# from a symmetric side (the ant looks the same every 90 deg): frame 0 cannot choose between them.
TIE_SOFT_IOU = 0.01
TIE_AZIMUTH_DEG = 20.0
OVERLAY_NAME = "calibration.png"  # in reference/: the found robot (green) and the fitted render (magenta)


class CalibrationError(SegmentationError):
    """The camera fit failed its quality gate (or had nothing to fit to)."""


@dataclass
class Camera:
    """A tracking camera: looks at root + (0, 0, lookat_z) + lookat_offset from `distance` away."""

    distance: float
    azimuth: float
    elevation: float
    fovy: float
    lookat_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def of(cls, cam: Any) -> Camera:
        """From a CameraSpec (or anything with the same fields)."""
        off = tuple(float(v) for v in getattr(cam, "lookat_offset", (0.0, 0.0, 0.0)))
        return cls(float(cam.distance), float(cam.azimuth), float(cam.elevation), float(cam.fovy), off)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Camera:
        """From `as_dict`'s output (a calibration record in meta.json)."""
        return cls(**{**d, "lookat_offset": tuple(float(v) for v in d["lookat_offset"])})

    def on(self, spec_camera: CameraSpec) -> CameraSpec:
        """`spec_camera` looking through this camera (its image size and lookat_z kept)."""
        return replace(
            spec_camera,
            distance=self.distance,
            azimuth=self.azimuth,
            elevation=self.elevation,
            fovy=self.fovy,
            lookat_offset=self.lookat_offset,
        )

    def as_dict(self) -> dict[str, Any]:
        """Rounded, JSON-friendly."""
        d = asdict(self)
        d["lookat_offset"] = [round(float(v), 5) for v in self.lookat_offset]
        return {k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in d.items()}


def fit_hw(hw: tuple[int, int], side: int) -> tuple[int, int]:
    """A render size of the same aspect ratio with `side` pixels on the long side."""
    H, W = hw
    s = side / max(H, W)
    return max(16, int(round(H * s))), max(16, int(round(W * s)))


class MaskRenderer:
    """Robot masks at the initial pose from candidate cameras, one GL context, at a small size."""

    def __init__(self, spec: RobotSpec, hw: tuple[int, int]) -> None:
        import mujoco

        from nil.sim.render import RobotRenderer

        small = replace(spec, camera=replace(spec.camera, height=int(hw[0]), width=int(hw[1])))
        self.model = small.load_model()
        self.data = mujoco.MjData(self.model)
        self.data.qpos[:] = small.initial_qpos(self.model)
        mujoco.mj_forward(self.model, self.data)
        self.hw = (int(hw[0]), int(hw[1]))
        self._r = RobotRenderer(self.model, small)
        self._mask = np.empty(self.hw, bool)
        self.renders = 0

    def __call__(self, cam: Camera) -> np.ndarray:
        """[H,W] bool mask seen by `cam`."""
        self._r.set_camera(
            distance=cam.distance,
            azimuth=cam.azimuth,
            elevation=float(np.clip(cam.elevation, -89.0, 89.0)),
            fovy=cam.fovy,
            lookat_offset=cam.lookat_offset,
        )
        self._r.render_into(self.data, None, self._mask)
        self.renders += 1
        return self._mask.copy()

    def close(self) -> None:
        """Free the GL context."""
        self._r.close()


def _moments(m: np.ndarray) -> tuple[float, float, float]:
    ys, xs = np.nonzero(m)
    return float(len(ys)), float(xs.mean()) if len(xs) else 0.0, float(ys.mean()) if len(ys) else 0.0


def _similarity_iou(render: np.ndarray, target: np.ndarray) -> tuple[float, float, float, float]:
    """(IoU, scale, dx, dy) after scaling `render` about the image centre and shifting it onto `target`."""
    a_r, cx_r, cy_r = _moments(render)
    a_t, cx_t, cy_t = _moments(target)
    if a_r == 0 or a_t == 0:
        return 0.0, 1.0, 0.0, 0.0
    H, W = target.shape
    c0x, c0y = (W - 1) / 2.0, (H - 1) / 2.0
    s = math.sqrt(a_t / a_r)
    dx = cx_t - (c0x + s * (cx_r - c0x))
    dy = cy_t - (c0y + s * (cy_r - c0y))
    M = np.array([[s, 0, c0x * (1 - s) + dx], [0, s, c0y * (1 - s) + dy]], np.float32)
    warped = cv2.warpAffine(render.astype(np.uint8), M, (W, H), flags=cv2.INTER_NEAREST) > 0
    return iou(warped, target), s, dx, dy


def _shifted(cam: Camera, dx_px: float, dy_px: float, height_px: int) -> Camera:
    """`cam` with its look-at moved so that the robot moves by (dx, dy) pixels in the image."""
    _, right, up = free_camera_basis(cam.azimuth, cam.elevation)
    mpp = 2.0 * cam.distance * math.tan(math.radians(cam.fovy) / 2.0) / height_px
    off = np.asarray(cam.lookat_offset) - mpp * (dx_px * right - dy_px * up)
    return replace(cam, lookat_offset=tuple(float(v) for v in off))  # type: ignore[arg-type]


def _blur(m: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(m.astype(np.float32), (0, 0), 1.0)


def _soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    den = float(np.maximum(a, b).sum())
    return float(np.minimum(a, b).sum()) / den if den > 0 else 0.0


@dataclass
class FitResult:
    """The fitted camera, its IoU with the target (and the starting camera's), and what it cost."""

    camera: Camera
    iou: float
    iou_start: float
    renders: int
    seconds: float
    candidates: list[dict[str, Any]]
    fit_hw: tuple[int, int]


def _to_vec(cam: Camera, ref: Camera) -> np.ndarray:
    """Scaled parameter vector (about one unit per step worth trying) around the reference camera."""
    _, right, up = free_camera_basis(cam.azimuth, cam.elevation)
    sigma = cam.distance * math.tan(math.radians(cam.fovy) / 2.0)
    s_ref = ref.distance * math.tan(math.radians(ref.fovy) / 2.0)
    off = np.asarray(cam.lookat_offset)
    return np.array(
        [
            math.log(sigma / s_ref) / 0.05,
            cam.azimuth / 4.0,
            cam.elevation / 4.0,
            float(off @ right) / (0.08 * s_ref),
            float(off @ up) / (0.08 * s_ref),
            cam.fovy / 6.0,
        ]
    )


def _from_vec(x: np.ndarray, ref: Camera) -> Camera:
    s_ref = ref.distance * math.tan(math.radians(ref.fovy) / 2.0)
    sigma = s_ref * math.exp(0.05 * x[0])
    az, el = 4.0 * x[1], float(np.clip(4.0 * x[2], -89.0, 89.0))
    fovy = float(np.clip(6.0 * x[5], *FOVY_RANGE))
    _, right, up = free_camera_basis(az, el)
    off = 0.08 * s_ref * (x[3] * right + x[4] * up)
    return Camera(sigma / math.tan(math.radians(fovy) / 2.0), az, el, fovy, tuple(float(v) for v in off))  # type: ignore[arg-type]


def fit_camera(
    spec: RobotSpec,
    target: np.ndarray,
    start: Camera | None = None,
    prefer: Callable[[Camera], float] | None = None,
) -> FitResult:
    """The tracking camera whose render of the robot's initial pose best matches `target` ([H,W] bool).

    `prefer(camera) -> score` breaks ties between fits that match frame 0 equally well from different
    azimuths (a symmetric robot): the highest score wins (the video's motion, see `forward_preference`).
    """
    from scipy.optimize import minimize

    t0 = time.perf_counter()
    target = np.asarray(target, bool)
    if not target.any():
        raise CalibrationError("the camera fit has no target: no robot was found in frame 0")
    start = start or Camera.of(spec.camera)
    from nil.reference.segment.base import resize_masks

    chw, fhw = fit_hw(target.shape, COARSE_SIDE), fit_hw(target.shape, FINE_SIDE)
    t_coarse = resize_masks(target, chw)
    t_fine = resize_masks(target, fhw)
    t_fine_blur = _blur(t_fine)
    coarse, fine = MaskRenderer(spec, chw), MaskRenderer(spec, fhw)
    try:
        iou_start = iou(fine(start), t_fine)
        base = replace(start, distance=start.distance * 1.3, lookat_offset=(0.0, 0.0, 0.0))
        grid = []
        for el in ELEVATIONS:
            for az in AZIMUTHS:
                cam = replace(base, azimuth=float(az), elevation=float(el))
                score, s, dx, dy = _similarity_iou(coarse(cam), t_coarse)
                grid.append((score, cam, s, dx, dy))
        grid.sort(key=lambda g: -g[0])
        picked: list[tuple[float, Camera, float, float, float]] = []
        for g in grid:
            # one seed per basin along the azimuth ring: skip a cell beside a picked one at the same
            # elevation (diagonal neighbours stay: the coarse alignment's error runs along elevation)
            near = any(
                abs((g[1].azimuth - p[1].azimuth + 180) % 360 - 180) < 20 and g[1].elevation == p[1].elevation
                for p in picked
            )
            if not near:
                picked.append(g)
            if len(picked) == N_REFINE:
                break
        # the starting camera is a candidate too (a video made from e0 is usually close to it)
        inits = [start]
        for _, cam, s, dx, dy in picked:
            scaled = replace(cam, distance=cam.distance / max(s, 1e-3))
            inits.append(_shifted(scaled, dx * fhw[1] / chw[1], dy * fhw[0] / chw[0], fhw[0]))

        def loss(x: np.ndarray) -> float:
            return -_soft_iou(_blur(fine(_from_vec(x, start))), t_fine_blur)

        def refine(cam: Camera, evals: int) -> tuple[float, Camera]:
            x0 = _to_vec(cam, start)
            simplex = np.vstack([x0, x0 + np.eye(6)])
            res = minimize(
                loss,
                x0,
                method="Nelder-Mead",
                options={"maxfev": evals, "initial_simplex": simplex, "xatol": 0.05, "fatol": 1e-4},
            )
            return float(-res.fun), _from_vec(res.x, start)

        results = [refine(c, REFINE_EVALS) for c in inits]
        order = sorted(range(len(results)), key=lambda i: -results[i][0])
        pick = order[0]
        ties = _symmetric_ties(results, order)
        tie_scores: dict[int, float] = {}
        if prefer is not None and len(ties) > 1:
            tie_scores = {i: float(prefer(results[i][1])) for i in ties}
            pick = max(ties, key=lambda i: tie_scores[i])
        best_soft, best = refine(results[pick][1], FINAL_EVALS)
        best = replace(best, azimuth=float(best.azimuth % 360.0))
        iou_fit = iou(fine(best), t_fine)
        candidates = [
            {
                "start": inits[i].as_dict(),
                "soft_iou": round(results[i][0], 4),
                "camera": results[i][1].as_dict(),
                **({"motion_score": round(tie_scores[i], 4)} if i in tie_scores else {}),
                **({"picked": True} if i == pick else {}),
            }
            for i in order
        ]
        renders = coarse.renders + fine.renders
    finally:
        coarse.close()
        fine.close()
    return FitResult(best, iou_fit, iou_start, renders, time.perf_counter() - t0, candidates, fhw)


def _symmetric_ties(results: list[tuple[float, Camera]], order: list[int]) -> list[int]:
    """Indices of the refined fits as good as the best one (within TIE_SOFT_IOU), one per azimuth basin."""
    best = results[order[0]][0]
    ties: list[int] = []
    for i in order:
        if results[i][0] < best - TIE_SOFT_IOU:
            break
        az = results[i][1].azimuth
        if all(abs((az - results[j][1].azimuth + 180) % 360 - 180) >= TIE_AZIMUTH_DEG for j in ties):
            ties.append(i)
    return ties


def forward_preference(
    spec: RobotSpec, frames: np.ndarray, mask0: np.ndarray, fps: float, seconds: float = 1.5
) -> Callable[[Camera], float]:
    """Score a candidate camera by how well the video's floor flow, read through it, moves the robot
    along its own forward axis (+x of the root in e0): cos of the angle, in [-1, 1].

    A walking robot filmed by a tracking camera goes forward, so among cameras that frame 0 cannot tell
    apart this picks the one under which the robot walks the way it faces. When the floor cannot be
    tracked through the skill's own camera, or reads slower than `motion.STILL_SPEED` through a candidate,
    that camera scores 0 and the best frame-0 fit is kept. The trackability check runs on the first score,
    so a robot without symmetric ties never pays for it.
    """
    from nil.reference.motion import STILL_SPEED, estimate_root_velocity, initial_root_pose

    n = int(min(len(frames), max(4, round(seconds * fps))))
    clip = np.asarray(frames[:n])
    # the robot stays near its frame-0 place under a tracking camera: a generous dilation covers its legs
    k = max(3, int(0.08 * max(mask0.shape)) | 1)
    robot = cv2.dilate(np.asarray(mask0, np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    masks = np.repeat(robot[None], n, axis=0)
    pose = initial_root_pose(spec)
    w, x, y, z = (float(v) for v in pose[3:7])
    heading = np.array([1 - 2 * (y * y + z * z), 2 * (x * y + w * z)])  # the root's x axis, on the floor
    heading /= max(float(np.linalg.norm(heading)), 1e-9)

    def velocity(cam: Camera) -> np.ndarray:
        return estimate_root_velocity(clip, masks, fps, cam.on(spec.camera), float(pose[2])).mean(axis=0)

    @functools.cache
    def floor_trackable() -> bool:
        try:
            velocity(Camera.of(spec.camera))
        except VideoError:
            return False
        return True

    def score(cam: Camera) -> float:
        if not floor_trackable():
            return 0.0
        try:
            v = velocity(cam)
        except VideoError:
            return 0.0
        speed = float(np.linalg.norm(v))
        # a floor read as (nearly) still, e.g. a background pasted behind the robot, has no direction:
        # below STILL_SPEED its sign is noise and must not pick between symmetric fits
        return float(v @ heading) / speed if speed >= STILL_SPEED else 0.0

    return score


# ------------------------------------------------------------------------------------------ skill level
def camera_config_after(cfg_camera: CameraConfig, cam: Camera) -> CameraConfig:
    """The skill's camera section with the fitted values written in."""
    return cfg_camera.model_copy(
        update={
            "distance": round(cam.distance, 5),
            "azimuth": round(cam.azimuth, 3),
            "elevation": round(cam.elevation, 3),
            "fovy": round(cam.fovy, 3),
            "lookat_offset": tuple(round(float(v), 5) for v in cam.lookat_offset),
        }
    )


def sam2_if_available(cfg: SkillConfig) -> Any:
    """The skill's SAM2 segmenter when the segmenter resolves to SAM2 (its weights are here), else None."""
    from nil.reference.segment.stage import make_segmenter, resolve_segmenter_name

    name, _ = resolve_segmenter_name(cfg.segmenter.name, getattr(cfg.segmenter, "model_id", ""))
    return make_segmenter(cfg, "sam2") if name == "sam2" else None


def calibrate_frame(
    cfg: SkillConfig,
    frame: np.ndarray,
    *,
    force: bool = False,
    sam2: Any = None,
    frames: np.ndarray | None = None,
    fps: float | None = None,
) -> tuple[CameraConfig, dict[str, Any], np.ndarray]:
    """Fit the skill's camera to one video frame (at the camera's size): (new camera section, meta entry,
    overlay image: the found robot's outline in green, the fitted render's in magenta).

    With the video's `frames` (and `fps`), fits that match frame 0 equally well from symmetric sides are
    told apart by the floor's motion (`forward_preference`).

    CalibrationError when the fit's IoU is below camera.calibrate_min_iou (unless `force`).
    """
    from nil.reference.foreground import find_robot
    from nil.robots import robot_from_config

    H, W = int(cfg.camera.height), int(cfg.camera.width)
    if frame.shape[:2] != (H, W):
        raise CalibrationError(
            f"the frame to calibrate on is {frame.shape[:2]} but the camera renders {(H, W)} "
            "(report this as a bug)"
        )
    t0 = time.perf_counter()
    fg = find_robot(frame, sam2=sam2 if sam2 is not None else sam2_if_available(cfg))
    t_fg = time.perf_counter() - t0
    spec = robot_from_config(cfg)
    prefer = forward_preference(spec, frames, fg.mask, float(fps)) if frames is not None and fps else None
    fit = fit_camera(spec, fg.mask, Camera.of(spec.camera), prefer=prefer)
    new_cam = camera_config_after(cfg.camera, fit.camera)
    threshold = float(cfg.camera.calibrate_min_iou)
    passed = fit.iou >= threshold
    entry: dict[str, Any] = {
        "camera_before": Camera.of(spec.camera).as_dict(),
        "camera_after": fit.camera.as_dict(),
        "config_before": cfg.camera.model_dump(mode="json"),
        "config_after": new_cam.model_dump(mode="json"),
        "iou_before": round(fit.iou_start, 4),
        "iou_after": round(fit.iou, 4),
        "iou_hw": list(fit.fit_hw),
        "min_iou": threshold,
        "passed": bool(passed),
        "forced": bool(force and not passed),
        "foreground": fg.info,
        "foreground_area_fraction": round(float(fg.mask.mean()), 4),
        "renders": fit.renders,
        "seconds": {"foreground": round(t_fg, 3), "fit": round(fit.seconds, 3)},
        "candidates": fit.candidates,
    }
    fitted = MaskRenderer(spec, (H, W))
    try:
        fitted_mask = fitted(fit.camera)
    finally:
        fitted.close()
    entry["iou_after_full_size"] = round(iou(fitted_mask, fg.mask), 4)
    if not passed and not force:
        from nil.reference.foreground import runs_off_edges

        why = (  # a close-up leaves only a piece of the robot to fit: say so, not "no robot"
            f"{fg.info['border_off_corners']:.0%} of frame 0's border is unlike its corners, so the robot "
            "probably fills the frame and runs off its edges; use a wider shot"
            if runs_off_edges(fg.info)
            else "the video may not show this robot, or show it cut off; check the video"
        )
        raise CalibrationError(
            f"the camera fit reaches IoU {fit.iou:.2f} with the robot found in frame 0 (below "
            f"camera.calibrate_min_iou={threshold:g}): {why}, or pass --force to use the fit anyway"
        )
    return new_cam, entry, overlay(frame, fg.mask, fitted_mask)


def write_overlay(path: Path, image: np.ndarray) -> None:
    """Write the fit's overlay PNG atomically (reference/calibration.png; the report shows it)."""
    import imageio.v3 as iio

    from nil.io import atomic_save

    atomic_save(path, lambda tmp: iio.imwrite(tmp, image, extension=".png"))


def apply_calibration(paths: SkillPaths, cfg: SkillConfig, entry: dict[str, Any]) -> None:
    """Put the fitted camera into skill.yaml (and `cfg`), then render e0/m0 from it."""
    from nil.config import CameraConfig, save_config
    from nil.reference.frame import write_frame0
    from nil.robots import robot_from_config

    cfg.camera = CameraConfig.model_validate(entry["config_after"])
    if paths.config.is_file():
        save_config(cfg, paths.config)
    spec = robot_from_config(cfg)
    write_frame0(paths, spec, tuple(int(c) for c in cfg.camera.background))  # type: ignore[arg-type]


def overlay(frame: np.ndarray, target: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """[H,W,3] uint8: the frame with the found robot's outline (green) and the fitted render's (magenta)."""
    out = frame.copy()
    for m, colour in ((target, (40, 220, 40)), (fitted, (230, 40, 230))):
        edge = m & ~(cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
        out[edge] = colour
    return out


def calibrate_command(directory: str | Path, force: bool = False) -> dict[str, Any]:
    """`nil calibrate DIR`: fit the camera to the reference video's frame 0; writes skill.yaml, meta.json."""
    from rich.console import Console

    from nil.config import load_config
    from nil.io import atomic_write_json
    from nil.paths import SkillPaths
    from nil.reference.bundle import load_meta
    from nil.reference.video import read_video

    paths = SkillPaths(Path(directory))
    cfg = load_config(paths.config)
    meta = load_meta(paths)
    if meta.get("synthetic"):
        raise CalibrationError(
            f"the reference in {paths.reference} is synthetic: it is rendered by the simulator's own camera, "
            "so there is nothing to calibrate"
        )
    if not paths.video.is_file():
        raise CalibrationError(f"{paths.video} is missing; run `nil generate {paths.root} --force`")
    old = meta.get("calibration")
    if old and cfg.camera.model_dump(mode="json") == old.get("config_after"):
        cfg.camera = type(cfg.camera).model_validate(old["config_before"])  # refit from the original camera
    video = read_video(paths.video)
    _, entry, image = calibrate_frame(cfg, video.frames[0], force=force, frames=video.frames, fps=video.fps)
    write_overlay(paths.reference / OVERLAY_NAME, image)
    entry["overlay"] = OVERLAY_NAME
    meta["calibration"] = entry
    atomic_write_json(paths.meta, meta)
    apply_calibration(paths, cfg, entry)
    console = Console(highlight=False)
    print_calibration(console, entry)
    print(f"wrote {paths.config} (camera), {paths.frame0}, {paths.frame0_mask}, {paths.meta}")
    print(f"wrote {paths.reference / OVERLAY_NAME} (the fit as an overlay)")
    return entry


def print_calibration(console: Any, entry: dict[str, Any]) -> None:
    """One summary line of a calibration for the CLI."""
    a, b = entry["camera_before"], entry["camera_after"]
    console.print(
        f"camera fit: IoU {entry['iou_before']:.3f} -> {entry['iou_after']:.3f} "
        f"(distance {a['distance']:.2f} -> {b['distance']:.2f} m, azimuth {a['azimuth']:.0f} -> "
        f"{b['azimuth']:.0f} deg, elevation {a['elevation']:.0f} -> {b['elevation']:.0f} deg, fovy "
        f"{a['fovy']:.0f} -> {b['fovy']:.0f} deg; {entry['renders']} renders, "
        f"{entry['seconds']['fit']:.1f} s)" + (" [forced past the IoU gate]" if entry.get("forced") else "")
    )
