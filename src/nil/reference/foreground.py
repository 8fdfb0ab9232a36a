"""Find the robot in one frame of a video, without assuming the simulator's framing.

Offline (always available): a classical foreground.

1. A background model from the frame's border strip: the robot rarely touches all four borders, the
   floor and sky almost always do. A smooth border (a gradient, even light) is interpolated inward; a
   textured one (a checker or tiled floor, grid lines, a horizon) is modelled row by row: a pixel's
   background colours are the border pixels within a band of its row, since a floor seen in
   perspective changes with the row. Each pixel gets its Lab distance to that background.
2. A loose threshold (the background's own spread) finds the robot; its median distance then sets the
   threshold at its outline (EDGE_FRACTION), tight for a robot far from the floor's colours, loose
   enough for a faint one to keep its legs.
3. GrabCut may add a one-pixel ring around that decision (soft, anti-aliased outlines), never remove
   from it and never take a pixel that matches a background colour: left free, it fills the checker
   squares between thin legs and cuts the legs of dark robots.
4. Connected components: the largest one is the robot, others are kept when big and near it or
   touching it (a foot broken off by compression); components wholly inside the top or bottom
   CAPTION_BAND (watermarks, captions) never are.

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
MIN_THRESHOLD = 6.0  # Lab distance below which a pixel is always background colour (compression noise)
EDGE_FRACTION = 0.3  # the robot's outline: where its distance falls below this fraction of its median
SMOOTH_BORDER = 1.5  # border strips rougher than this (mean Lab distance) are texture: use colour bands
BAND = 0.08  # a pixel's background colours: the border pixels within this fraction of the height of its row
CAPTION_BAND = (
    0.15  # components wholly inside the top/bottom 15 % are captions or watermarks, never the robot
)
MAX_ROBOT_FRACTION = 0.6  # a "robot" covering more of the frame is the background leaking in
MIN_ROBOT_FRACTION = 0.002
CORNER = (
    0.12  # corner patches (fraction of each side) that stay background even when the robot fills the frame
)
OFF_EDGE_FRACTION = 0.05  # more of the border unlike its corners: the robot runs off the frame's edges


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


def _band_distance(lab: np.ndarray, border: np.ndarray, band: float = BAND, step: int = 2) -> np.ndarray:
    """Per-pixel Lab distance to the nearest border colour within `band` x height of the pixel's row.

    A floor seen in perspective changes with the image row (tile size, haze, light falloff, a horizon), so
    the colours the left and right border strips show at a row are that row's background. One global
    colour model fails twice on a checker floor: the robot's dark or grey parts match a far-away square,
    and a threshold loose enough for the robot lets the squares between its legs in.
    """
    h, w = lab.shape[:2]
    half = max(2, int(round(band * h)))
    out = np.empty((h, w), np.float32)
    for y0 in range(0, h, step):
        rows = slice(max(0, y0 - half), min(h, y0 + step + half))
        samples = np.unique(lab[rows][border[rows]].round(), axis=0).astype(np.float32)
        px = lab[y0 : y0 + step].reshape(-1, 1, 3)
        d = np.sqrt(((px - samples[None]) ** 2).sum(-1)).min(axis=1)
        out[y0 : y0 + step] = d.reshape(-1, w)
    return out


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


def border_off_corners(lab: np.ndarray, border: np.ndarray, tol: float = 2 * MIN_THRESHOLD) -> float:
    """Fraction of the border strip (corners left out) unlike both the corners' colours and the straight
    blend between each edge's two corners.

    A robot that fills the frame runs off its edges mid-side, while the corners still show background;
    a floor, a sky, a gradient or even lighting repeat or blend the corners' colours. Measured on known
    answers: <= 0.002 with the robot in view or none at all, 0.07-0.43 for 14 of 18 close-ups cut by the
    frame (the rest: dark legs crossing a dark floor). It only chooses the wording of a stop.
    """
    h, w = lab.shape[:2]
    ch, cw = max(2, int(CORNER * h)), max(2, int(CORNER * w))
    corners = np.zeros((h, w), bool)
    corners[:ch, :cw] = corners[:ch, -cw:] = corners[-ch:, :cw] = corners[-ch:, -cw:] = True
    palette = np.unique(lab[corners & border].round(), axis=0).astype(np.float32)
    edge = border & ~corners
    if not edge.any():
        return 0.0
    d_palette = np.sqrt(((lab[edge][:, None] - palette[None]) ** 2).sum(-1)).min(axis=1)
    tl, tr = np.median(lab[:ch, :cw].reshape(-1, 3), 0), np.median(lab[:ch, -cw:].reshape(-1, 3), 0)
    bl, br = np.median(lab[-ch:, :cw].reshape(-1, 3), 0), np.median(lab[-ch:, -cw:].reshape(-1, 3), 0)
    u = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    v = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    blend = (1 - u) * (1 - v) * tl + u * (1 - v) * tr + (1 - u) * v * bl + u * v * br
    d_blend = np.sqrt(((lab - blend) ** 2).sum(-1))[edge]
    return float((np.minimum(d_palette, d_blend) > tol).mean())


def _noise_threshold(values: np.ndarray, k: float = 5.0) -> float:
    """median + k robust standard deviations: the background's own spread (the robot is a small minority)."""
    med = float(np.median(values))
    return med + k * 1.4826 * float(np.median(np.abs(values - med)))


