"""CPU MuJoCo backend of BatchedSim: N envs over worker processes writing into shared memory.

Layout: one shared-memory file holds every batch buffer (obs, rgb, mask, state, actions); the parent
wraps its numpy views as torch tensors (zero-copy), each worker maps the same file and writes its
slice of envs straight into it, so frames are never pickled. Commands go over one pipe per worker
(nil.sim.workers). num_workers=0 runs the same EnvGroup code in-process. step_async() sends the step
and returns at once, so physics and rendering run in the workers while the caller works; step_wait()
collects it. A dead or failing worker raises SimulationError and closes the simulator.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import uuid
from dataclasses import fields
from typing import Any

import numpy as np
import torch

from nil.config import SimConfig
from nil.errors import SimulationError
from nil.robots.spec import RobotSpec
from nil.sim import SIMS, task
from nil.sim.base import SimBatch
from nil.sim.mujoco_envs import EnvGroup, buffer_layout, layout_size, map_buffers, model_dims
from nil.sim.workers import CMD_RESET, CMD_SEED, CMD_STEP, WorkerPool


def _shm_dir() -> str:
    return (
        "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    )


class MujocoSim:
    """BatchedSim on CPU MuJoCo (see the module docstring)."""

    def __init__(
        self,
        spec: RobotSpec,
        sim_cfg: SimConfig,
        *,
        num_envs: int | None = None,
        horizon: int | None = None,
        seed: int = 0,
    ) -> None:
        self.spec = spec
        self.num_envs = task.num_envs(num_envs, sim_cfg.num_envs)
        self.device = torch.device(sim_cfg.device)
        self.horizon: int | None = None
        self._seed = int(seed)
        self._closed = False
        self._stepping = False
        self._pool: WorkerPool | None = None
        self._group: EnvGroup | None = None
        model = spec.load_model()
        self.model = model
        self.dims = model_dims(spec, model, self.num_envs)
        self.obs_dim = self.dims.obs_dim
        self.action_dim = spec.action_dim(model)
        self.image_hw = (self.dims.height, self.dims.width)
        self.num_workers = min(int(sim_cfg.num_workers), self.num_envs)
        size, _ = layout_size(self.dims)
        if self.num_workers == 0:
            self._block: Any = bytearray(size)
            self._np = map_buffers(self._block, self.dims)
            self._group = EnvGroup(
                spec, self._np, 0, self.num_envs, seed=seed, reset_noise=sim_cfg.reset_noise, model=model
            )
        else:
            self._start_workers(sim_cfg, size)
        self._batch = self._make_batch()
        self.set_horizon(horizon)

    def _start_workers(self, sim_cfg: SimConfig, size: int) -> None:
        path = os.path.join(_shm_dir(), f"nil-sim-{os.getpid()}-{uuid.uuid4().hex[:12]}")
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            self._block = mmap.mmap(fd, size)
        except BaseException:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        self._np = map_buffers(self._block, self.dims)
        # one llvmpipe thread per worker when the workers already fill the cores
        lp = 1 if self.num_workers >= (os.cpu_count() or 1) else None
        bounds = np.linspace(0, self.num_envs, self.num_workers + 1).round().astype(int)
        slices = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        args = {
            "spec": self.spec,
            "dims": self.dims,
            "seed": self._seed,
            "reset_noise": sim_cfg.reset_noise,
            "lp_threads": lp,
        }
        try:
            self._pool = WorkerPool(self, path, slices, args)
        except BaseException:
            self._closed = True
            raise
        # every worker has mapped the file: remove its name now so that nothing can leak
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    @property
    def _procs(self) -> list:
        """The worker processes (empty in-process)."""
        return self._pool.procs if self._pool is not None else []

    # ------------------------------------------------------------------- commands
    def _send(self, cmd: bytes, which: list[int] | None = None) -> None:
        """Run `cmd` in-process, or send it to the workers (collect with _collect)."""
        if self._closed:
            raise SimulationError("the simulator is closed; create a new one with make_sim()")
        if self._group is not None:
            if cmd == CMD_STEP:
                self._group.step()
            elif cmd == CMD_RESET:
                self._group.reset(self._np["reset_in"])
            elif cmd == CMD_SEED:
                self._group.reseed(int(self._np["seed_in"][0]))
            return
        assert self._pool is not None
        try:
            self._pool.send(cmd, which)
        except BaseException:
            self.close()
            raise

    def _collect(self) -> None:
        if self._pool is None:
            return
        try:
            self._pool.wait()
        except BaseException:
            # Ctrl-C (or any error) mid-command leaves replies in flight: this simulator is unusable now.
            self.close()
            raise

    def _idle(self, what: str) -> None:
        task.check_idle(self._closed, self._stepping, what)

    # ------------------------------------------------------------------- API
    def _make_batch(self) -> SimBatch:
        """Torch views of the shared buffers (every SimBatch field is a buffer, joint_vel a view of qvel)."""
        t = {k: torch.from_numpy(v) for k, v in self._np.items()}
        names = [f.name for f in fields(SimBatch) if f.name != "joint_vel"]
        return SimBatch(joint_vel=t["qvel"][:, 6:], **{name: t[name] for name in names})

    def _finish(self) -> SimBatch:
        b = self._np
        task.apply_time(b["obs"], b["truncated"], b["t"], self.horizon)
        if self.device.type == "cpu":
            return self._batch
        return self._batch.to(self.device)

    def set_horizon(self, horizon: int | None) -> None:
        """Set the truncation horizon (the retimed reference length)."""
        if horizon is not None and int(horizon) < 1:
            raise SimulationError(f"horizon must be >= 1 control steps, got {horizon}")
        self.horizon = None if horizon is None else int(horizon)

    def seed(self, seed: int) -> None:
        """Reseed every env's reset-noise generator with (seed, env index)."""
        self._idle("seed()")
        self._seed = int(seed)
        self._np["seed_in"][0] = self._seed
        self._send(CMD_SEED)
        self._collect()

    def set_render(self, rgb: bool) -> None:
        """rgb=False: no colour pass (batch.rgb stays all zero); the mask is always rendered."""
        self._idle("set_render()")
        self._np["skip_rgb_in"][0] = not rgb
        if not rgb:
            self._np["rgb"][:] = 0

    def reset(self, env_ids: torch.Tensor | None = None) -> SimBatch:
        """Reset all envs (None) or the given env indices (int tensor, or bool mask [N])."""
        self._idle("reset()")
        flags = self._np["reset_in"]
        flags[:] = task.reset_rows(env_ids, self.num_envs)
        if not flags.any():
            return self._finish()
        which = None
        if self._pool is not None:
            which = [k for k, (a, b) in enumerate(self._pool.slices) if flags[a:b].any()]
        self._send(CMD_RESET, which)
        self._collect()
        self._np["t"][flags] = 0
        return self._finish()

    def step_async(self, action: torch.Tensor) -> None:
        """Start one control step of action [N, action_dim] in [-1, 1] (clipped); the workers run it."""
        self._idle("step_async()")
        a = task.check_action(action, self.num_envs, self.action_dim)
        self._np["action_in"][:] = a.cpu().numpy()
        self._send(CMD_STEP)
        self._stepping = True

    def step_wait(self) -> SimBatch:
        """Wait for the step started by step_async() and return its batch."""
        if not self._stepping:
            raise SimulationError("step_wait() without step_async()")
        self._stepping = False
        self._collect()
        self._np["t"] += 1
        return self._finish()

    def step(self, action: torch.Tensor) -> SimBatch:
        """Apply action [N, action_dim] in [-1, 1] (clipped) for one control step and render."""
        self.step_async(action)
        return self.step_wait()

    def close(self) -> None:
        """Stop workers and free renderers; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stepping = False
        if self._group is not None:
            self._group.close()
            self._group = None
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> MujocoSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


@SIMS.register("mujoco")
def _make_mujoco(
    spec: RobotSpec, sim_cfg: SimConfig, *, num_envs: int | None, horizon: int | None, seed: int
) -> MujocoSim:
    return MujocoSim(spec, sim_cfg, num_envs=num_envs, horizon=horizon, seed=seed)


__all__ = ["MujocoSim", "buffer_layout"]
