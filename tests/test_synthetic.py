"""The synthetic generator: a teacher (here the CPG) walks forward upright on the demo ant and on Unitree A1,
rendered by the agent's own simulator, with ground truth aligned to the retimed reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nil.config import parse_config
from nil.errors import ConfigError
from nil.paths import SkillPaths
from nil.reference import bundle
from nil.reference.generators.base import GeneratorResult
from nil.reference.generators.synthetic import SyntheticGenerator
from nil.teachers.cpg import find_legs

SMALL = {"camera": {"width": 64, "height": 64}}


def _up_z(qpos: np.ndarray) -> np.ndarray:
    """World-z of the root's up axis from the free joint's quaternion (w, x, y, z)."""
    x, y = qpos[:, 4], qpos[:, 5]
    return 1 - 2 * (x**2 + y**2)


def test_ant_bundle_walks_forward_with_aligned_ground_truth(tmp_path):
    cfg = parse_config(
        {**SMALL, "robot": {"name": "ant"}, "generator": {"name": "synthetic", "seconds": 1.2}}
    )
    paths = SkillPaths(tmp_path / "ant")
    meta = bundle.generate_reference(paths, cfg)
    assert meta["synthetic"] is True and "not a video model" in meta["label"]
    info = meta["generator_info"]
    assert info["subsample"] == 4 and meta["fps"] == 25.0  # rendered at 100 Hz, emitted at 25 fps
    assert meta["num_frames"] == 31 and meta["retimed_num_frames"] == 121 and meta["horizon"] == 120
    assert info["fell_at_step"] is None
    assert info["frame0_masked_mad"] == 0.0  # the teacher's first frame is e0, from the same renderer

    teacher = bundle.load_teacher(paths)
    assert teacher["qpos"].shape == (121, 15) and teacher["qvel"].shape == (121, 14)
    assert teacher["masks"].shape == (121, 64, 64) and float(teacher["fps"]) == 100.0
    progress = float(teacher["root_x"][-1] - teacher["root_x"][0])
    assert progress > 0.2, progress  # forward = +x
    assert abs(float(teacher["root_pos"][-1, 1] - teacher["root_pos"][0, 1])) < progress
    assert (_up_z(teacher["qpos"]) > 0.8).all()
    assert json.loads(str(teacher["params"]))["params"]["gait_hz"] == 1.0
    # ground truth mask of state 0 is e0's exact mask
    from imageio.v3 import imread

    assert np.array_equal(teacher["masks"][0], imread(paths.frame0_mask) > 127)
    ref = bundle.load_reference(paths)
    assert ref.num_frames == len(teacher["qpos"]) and ref.fps == 100.0

    # same inputs: cache hit; a different gait: regenerated
    again = bundle.generate_reference(paths, cfg)
    assert again["cached"] is True and again["created"] == meta["created"]
    faster = cfg.model_copy(deep=True)
    faster.generator.gait_amplitude = 0.9
    assert bundle.generate_reference(paths, faster)["cache_key"] != meta["cache_key"]


def test_a1_walks_forward_upright(menagerie_root):
    cfg = parse_config({**SMALL, "robot": {"name": "unitree_a1"}, "generator": {"seconds": 1.2}})
    g = SyntheticGenerator(cfg)
    frame0 = np.zeros((64, 64, 3), np.uint8)
    result = g.generate(frame0, "The Unitree A1 is walking", num_frames=None, fps=None, seed=0)
    assert isinstance(result, GeneratorResult)
    video, t, info = result.video, result.teacher, result.info
    assert video.num_frames == 31 and video.fps == 25.0 and video.hw == (64, 64)
    assert t is not None
    assert t["qpos"].shape == (121, 19)
    progress = float(t["root_x"][-1] - t["root_x"][0])
    assert progress > 0.2, progress
    assert (_up_z(t["qpos"]) > 0.8).all()
    assert t["root_pos"][:, 2].min() > g.spec.fall_height
    assert info["fell_at_step"] is None and info["root_x_progress_m"] == pytest.approx(progress, abs=1e-3)
    assert t["masks"][::4].any(axis=(1, 2)).all()  # the tracking camera keeps the robot in view


def test_leg_structure(menagerie_root):
    from nil.robots import get_robot

    ant = get_robot("ant")
    m = ant.load_model()
    legs = find_legs(ant, m, ant.initial_qpos(m))
    assert len(legs) == 4
    for leg in legs:  # diagonal legs share a phase (trot)
        x, y = leg.anchor_xy
        assert leg.phase == (0.0 if x * y > 0 else pytest.approx(np.pi))
        assert [j.role for j in leg.joints] == ["swing", "lift"]
    a1 = get_robot("unitree_a1")
    m = a1.load_model()
    legs = find_legs(a1, m, a1.initial_qpos(m))
    assert len(legs) == 4
    assert all([j.role for j in leg.joints] == ["hold", "swing", "lift"] for leg in legs)
    # thigh pitched forward moves the foot backward on A1: its swing sign is negative
    assert all(leg.joints[1].sign == -1.0 for leg in legs)


def test_policy_teacher_needs_checkpoint():
    cfg = parse_config({"generator": {"teacher": "policy"}})
    with pytest.raises(ConfigError, match="teacher_checkpoint"):
        SyntheticGenerator(cfg)