def keep_robot_components(mask: np.ndarray, min_rel: float = 0.15, gap: float = 0.08) -> np.ndarray:
    """The largest component, components >= min_rel of its area within `gap` x frame of its box, and any
    component within two pixels of those.

    Components wholly inside the top or bottom CAPTION_BAND of the frame are never the robot: watermarks
    and captions sit there, and a small frame makes a watermark's text larger than a distant robot.
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    H = mask.shape[0]
    top, height = stats[:, cv2.CC_STAT_TOP], stats[:, cv2.CC_STAT_HEIGHT]
    caption = (top >= (1 - CAPTION_BAND) * H) | (top + height <= CAPTION_BAND * H)
    areas = np.where(caption, 0, stats[:, cv2.CC_STAT_AREA])
    areas[0] = 0
    if n <= 1 or areas.max() == 0:
        return np.zeros_like(mask, bool)
    big = int(np.argmax(areas))
    x, y, w, h = (stats[big, i] for i in (0, 1, 2, 3))
    g = gap * max(mask.shape)
    keep = np.zeros(n, bool)
    keep[big] = True
    for i in range(1, n):
        if i == big or areas[i] < min_rel * areas[big]:
            continue
        xi, yi, wi, hi = (stats[i, j] for j in (0, 1, 2, 3))
        dx = max(0, max(x, xi) - min(x + w, xi + wi))
        dy = max(0, max(y, yi) - min(y + h, yi + hi))
        keep[i] = max(dx, dy) <= g
    out = keep[labels]
    # pieces of a thin limb that compression broke off (a foot, a toe) lie within two pixels of the robot
    near = cv2.dilate(out.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    touching = np.unique(labels[near & mask & ~out])
    keep[touching[touching > 0]] = True
    keep[0] = False
    keep[caption] = False
    return keep[labels]


def _grow_edges(
    image: np.ndarray, colour: np.ndarray, dist: np.ndarray, thr: float, border: np.ndarray
) -> np.ndarray:
    """Pixels GrabCut adds in a one-pixel ring around the colour decision (soft, anti-aliased outlines).

    GrabCut may only add, only next to the colour decision and never where a pixel matches a background
    colour: left free, its smoothness term fills the space between thin legs on a high-contrast floor and
    cuts the legs of dark robots.
    """
    k = np.ones((3, 3), np.uint8)
    trimap = np.full(colour.shape, cv2.GC_BGD, np.uint8)
    trimap[cv2.dilate(colour.astype(np.uint8), k) > 0] = cv2.GC_PR_BGD
    trimap[colour] = cv2.GC_PR_FGD
    trimap[cv2.erode(colour.astype(np.uint8), k) > 0] = cv2.GC_FGD
    trimap[(dist < 0.5 * thr) & ~colour] = cv2.GC_BGD
    trimap[border] = cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(image, trimap, None, bgd, fgd, 3, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
    except cv2.error:  # degenerate colour models (e.g. two flat colours): keep the colour decision
        return np.zeros_like(colour)
    return ((trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)) & ~colour


def classical_foreground(frame: np.ndarray) -> Foreground:
    """Border colour model + threshold at the robot's edge + GrabCut edge ring + component filter.

    Runs at <= WORK_SIDE pixels; the mask comes back at the frame's size.
    """
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
        dist = _band_distance(lab, border)
    model = "interpolated border (smooth background)" if smooth_bg else "border colour bands (textured)"
    info: dict[str, Any] = {
        "method": f"{model} + grabcut edge ring",
        "border_roughness": round(rough, 3),
        "border_off_corners": round(border_off_corners(lab, border), 4),
    }
    # a first, loose pass finds the robot; its own contrast then sets where its outline is, so a robot far
    # from the background's colours gets a tight outline (no compression halo) and a faint one keeps its legs
    noise = max(MIN_THRESHOLD, _noise_threshold(dist[~border]))
    first = keep_robot_components((dist > noise) & ~border)
    if first.sum() < 4:
        return Foreground(np.zeros((H, W), bool), {**info, "threshold": round(noise, 2), "found": False})
    thr = max(noise, EDGE_FRACTION * float(np.median(dist[first])))
    colour = keep_robot_components((dist > thr) & ~border)
    grown = _grow_edges(small, colour, dist, thr, border) if colour.any() else np.zeros_like(colour)
    kept = keep_robot_components(colour | grown)
    inside = dist[kept]
    info.update(
        threshold=round(thr, 2),
        found=bool(kept.any()),
        # how far the robot's colours are from the background's, in thresholds (>1.5: clear contrast)
        contrast=round(float(np.median(inside) / thr), 3) if inside.size else 0.0,
        grabcut_added=round(float((grown & kept).sum() / max(kept.sum(), 1)), 4),
        dropped_fraction=round(float(((dist > thr) & ~border & ~kept).sum() / max((dist > thr).sum(), 1)), 4),
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


def runs_off_edges(info: dict[str, Any]) -> bool:
    """Whether the finder saw the frame's border broken by something unlike its corners (a close-up)."""
    return float(info.get("border_off_corners", 0.0)) > OFF_EDGE_FRACTION


def no_robot_message(info: dict[str, Any]) -> str:
    """One line for "nothing found": a robot that fills the frame, told apart from a frame without one."""
    if runs_off_edges(info):
        return (
            "no robot found in frame 0 of the video, and "
            f"{float(info['border_off_corners']):.0%} of its border is unlike its corners: the robot "
            "probably fills the frame and runs off its edges; use a wider shot with background all "
            "around the robot (or camera.calibrate: false to keep the skill's camera)"
        )
    return (
        "no robot found in frame 0 of the video: nothing but background (and any caption or watermark "
        "at its top or bottom edge) stands out from the colours along its borders; check that the video "
        "shows the robot (or camera.calibrate: false to keep the skill's camera)"
    )


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
            raise SegmentationError(no_robot_message(fg.info))
        if frac > MAX_ROBOT_FRACTION:
            raise SegmentationError(
                f"the robot fills {frac:.0%} of frame 0 (above {MAX_ROBOT_FRACTION:.0%}): NIL needs the "
                "whole robot in view with background around it; use a wider shot (or camera.calibrate: "
                "false to keep the skill's camera)"
            )
    return fg
