"""The VideoGenerator interface and the registry behind `generator.name`."""

from __future__ import annotations

import numpy as np
import pytest

from nil.config import parse_config
from nil.errors import ConfigError
from nil.reference.generators import VideoGenerator, list_generators, make_generator, register_generator
from nil.reference.generators import base as gen_base
from nil.reference.video import Video


def test_builtin_generators_are_listed():
    assert {"synthetic", "file", "diffusers"} <= set(list_generators())


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
        info: dict = {}
        teacher = None

        def cache_params(self):
            return {}

        def generate(self, frame0, prompt, *, num_frames, fps, seed):
            return Video(np.repeat(frame0[None], num_frames or 9, 0), fps or 10.0)

    monkeypatch.setattr(gen_base, "_REGISTRY", dict(gen_base._REGISTRY))
    register_generator("still")(lambda cfg: Still())
    cfg = parse_config({})
    object.__setattr__(cfg.generator, "name", "still")  # bypass the Literal: plug-ins are named in code
    g = make_generator(cfg)
    assert isinstance(g, VideoGenerator)
    v = g.generate(np.zeros((8, 8, 3), np.uint8), "p", num_frames=5, fps=None, seed=0)
    assert v.num_frames == 5
    assert "still" in list_generators()


def test_unknown_generator_name():
    with pytest.raises(ConfigError, match="generator.name"):
        parse_config({"generator": {"name": "sora"}})
    cfg = parse_config({})
    object.__setattr__(cfg.generator, "name", "sora")
    with pytest.raises(ConfigError, match="unknown generator 'sora'"):
        make_generator(cfg)
