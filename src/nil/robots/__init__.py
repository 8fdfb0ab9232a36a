"""Robots: RobotSpec, presets (ant from gymnasium, MuJoCo Menagerie robots) and any MJCF path."""

from nil.gl import ensure_offscreen_gl

ensure_offscreen_gl()  # MUJOCO_GL must be chosen before mujoco is first imported

from nil.robots.presets import (  # noqa: E402
    PRESETS,
    get_robot,
    list_presets,
    preset_path,
    robot_from_config,
)
from nil.robots.spec import CameraSpec, RobotSpec  # noqa: E402

__all__ = [
    "PRESETS",
    "CameraSpec",
    "RobotSpec",
    "get_robot",
    "list_presets",
    "preset_path",
    "robot_from_config",
]
