"""Quality checks of reference masks: written to reference/segment.json and shown in the report.

Hard failures (SegmentationError, the pipeline stops): a mask that vanishes (area below
``min_area_ratio`` x m0's area) or covers most of the frame (above ``max_frame_fraction``).
Warnings: frame 0 far from m0, area above ``max_area_ratio`` x m0, jumps between consecutive frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nil.config import SegmenterConfig
from nil.errors import SegmentationError
from nil.reference.segment.base import iou

_TRY = (
    "try segmenter.name: sam2 (with weights), a larger camera resolution, or a different reference "
    "(`nil generate DIR --force` with another generator.seed)"
)


def mask_quality(
    masks: np.ndarray, first_mask: np.ndarray, cfg: SegmenterConfig, *, raise_on_failure: bool = True
) -> dict[str, Any]:
    """Frame-0 IoU with m0, per-frame area relative to m0, consecutive-frame IoU, warnings; raises on failure."""
    masks = np.asarray(masks, bool)
    m0 = np.asarray(first_mask, bool)
    T = masks.shape[0]
    a0 = max(int(m0.sum()), 1)
    areas = masks.reshape(T, -1).sum(axis=1)
    ratio = areas / a0
    frac = areas / float(masks.shape[1] * masks.shape[2])
    consec = [iou(masks[t - 1], masks[t]) for t in range(1, T)]
    q: dict[str, Any] = {
        "num_frames": T,
        "size_hw": [int(masks.shape[1]), int(masks.shape[2])],
        "frame0_iou": round(iou(masks[0], m0), 4),
        "m0_area_px": int(m0.sum()),
        "area_ratio_min": round(float(ratio.min()), 4),
        "area_ratio_max": round(float(ratio.max()), 4),
        "area_ratio_argmin": int(ratio.argmin()),
        "area_ratio_argmax": int(ratio.argmax()),
        "area_ratio": [round(float(r), 4) for r in ratio],
        "frame_fraction_max": round(float(frac.max()), 4),
        "consecutive_iou_min": round(float(min(consec)), 4) if consec else 1.0,
        "consecutive_iou_mean": round(float(np.mean(consec)), 4) if consec else 1.0,
        "consecutive_iou": [round(float(v), 4) for v in consec],
        "warnings": [],
        "passed": True,
    }
    warn: list[str] = q["warnings"]
    if q["frame0_iou"] < 0.9:
        warn.append(
            f"frame 0 differs from e0's mask (IoU {q['frame0_iou']:.2f}): the segmenter did not honour "
            "the prompt"
        )
    big = np.flatnonzero(ratio > cfg.max_area_ratio)
    if big.size:
        warn.append(
            f"mask area exceeds {cfg.max_area_ratio:g}x m0 at {big.size} frame(s), first at frame "
            f"{int(big[0])} ({ratio[big[0]]:.1f}x)"
        )
    jumps = [t + 1 for t, v in enumerate(consec) if v < cfg.min_consecutive_iou]
    if jumps:
        warn.append(
            f"the mask jumps (consecutive IoU < {cfg.min_consecutive_iou:g}) at {len(jumps)} frame(s), "
            f"first at frame {jumps[0]}"
        )
    errors = []
    gone = np.flatnonzero(ratio < cfg.min_area_ratio)
    if gone.size:
        t = int(gone[0])
        errors.append(
            f"the robot mask vanishes at frame {t} of {T} (area {ratio[t]:.0%} of e0's mask, below "
            f"segmenter.min_area_ratio={cfg.min_area_ratio:g})"
        )
    full = np.flatnonzero(frac > cfg.max_frame_fraction)
    if full.size:
        t = int(full[0])
        errors.append(
            f"the robot mask covers {frac[t]:.0%} of frame {t} (above segmenter.max_frame_fraction="
            f"{cfg.max_frame_fraction:g}); the background leaked into the mask"
        )
    if errors:
        q["passed"] = False
        q["errors"] = errors
        if raise_on_failure:
            raise SegmentationError("; ".join(errors) + f"; {_TRY}")
    return q


def summary_line(q: dict[str, Any]) -> str:
    """One line for the CLI: frame-0 IoU, area range, worst consecutive IoU, warnings count."""
    return (
        f"frame-0 IoU {q['frame0_iou']:.3f}, area {q['area_ratio_min']:.2f}-{q['area_ratio_max']:.2f}x m0, "
        f"consecutive IoU min {q['consecutive_iou_min']:.3f} (mean {q['consecutive_iou_mean']:.3f}), "
        f"{len(q['warnings'])} warning(s)"
    )
