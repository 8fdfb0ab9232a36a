"""The VideoGenerator interface and the registry behind `generator.name`."""

from __future__ import annotations

import numpy as np
import pytest

from nil.config import parse_config
from nil.errors import ConfigError
from nil.reference.generators import (
    GENERATORS,
    GeneratorResult,
    VideoGenerator,
    make_generator,
)
from nil.reference.video import Video


def test_builtin_generators_are_listed():
    assert {"synthetic", "file", "diffusers"} <= set(GENERATORS.names())


def test_registry_builds_each_builtin(tmp_path):
    from nil.reference.generators.diffusers_i2v import DiffusersI2VGenerator
    from nil.reference.generators.file import FileGenerator
    from nil.reference.generators.synthetic import SyntheticGenerator
    from nil.reference.video import write_video

    video = tmp_path / "v.mp4"
    write_video(video, Video(np.zeros((4, 16, 16, 3), np.uint8), 10.0))
    built = {
        "synthetic": make_generator(parse_config({})),
        "file": make_generator(parse_config({"generator": {"name": "file", "path": str(video)}})),
        "diffusers": make_generator(
            parse_config({"generator": {"name": "diffusers"}})
        ),  # lazy: loads nothing
    }
    assert isinstance(built["synthetic"], SyntheticGenerator) and built["synthetic"].synthetic
    assert isinstance(built["file"], FileGenerator) and not built["file"].synthetic
    assert isinstance(built["diffusers"], DiffusersI2VGenerator)
    for name, g in built.items():
        assert g.name == name
        assert isinstance(g, VideoGenerator)  # the runtime-checkable protocol


def test_a_registered_generator_is_used(monkeypatch):
    class Still:
        name = "still"
        synthetic = False

        def cache_params(self):
            return {}

        def generate(self, frame0, prompt, *, num_frames, fps, seed):
            video = Video(np.repeat(frame0[None], num_frames or 9, 0), fps or 10.0)
            return GeneratorResult(video, {"frames": num_frames})

    monkeypatch.setattr(GENERATORS, "_entries", dict(GENERATORS._entries))
    GENERATORS.register("still")(lambda cfg: Still())
    cfg = parse_config({})
    object.__setattr__(cfg.generator, "name", "still")  # plug-ins are named in code
    g = make_generator(cfg)
    assert isinstance(g, VideoGenerator)
    res = g.generate(np.zeros((8, 8, 3), np.uint8), "p", num_frames=5, fps=None, seed=0)
    assert isinstance(res, GeneratorResult) and res.video.num_frames == 5 and res.teacher is None
    assert res.info == {"frames": 5}
    assert "still" in GENERATORS.names()


def test_a_generator_must_return_a_result(tmp_path, monkeypatch):
    """A plug-in whose generate() returns a bare Video stops stage 1 with a one-line reason."""
    from types import SimpleNamespace

    from nil.errors import GeneratorError
    from nil.paths import SkillPaths
    from nil.reference import bundle

    class Bare:
        name, synthetic = "bare", False

        def cache_params(self):
            return {}

        def generate(self, frame0, prompt, *, num_frames, fps, seed):
            return Video(np.repeat(frame0[None], 9, 0), 10.0)

    frame = np.full((16, 16, 3), 200, np.uint8)
    monkeypatch.setattr(GENERATORS, "_entries", dict(GENERATORS._entries))
    GENERATORS.register("bare")(lambda cfg: Bare())
    monkeypatch.setattr(
        bundle, "_robot_spec", lambda cfg: SimpleNamespace(name="x", description="x", control_hz=100)
    )
    monkeypatch.setattr(
        bundle,
        "_write_frame0",
        lambda p, s, b: SimpleNamespace(rgb=frame, rgb_nobg=frame, mask=frame[..., 0] > 0),
    )
    cfg = parse_config({})
    object.__setattr__(cfg.generator, "name", "bare")
    with pytest.raises(GeneratorError, match="not a GeneratorResult"):
        bundle.generate_reference(SkillPaths(tmp_path), cfg)


def test_unknown_generator_name():
    cfg = parse_config({})
    object.__setattr__(cfg.generator, "name", "sora")
    with pytest.raises(ConfigError, match="unknown name 'sora'"):
        make_generator(cfg)
