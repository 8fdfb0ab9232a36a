"""Bring an imported video to the camera's frame: drop letterbox bars, match the aspect ratio, resize.

The simulator renders at the camera's width x height, and a fitted camera can only reproduce a
video whose pixels have that aspect ratio (a resize that stretches one axis has no camera). So:

1. Letterbox / pillarbox bars are cropped: rows (columns) at an edge that are near-black and
   constant over the whole video (at most ``MAX_BAR`` of the frame per side).
2. When the remaining picture is wider (taller) than the camera, it is cropped to the camera's
   aspect ratio, the window centred on the robot found in frame 0 (the tracking camera keeps the
   robot near that place) and clamped to the picture. When the robot is wider than that window,
   the picture is padded instead (with its own border colour) so the robot is never cut.
3. The result is resized to the camera's size (area filter when shrinking).

Every decision is recorded (``framing`` in reference/meta.json's generator info).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BAR_LUMA = 24  # a bar pixel is darker than this (0-255) ...
BAR_STD = 4.0  # ... and its row/column varies less than this over space and time
MAX_BAR = 0.35  # fraction of the frame one bar may take
MIN_BAR_PX = 2


@dataclass
class Framing:
    """What was done to a video to bring it to the camera's frame (pixel boxes are [y0, y1, x0, x1])."""

    source_hw: tuple[int, int]
    bars: tuple[int, int, int, int]  # rows/cols cropped from top, bottom, left, right
    crop: tuple[int, int, int, int]  # window of the bar-free picture that was kept
    pad: tuple[int, int, int, int]  # rows/cols added at top, bottom, left, right
    out_hw: tuple[int, int]
    decision: str  # "none" | "crop" | "pad"

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _sample(frames: np.ndarray, n: int = 16) -> np.ndarray:
    idx = np.unique(np.linspace(0, len(frames) - 1, min(n, len(frames))).astype(int))
    return frames[idx].astype(np.float32).mean(axis=-1)  # luma-ish [t,H,W]


def _bar_run(lines: np.ndarray, limit: int) -> int:
    """How many leading lines ([n, ...] luma values) are bar lines."""
    n = 0
    for line in lines[:limit]:
        if float(line.max()) < BAR_LUMA and float(line.std()) < BAR_STD:
            n += 1
        else:
            break
    return n if n >= MIN_BAR_PX else 0


def find_bars(frames: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) bar thickness in pixels of [T,H,W,3] frames (0 where there is none)."""
    g = _sample(frames)
    H, W = g.shape[1:]
    rows = g.transpose(1, 0, 2)  # [H, t, W]
    cols = g.transpose(2, 0, 1)  # [W, t, H]
    top = _bar_run(rows, int(H * MAX_BAR))
    bottom = _bar_run(rows[::-1], int(H * MAX_BAR))
    left = _bar_run(cols, int(W * MAX_BAR))
    right = _bar_run(cols[::-1], int(W * MAX_BAR))
    # Letterbox and pillarbox bars come in pairs (equal, or a pixel or two apart when the padding is odd);
    # dark rows beyond the pair are the picture (a night sky above a floor, the simulator's black
    # background), never a bar to crop.
    top, bottom = _paired(top, bottom, H)
    left, right = _paired(left, right, W)
    return top, bottom, left, right


def _paired(a: int, b: int, size: int) -> tuple[int, int]:
    if abs(a - b) <= max(2, size // 100):
        return a, b
    return min(a, b), min(a, b)


def _border_colour(frame: np.ndarray) -> np.ndarray:
    edge = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
    return np.median(edge, axis=0).astype(np.uint8)


def plan_framing(
    source_hw: tuple[int, int],
    bars: tuple[int, int, int, int],
    out_hw: tuple[int, int],
    robot_box: tuple[int, int, int, int] | None,
) -> Framing:
    """Decide crop or pad for a picture of `source_hw` minus `bars`, given the robot's box in it."""
    H, W = source_hw
    top, bottom, left, right = bars
    h, w = H - top - bottom, W - left - right
    want = out_hw[1] / out_hw[0]  # width / height
    crop = (0, h, 0, w)
    pad = (0, 0, 0, 0)
    decision = "none"
    if abs(w / h - want) * min(h, w) >= 1.0:  # more than a pixel off
        y0, y1, x0, x1 = robot_box if robot_box is not None else (0, h, 0, w)
        if w / h > want:  # too wide: keep a window of the full height
            cw = int(round(h * want))
            if x1 - x0 <= cw:
                c = int(np.clip(round((x0 + x1) / 2 - cw / 2), 0, w - cw))
                crop, decision = (0, h, c, c + cw), "crop"
            else:
                ph = int(round(w / want)) - h
                pad, decision = (ph // 2, ph - ph // 2, 0, 0), "pad"
        else:  # too tall: keep a window of the full width
            ch = int(round(w / want))
            if y1 - y0 <= ch:
                c = int(np.clip(round((y0 + y1) / 2 - ch / 2), 0, h - ch))
                crop, decision = (c, c + ch, 0, w), "crop"
            else:
                pw = int(round(h * want)) - w
                pad, decision = (0, 0, pw // 2, pw - pw // 2), "pad"
    return Framing((H, W), bars, crop, pad, tuple(out_hw), decision)  # type: ignore[arg-type]


def apply_framing(frames: np.ndarray, f: Framing) -> np.ndarray:
    """[T,H,W,3] frames cropped/padded/resized as `f` says."""
    from nil.reference.generators.file import resize_to

    top, bottom, left, right = f.bars
    H, W = f.source_hw
    pic = frames[:, top : H - bottom, left : W - right]
    y0, y1, x0, x1 = f.crop
    pic = pic[:, y0:y1, x0:x1]
    if any(f.pad):
        pt, pb, pl, pr = f.pad
        fill = _border_colour(pic[0])
        out = np.empty((len(pic), pic.shape[1] + pt + pb, pic.shape[2] + pl + pr, 3), np.uint8)
        out[:] = fill
        out[:, pt : pt + pic.shape[1], pl : pl + pic.shape[2]] = pic
        pic = out
    return np.ascontiguousarray(resize_to(np.ascontiguousarray(pic), f.out_hw))


def robot_box_in(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """The robot's box [y0, y1, x0, x1] in a frame from the classical foreground (None when none is found)."""
    from nil.errors import NilError
    from nil.reference.foreground import find_robot

    try:
        fg = find_robot(frame, strict=False)
    except NilError:
        return None
    if not fg.mask.any():
        return None
    ys, xs = np.nonzero(fg.mask)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def conform(frames: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, Framing]:
    """Frames brought to the camera's (H, W): bars cropped, aspect matched around the robot, resized."""
    bars = find_bars(frames)
    H, W = frames.shape[1:3]
    top, bottom, left, right = bars
    box = None
    h, w = H - top - bottom, W - left - right
    if abs(w / h - out_hw[1] / out_hw[0]) * min(h, w) >= 1.0:
        box = robot_box_in(frames[0, top : H - bottom, left : W - right])
    plan = plan_framing((H, W), bars, out_hw, box)
    return apply_framing(frames, plan), plan
