"""Find the robot in one frame of a video, without assuming the simulator's framing.

Offline (always available): a classical foreground.

1. A colour model of the background from the frame's border strip (k-means in Lab): the robot
   rarely touches all four borders, the floor and sky almost always do.
2. Each pixel's Lab distance to the nearest border colour, thresholded (Otsu, with a floor) into
   "probably robot" / "probably background"; the border strip itself is "surely background".
3. GrabCut from that trimap (colour GMMs + a graph cut) cleans the edges.
4. Connected components: the largest one is the robot, others are kept only when they are big
   and near it, so watermarks, logos and specks elsewhere in the frame drop out.

Its quality is measured against the simulator's exact masks (docs/benchmarks.md, "Camera fit").
With SAM2 weights, `find_robot(..., sam2=segmenter)` prompts SAM2 with that foreground's box and
an interior point and keeps SAM2's mask when it agrees with the box (see ``refine_with_sam2``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from nil.errors import SegmentationError, VideoError

WORK_SIDE = 160  # the classical foreground runs at most this many pixels on the long side
MIN_THRESHOLD = 14.0  # Lab distance below which a pixel is always background colour
SMOOTH_BORDER = 3.0  # border strips rougher than this (mean Lab distance) are texture: use colour clusters
MAX_ROBOT_FRACTION = 0.6  # a "robot" covering more of the frame is the background leaking in
MIN_ROBOT_FRACTION = 0.002


@dataclass
class Foreground:
    """A robot mask of one frame plus the figures that say how much to trust it."""

    mask: np.ndarray  # [H,W] bool at the frame's size
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def box(self) -> tuple[int, int, int, int]:
        """[y0, y1, x0, x1] of the mask."""
        ys, xs = np.nonzero(self.mask)
        return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def check_frame(frame: np.ndarray, what: str = "frame 0") -> None:
    """VideoError when a frame is blank (black or one flat colour): there is nothing to find."""
    f = np.asarray(frame)
    if f.ndim != 3 or f.shape[-1] != 3:
        raise VideoError(f"{what} must be an [H,W,3] image, got shape {f.shape}")
    if float(f.max()) < 12:
        raise VideoError(f"{what} of the video is black; check the file (or its first frames)")
    if float(f.reshape(-1, 3).std(axis=0).max()) < 2.0:
        raise VideoError(f"{what} of the video is one flat colour: no robot to find")


def _border(h: int, w: int) -> np.ndarray:
    b = max(2, int(round(0.04 * min(h, w))))
    m = np.zeros((h, w), bool)
    m[:b], m[-b:], m[:, :b], m[:, -b:] = True, True, True, True
    return m


def _colour_distance(lab: np.ndarray, border: np.ndarray, k: int = 8) -> np.ndarray:
    """Per-pixel Lab distance to the nearest of k border colours."""
    samples = lab[border].reshape(-1, 3).astype(np.float32)
    k = int(min(k, max(1, len(np.unique(samples.round(), axis=0)))))
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(0)
    _, _, centers = cv2.kmeans(samples, k, None, crit, 2, cv2.KMEANS_PP_CENTERS)  # type: ignore[call-overload]
    flat = lab.reshape(-1, 1, 3).astype(np.float32)
    d = np.sqrt(((flat - centers[None]) ** 2).sum(-1)).min(axis=1)
    return d.reshape(lab.shape[:2])


def _smooth_line(line: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(line, sigma=max(1.0, 0.03 * len(line)), axis=0, mode="nearest")


def _border_interpolation(lab: np.ndarray, b: int) -> tuple[np.ndarray, float]:
    """(background predicted by interpolating the four border strips inward, the strips' roughness).

    A Coons patch: exact for backgrounds that vary smoothly (gradients, vignettes, an evenly lit floor),
    where one global colour model fails because a dark robot matches the gradient's dark end.
    Roughness is the mean Lab distance of the strips from their smoothed selves (texture, lines).
    """
    h, w = lab.shape[:2]
    strips = [
        np.median(lab[:b], 0),
        np.median(lab[-b:], 0),
        np.median(lab[:, :b], 1),
        np.median(lab[:, -b:], 1),
    ]
    smooth = [_smooth_line(s) for s in strips]
    rough = float(
        np.mean([np.sqrt(((s - m) ** 2).sum(-1)).mean() for s, m in zip(strips, smooth, strict=True)])
    )
    top, bottom, left, right = smooth
    u = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    v = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    corners = (
        (1 - u) * (1 - v) * top[:1][None]
        + u * (1 - v) * top[-1:][None]
        + (1 - u) * v * bottom[:1][None]
        + u * v * bottom[-1:][None]
    )
    patch = (1 - v) * top[None] + v * bottom[None] + (1 - u) * left[:, None] + u * right[:, None] - corners
    return patch, rough


def _noise_threshold(values: np.ndarray, k: float = 5.0) -> float:
    """median + k robust standard deviations: the background's own spread (the robot is a small minority)."""
    med = float(np.median(values))
    return med + k * 1.4826 * float(np.median(np.abs(values - med)))


def keep_robot_components(mask: np.ndarray, min_rel: float = 0.15, gap: float = 0.08) -> np.ndarray:
    """The largest component plus components >= min_rel of its area within `gap` x frame of its box."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask, bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    big = 1 + int(np.argmax(areas))
    x, y, w, h = (stats[big, i] for i in (0, 1, 2, 3))
    g = gap * max(mask.shape)
    keep = np.zeros(n, bool)
    keep[big] = True
    for i in range(1, n):
        if i == big or stats[i, cv2.CC_STAT_AREA] < min_rel * areas.max():
            continue
        xi, yi, wi, hi = (stats[i, j] for j in (0, 1, 2, 3))
        dx = max(0, max(x, xi) - min(x + w, xi + wi))
        dy = max(0, max(y, yi) - min(y + h, yi + hi))
        keep[i] = max(dx, dy) <= g
    return keep[labels]


def classical_foreground(frame: np.ndarray, *, iterations: int = 4) -> Foreground:
    """Border colour model + GrabCut + component filter at <= WORK_SIDE pixels, mask at the frame's size."""
    H, W = frame.shape[:2]
    scale = min(1.0, WORK_SIDE / max(H, W))
    h, w = max(8, int(round(H * scale))), max(8, int(round(W * scale)))
    small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA) if scale < 1 else frame.copy()
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    border = _border(h, w)
    interp, rough = _border_interpolation(lab, max(2, int(round(0.04 * min(h, w)))))
    smooth_bg = rough < SMOOTH_BORDER
    if smooth_bg:
        dist = np.sqrt(((lab - interp) ** 2).sum(-1))
    else:
        dist = _colour_distance(lab, border)
    thr = max(MIN_THRESHOLD, _noise_threshold(dist[~border]))
    likely = (dist > thr) & ~border
    model = "interpolated border (smooth background)" if smooth_bg else "border colour clusters"
    info: dict[str, Any] = {
        "method": f"{model} + grabcut",
        "threshold": round(thr, 2),
        "border_roughness": round(rough, 3),
    }
    if likely.sum() < 4:
        return Foreground(np.zeros((H, W), bool), {**info, "found": False})
    trimap = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    trimap[likely] = cv2.GC_PR_FGD
    sure = cv2.erode((dist > 2 * thr).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    trimap[sure & ~border] = cv2.GC_FGD
    trimap[border] = cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(small, trimap, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
        cut = (trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)
    except cv2.error:  # degenerate colour models (e.g. two flat colours): keep the colour decision
        cut = likely
    # no morphological opening: it erases legs one or two pixels thin; specks go with the components
    kept = keep_robot_components(cut)
    leaked = kept.any() and float(np.median(dist[kept])) < thr
    if leaked:  # GrabCut grew into the background (textures, compression): keep the colour decision
        kept = keep_robot_components(likely)
    info["grabcut_leaked"] = bool(leaked)
    inside = dist[kept]
    info.update(
        found=bool(kept.any()),
        # how far the robot's colours are from the background's, in thresholds (>1.5: clear contrast)
        contrast=round(float(np.median(inside) / thr), 3) if inside.size else 0.0,
        dropped_fraction=round(float((cut & ~kept).sum() / max(cut.sum(), 1)), 4),
        work_hw=[h, w],
    )
    if scale < 1:
        up = cv2.resize(kept.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR) > 0.5
    else:
        up = kept
    return Foreground(up, info)


def refine_with_sam2(frame: np.ndarray, coarse: Foreground, sam2: Any) -> Foreground:
    """SAM2 prompted with the coarse mask's box and an interior point; kept when it agrees with the box."""
    from nil.reference.segment.base import iou

    m = coarse.mask
    dist = cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 3)
    py, px = np.unravel_index(int(np.argmax(dist)), dist.shape)
    y0, y1, x0, x1 = coarse.box
    out = sam2.segment_image(frame, box=(x0, y0, x1, y1), point=(int(px), int(py)))
    agree = iou(out, m)
    info = {**coarse.info, "sam2_iou_with_coarse": round(agree, 4)}
    if out.any() and agree >= 0.5:
        return Foreground(out, {**info, "method": "sam2 (box + point from the classical foreground)"})
    return Foreground(m, {**info, "sam2_rejected": True})


def find_robot(frame: np.ndarray, *, sam2: Any = None, strict: bool = True) -> Foreground:
    """The robot's mask in `frame`; strict: SegmentationError when none, or it fills the frame."""
    check_frame(frame)
    fg = classical_foreground(frame)
    if sam2 is not None and fg.mask.any():
        fg = refine_with_sam2(frame, fg, sam2)
    frac = float(fg.mask.mean())
    fg.info["area_fraction"] = round(frac, 4)
    if strict:
        if frac < MIN_ROBOT_FRACTION:
            raise SegmentationError(
                "no robot found in frame 0 of the video: nothing stands out from the colours along its "
                "borders (no robot in view, or a robot that fills the whole frame); use a shot with the "
                "whole robot in view and background around it"
            )
        if frac > MAX_ROBOT_FRACTION:
            raise SegmentationError(
                f"the robot fills {frac:.0%} of frame 0 (above {MAX_ROBOT_FRACTION:.0%}); NIL needs the "
                "whole "
                "robot in view with background around it: use a wider shot"
            )
    return fg
