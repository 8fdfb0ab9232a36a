"""Camera maths: MuJoCo's free-camera pose as a fixed model camera (MJWarp renders model cameras only)."""

from __future__ import annotations

import math

import numpy as np


def camera_pose(distance: float, elevation: float, azimuth: float) -> tuple[np.ndarray, np.ndarray]:
    """(offset from the lookat point, camera xmat) of MuJoCo's free camera (mjv_updateCamera's convention)."""
    el, az = math.radians(elevation), math.radians(azimuth)
    fwd = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    up = np.array([-math.sin(el) * math.cos(az), -math.sin(el) * math.sin(az), math.cos(el)])
    right = np.cross(fwd, up)
    # camera frame: x right, y up, looking along -z
    return -distance * fwd, np.stack([right, up, -fwd], axis=1)
