"""The first frame e0: the robot at its initial pose on a plain floor, seen by the tracking camera.

frame0.png is e0 with every non-robot pixel replaced by a flat colour, using the simulator's exact
mask (frame0_mask.png, white = robot). Both feed stage 1 (the video model and the segmenter).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nil.errors import RobotError
from nil.io import atomic_save
from nil.paths import SkillPaths
from nil.robots.spec import RobotSpec


@dataclass
class Frame0:
    """e0 as rendered (rgb), with the background replaced (rgb_nobg), its mask m0 and the pose it shows."""

    rgb: np.ndarray  # [H,W,3] uint8
    rgb_nobg: np.ndarray  # [H,W,3] uint8
    mask: np.ndarray  # [H,W] bool, True on robot pixels
    qpos: np.ndarray  # [nq] float64


def render_frame0(spec: RobotSpec, background: tuple[int, int, int] = (255, 255, 255)) -> Frame0:
    """Render e0 and m0 at the robot's initial pose; RobotError when the camera does not see the robot."""
    import mujoco

    from nil.sim.render import RobotRenderer

    model = spec.load_model()
    data = mujoco.MjData(model)
    data.qpos[:] = spec.initial_qpos(model)
    mujoco.mj_forward(model, data)
    with RobotRenderer(model, spec) as renderer:
        rgb, mask = renderer.render(data)
    area = float(mask.mean())
    if area == 0.0:
        raise RobotError(
            f"the camera does not see robot {spec.name!r} in e0 (empty mask): set camera.distance/elevation/"
            "azimuth (or robot.root_body) so that the robot is in view"
        )
    bg = np.asarray(background, dtype=np.uint8).reshape(1, 1, 3)
    keep = mask
    if spec.scene:  # scene objects stay in e0 (nil.scene); the robot mask m0 still excludes them
        from nil.scene.render import render_object_mask

        keep = mask | render_object_mask(model, spec, data)
    rgb_nobg = np.where(keep[..., None], rgb, bg).astype(np.uint8)
    return Frame0(rgb=rgb, rgb_nobg=rgb_nobg, mask=mask, qpos=data.qpos.copy())


def _write_png(path: Path, img: np.ndarray) -> None:
    import imageio.v3 as iio

    atomic_save(path, lambda tmp: iio.imwrite(tmp, img, extension=".png"))


def write_frame0(
    paths: SkillPaths, spec: RobotSpec, background: tuple[int, int, int] = (255, 255, 255)
) -> Frame0:
    """Render e0 and write frame0.png (background replaced) and frame0_mask.png (white = robot)."""
    f0 = render_frame0(spec, background)
    _write_png(paths.frame0, f0.rgb_nobg)
    _write_png(paths.frame0_mask, (f0.mask.astype(np.uint8) * 255))
    return f0


def frame_command(robot: str, out: Path, width: int = 224, height: int = 224) -> Frame0:
    """`nil frame`: render e0 of a robot into OUT/frame0.png and OUT/frame0_mask.png."""
    from pydantic import ValidationError

    from nil.config import CameraConfig
    from nil.errors import ConfigError
    from nil.robots import get_robot

    try:
        cam = CameraConfig(width=width, height=height)
    except ValidationError as e:
        raise ConfigError(f"--width/--height: {e.errors()[0]['msg']} (got {width}x{height})") from None
    spec = get_robot(robot, camera=cam)
    paths = SkillPaths(Path(out))
    f0 = write_frame0(paths, spec, cam.background)
    print(
        f"wrote {paths.frame0} and {paths.frame0_mask} ({spec.name}, robot covers {f0.mask.mean():.1%} "
        "of the frame)"
    )
    return f0
