"""The segmentation stage: reference/masks.npz + reference/segment.json from the retimed reference and m0.

Masks are stored at the render resolution (camera width x height) with the nearest-neighbour rule
of ``base.resize_masks``; when the reference video has another size, m0 is brought to the video's
size with the same rule for the prompt and the segmenter's output is brought back to the render size.
The stage is cached on (retimed video hash, m0 hash, segmenter config, resolved segmenter, size).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from nil.config import SkillConfig
from nil.errors import ConfigError, MissingStageError, SegmentationError
from nil.io import atomic_save, atomic_write_json, sha256_bytes, sha256_file, sha256_json
from nil.paths import SkillPaths
from nil.reference.segment.base import ProgressFn, Segmenter, check_output, resize_masks
from nil.reference.segment.quality import mask_quality, summary_line
from nil.reference.video import Video

SEGMENT_VERSION = 1
RESIZE_RULE = "nearest neighbour, pixel centres aligned: src = floor((dst + 0.5) * src_size / dst_size)"


def _console():
    from rich.console import Console

    return Console(stderr=False, highlight=False)


def read_first_mask(paths: SkillPaths) -> np.ndarray:
    """m0 from frame0_mask.png (white = robot) as [H,W] bool."""
    import imageio.v3 as iio

    if not paths.frame0_mask.is_file():
        raise MissingStageError(f"{paths.frame0_mask} is missing; run `nil generate {paths.root}` first")
    img = np.asarray(iio.imread(paths.frame0_mask))
    if img.ndim == 3:
        img = img[..., :3].max(axis=-1)
    return img > 127


def resolve_segmenter_name(name: str, model_id: str) -> tuple[str, str | None]:
    """'auto' -> 'sam2' when its weights are on this machine, else 'flow'; returns (name, notice)."""
    if name != "auto":
        return name, None
    from nil.reference.segment.sam2 import sam2_weights_available

    if sam2_weights_available(model_id):
        return "sam2", None
    return "flow", (
        f"SAM2 weights {model_id!r} are not on this machine; using the offline flow-propagation "
        "segmenter (set segmenter.name: sam2 to download them)"
    )


def make_segmenter(
    cfg: SkillConfig, name: str | None = None, progress: ProgressFn | None = None
) -> Segmenter:
    """Build the segmenter `name` (already resolved, or 'auto') from SEGMENTERS with the skill's settings."""
    from nil.reference.segment.base import SEGMENTERS

    name = name or cfg.segmenter.name
    if name == "auto":
        name, _ = resolve_segmenter_name(name, getattr(cfg.segmenter, "model_id", ""))
    try:
        factory = SEGMENTERS.get(name)
    except ConfigError:
        raise SegmentationError(
            f"unknown segmenter {name!r}: use auto or one of {', '.join(SEGMENTERS.names())}"
        ) from None
    return factory(cfg, progress)


def fitted_prompt(fitted: np.ndarray, found: np.ndarray) -> np.ndarray:
    """The prompt of a calibrated reference: the fitted camera's render of e0 and the robot found in the
    video's frame 0, each kept only near the other (a few pixels): the render keeps watermarks, shadows and
    floor lines out, the found robot carries the video's own pose and outline."""
    import cv2

    r = max(2, int(round(0.02 * max(fitted.shape))))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    near_fit = cv2.dilate(fitted.astype(np.uint8), k) > 0
    near_found = cv2.dilate(found.astype(np.uint8), k) > 0
    return (fitted & near_found) | (found & near_fit)


