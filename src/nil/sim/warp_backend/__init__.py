"""MuJoCo Warp backend: N worlds stepped and ray-traced (RGB + segmentation) by mujoco-warp, outputs as torch.

The same robot model, tracking camera, render settings and task rules (nil.sim.task) as the CPU backend
(nil.sim.mujoco_backend); only the engine differs. It runs on `cuda:N` (the point of it: thousands of
worlds on one GPU) and, slowly, on Warp's `cpu` device, which is how CI proves it without a GPU.
Warp's kernel cache honours WARP_CACHE_PATH (CI keeps it between runs); a cold compile takes ~25-40 s
on a 2-core CPU, a warm start ~1 s.

Modules, one concern each: status (import, `nil doctor`), device (sim.device), model (the MJCF rebuild
with the tracking camera), contacts (contact budget, overflow), kernels, camera (free-camera maths),
sim (WarpSim). Importing this package does not import Warp.
"""

from __future__ import annotations

from nil.sim.warp_backend.camera import camera_pose
from nil.sim.warp_backend.contacts import check_overflow, contact_budget
from nil.sim.warp_backend.device import resolve_device
from nil.sim.warp_backend.model import CAMERA_NAME, check_put_model, tracking_model
from nil.sim.warp_backend.sim import WarpSim
from nil.sim.warp_backend.status import INSTALL_HINT, default_cache_dir, warp_status

__all__ = [
    "CAMERA_NAME",
    "INSTALL_HINT",
    "WarpSim",
    "camera_pose",
    "check_overflow",
    "check_put_model",
    "contact_budget",
    "default_cache_dir",
    "resolve_device",
    "tracking_model",
    "warp_status",
]
