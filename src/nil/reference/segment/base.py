"""The Segmenter protocol, input validation and the resize rule shared by every segmenter.

Resize rule (reference masks -> render resolution): nearest neighbour with pixel centres aligned,
i.e. output pixel (i, j) of an (H, W) mask takes source pixel
``(floor((i + 0.5) * h / H), floor((j + 0.5) * w / W))`` of the (h, w) mask. It never invents
soft values, keeps True = robot, and is the identity when the sizes agree, so a reference
rendered by the simulator at the camera's size keeps its exact masks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from nil.errors import SegmentationError
from nil.reference.video import Video
from nil.registry import Registry

ProgressFn = Callable[[int, int], None]  # (frames done, total)


@runtime_checkable
class Segmenter(Protocol):
    """Turns a video plus the exact robot mask of its frame 0 into robot masks of every frame."""

    name: str  # "sam2" | "flow" | "background"

    def segment(self, video: Video, first_mask: np.ndarray) -> np.ndarray:
        """[T,H,W] bool masks (True = robot) at the video's resolution; frame 0 prompted with first_mask."""
        ...


# A factory builds a segmenter from (skill config, progress callback or None).
SegmenterFactory = Callable[..., "Segmenter"]
SEGMENTERS: Registry[SegmenterFactory] = Registry(
    "segmenter.name",
    lazy={
        "sam2": "nil.reference.segment.sam2",
        "flow": "nil.reference.segment.flow",
        "background": "nil.reference.segment.background",
    },
)


def check_first_mask(video: Video, first_mask: np.ndarray) -> np.ndarray:
    """Validate m0 against the video: same (H,W), boolean-like, not empty; returns it as bool."""
    m = np.asarray(first_mask)
    if m.ndim != 2:
        raise SegmentationError(f"the first-frame mask must be a 2-D [H,W] array, got shape {m.shape}")
    if m.shape != video.hw:
        raise SegmentationError(
            f"the first-frame mask has shape {m.shape} but the video frames are {video.hw} (H,W); "
            "re-render frame0_mask.png at the reference's size or resize it with the nearest-neighbour rule"
        )
    if m.dtype != bool:
        vals = np.unique(m)
        if not np.isin(vals, (0, 1)).all():
            raise SegmentationError(
                f"the first-frame mask must be boolean (True = robot), got values {vals[:6]}"
            )
        m = m.astype(bool)
    if not m.any():
        raise SegmentationError(
            "the first-frame mask is empty (no robot pixel); re-render e0 with "
            "`nil frame` and check that the camera sees the robot"
        )
    return m


def check_output(masks: np.ndarray, video: Video, who: str) -> np.ndarray:
    """Every segmenter's output contract: [T,H,W] bool at the video's size."""
    masks = np.asarray(masks)
    want = (video.num_frames, *video.hw)
    if masks.shape != want:
        raise SegmentationError(
            f"segmenter {who} returned masks of shape {masks.shape}, expected {want} (report this as a bug)"
        )
    return masks.astype(bool, copy=False)


def resize_masks(masks: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of [T,h,w] (or [h,w]) bool masks to (H,W) with centred pixel sampling."""
    m = np.asarray(masks, dtype=bool)
    single = m.ndim == 2
    if single:
        m = m[None]
    h, w = m.shape[1:]
    H, W = int(hw[0]), int(hw[1])
    if (h, w) == (H, W):
        out = m.copy()
    else:
        rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
        cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
        out = m[:, rows][:, :, cols]
    return out[0] if single else out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0
