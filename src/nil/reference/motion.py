"""Motion read from the reference video alone: the root's planar velocity, the gait period, and the
pixels where the robot moves.

Root velocity. The tracking camera follows the root with a fixed orientation, so the floor in the
reference slides through the image exactly opposite to the root's motion. Floor corners are tracked
between frames t and t+s (KLT with a forward-backward check), and the camera's translation is the
least-squares fit of the (linearised) pinhole motion field of a plane at the camera's known height:
for a floor point at depth z and image offset (u, v) from the principal point, a camera translation a
(in camera axes right/down/forward) moves it by du = (-f a_r + u a_f) / z, dv = (-f a_d + v a_f) / z.
The vertical part of a (the root bobbing) is fitted too, so it does not leak into the planar velocity.
Nothing here reads teacher.npz: the camera comes from the RobotSpec that rendered e0. Training and
evaluation share one estimate through reference/root_velocity.npz, keyed on every input it reads.

Gait period. With the camera locked on the root the silhouette repeats once per gait cycle; the period
is the first lag at which the masks match themselves again (a deep minimum of the mean squared
difference of downsampled masks).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nil.errors import VideoError

if TYPE_CHECKING:
    from nil.paths import SkillPaths
    from nil.robots.spec import CameraSpec, RobotSpec

log = logging.getLogger(__name__)

SPEED_SWITCH = "reward.speed_weight / reward.position_weight"  # both read this estimate
FLOW_DT = 0.05  # seconds between the two frames whose floor motion gives one velocity sample
MIN_POINTS = 12  # tracked floor points a frame pair needs for a velocity sample
MIN_GOOD_PAIRS = 0.8  # fraction of frame pairs that must give a sample, else the floor is not usable
MAX_DEPTH_HEIGHTS = 6.0  # floor points farther than this many camera heights are too foreshortened to use
STILL_SPEED = 0.05  # m/s: a reference whose mean root velocity is below this does not travel
MASK_MARGIN_PX = 4  # robot-mask dilation: corners on the robot's outline move with the robot, not the floor
OVERLAY_STILL_PX = 0.15  # a corner moving less than this while others move is on an overlay ...
OVERLAY_MOVING_PX = 0.6  # ... and "others move" means at least MIN_POINTS corners move this much


@dataclass
class CameraGeometry:
    """The tracking camera as a pinhole: world axes, focal length in pixels, height over the floor."""

    right: np.ndarray  # [3] world direction of image +x (columns)
    down: np.ndarray  # [3] world direction of image +y (rows)
    fwd: np.ndarray  # [3] viewing direction
    focal: float  # pixels
    width: int
    height: int
    cam_height: float  # metres above the floor (z = 0)


def camera_geometry(camera: CameraSpec, root_height: float) -> CameraGeometry:
    """The pinhole of MuJoCo's free tracking camera looking at the root (at `root_height`) + lookat_z."""
    from nil.robots.spec import free_camera_basis

    fwd, _, _ = free_camera_basis(camera.azimuth, camera.elevation)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    focal = 0.5 * camera.height / math.tan(math.radians(camera.fovy) / 2.0)
    lookat_z = root_height + camera.lookat_z + float(camera.lookat_offset[2])
    cam_height = lookat_z - camera.distance * fwd[2]
    return CameraGeometry(right, -up, fwd, focal, int(camera.width), int(camera.height), float(cam_height))


