"""Stage 1 on disk: e0 -> generated video -> retimed reference, with provenance and a cache.

generate_reference() writes, under <skill>/reference/:
  video.mp4      the video as generated (or imported)
  retimed.mp4    the video at the control rate: frame t <-> control step t (episode horizon = T - 1)
  teacher.npz    synthetic references only: the teacher's qpos/qvel/root_pos per RETIMED frame
  meta.json      provenance + cache key; `retimed_sha256` is what later stages key their caches on

Everything is built in a temporary folder beside reference/ and moved in only when complete;
meta.json is removed first and written last, so a crash at any point leaves either the previous
complete bundle or no meta.json at all (which the next run treats as "not generated").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nil.errors import ConfigError, GeneratorError, MissingStageError, VideoError
from nil.io import atomic_write_json, sha256_bytes, sha256_file, sha256_json
from nil.paths import SkillPaths
from nil.reference.video import Video, read_video, write_video

if TYPE_CHECKING:
    from nil.config import SkillConfig

BUNDLE_VERSION = 1
SYNTHETIC_LABEL = (
    "synthetic teacher: a simulated gait rendered with the agent's camera, the offline default "
    "and a benchmark instrument (ground truth in teacher.npz), not a video model"
)
RAW_QUALITY = 8
RETIMED_QUALITY = 10  # the reference every later stage reads: keep compression loss minimal
_TMP_PREFIX = ".reference.tmp-"


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _robot_spec(cfg: SkillConfig):
    """The RobotSpec of the skill (separate so tests can substitute it)."""
    from nil.robots import robot_from_config

    return robot_from_config(cfg)


def _write_frame0(paths: SkillPaths, spec: Any, background: tuple[int, int, int]):
    """Render and write e0 / m0 (separate so tests can substitute it)."""
    from nil.reference.frame import write_frame0

    return write_frame0(paths, spec, background)


def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# The skill.yaml sections compute_cache_key's inputs come from: robot, camera and scene render e0
# (frame0_sha256, resolution) and set control_hz; skill and prompt_template make the prompt; generator holds
# the generator's own parameters, seed, frame count, fps and retiming. Nothing else in skill.yaml changes the
# reference, so skills that agree on these share one (nil.scale groups a sweep's skills by them).
CACHE_KEY_SECTIONS = ("robot", "skill", "prompt_template", "camera", "scene", "generator")


def compute_cache_key(
    cfg: SkillConfig,
    generator: Any,
    *,
    prompt: str,
    frame0_sha: str,
    control_hz: float,
    size_hw: tuple[int, int],
) -> tuple[str, dict[str, Any]]:
    """(key, what it hashes): everything that changes the retimed reference."""
    g = cfg.generator
    parts = {
        "version": BUNDLE_VERSION,
        "generator": generator.name,
        "generator_params": generator.cache_params(),
        "prompt": prompt,
        "frame0_sha256": frame0_sha,
        "seed": g.seed,
        "num_frames": g.num_frames,
        "fps": g.fps,
        "resolution": list(size_hw),
        "retime": {"method": g.retime.method, "rife_path": g.retime.rife_path},
        "control_hz": control_hz,
    }
    return sha256_json(parts), parts


def _read_meta(paths: SkillPaths) -> dict[str, Any] | None:
    try:
        return json.loads(paths.meta.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _bundle_complete(paths: SkillPaths, meta: dict[str, Any]) -> bool:
    files = [paths.video, paths.retimed] + ([paths.teacher] if meta.get("synthetic") else [])
    return all(p.is_file() for p in files)


def _clean_stale_tmp(paths: SkillPaths) -> None:
    for p in paths.root.glob(_TMP_PREFIX + "*"):
        shutil.rmtree(p, ignore_errors=True)


def _install(tmp: Path, paths: SkillPaths, names: list[str]) -> None:
    """Move the finished files into reference/: invalidate meta first, move data files, meta last."""
    ref = paths.reference
    ref.mkdir(parents=True, exist_ok=True)
    if paths.meta.exists():
        paths.meta.unlink()
    for stale in ("teacher.npz", "calibration.png"):  # an earlier reference's, not this one's
        if (ref / stale).exists() and stale not in names:
            (ref / stale).unlink()
    for name in names:
        os.replace(tmp / name, ref / name)
    os.replace(tmp / "meta.json", paths.meta)


def _generator_camera(cfg: SkillConfig, old: dict[str, Any] | None) -> SkillConfig:
    """The config whose camera renders the generator's e0: the one from before a calibration wrote the
    fitted camera into skill.yaml, so calibrating never changes the generator's input (nor its cache)."""
    cal = (old or {}).get("calibration") or {}
    if cal.get("config_before") and cfg.camera.model_dump(mode="json") == cal.get("config_after"):
        from nil.config import CameraConfig

        return cfg.model_copy(update={"camera": CameraConfig.model_validate(cal["config_before"])})
    return cfg


