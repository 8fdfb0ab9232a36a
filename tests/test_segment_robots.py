"""Segmentation against the simulator's ground truth: synthetic references of real robots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nil.config import parse_config, save_config
from nil.paths import SkillPaths
from nil.reference.segment import iou, load_masks, resize_masks, segment_reference


def _reference(root: Path, robot: str, width: int, height: int, seconds: float = 0.5):
    from nil.reference.bundle import generate_reference

    cfg = parse_config(
        {
            "robot": {"name": robot},
            "camera": {"width": width, "height": height},
            "generator": {"name": "synthetic", "seconds": seconds},
            "segmenter": {"name": "flow"},
        }
    )
    paths = SkillPaths(root)
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root)
    generate_reference(paths, cfg)
    return paths, cfg


@pytest.mark.slow
@pytest.mark.parametrize("robot", ["ant", "unitree_go2"])
def test_flow_fallback_matches_simulator_masks(robot, tmp_path, request):
    if robot != "ant":
        request.getfixturevalue("menagerie_root")
    paths, cfg = _reference(tmp_path / robot, robot, 112, 112)
    rec = segment_reference(paths, cfg)
    masks = load_masks(paths)
    truth = np.load(paths.teacher)["masks"]  # the simulator's exact masks of the retimed frames
    assert masks.shape == truth.shape == (rec["num_frames"], 112, 112)
    ious = np.array([iou(a, b) for a, b in zip(masks, truth, strict=True)])
    assert ious.mean() >= 0.9, (robot, ious.round(3))
    assert ious.min() >= 0.8, (robot, ious.round(3))
    assert rec["segmenter"] == "flow" and rec["quality"]["passed"]


def test_masks_match_simulator_size_and_polarity(tmp_path):
    """Non-square camera: stored masks are [T, height, width], frame 0 is the simulator's m0 (True=robot)."""
    import imageio.v3 as iio

    paths, cfg = _reference(tmp_path / "ant", "ant", 96, 64, seconds=0.12)
    segment_reference(paths, cfg)
    masks = load_masks(paths)
    truth = np.load(paths.teacher)["masks"]
    m0 = iio.imread(paths.frame0_mask) > 127
    assert masks.shape == truth.shape and masks.shape[1:] == (64, 96)
    assert np.array_equal(masks[0], m0) and np.array_equal(m0, truth[0])
    assert 0.0 < masks.mean() < 0.5  # the robot, not the background
    assert np.mean([iou(a, b) for a, b in zip(masks, truth, strict=True)]) >= 0.85


def test_resize_rule_against_simulator_render():
    """A 2x render brought down by the nearest-neighbour rule agrees with a direct render at small size."""
    import mujoco

    from nil.config import CameraConfig
    from nil.robots import get_robot
    from nil.sim.render import RobotRenderer

    masks = {}
    for h, w in ((60, 80), (120, 160)):
        spec = get_robot("ant", camera=CameraConfig(width=w, height=h))
        model = spec.load_model()
        data = mujoco.MjData(model)
        data.qpos[:] = spec.initial_qpos(model)
        mujoco.mj_forward(model, data)
        with RobotRenderer(model, spec) as r:
            masks[h] = r.render(data)[1]
    small, big = masks[60], masks[120]
    down = resize_masks(big, (60, 80))
    assert down.shape == small.shape and down.dtype == bool
    assert iou(down, small) >= 0.85
    assert iou(~down, small) < 0.1  # same polarity
    assert iou(down[::-1], small) < 0.5 * iou(down, small)  # same orientation (no vertical flip)
