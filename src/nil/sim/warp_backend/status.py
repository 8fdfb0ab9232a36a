"""Import of Warp + MuJoCo Warp, and the backend's status for `nil doctor`."""

from __future__ import annotations

import os
from typing import Any

from nil.errors import SimulationError

INSTALL_HINT = "pip install 'nil-imitation[gpu]' (mujoco-warp and warp-lang)"


def import_warp() -> tuple[Any, Any]:
    """(warp, mujoco_warp), initialised quietly; SimulationError with the install command if missing."""
    try:
        import warp as wp

        # Warp logs every kernel-module load at INFO; keep warnings only (set before Warp initialises)
        if hasattr(wp, "LOG_WARNING") and getattr(wp.config, "log_level", None) == getattr(
            wp, "LOG_INFO", None
        ):
            wp.config.log_level = wp.LOG_WARNING
        import mujoco_warp as mjw
    except ImportError as e:
        raise SimulationError(
            f"sim.backend=warp needs MuJoCo Warp ({e}); {INSTALL_HINT}, or use sim.backend=mujoco"
        ) from None
    wp.init()
    return wp, mjw


def versions() -> str:
    """'mujoco-warp X, warp-lang Y' of the installed distributions."""
    from importlib import metadata

    out = []
    for dist in ("mujoco-warp", "warp-lang"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} ?")
    return ", ".join(out)


def warp_status() -> dict[str, Any]:
    """Whether the warp backend is usable here, and on which device (for `nil doctor`)."""
    try:
        wp, _ = import_warp()
    except SimulationError as e:
        return {"available": False, "device": None, "version": None, "error": str(e)}
    except Exception as e:  # a broken Warp install (driver / library load) must not crash doctor
        return {
            "available": False,
            "device": None,
            "version": None,
            "error": f"warp failed to initialise: {e}",
        }
    try:
        device = "cuda:0" if wp.get_cuda_device_count() > 0 else "cpu"
    except Exception:
        device = "cpu"
    note = (
        None
        if device != "cpu"
        else "no CUDA device: the warp backend runs on Warp's CPU device (slow, for tests)"
    )
    return {"available": True, "device": device, "version": versions(), "error": None, "note": note}


def default_cache_dir() -> str | None:
    """Where Warp keeps compiled kernels (WARP_CACHE_PATH when set, for CI caching)."""
    return os.environ.get("WARP_CACHE_PATH")