def _wants_calibration(cfg: SkillConfig, generator: Any) -> bool:
    return bool(cfg.camera.calibrate) and not generator.synthetic


def generate_reference(paths: SkillPaths, cfg: SkillConfig, force: bool = False) -> dict[str, Any]:
    """Stage 1: write e0, generate (or reuse) the reference video, retime it to the control rate; -> meta.

    For a non-synthetic generator with camera.calibrate on, the camera is fitted to the video's frame 0
    (nil.reference.calibrate) and written into skill.yaml (and `cfg`); e0/m0 are re-rendered from it.
    `force` also goes on past a failed camera-fit gate.
    """
    from nil.reference.generators import GeneratorResult, make_generator
    from nil.reference.retime import retime

    console = _console()
    t_start = time.perf_counter()
    old = _read_meta(paths)
    gen_cfg = _generator_camera(cfg, old)
    spec = _robot_spec(gen_cfg)
    r, g, b = (int(c) for c in cfg.camera.background)
    bg = (r, g, b)
    f0 = _write_frame0(paths, spec, bg)
    frame0 = np.ascontiguousarray(f0.rgb_nobg)
    prompt = cfg.prompt(spec.description)
    if not prompt.strip():
        raise ConfigError("the prompt is empty; set `skill` (and prompt_template) in skill.yaml")
    control_hz = float(spec.control_hz)
    generator = make_generator(gen_cfg)
    if hasattr(generator, "first_mask"):
        generator.first_mask = f0.mask
    frame0_sha = sha256_bytes(frame0.tobytes() + str(frame0.shape).encode())
    key, key_parts = compute_cache_key(
        gen_cfg,
        generator,
        prompt=prompt,
        frame0_sha=frame0_sha,
        control_hz=control_hz,
        size_hw=frame0.shape[:2],
    )
    calibrate = _wants_calibration(gen_cfg, generator)
    if calibrate:
        key_parts["calibrate"] = {"version": 1, "min_iou": cfg.camera.calibrate_min_iou}
        key = sha256_json(key_parts)

    if not force and old is not None and old.get("cache_key") == key and _bundle_complete(paths, old):
        console.print(
            f"[green]reference cached[/green] ({old['generator']}, key {key[:12]}): {paths.reference}"
        )
        if old.get("calibration") and (calibrate or gen_cfg is not cfg):
            from nil.reference.calibrate import apply_calibration

            apply_calibration(paths, cfg, old["calibration"])  # (again: a run killed before it finished)
        return {**old, "cached": True}

    _clean_stale_tmp(paths)
    tmp = paths.root / f"{_TMP_PREFIX}{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        label = f" [yellow]({SYNTHETIC_LABEL.split(':')[0]})[/yellow]" if generator.synthetic else ""
        console.print(f"generating the reference with [bold]{generator.name}[/bold]{label}: {prompt!r}")
        t0 = time.perf_counter()
        result = generator.generate(
            frame0,
            prompt,
            num_frames=cfg.generator.num_frames,
            fps=cfg.generator.fps,
            seed=cfg.generator.seed,
        )
        if not isinstance(result, GeneratorResult):
            raise GeneratorError(
                f"generator {generator.name} returned {type(result).__name__}, not a GeneratorResult "
                "(a plug-in's generate() must return GeneratorResult(video, info, teacher))"
            )
        raw, info = result.video, dict(result.info)
        t_gen = time.perf_counter() - t0
        if raw.hw != frame0.shape[:2]:
            raise VideoError(
                f"generator {generator.name} returned {raw.hw} frames, expected e0's size {frame0.shape[:2]}"
            )
        t0 = time.perf_counter()
        retimed = retime(
            raw,
            control_hz,
            cfg.generator.retime.method,
            rife_path=cfg.generator.retime.rife_path,
            progress=True,
        )
        t_retime = time.perf_counter() - t0
        calibration = None
        if calibrate:  # after retiming, so a video too short to use stops before the (slower) fit
            from nil.reference.calibrate import (
                OVERLAY_NAME,
                calibrate_frame,
                print_calibration,
                write_overlay,
            )

            _, calibration, image = calibrate_frame(
                gen_cfg, raw.frames[0], force=force, frames=raw.frames, fps=raw.fps
            )
            write_overlay(tmp / OVERLAY_NAME, image)
            calibration["overlay"] = OVERLAY_NAME
            print_calibration(console, calibration)
            if calibration["passed"] and info.pop("warning", None):
                info["first_frame_note"] = (
                    "frame 0 differs from e0's camera; the camera was fitted to the video"
                )
        write_video(tmp / "video.mp4", raw, quality=RAW_QUALITY)
        write_video(tmp / "retimed.mp4", retimed, quality=RETIMED_QUALITY)
        names = ["video.mp4", "retimed.mp4"] + [n for n in ("calibration.png",) if (tmp / n).is_file()]
        teacher_sha = None
        if result.teacher is not None:
            teacher = dict(result.teacher)
            n_t = len(teacher["qpos"])
            if n_t != retimed.num_frames:
                raise VideoError(
                    f"the synthetic teacher has {n_t} states but the retimed reference has "
                    f"{retimed.num_frames} frames; they must align (report this as a bug)"
                )
            np.savez_compressed(tmp / "teacher.npz", **teacher)  # type: ignore[arg-type]
            names.append("teacher.npz")
            teacher_sha = sha256_file(tmp / "teacher.npz")
        meta: dict[str, Any] = {
            "stage": "reference",
            "version": BUNDLE_VERSION,
            "generator": generator.name,
            "synthetic": bool(generator.synthetic),
            "label": SYNTHETIC_LABEL if generator.synthetic else f"{generator.name} reference video",
            "model_id": info.get("model_id"),
            "revision": info.get("revision"),
            "prompt": prompt,
            "seed": cfg.generator.seed,
            "robot": spec.name,
            "size": list(frame0.shape[:2]),
            "fps": raw.fps,
            "source_fps": info.get("source_fps", raw.fps),
            "source_variable_rate": bool(info.get("source_variable_rate", False)),
            "num_frames": raw.num_frames,
            "control_hz": control_hz,
            "retimed_fps": retimed.fps,
            "retimed_num_frames": retimed.num_frames,
            "horizon": retimed.num_frames - 1,
            "retime": {"method": cfg.generator.retime.method, "rife_path": cfg.generator.retime.rife_path},
            "inputs": {
                "frame0_sha256": frame0_sha,
                **{k: v for k, v in key_parts["generator_params"].items() if k.endswith("sha256")},
            },
            "video_sha256": sha256_file(tmp / "video.mp4"),
            "retimed_sha256": sha256_file(tmp / "retimed.mp4"),
            "teacher_sha256": teacher_sha,
            "generator_info": info,
            "generator_config": cfg.generator.model_dump(mode="json"),
            "cache_key": key,
            "cache_params": key_parts,
            "wall_time_s": {
                "generate": round(t_gen, 3),
                "retime": round(t_retime, 3),
                "total": round(time.perf_counter() - t_start, 3),
            },
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "git_revision": _git_revision(),
        }
        if calibration is not None:
            meta["calibration"] = calibration
        atomic_write_json(tmp / "meta.json", meta)
        _install(tmp, paths, names)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if calibration is not None:
        from nil.reference.calibrate import apply_calibration

        apply_calibration(paths, cfg, calibration)
    elif gen_cfg is not cfg:  # e0 above came from the pre-fit camera; frame0 files follow skill.yaml's
        _write_frame0(paths, _robot_spec(cfg), bg)
    warn = info.get("warning")
    if warn:
        console.print(f"[yellow]warning:[/yellow] {warn}")
    return {**meta, "cached": False}


