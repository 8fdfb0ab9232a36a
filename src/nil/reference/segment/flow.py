"""Offline fallback segmenter ("flow"): propagate the exact frame-0 mask with dense optical flow,
then re-decide the pixels near the propagated boundary with per-frame colour models.

Why this design: background subtraction or GrabCut alone reach only IoU 0.44-0.54 on tracking-camera
videos (the floor moves; see research/feasibility.md), and GrabCut's smoothness term cuts thin legs.
So, for frame t:

1. DIS optical flow from frame t to frame t-1 (on luma), and a backward warp of mask t-1: the prior.
2. A signed distance ``sd`` to the warped boundary (> 0 inside). Colour histograms (YCrCb, 32^3
   bins, lightly smoothed) of the robot (pixels with sd >= core, mixed with a fixed histogram of
   the robot in frame 0 so that the robot's colours cannot drift) and of the background (pixels
   with sd <= -band, i.e. this frame's floor and sky, which change as the camera moves).
3. Each pixel within ``band`` of the warped boundary becomes robot when
   ``colour_weight * clip(log p(c|robot) - log p(c|background)) + sd / sigma > 0``; pixels farther
   out are background, pixels deeper in stay robot unless their colour says otherwise.

Frame 0's output is the prompt mask itself. Measured quality and speed: docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

from nil.reference.segment.base import SEGMENTERS, ProgressFn, check_first_mask
from nil.reference.video import Video


@dataclass
class FlowParams:
    """Tuning of the flow segmenter (defaults chosen on synthetic references of ant, go2 and h1)."""

    bins: int = 32  # histogram bins per YCrCb channel
    hist_sigma: float = 0.7  # Gaussian smoothing of the histograms, in bins
    band: float = 4.0  # pixels beyond this distance outside the warped mask are background
    core: float = 1.5  # robot colour samples: at least this far inside the warped mask
    sigma: float = 1.5  # prior strength: distance (px) that counts as one unit of log-odds
    colour_weight: float = 1.0
    clip: float = 4.0  # bound on the colour log-likelihood ratio
    anchor: float = 0.7  # weight of frame 0's robot colours in the robot histogram
    eps: float = 1e-4
    flow_preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    u8 = mask.astype(np.uint8)
    din = cv2.distanceTransform(u8, cv2.DIST_L2, 3)
    dout = cv2.distanceTransform(1 - u8, cv2.DIST_L2, 3)
    return np.where(mask, din - 0.5, -(dout - 0.5)).astype(np.float32)


class FlowSegmenter:
    """Optical-flow propagation of m0 with colour refinement; needs no weights (OpenCV + SciPy)."""

    name = "flow"

    def __init__(self, params: FlowParams | None = None, progress: ProgressFn | None = None) -> None:
        self.params = params or FlowParams()
        self.progress = progress

    def _bin_index(self, rgb: np.ndarray) -> np.ndarray:
        b = self.params.bins
        q = (cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb).astype(np.int32) * b) >> 8
        return (q[..., 0] * b + q[..., 1]) * b + q[..., 2]

    def _hist(self, idx: np.ndarray, sel: np.ndarray) -> np.ndarray:
        b = self.params.bins
        h = np.bincount(idx[sel], minlength=b**3).astype(np.float64).reshape(b, b, b)
        if self.params.hist_sigma > 0:
            h = gaussian_filter(h, self.params.hist_sigma, mode="constant")
        total = h.sum()
        return (h / total).ravel() if total > 0 else np.full(b**3, 1.0 / b**3)

    def refine(self, rgb: np.ndarray, warped: np.ndarray, anchor_hist: np.ndarray) -> np.ndarray:
        """Re-decide the pixels around a propagated mask from this frame's colours."""
        p = self.params
        if not warped.any():
            return warped
        idx = self._bin_index(rgb)
        sd = _signed_distance(warped)
        core = sd >= p.core
        if core.sum() < 20:  # thin or tiny robot: every warped pixel is a colour sample
            core = warped
        far = sd <= -p.band
        h_fg = p.anchor * anchor_hist + (1.0 - p.anchor) * self._hist(idx, core)
        if far.any():
            h_bg = self._hist(idx, far)
            llr = np.clip(np.log(h_fg[idx] + p.eps) - np.log(h_bg[idx] + p.eps), -p.clip, p.clip)
        else:  # the robot fills the frame: no background to learn from, keep the prior
            llr = np.zeros(sd.shape, np.float64)
        logit = p.colour_weight * llr + sd / p.sigma
        return (logit > 0) & (sd > -p.band)

    def segment(self, video: Video, first_mask: np.ndarray) -> np.ndarray:
        """[T,H,W] bool: m0 on frame 0, then flow propagation + colour refinement frame by frame."""
        m0 = check_first_mask(video, first_mask)
        frames = video.frames
        T, H, W = video.num_frames, *video.hw
        gy, gx = np.mgrid[0:H, 0:W].astype(np.float32)
        dis = cv2.DISOpticalFlow_create(self.params.flow_preset)  # type: ignore[attr-defined]
        anchor_hist = self._hist(self._bin_index(frames[0]), m0)
        out = np.zeros((T, H, W), bool)
        out[0] = m0
        prev_gray = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
        for t in range(1, T):
            gray = cv2.cvtColor(frames[t], cv2.COLOR_RGB2GRAY)
            flow = dis.calc(gray, prev_gray, None)  # where each pixel of frame t was in frame t-1
            warped = (
                cv2.remap(
                    out[t - 1].astype(np.float32),
                    gx + flow[..., 0],
                    gy + flow[..., 1],
                    cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT,
                    borderValue=0,
                )
                > 0.5
            )
            out[t] = self.refine(frames[t], warped, anchor_hist)
            prev_gray = gray
            if self.progress is not None:
                self.progress(t + 1, T)
        return out


@SEGMENTERS.register("flow")
def _make_flow(cfg: Any, progress: ProgressFn | None = None) -> FlowSegmenter:
    return FlowSegmenter(progress=progress)
