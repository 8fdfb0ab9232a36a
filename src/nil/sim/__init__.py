"""Simulators behind the BatchedSim protocol (nil.sim.base): CPU MuJoCo (default) and MuJoCo Warp (GPU).

`SIMS` maps sim.backend to a factory `(spec, sim_cfg, *, num_envs, horizon, seed) -> BatchedSim`; a
plugin registers its own with `@SIMS.register("name")`. The built-in backends are imported on first
use, so that worker processes (which import nil.sim.mujoco_envs) do not pay for torch or Warp.
The task rules every backend shares are in nil.sim.task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nil.registry import Registry

if TYPE_CHECKING:
    from nil.config import SimConfig
    from nil.robots.spec import RobotSpec
    from nil.sim.base import BatchedSim

SIMS: Registry[Any] = Registry(
    "sim.backend", lazy={"mujoco": "nil.sim.mujoco_backend", "warp": "nil.sim.warp_backend.sim"}
)


def make_sim(
    spec: RobotSpec,
    sim_cfg: SimConfig,
    *,
    num_envs: int | None = None,
    horizon: int | None = None,
    seed: int = 0,
) -> BatchedSim:
    """A batched simulator of `spec` for sim.backend ("mujoco": CPU workers; "warp": MuJoCo Warp)."""
    from nil.errors import NilError

    try:
        factory = SIMS.get(sim_cfg.backend)
    except ImportError as e:
        raise NilError(
            f"sim.backend {sim_cfg.backend!r} is not available here ({e}); install the gpu extra "
            "(pip install 'nil-imitation[gpu]') or set sim.backend: mujoco"
        ) from None
    sim: BatchedSim = factory(spec, sim_cfg, num_envs=num_envs, horizon=horizon, seed=seed)
    return sim


__all__ = ["SIMS", "make_sim"]
