"""Camera maths: MuJoCo's free-camera pose as a fixed model camera (MJWarp renders model cameras only)."""

from __future__ import annotations

import numpy as np

from nil.robots.spec import free_camera_basis


def camera_pose(distance: float, elevation: float, azimuth: float) -> tuple[np.ndarray, np.ndarray]:
    """(offset from the lookat point, camera xmat) of MuJoCo's free camera (mjv_updateCamera's convention)."""
    fwd, right, up = free_camera_basis(azimuth, elevation)
    # camera frame: x right, y up, looking along -z
    return -distance * fwd, np.stack([right, up, -fwd], axis=1)