def independent_frame0(
    video: Video, seg: Segmenter | None = None
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The robot in the video's frame 0 found without any prompt (SAM2-refined when `seg` is SAM2)."""
    from nil.errors import NilError
    from nil.reference.foreground import find_robot

    sam2 = seg if seg is not None and hasattr(seg, "segment_image") else None
    try:
        fg = find_robot(video.frames[0], sam2=sam2, strict=False)
    except NilError as e:
        return None, {"error": str(e)}
    return (fg.mask if fg.mask.any() else None), fg.info


def _load_video(paths: SkillPaths) -> tuple[Video, str]:
    """The retimed reference and its sha256 (from meta.json when stage 1 recorded it)."""
    try:
        from nil.reference.bundle import load_meta, load_reference
    except ImportError:  # stage 1 module absent: read the file directly
        from nil.reference.video import read_video

        if not paths.retimed.is_file():
            raise MissingStageError(
                f"{paths.retimed} is missing; run `nil generate {paths.root}` first"
            ) from None
        return read_video(paths.retimed), sha256_file(paths.retimed)
    video = load_reference(paths)
    sha = load_meta(paths).get("retimed_sha256") or sha256_file(paths.retimed)
    return video, sha


def _cache_key(
    video_sha: str,
    m0: np.ndarray,
    cfg: SkillConfig,
    resolved: str,
    render_hw: tuple[int, int],
    calibrated: bool = False,
) -> str:
    return sha256_json(
        {
            "version": SEGMENT_VERSION,
            "calibrated_prompt": calibrated,
            "retimed_sha256": video_sha,
            "first_mask_sha256": sha256_bytes(np.packbits(m0).tobytes() + str(m0.shape).encode()),
            "segmenter": cfg.segmenter.model_dump(mode="json"),
            "resolved": resolved,
            "render_hw": list(render_hw),
        }
    )


def save_masks(path: Path, masks: np.ndarray) -> Path:
    """Write [T,H,W] bool masks bit-packed into a compressed npz, atomically."""
    masks = np.asarray(masks, bool)

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, masks=np.packbits(masks, axis=-1), shape=np.asarray(masks.shape, np.int64))

    return atomic_save(path, _write)


def load_masks(paths: SkillPaths) -> np.ndarray:
    """Reference masks [T,H,W] bool (T = retimed frames, H,W = camera render size, True = robot)."""
    if not paths.masks.is_file():
        raise MissingStageError(f"no reference masks at {paths.masks}; run `nil segment {paths.root}` first")
    try:
        with np.load(paths.masks) as z:
            shape = tuple(int(v) for v in z["shape"])
            packed = z["masks"]
    except Exception as e:  # noqa: BLE001 - a corrupt file is a user-fixable state
        raise SegmentationError(
            f"{paths.masks} is unreadable ({e}); run `nil segment {paths.root} --force`"
        ) from None
    if len(shape) != 3:
        raise SegmentationError(f"{paths.masks} holds shape {shape}, not [T,H,W]; run `nil segment --force`")
    return np.unpackbits(packed, axis=-1, count=shape[2]).astype(bool).reshape(shape)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _record_in_meta(paths: SkillPaths, entry: dict[str, Any]) -> None:
    """Note which segmenter ran in reference/meta.json (key "segmentation"); stage 1 owns the rest."""
    meta = _read_json(paths.meta)
    if meta is None:
        return
    meta["segmentation"] = entry
    atomic_write_json(paths.meta, meta)


