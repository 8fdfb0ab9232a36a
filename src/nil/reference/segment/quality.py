"""Quality checks of reference masks: written to reference/segment.json and shown in the report.

Hard failures (SegmentationError, the pipeline stops): a mask that vanishes (area below
``min_area_ratio`` x m0's area) or covers most of the frame (above ``max_frame_fraction``).
Gates (they stop the pipeline too; ``--force`` records them as warnings and goes on): the mask area
leaves ``gate_area_band`` around frame 0's mask area, the mask touches the frame border for a run
longer than ``gate_border_run`` of the video, the mask jumps (consecutive IoU below
``gate_min_consecutive_iou``). Warnings: frame 0 far from the robot found independently in the
video's frame 0 (never compared with the prompt itself), area above ``max_area_ratio`` x m0,
consecutive IoU below ``min_consecutive_iou``.
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


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    """(length, start) of the longest run of True."""
    best, start, run = 0, 0, 0
    for t, f in enumerate(flags):
        run = run + 1 if f else 0
        if run > best:
            best, start = run, t - run + 1
    return best, start


def mask_quality(
    masks: np.ndarray,
    first_mask: np.ndarray,
    cfg: SegmenterConfig,
    *,
    raise_on_failure: bool = True,
    independent: np.ndarray | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Per-frame area relative to m0, consecutive-frame IoU, gates, warnings; raises on failure.

    `independent` is the robot found in the video's frame 0 without the prompt (None: not available);
    frame-0 IoU is measured against it. `force` turns failed gates into warnings.
    """
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
        "frame0_iou": None if independent is None else round(iou(masks[0], np.asarray(independent, bool)), 4),
        "frame0_iou_reference": "the robot found independently in frame 0"
        if independent is not None
        else None,
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
    if q["frame0_iou"] is not None and q["frame0_iou"] < 0.7:
        warn.append(
            "frame 0's mask differs from the robot found independently in frame 0 "
            f"(IoU {q['frame0_iou']:.2f})"
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
    gates = []
    lo, hi = cfg.gate_area_band
    rel = areas / max(int(areas[0]), 1)
    out = np.flatnonzero((rel < lo) | (rel > hi))
    q["area_vs_frame0_min"] = round(float(rel.min()), 4)
    q["area_vs_frame0_max"] = round(float(rel.max()), 4)
    if out.size:
        t = int(out[0])
        gates.append(
            f"the mask area leaves {lo:g}-{hi:g}x frame 0's at frame {t} ({rel[t]:.2f}x; "
            "segmenter.gate_area_band)"
        )
    edge = masks[:, 0].any(1) | masks[:, -1].any(1) | masks[:, :, 0].any(1) | masks[:, :, -1].any(1)
    run, run_start = _longest_run(np.asarray(edge))
    q["border_run_frames"] = int(run)
    if T > 1 and run / T > cfg.gate_border_run:
        gates.append(
            f"the mask touches the frame border for {run} frames in a row from frame {run_start} "
            f"(over segmenter.gate_border_run={cfg.gate_border_run:g} of the video): the robot leaves the "
            "frame "
            "or the background leaks in"
        )
    big_jumps = [t + 1 for t, v in enumerate(consec) if v < cfg.gate_min_consecutive_iou]
    if big_jumps:
        gates.append(
            f"the mask jumps at frame {big_jumps[0]} (IoU {consec[big_jumps[0] - 1]:.2f} with the previous "
            "frame, "
            f"below segmenter.gate_min_consecutive_iou={cfg.gate_min_consecutive_iou:g})"
        )
    q["gates"] = gates
    q["forced"] = bool(force and gates)
    if force:
        warn.extend(f"{g} [forced]" for g in gates)
    else:
        errors.extend(gates)
    if errors:
        q["passed"] = False
        q["errors"] = errors
        if raise_on_failure:
            raise SegmentationError(
                "; ".join(errors) + f"; {_TRY}" + ("; or --force to go on" if gates and not force else "")
            )
    return q


def summary_line(q: dict[str, Any]) -> str:
    """One line for the CLI: frame-0 IoU, area range, worst consecutive IoU, warnings count."""
    return (
        f"frame-0 IoU {_fmt(q.get('frame0_iou'))} (vs the robot found in frame 0), "
        f"area {q['area_ratio_min']:.2f}-{q['area_ratio_max']:.2f}x m0, "
        f"consecutive IoU min {q['consecutive_iou_min']:.3f} (mean {q['consecutive_iou_mean']:.3f}), "
        f"{len(q['warnings'])} warning(s)"
    )


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
