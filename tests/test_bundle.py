"""Stage-1 bundle: cache hits, invalidation, provenance, atomicity, bad inputs (file generator, no sim)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nil.config import parse_config
from nil.errors import ConfigError, MissingStageError, VideoError
from nil.io import sha256_file
from nil.paths import SkillPaths
from nil.reference import bundle
from nil.reference.generators.file import FileGenerator
from nil.reference.video import Video, read_video, write_video

H, W = 48, 64


def _frames(n: int, shift: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    out = []
    for i in range(n):
        f = np.full((H, W, 3), 255, np.uint8)
        x0 = 10 + i * shift
        f[14:34, x0 : x0 + 14] = (200, 40, 40)
        f[14:34, x0 : x0 + 14, 1] = (xx[14:34, x0 : x0 + 14] * 12 % 256).astype(np.uint8)
        out.append(f)
    return np.stack(out)


@pytest.fixture
def skill(tmp_path, monkeypatch):
    """A skill folder with the file generator; robot spec and e0 substituted (no simulator needed)."""
    frames = _frames(9)
    video_path = tmp_path / "input.mp4"
    write_video(video_path, Video(frames, 24.0), quality=10)
    first = read_video(video_path).frames[0]
    mask = np.any(first < 230, axis=-1)
    spec = SimpleNamespace(name="fakebot", description="four-legged fakebot", control_hz=100.0)
    monkeypatch.setattr(bundle, "_robot_spec", lambda cfg: spec)
    monkeypatch.setattr(
        bundle,
        "_write_frame0",
        lambda paths, spec, bg: SimpleNamespace(rgb=first, rgb_nobg=first, mask=mask, qpos=None),
    )
    calls = {"n": 0}
    real = FileGenerator.generate

    def counting(self, *a, **k):
        calls["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(FileGenerator, "generate", counting)
    root = tmp_path / "skill"
    root.mkdir()
    cfg = parse_config({"generator": {"name": "file", "path": str(video_path)}, "skill": "walking"})
    return SimpleNamespace(paths=SkillPaths(root), cfg=cfg, calls=calls, video_path=video_path, frames=frames)


def test_generate_writes_bundle_with_provenance(skill):
    meta = bundle.generate_reference(skill.paths, skill.cfg)
    p = skill.paths
    assert p.video.is_file() and p.retimed.is_file() and p.meta.is_file()
    assert not p.teacher.exists()
    on_disk = json.loads(p.meta.read_text())
    assert on_disk["cache_key"] == meta["cache_key"]
    assert on_disk["generator"] == "file" and on_disk["synthetic"] is False
    assert on_disk["prompt"] == "The four-legged fakebot agent is walking, camera follows the agent."
    assert on_disk["num_frames"] == 9 and on_disk["fps"] == pytest.approx(24.0)
    assert on_disk["source_fps"] == pytest.approx(24.0) and on_disk["source_variable_rate"] is False
    assert on_disk["generator_info"]["framing"]["decision"] == "none"  # same size: nothing cropped
    assert on_disk["retimed_num_frames"] == 34 and on_disk["horizon"] == 33
    assert on_disk["retimed_sha256"] == sha256_file(p.retimed)
    assert on_disk["inputs"]["file_sha256"] == sha256_file(skill.video_path)
    assert on_disk["generator_info"]["first_frame_far_from_e0"] is False
    ref = bundle.load_reference(p)
    assert ref.num_frames == 34 and ref.fps == 100.0 and ref.hw == (H, W)
    # frame 0 survives generation + retiming + near-lossless encoding
    assert np.abs(ref.frames[0].astype(int) - skill.frames[0].astype(int)).mean() < 4
    assert not list(p.root.glob(".reference.tmp-*"))


def test_cache_hit_skips_generator_and_changes_invalidate(skill):
    bundle.generate_reference(skill.paths, skill.cfg)
    assert skill.calls["n"] == 1
    meta2 = bundle.generate_reference(skill.paths, skill.cfg)
    assert skill.calls["n"] == 1  # same inputs: cache hit
    assert meta2["generator"] == "file" and meta2["cached"] is True
    assert "cached" not in json.loads(skill.paths.meta.read_text())
    changed = skill.cfg.model_copy(update={"skill": "running"})
    meta3 = bundle.generate_reference(skill.paths, changed)
    assert skill.calls["n"] == 2  # new prompt: regenerated
    assert "running" in meta3["prompt"]
    bundle.generate_reference(skill.paths, changed, force=True)
    assert skill.calls["n"] == 3  # --force
    retimed = changed.model_copy(deep=True)
    retimed.generator.retime.method = "nearest"
    bundle.generate_reference(skill.paths, retimed)
    assert skill.calls["n"] == 4  # a different retiming is a different reference


def test_missing_file_invalidates_cache(skill):
    bundle.generate_reference(skill.paths, skill.cfg)
    skill.paths.retimed.unlink()
    bundle.generate_reference(skill.paths, skill.cfg)
    assert skill.calls["n"] == 2 and skill.paths.retimed.is_file()


def test_crash_mid_generation_leaves_previous_bundle(skill, monkeypatch):
    meta = bundle.generate_reference(skill.paths, skill.cfg)
    before = {p.name: sha256_file(p) for p in skill.paths.reference.iterdir()}

    def boom(*a, **k):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(bundle, "write_video", boom)
    changed = skill.cfg.model_copy(update={"skill": "jumping"})
    with pytest.raises(RuntimeError):
        bundle.generate_reference(skill.paths, changed)
    after = {p.name: sha256_file(p) for p in skill.paths.reference.iterdir()}
    assert after == before  # untouched, still the complete old bundle
    assert bundle.load_reference(skill.paths).num_frames == meta["retimed_num_frames"]
    assert not list(skill.paths.root.glob(".reference.tmp-*"))


def test_crash_on_first_generation_leaves_no_bundle(skill, monkeypatch):
    real = bundle.write_video
    n = {"k": 0}

    def second_write_fails(path, video, **kw):
        n["k"] += 1
        if n["k"] == 2:
            raise RuntimeError("disk full")
        return real(path, video, **kw)

    monkeypatch.setattr(bundle, "write_video", second_write_fails)
    with pytest.raises(RuntimeError):
        bundle.generate_reference(skill.paths, skill.cfg)
    assert not skill.paths.meta.exists() and not skill.paths.video.exists()
    with pytest.raises(MissingStageError, match="nil generate"):
        bundle.load_reference(skill.paths)


def test_meta_removed_first_when_replacing(skill, monkeypatch):
    """A crash between moving files leaves no meta.json, so the half-new bundle is never trusted."""
    bundle.generate_reference(skill.paths, skill.cfg)
    real_replace = bundle.os.replace

    def fail_on_retimed(src, dst):
        if Path(dst).name == "retimed.mp4" and Path(dst).parent.name == "reference":
            raise OSError("crash")
        return real_replace(src, dst)

    monkeypatch.setattr(bundle.os, "replace", fail_on_retimed)
    with pytest.raises(OSError):
        bundle.generate_reference(skill.paths, skill.cfg, force=True)
    monkeypatch.setattr(bundle.os, "replace", real_replace)
    assert not skill.paths.meta.exists()
    with pytest.raises(MissingStageError):
        bundle.load_reference(skill.paths)
    bundle.generate_reference(skill.paths, skill.cfg)  # recovers
    assert bundle.load_reference(skill.paths).num_frames == 34


def test_tampered_retimed_video_is_detected(skill):
    bundle.generate_reference(skill.paths, skill.cfg)
    write_video(skill.paths.retimed, Video(_frames(12), 100.0))
    with pytest.raises(MissingStageError, match="--force"):
        bundle.load_reference(skill.paths)


def test_load_before_generate(tmp_path):
    paths = SkillPaths(tmp_path)
    with pytest.raises(MissingStageError, match="run `nil generate"):
        bundle.load_reference(paths)
    with pytest.raises(MissingStageError):
        bundle.load_teacher(paths)


def test_file_far_from_e0_warns_and_records(skill, monkeypatch, caplog):
    other = np.zeros((H, W, 3), np.uint8)
    monkeypatch.setattr(
        bundle,
        "_write_frame0",
        lambda paths, spec, bg: SimpleNamespace(
            rgb=other, rgb_nobg=other, mask=np.ones((H, W), bool), qpos=None
        ),
    )
    with caplog.at_level("WARNING"):
        meta = bundle.generate_reference(skill.paths, skill.cfg)
    assert meta["generator_info"]["first_frame_far_from_e0"] is True
    assert "differs from e0" in meta["generator_info"]["warning"]
    assert any("differs from e0" in r.message for r in caplog.records)


@pytest.mark.parametrize("content", [b"", b"this is not a video at all" * 10])
def test_unreadable_or_empty_video(skill, content):
    skill.video_path.write_bytes(content)
    with pytest.raises(VideoError, match="input.mp4"):
        bundle.generate_reference(skill.paths, skill.cfg)
    assert not skill.paths.meta.exists()


def test_file_generator_bad_config(tmp_path):
    with pytest.raises(ConfigError, match="generator.path"):
        FileGenerator(None)
    with pytest.raises(VideoError, match="not found"):
        FileGenerator(tmp_path / "nope.mp4")


def test_too_short_video(skill):
    write_video(skill.video_path, Video(_frames(2), 100.0))
    with pytest.raises(VideoError, match="at least 8"):
        bundle.generate_reference(skill.paths, skill.cfg)


def test_empty_prompt_is_rejected():
    with pytest.raises(ConfigError, match="skill"):
        parse_config({"skill": "   "})
    with pytest.raises(ConfigError, match="prompt_template"):
        parse_config({"prompt_template": "The {robot} does {dance}"})


def test_generate_command_prints_outputs(skill, capsys):
    from nil.config import save_config

    save_config(skill.cfg, skill.paths.root)
    bundle.generate_command(skill.paths.root)
    out = capsys.readouterr().out
    assert str(skill.paths.retimed) in out and str(skill.paths.meta) in out


def test_ground_truth_beside_an_imported_video_is_loaded_and_checked(skill):
    """A user's teacher.npz beside a file reference is evaluation ground truth; one row per retimed frame."""
    bundle.generate_reference(skill.paths, skill.cfg)
    meta = bundle.load_meta(skill.paths)
    assert not meta["synthetic"]
    with pytest.raises(MissingStageError, match="no teacher.npz ground truth"):
        bundle.load_teacher(skill.paths)
    n = int(meta["retimed_num_frames"])
    np.savez(skill.paths.teacher, qpos=np.zeros((n, 7)), root_pos=np.zeros((n, 3)))
    assert bundle.load_teacher(skill.paths)["qpos"].shape == (n, 7)
    np.savez(skill.paths.teacher, qpos=np.zeros((n + 3, 7)), root_pos=np.zeros((n + 3, 3)))
    with pytest.raises(MissingStageError, match="one row per retimed frame"):
        bundle.load_teacher(skill.paths)
