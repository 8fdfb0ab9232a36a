"""Background-difference segmenter ("background") for references filmed by a static camera.

The background is the per-pixel median over the video of the pixels not known to be robot: a first
pass excludes frame 0's robot pixels, a second pass excludes every frame's first-pass mask (grown
by 2 px), so pixels the robot covers in many frames still get the floor's colour. A pixel is robot where its
colour differs from that background by more than ``threshold`` (max over RGB channels), cleaned by a
morphological opening/closing and restricted to connected components that overlap the previous
frame's mask grown by ``max_motion`` pixels (the robot does not teleport). Frame 0 is m0 itself.
Not for tracking-camera videos (the floor moves): use "flow" or "sam2" there.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from nil.reference.segment.base import SEGMENTERS, ProgressFn, check_first_mask
from nil.reference.video import Video


class BackgroundSegmenter:
    """Median background + colour difference threshold + temporal component filter."""

    name = "background"

    def __init__(self, threshold: int = 30, max_motion: int = 15, progress: ProgressFn | None = None) -> None:
        self.threshold = int(threshold)
        self.max_motion = int(max_motion)
        self.progress = progress

    def background(self, video: Video, robot: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
        """[H,W,3] uint8 median background; robot pixels ([H,W] for frame 0, or [T,H,W]) do not vote."""
        f = video.frames.astype(np.float32)
        if robot.ndim == 2:
            f[0][robot] = np.nan
        else:
            f[robot] = np.nan
        seen = ~np.isnan(f).all(axis=0)
        f[:, ~seen.all(axis=-1)] = 0.0  # pixels that are robot in every frame: filled below
        bg = np.median(f, axis=0) if video.num_frames == 1 else np.nanmedian(f, axis=0)
        if fallback is not None:
            bg = np.where(seen, bg, fallback)
        else:
            bg = np.where(seen, bg, np.nanmedian(video.frames[0].astype(np.float32), axis=(0, 1)))
        return np.clip(bg, 0, 255).astype(np.uint8)

    def segment(self, video: Video, first_mask: np.ndarray) -> np.ndarray:
        """[T,H,W] bool masks from background difference, frame 0 = m0."""
        m0 = check_first_mask(video, first_mask)
        bg1 = self.background(video, m0)
        first = self._pass(video, m0, bg1, report=False)
        grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        robot = np.stack([cv2.dilate(m.astype(np.uint8), grow) > 0 for m in first])
        return self._pass(video, m0, self.background(video, robot, bg1), report=True)

    def _pass(self, video: Video, m0: np.ndarray, background: np.ndarray, report: bool) -> np.ndarray:
        bg = background.astype(np.int16)
        T = video.num_frames
        out = np.zeros((T, *video.hw), bool)
        out[0] = m0
        k3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        grow = cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (2 * self.max_motion + 1, 2 * self.max_motion + 1)
        )
        for t in range(1, T):
            diff = np.abs(video.frames[t].astype(np.int16) - bg).max(axis=-1) > self.threshold
            m = cv2.morphologyEx(diff.astype(np.uint8), cv2.MORPH_OPEN, k3)
            m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, k3)
            near = cv2.dilate(out[t - 1].astype(np.uint8), grow) > 0
            n, labels = cv2.connectedComponents(m, connectivity=8)
            keep = np.zeros(n, bool)
            keep[np.unique(labels[near & (m > 0)])] = True
            keep[0] = False
            out[t] = keep[labels]
            if report and self.progress is not None:
                self.progress(t + 1, T)
        return out


@SEGMENTERS.register("background")
def _make_background(cfg: Any, progress: ProgressFn | None = None) -> BackgroundSegmenter:
    threshold = getattr(cfg.segmenter, "background_threshold", 30)
    return BackgroundSegmenter(threshold=threshold, progress=progress)
