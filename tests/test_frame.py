"""e0: background replaced with the exact mask, PNGs written, empty mask refused."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from nil.config import CameraConfig
from nil.errors import RobotError
from nil.paths import SkillPaths
from nil.reference.frame import render_frame0, write_frame0
from nil.robots import get_robot


def test_frame0_background_is_flat_and_robot_pixels_kept() -> None:
    spec = get_robot("ant", camera=CameraConfig(width=64, height=48))
    f0 = render_frame0(spec, background=(10, 200, 30))
    assert f0.rgb.shape == (48, 64, 3) and f0.mask.shape == (48, 64)
    assert (f0.rgb_nobg[~f0.mask] == [10, 200, 30]).all()
    assert np.array_equal(f0.rgb_nobg[f0.mask], f0.rgb[f0.mask])
    model = spec.load_model()
    np.testing.assert_allclose(f0.qpos, spec.initial_qpos(model))
    again = render_frame0(spec, background=(10, 200, 30))
    iou = (f0.mask & again.mask).sum() / (f0.mask | again.mask).sum()
    assert iou == 1.0 and np.array_equal(f0.rgb, again.rgb)


def test_write_frame0_pngs_round_trip(tmp_path: Path) -> None:
    spec = get_robot("ant", camera=CameraConfig(width=40, height=40))
    paths = SkillPaths(tmp_path / "skill")
    f0 = write_frame0(paths, spec, (255, 255, 255))
    img = iio.imread(paths.frame0)
    mask = iio.imread(paths.frame0_mask)
    assert img.shape == (40, 40, 3) and np.array_equal(img, f0.rgb_nobg)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask == 255, f0.mask)
    assert not list(paths.root.glob(".*tmp*"))  # atomic writes leave no temp files


def test_camera_that_does_not_see_the_robot() -> None:
    spec = get_robot("ant", camera=CameraConfig(width=32, height=32, distance=500.0))
    with pytest.raises(RobotError, match="camera does not see"):
        render_frame0(spec)
