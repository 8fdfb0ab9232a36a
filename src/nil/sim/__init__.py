"""Simulators behind the BatchedSim protocol (nil.sim.base): CPU MuJoCo (default) and MuJoCo Warp (GPU).

Imports are lazy so that worker processes (which import nil.sim.mujoco_envs) do not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nil.config import SimConfig
    from nil.robots.spec import RobotSpec
    from nil.sim.base import BatchedSim


def make_sim(
    spec: RobotSpec,
    sim_cfg: SimConfig,
    *,
    num_envs: int | None = None,
    horizon: int | None = None,
    seed: int = 0,
) -> BatchedSim:
    """A batched simulator of `spec` for the configured backend ("mujoco": CPU workers; "warp": MuJoCo Warp)."""
    from nil.errors import NilError

    if sim_cfg.backend == "mujoco":
        from nil.sim.mujoco_backend import MujocoSim

        return MujocoSim(spec, sim_cfg, num_envs=num_envs, horizon=horizon, seed=seed)
    if sim_cfg.backend == "warp":
        try:
            from nil.sim.warp_backend import WarpSim
        except ImportError as e:
            raise NilError(
                f"sim.backend 'warp' is not available here ({e}); install the gpu extra "
                "(pip install 'nil-imitation[gpu]') or set sim.backend: mujoco"
            ) from None
        return WarpSim(spec, sim_cfg, num_envs=num_envs, horizon=horizon, seed=seed)
    raise NilError(f"unknown sim.backend {sim_cfg.backend!r}; use 'mujoco' or 'warp'")


__all__ = ["make_sim"]