def _floor_depth(geo: CameraGeometry, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Depth along the viewing axis of the floor point seen at image offsets (u, v); inf above the horizon."""
    dz = geo.fwd[2] + (u / geo.focal) * geo.right[2] + (v / geo.focal) * geo.down[2]
    with np.errstate(divide="ignore"):
        depth = np.where(dz < -1e-6, geo.cam_height / -dz, np.inf)
    return depth


def _floor_region(geo: CameraGeometry, robot: np.ndarray) -> np.ndarray:
    """uint8 [H,W]: 255 where the image shows usable floor (below the horizon, near enough, not robot)."""
    import cv2

    h, w = geo.height, geo.width
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    depth = _floor_depth(geo, u + 0.5 - w / 2.0, v + 0.5 - h / 2.0)
    ok = depth < MAX_DEPTH_HEIGHTS * geo.cam_height
    k = np.ones((2 * MASK_MARGIN_PX + 1,) * 2, np.uint8)
    ok &= cv2.dilate(robot.astype(np.uint8), k) == 0
    b = MASK_MARGIN_PX
    ok[:b], ok[-b:], ok[:, :b], ok[:, -b:] = False, False, False, False
    return ok.astype(np.uint8) * 255


def _track(g0: np.ndarray, g1: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Floor corners of g0 and where they are in g1 (KLT, forward-backward checked): ([M,2], [M,2])."""
    import cv2

    p0 = cv2.goodFeaturesToTrack(g0, maxCorners=300, qualityLevel=0.01, minDistance=5, mask=region)
    if p0 is None or len(p0) < MIN_POINTS:
        return np.zeros((0, 2)), np.zeros((0, 2))
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(g0, g1, p0, p0.copy(), winSize=(15, 15), maxLevel=2, criteria=crit)
    pb, st2, _ = cv2.calcOpticalFlowPyrLK(g1, g0, p1, p1.copy(), winSize=(15, 15), maxLevel=2, criteria=crit)
    good = (st1[:, 0] == 1) & (st2[:, 0] == 1) & (np.linalg.norm((pb - p0)[:, 0], axis=1) < 0.3)
    return p0[good, 0].astype(np.float64), p1[good, 0].astype(np.float64)


def _drop_overlay(p0: np.ndarray, p1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Without the corners that stay put while the floor slides: a watermark, logo or caption on the video.

    An overlay is static in the image, so its corners pull the fit towards "not moving". They are dropped
    only when at least MIN_POINTS other corners clearly move: in a reference whose robot stands still every
    corner stays put, and the estimate must read about zero.
    """
    d = np.linalg.norm(p1 - p0, axis=1)
    still = d < OVERLAY_STILL_PX
    if still.any() and int((d > OVERLAY_MOVING_PX).sum()) >= MIN_POINTS:
        return p0[~still], p1[~still]
    return p0, p1


def _camera_shift(geo: CameraGeometry, p0: np.ndarray, p1: np.ndarray) -> np.ndarray | None:
    """World translation [3] of the camera between two frames from tracked floor points, or None if unfit."""
    # offsets from the principal point; cv2 puts pixel centres at integer coordinates
    u = p0[:, 0] + 0.5 - geo.width / 2.0
    v = p0[:, 1] + 0.5 - geo.height / 2.0
    z = _floor_depth(geo, u, v)
    flow = p1 - p0
    keep = np.isfinite(z)
    for _ in range(3):  # least squares, then twice more without the worst outliers (mis-tracks, robot edges)
        if keep.sum() < MIN_POINTS:
            return None
        zk, uk, vk = z[keep], u[keep], v[keep]
        a_rows = np.zeros((2 * len(zk), 3))
        a_rows[0::2, 0] = -geo.focal / zk
        a_rows[0::2, 2] = uk / zk
        a_rows[1::2, 1] = -geo.focal / zk
        a_rows[1::2, 2] = vk / zk
        b = flow[keep].reshape(-1)
        a, *_ = np.linalg.lstsq(a_rows, b, rcond=None)
        pred_u = (-geo.focal * a[0] + u * a[2]) / z
        pred_v = (-geo.focal * a[1] + v * a[2]) / z
        res = np.hypot(flow[:, 0] - pred_u, flow[:, 1] - pred_v)
        cut = max(0.25, 3.0 * float(np.median(res[keep])))
        new_keep = np.isfinite(z) & (res < cut)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return a[0] * geo.right + a[1] * geo.down + a[2] * geo.fwd


def estimate_root_velocity(
    frames: np.ndarray,
    masks: np.ndarray,
    fps: float,
    camera: CameraSpec,
    root_height: float,
    flow_dt: float = FLOW_DT,
) -> np.ndarray:
    """World-frame planar root velocity [T,2] (m/s) of a reference video under its tracking camera.

    frames [T,H,W,3] uint8, masks [T,H,W] bool (robot); root_height: the root's height in e0 (sets the scale).
    Raises VideoError naming reward.speed_weight when the floor shows too little texture to track.
    """
    import cv2

    frames, masks = np.asarray(frames), np.asarray(masks, dtype=bool)
    t_len = len(frames)
    if frames.ndim != 4 or masks.shape != frames.shape[:3]:
        raise VideoError(
            f"frames {frames.shape} and masks {masks.shape} do not match; re-run `nil segment --force`"
        )
    if (camera.height, camera.width) != frames.shape[1:3]:
        raise VideoError(
            f"the reference is {frames.shape[2]}x{frames.shape[1]} but the camera renders "
            f"{camera.width}x{camera.height}: the root-motion cue ({SPEED_SWITCH}) needs the reference at "
            f"the camera's size; regenerate it, or set {SPEED_SWITCH}: 0"
        )
    step = max(1, int(round(flow_dt * fps)))
    if t_len <= step:
        raise VideoError(
            f"the reference has {t_len} frames, too short for the root-motion cue ({SPEED_SWITCH}, "
            f"needs > {step}); lengthen the reference or set {SPEED_SWITCH}: 0"
        )
    geo = camera_geometry(camera, root_height)
    h0 = geo.cam_height
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    centres, vels = [], []
    pairs = range(0, t_len - step)
    for t in pairs:
        region = _floor_region(geo, masks[t] | masks[t + step])
        p0, p1 = _drop_overlay(*_track(gray[t], gray[t + step], region))
        shift = _camera_shift(geo, p0, p1) if len(p0) >= MIN_POINTS else None
        if shift is not None:
            centres.append(t + step / 2.0)
            vels.append(shift[:2] * fps / step)
            # the camera rides on the root: follow its height (bobbing, a fall), which sets the scale
            geo.cam_height = float(np.clip(geo.cam_height + shift[2] / step, 0.1 * h0, 3.0 * h0))
    frac = len(vels) / len(pairs)
    if frac < MIN_GOOD_PAIRS:
        raise VideoError(
            f"{SPEED_SWITCH} > 0 needs a textured floor in the reference video to measure the root's motion, "
            f"but only {100 * frac:.0f}% of its frame pairs show enough trackable floor (a flat or hidden "
            f"background); set {SPEED_SWITCH}: 0, or use a reference with a visible floor "
            "(synthetic: generator.teacher_background: scene)"
        )
    c, vel = np.asarray(centres), np.asarray(vels)
    idx = np.arange(t_len, dtype=np.float64)
    out = np.stack([np.interp(idx, c, vel[:, 0]), np.interp(idx, c, vel[:, 1])], axis=1)
    return out.astype(np.float32)


ROOT_VELOCITY_VERSION = 2  # bump when estimate_root_velocity's output changes for the same inputs
_CAMERA_FIELDS = ("width", "height", "distance", "azimuth", "elevation", "fovy", "lookat_z", "lookat_offset")


def root_velocity_cache_key(
    retimed_sha256: str, masks: np.ndarray, camera: CameraSpec, root_height: float
) -> str:
    """Hash of everything estimate_root_velocity reads: the video, the masks, the camera, e0's root height."""
    from nil.io import sha256_bytes, sha256_json

    m = np.asarray(masks, dtype=bool)
    cam = {k: getattr(camera, k) for k in _CAMERA_FIELDS}
    cam["lookat_offset"] = [float(v) for v in cam["lookat_offset"]]
    cam.update({k: float(cam[k]) for k in ("distance", "azimuth", "elevation", "fovy", "lookat_z")})
    cam.update({k: int(cam[k]) for k in ("width", "height")})
    return sha256_json(
        {
            "version": ROOT_VELOCITY_VERSION,
            "retimed_sha256": retimed_sha256,
            "masks_sha256": sha256_bytes(np.packbits(m).tobytes() + str(m.shape).encode()),
            "camera": cam,
            "root_height": float(root_height),
            "tuning": [
                *(FLOW_DT, MIN_POINTS, MIN_GOOD_PAIRS, MAX_DEPTH_HEIGHTS, MASK_MARGIN_PX),
                *(OVERLAY_STILL_PX, OVERLAY_MOVING_PX),
            ],
        }
    )


def _read_cached_velocity(path: Path, key: str, num_frames: int) -> np.ndarray | str | None:
    """The cached velocity [T,2], or the cached VideoError message; None when absent, stale or corrupt."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                log.info(
                    "%s was computed from other inputs (retimed video, masks, camera or e0); recomputing",
                    path,
                )
                return None
            if "error" in z.files:
                return str(z["error"])
            vel = np.asarray(z["vel"])
    except Exception as e:  # noqa: BLE001 - a corrupt cache is recomputed, never trusted
        log.warning("%s is unreadable (%s); recomputing the reference's root velocity", path, e)
        return None
    if vel.shape != (num_frames, 2) or vel.dtype != np.float32 or not np.isfinite(vel).all():
        log.warning(
            "%s holds %s %s, not [%d,2] finite float32; recomputing", path, vel.dtype, vel.shape, num_frames
        )
        return None
    return vel


def _write_cached_velocity(path: Path, key: str, vel: np.ndarray | None, error: str | None) -> None:
    """Write the cache atomically (temp file + rename: a hard link shared with another folder is replaced,
    never rewritten in place); a folder that cannot be written only costs the recomputation next time."""
    from nil.io import atomic_save

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            if error is not None:
                np.savez(f, key=np.asarray(key), error=np.asarray(error))
            else:
                np.savez(f, key=np.asarray(key), vel=np.asarray(vel, dtype=np.float32))

    try:
        atomic_save(path, _write)
    except OSError as e:
        log.warning("could not write %s (%s); the root velocity will be recomputed next time", path, e)


def initial_root_pose(spec: RobotSpec) -> np.ndarray:
    """[7] the root free joint's qpos in e0: position (z sets the floor-flow scale) and quaternion."""
    model = spec.load_model()
    adr = int(model.jnt_qposadr[model.body_jntadr[spec.root_id(model)]])
    return np.asarray(spec.initial_qpos(model)[adr : adr + 7], dtype=np.float64)


def reference_root_velocity(
    paths: SkillPaths, spec: RobotSpec, masks: np.ndarray | None = None
) -> np.ndarray:
    """estimate_root_velocity of a skill's retimed reference [T,2] (m/s), with the camera and e0 of `spec`.

    Cached in reference/root_velocity.npz, keyed on the retimed video's bytes, the masks' content, the
    camera and e0's root height: any change (a new reference, `nil segment --force`, a fitted camera)
    recomputes it, and so does a stale or unreadable file.
    """
    from nil.io import sha256_file
    from nil.reference.segment import load_masks
    from nil.reference.video import read_video

    if not paths.retimed.is_file():
        raise VideoError(f"video file not found: {paths.retimed}; run `nil generate {paths.root}`")
    masks = load_masks(paths) if masks is None else np.asarray(masks, dtype=bool)
    root_height = float(initial_root_pose(spec)[2])
    key = root_velocity_cache_key(sha256_file(paths.retimed), masks, spec.camera, root_height)
    cached = _read_cached_velocity(paths.root_velocity, key, len(masks))
    if isinstance(cached, str):
        raise VideoError(cached)
    if cached is not None:
        vel = cached
        log.info("reference root motion read from %s (inputs unchanged)", paths.root_velocity)
    else:
        video = read_video(paths.retimed)
        try:
            vel = estimate_root_velocity(video.frames, masks, video.fps, spec.camera, root_height)
        except VideoError as e:  # the same inputs fail the same way: remember it, don't track again
            _write_cached_velocity(paths.root_velocity, key, None, str(e))
            raise
        _write_cached_velocity(paths.root_velocity, key, vel, None)
    speed = np.linalg.norm(vel, axis=1)
    log.info(
        "reference root motion from the floor: mean speed %.3f m/s, mean velocity (%.3f, %.3f) m/s",
        float(speed.mean()),
        float(vel[:, 0].mean()),
        float(vel[:, 1].mean()),
    )
    if float(np.linalg.norm(vel.mean(0))) < STILL_SPEED:
        log.warning(
            "the reference's root does not travel (mean velocity %.3f m/s from the floor flow): with %s > 0 "
            "the reward asks the agent to stay in place; check the reference video",
            float(np.linalg.norm(vel.mean(0))),
            SPEED_SWITCH,
        )
    return vel


# --------------------------------------------------------------------------------------------- moving region
MOTION_CORE = (
    0.9  # a pixel the robot covers in at least this fraction of the reference's frames is its static core
)


def moving_region(masks: np.ndarray, core: float = MOTION_CORE) -> np.ndarray:
    """[H, W] bool: the pixels outside the reference's static core (on in fewer than `core` of its frames).

    Under a camera that follows the root, the core is the body that a robot standing still covers too;
    what is left is where the legs (or arms) move, the part of the silhouette that says the motion.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or len(masks) == 0:
        raise VideoError(f"moving_region wants [T, H, W] masks, got shape {masks.shape}")
    return masks.mean(axis=0) < core


# --------------------------------------------------------------------------------------------- gait period
GAIT_MIN_S = 0.15  # fastest gait cycle considered (6.7 Hz)
STILL_MASK_CHANGE = 0.01  # mean squared change of the downsampled masks below which the robot does not move
REPEAT_DEPTH = 0.6  # a full repeat: d falls below this fraction of its peak so far (after the jitter floor)
_GRID = 32


def _mask_features(masks: np.ndarray) -> np.ndarray:
    """[T, 32*32] float: area-averaged masks (robust to a pixel of segmentation jitter)."""
    import cv2

    m = np.asarray(masks, dtype=np.float32)
    return np.stack([cv2.resize(f, (_GRID, _GRID), interpolation=cv2.INTER_AREA).ravel() for f in m])


def mask_self_difference(masks: np.ndarray, max_lag: int) -> np.ndarray:
    """d[L] = mean over t of the mean squared difference of downsampled masks t and t+L, L = 0..max_lag."""
    x = _mask_features(masks)
    d = np.zeros(max_lag + 1)
    for lag in range(1, max_lag + 1):
        d[lag] = float(np.mean((x[lag:] - x[:-lag]) ** 2))
    return d


def estimate_gait_period(masks: np.ndarray, fps: float) -> float | None:
    """The gait period in seconds from the reference masks' own periodicity; None if it does not repeat.

    A reference whose silhouette does not change returns None (no gait); one that changes but never
    repeats within its length logs a warning naming the settings to change, and returns None.
    """
    masks = np.asarray(masks, dtype=bool)
    t_len = len(masks)
    if masks.ndim != 3 or t_len < 3:
        return None
    area = float(masks.mean())
    if area <= 0:
        return None
    max_lag = int(t_len * 2 // 3)  # a third of the clip at least overlaps at every lag
    min_lag = max(2, int(round(GAIT_MIN_S * fps)))
    d = mask_self_difference(masks, max_lag) if max_lag >= 1 else np.zeros(1)
    scale = d.max() / max(area, 1e-6)
    if scale < STILL_MASK_CHANGE:
        return None  # the silhouette is (nearly) constant: the robot does not move its legs
    lag = _first_repeat(_without_jitter(d), min_lag)
    if lag is None:
        log.warning(
            "the reference (%.2f s) is shorter than one gait period or not periodic: its silhouette never "
            "repeats, so no gait period can be estimated; lengthen it (generator.seconds, or "
            "generator.num_frames for a video model) or turn rl.gait_clock off",
            t_len / fps,
        )
        return None
    return lag / fps


def _without_jitter(d: np.ndarray) -> np.ndarray:
    """d minus its segmentation-jitter floor.

    Mask noise that is independent from frame to frame adds the same constant to d at every lag >= 1, so a
    small or noisily segmented robot's full repeat never looks deep; the floor is d extrapolated back to
    lag 0 from lags 1 and 2 (the motion part of d grows about linearly at small lags).
    """
    if len(d) < 3:
        return d
    floor = float(np.clip(2.0 * d[1] - d[2], 0.0, d[1]))
    out = np.maximum(d - floor, 0.0)
    out[0] = 0.0
    return out


def _first_repeat(d: np.ndarray, min_lag: int) -> float | None:
    """Sub-frame lag of the first deep minimum of d (a full repeat), or None."""
    n = len(d)
    if n <= min_lag + 1:
        return None
    mins = [i for i in range(max(min_lag, 1), n - 1) if d[i] <= d[i - 1] and d[i] < d[i + 1]]
    best = None
    peak = 0.0
    for i in range(1, n):
        peak = max(peak, d[i])
        if i in mins and d[i] < REPEAT_DEPTH * peak:
            # a shallower dip at half the period (mirror-similar half cycles) is skipped when the
            # minimum at twice its lag is clearly deeper
            j = 2 * i
            if d[i] > 0.15 * peak and j < n - 1 and d[j - 1 : j + 2].min() < 0.6 * d[i]:
                continue
            best = i
            break
    if best is None:
        return None
    y0, y1, y2 = d[best - 1], d[best], d[best + 1]
    den = y0 - 2 * y1 + y2
    off = 0.5 * (y0 - y2) / den if den > 0 else 0.0
    return best + float(np.clip(off, -0.5, 0.5))
