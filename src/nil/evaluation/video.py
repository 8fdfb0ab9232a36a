"""The side-by-side evaluation video: reference | agent | mask overlap, with the per-frame IoU drawn on it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from nil.errors import NilError
from nil.reference.video import Video, write_video

# Overlap colours (RGB): where only the reference has the robot, where only the agent has it, both.
REF_ONLY = (230, 60, 60)
AGENT_ONLY = (60, 110, 235)
BOTH = (60, 190, 90)
BACKGROUND = (245, 245, 245)
MIN_PANEL = 192  # panels are upscaled (nearest) to at least this height so the text stays legible


def overlap_image(ref_mask: np.ndarray, agent_mask: np.ndarray) -> np.ndarray:
    """[H,W,3] uint8 colour map of two bool masks: red reference only, blue agent only, green both."""
    ref_mask = np.asarray(ref_mask, dtype=bool)
    agent_mask = np.asarray(agent_mask, dtype=bool)
    if ref_mask.shape != agent_mask.shape:
        raise NilError(f"mask shapes differ: {ref_mask.shape} vs {agent_mask.shape}")
    img = np.empty((*ref_mask.shape, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    img[ref_mask & ~agent_mask] = REF_ONLY
    img[~ref_mask & agent_mask] = AGENT_ONLY
    img[ref_mask & agent_mask] = BOTH
    return img


def _label(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color=(20, 20, 20)) -> None:
    thick = max(1, int(round(scale * 2)))
    # a light outline keeps the text readable over any frame
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def compose_side_by_side(
    ref_frames: np.ndarray,
    agent_frames: np.ndarray,
    ref_masks: np.ndarray,
    agent_masks: np.ndarray,
    ious: np.ndarray | None = None,
    *,
    titles: tuple[str, str, str] = ("reference", "agent", "mask overlap"),
) -> np.ndarray:
    """[T, H', 3W', 3] uint8 frames: reference | agent | overlap, titles and 't=.. IoU=..' drawn on each."""
    ref_frames = np.asarray(ref_frames)
    agent_frames = np.asarray(agent_frames)
    t = len(agent_frames)
    if len(ref_frames) != t or len(ref_masks) != t or len(agent_masks) != t:
        raise NilError(
            f"side-by-side needs equal lengths, got reference {len(ref_frames)}, agent {t}, "
            f"masks {len(ref_masks)}/{len(agent_masks)}"
        )
    if ref_frames.shape[1:3] != agent_frames.shape[1:3]:
        raise NilError(
            f"reference frames {ref_frames.shape[1:3]} and agent frames {agent_frames.shape[1:3]} differ"
        )
    if ious is None:
        from nil.evaluation.metrics import mask_iou

        ious = mask_iou(ref_masks, agent_masks)
    h, w = agent_frames.shape[1:3]
    up = max(1, int(np.ceil(MIN_PANEL / h)))
    ph, pw = h * up, w * up
    scale = max(0.35, ph / 480)
    out = np.empty((t, ph, 3 * pw, 3), dtype=np.uint8)
    for k in range(t):
        panels = [ref_frames[k], agent_frames[k], overlap_image(ref_masks[k], agent_masks[k])]
        row = []
        for img, title in zip(panels, titles, strict=True):
            p = (
                np.ascontiguousarray(cv2.resize(img, (pw, ph), interpolation=cv2.INTER_NEAREST))
                if up > 1
                else np.ascontiguousarray(img.copy())
            )
            _label(p, title, (4, int(18 * scale / 0.4)), scale)
            row.append(p)
        # drawn near the top: a browser's video controls cover the bottom rows
        _label(
            row[2],
            f"t={k} IoU={float(ious[k]):.2f}",
            (4, 2 * int(18 * scale / 0.4) + 2),
            scale,
            color=(0, 0, 0),
        )
        frame = np.concatenate(row, axis=1)
        frame[:, pw - 1 : pw + 1] = 0  # thin separators
        frame[:, 2 * pw - 1 : 2 * pw + 1] = 0
        out[k] = frame
    return out


def write_side_by_side(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Write composed side-by-side frames as a browser-playable H.264 mp4 (atomically)."""
    return write_video(path, Video(np.ascontiguousarray(frames), float(fps)))