def generate_command(directory: Path, force: bool = False) -> dict[str, Any]:
    """`nil generate DIR`: run stage 1 and print where its outputs went."""
    from nil.config import load_config

    paths = SkillPaths(Path(directory))
    cfg = load_config(paths.config)
    meta = generate_reference(paths, cfg, force=force)
    console = _console()
    if meta.get("synthetic"):
        console.print(f"[yellow]note:[/yellow] {SYNTHETIC_LABEL}")
    src = meta.get("model_id") or meta["generator"]
    console.print(
        f"reference ({src}): {meta['num_frames']} frames @ {meta['fps']:g} fps -> "
        f"{meta['retimed_num_frames']} frames @ {meta['retimed_fps']:g} Hz "
        f"(horizon {meta['horizon']} steps, {meta['retime']['method']} retiming)"
    )
    verb = "cached (unchanged inputs; --force redoes it):" if meta.get("cached") else "wrote"
    print(f"wrote {paths.frame0}, {paths.frame0_mask}")
    print(f"{verb} {paths.video}, {paths.retimed}" + (f", {paths.teacher}" if meta.get("synthetic") else ""))
    print(f"{verb} {paths.meta}")
    return meta


def load_meta(paths: SkillPaths) -> dict[str, Any]:
    """reference/meta.json; MissingStageError when stage 1 has not run (or did not finish)."""
    meta = _read_meta(paths)
    if meta is None:
        raise MissingStageError(f"no reference in {paths.reference}; run `nil generate {paths.root}` first")
    return meta


