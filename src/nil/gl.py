"""Choose a working offscreen OpenGL backend before mujoco is imported."""

import os
import sys


def ensure_offscreen_gl() -> str:
    """Set MUJOCO_GL to egl when unset and no display is present; return the backend in use."""
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        os.environ["MUJOCO_GL"] = "egl"
    if os.environ.get("MUJOCO_GL") == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    return os.environ.get("MUJOCO_GL", "glfw")
