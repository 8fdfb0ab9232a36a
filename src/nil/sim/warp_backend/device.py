"""sim.device for the warp backend: cpu, cuda, cuda:N or auto, checked against Warp and torch."""

from __future__ import annotations

import torch

from nil.errors import SimulationError
from nil.sim.warp_backend.status import import_warp


def resolve_device(device: str) -> str:
    """Normalise sim.device for Warp ("cpu", "cuda" -> "cuda:0", "auto" -> cuda:0 when present)."""
    wp, _ = import_warp()
    dev = (device or "cpu").strip().lower()
    has_cuda = wp.get_cuda_device_count() > 0
    if dev == "auto":
        dev = "cuda:0" if has_cuda and torch.cuda.is_available() else "cpu"
    if dev == "cuda":
        dev = "cuda:0"
    if dev == "cpu":
        return dev
    if not dev.startswith("cuda:") or not dev[5:].isdigit():
        raise SimulationError(f"sim.device {device!r} is not a device; use cpu, cuda or cuda:N")
    idx = int(dev[5:])
    if not has_cuda or idx >= wp.get_cuda_device_count():
        raise SimulationError(
            f"sim.device={device} but Warp sees {wp.get_cuda_device_count()} CUDA device(s); "
            "use sim.device=cpu (slow) or check the NVIDIA driver (`nil doctor`)"
        )
    if not torch.cuda.is_available():
        raise SimulationError(
            f"sim.device={device} but this torch build has no CUDA; install a CUDA torch build"
        )
    return dev