def load_reference(paths: SkillPaths) -> Video:
    """The retimed reference at the control rate (frame t <-> control step t)."""
    meta = load_meta(paths)
    if not paths.retimed.is_file():
        raise MissingStageError(f"{paths.retimed} is missing; run `nil generate {paths.root} --force`")
    if meta.get("retimed_sha256") and sha256_file(paths.retimed) != meta["retimed_sha256"]:
        raise MissingStageError(
            f"{paths.retimed} does not match {paths.meta} (changed or half-written); "
            f"run `nil generate {paths.root} --force`"
        )
    video = read_video(paths.retimed)
    return Video(video.frames, float(meta.get("retimed_fps") or video.fps))


def load_teacher(paths: SkillPaths) -> dict[str, np.ndarray]:
    """The reference's ground truth (qpos, qvel, root_pos ... per retimed frame), for evaluation only.

    The synthetic generator writes it. Beside an imported video a user may put one there after
    `nil generate` (motion capture of the filmed robot, or the teacher of a video rendered elsewhere):
    evaluation then scores the policy against it too. It must have one row per retimed frame.
    """
    meta = load_meta(paths)
    if not paths.teacher.is_file():
        if not meta.get("synthetic"):
            raise MissingStageError(
                f"the reference in {paths.reference} is not synthetic ({meta.get('generator')}) and has no "
                f"{paths.teacher.name} ground truth beside it"
            )
        raise MissingStageError(f"{paths.teacher} is missing; run `nil generate {paths.root} --force`")
    with np.load(paths.teacher, allow_pickle=False) as z:
        teacher = {k: z[k] for k in z.files}
    n = meta.get("retimed_num_frames")
    rows = len(teacher.get("qpos", ()))
    if not meta.get("synthetic") and n is not None and rows != int(n):
        raise MissingStageError(
            f"{paths.teacher} has {rows} qpos rows but the retimed reference has {n} frames; ground truth "
            "beside an imported video needs one row per retimed frame (at the control rate)"
        )
    return teacher