def segment_reference(
    paths: SkillPaths, cfg: SkillConfig, force: bool = False, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Segment the retimed reference (cached); writes masks.npz and segment.json, returns the latter."""
    console = _console()
    video, video_sha = _load_video(paths)
    m0 = read_first_mask(paths)
    render_hw = (int(cfg.camera.height), int(cfg.camera.width))
    if m0.shape != render_hw:
        raise SegmentationError(
            f"{paths.frame0_mask} is {m0.shape} but the camera renders {render_hw} (H,W); "
            f"re-render e0 with `nil generate {paths.root} --force`"
        )
    resolved, notice = resolve_segmenter_name(cfg.segmenter.name, getattr(cfg.segmenter, "model_id", ""))
    cal = (_read_json(paths.meta) or {}).get("calibration") or {}
    calibrated = bool(cal) and cfg.camera.model_dump(mode="json") == cal.get("config_after")
    key = _cache_key(video_sha, m0, cfg, resolved, render_hw, calibrated)
    old = _read_json(paths.segment_meta)
    if not force and old is not None and old.get("cache_key") == key and paths.masks.is_file():
        console.print(f"[green]masks cached[/green] ({old.get('segmenter')}, key {key[:12]}): {paths.masks}")
        return old
    if notice:
        console.print(f"[yellow]note:[/yellow] {notice}")
    seg = make_segmenter(cfg, resolved, progress=progress)
    m0_video = resize_masks(m0, video.hw)
    if not m0_video.any():
        raise SegmentationError(
            f"e0's mask vanishes when resized to the reference's {video.hw}; use a larger "
            "camera or reference resolution"
        )
    found, found_info = independent_frame0(video, seg)
    prompt = m0_video
    if calibrated and found is not None:
        prompt = fitted_prompt(m0_video, found)
    t0 = time.perf_counter()
    raw = check_output(seg.segment(video, prompt), video, resolved)
    wall = time.perf_counter() - t0
    masks = resize_masks(raw, render_hw)
    found_r = None if found is None else resize_masks(found, render_hw)
    quality = mask_quality(masks, m0, cfg.segmenter, raise_on_failure=False, independent=found_r, force=force)
    info = seg.info() if hasattr(seg, "info") else {}
    record: dict[str, Any] = {
        "stage": "segment",
        "version": SEGMENT_VERSION,
        "segmenter": resolved,
        "requested": cfg.segmenter.name,
        "model_id": info.get("model_id") if resolved == "sam2" else None,
        "segmenter_info": info,
        "fallback_notice": notice,
        "video_hw": list(video.hw),
        "render_hw": list(render_hw),
        "resize_rule": RESIZE_RULE,
        "num_frames": int(masks.shape[0]),
        "prompt": "fitted camera's e0 mask near the robot found in frame 0"
        if prompt is not m0_video
        else "m0",
        "frame0_found": found_info,
        "quality": quality,
        "wall_time_s": round(wall, 3),
        "frames_per_s": round(video.num_frames / max(wall, 1e-9), 2),
        "inputs": {"retimed_sha256": video_sha},
        "cache_key": key,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if not quality["passed"]:
        # record the failed attempt (for the report) but keep no masks that later stages could use
        record["cache_key"] = None
        atomic_write_json(paths.segment_meta, record)
        if paths.masks.is_file():
            paths.masks.unlink()
        mask_quality(masks, m0, cfg.segmenter, raise_on_failure=True, independent=found_r, force=force)
    save_masks(paths.masks, masks)
    atomic_write_json(paths.segment_meta, record)
    _record_in_meta(
        paths, {"segmenter": resolved, "model_id": record["model_id"], "segment_json": "segment.json"}
    )
    return record


def segment_command(directory: str | Path, force: bool = False) -> dict[str, Any]:
    """`nil segment DIR`: segment the reference with a progress bar; prints segmenter, quality, outputs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from nil.config import load_config

    paths = SkillPaths(Path(directory))
    cfg = load_config(paths.config)
    console = _console()
    with Progress(
        TextColumn("segmenting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("segment", total=None)

        def _progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        record = segment_reference(paths, cfg, force=force, progress=_progress)
    who = record["segmenter"] + (f" ({record['model_id']})" if record.get("model_id") else "")
    if record["segmenter"] in ("flow", "background"):
        who += " (classical fallback, no model weights)"
    console.print(
        f"segmenter: {who}; {record['num_frames']} frames at {record['render_hw'][1]}x"
        f"{record['render_hw'][0]}, {record['frames_per_s']:g} frames/s"
    )
    console.print(f"quality: {summary_line(record['quality'])}")
    for w in record["quality"]["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")
    print(f"wrote {paths.masks}")
    print(f"wrote {paths.segment_meta}")
    return record
