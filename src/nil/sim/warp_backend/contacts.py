"""Contact budgeting: per-world contact / constraint capacity for MJWarp, and the overflow check."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import torch

from nil.errors import SimulationError

# mujoco_warp.OverflowType bits that mean a buffer was too small (solver-iteration bits are not errors).
_NEFC, _NJMAX_NNZ, _BROADPHASE, _NARROWPHASE, _CCD, _HFIELD = 1, 2, 4, 8, 16, 32
CAPACITY_BITS = _NEFC | _NJMAX_NNZ | _BROADPHASE | _NARROWPHASE | _CCD | _HFIELD


def contact_budget(
    model: mujoco.MjModel,
    qpos0: np.ndarray,
    substeps: int,
    *,
    seconds: float = 2.0,
    safety: float = 2.0,
    seed: int = 0,
) -> tuple[int, int]:
    """(nconmax, njmax) per world: the peak contacts / constraint rows of a seeded random-action rollout
    (which includes falling over) on CPU MuJoCo, times a safety factor (MJWarp's plane-mesh collider
    also returns 4 contacts where MuJoCo returns 3)."""
    data = mujoco.MjData(model)
    data.qpos[:] = qpos0
    mujoco.mj_forward(model, data)
    rng = np.random.default_rng(seed)
    lo, hi = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
    limited = model.actuator_ctrllimited.astype(bool)
    ncon, nefc = data.ncon, data.nefc
    nsteps = max(1, int(seconds / model.opt.timestep))
    for i in range(nsteps):
        if i % substeps == 0:
            u = rng.uniform(-1.0, 1.0, model.nu)
            data.ctrl[:] = np.where(limited, lo + (u + 1.0) / 2.0 * (hi - lo), u)
        mujoco.mj_step(model, data)
        if not np.isfinite(data.qacc).all():
            break
        ncon, nefc = max(ncon, data.ncon), max(nefc, data.nefc)
    rows = int(model.geom_condim.max()) if model.ngeom else 3
    rows = rows if model.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC else max(1, 2 * (rows - 1))
    nconmax = max(8, math.ceil(safety * ncon))
    njmax = max(32, math.ceil(safety * nefc), (nefc - ncon * rows) + nconmax * rows)
    return int(nconmax), int(njmax)


def check_overflow(overflow: torch.Tensor, nconmax: int, njmax: int) -> None:
    """SimulationError naming the setting to raise when a world ran out of contacts or constraint rows."""
    over = (overflow & CAPACITY_BITS) != 0
    if bool(over.any()):
        world = int(torch.nonzero(over)[0, 0])
        bits = int(overflow[world])
        what = (
            "constraint rows (raise sim.njmax)"
            if bits & (_NEFC | _NJMAX_NNZ)
            else "contacts (raise sim.nconmax)"
        )
        raise SimulationError(
            f"MuJoCo Warp ran out of {what} in world {world} (nconmax={nconmax}, njmax={njmax} per "
            f"world); set sim.nconmax={2 * nconmax} sim.njmax={2 * njmax} and restart"
        )
