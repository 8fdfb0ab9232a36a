"""CPU MuJoCo backend of BatchedSim: N envs over worker processes writing into shared memory.

Layout: one shared-memory file holds every batch buffer (obs, rgb, mask, state, actions); the parent
wraps its numpy views as torch tensors (zero-copy), each worker maps the same file and writes its
slice of envs straight into it, so frames are never pickled. Commands go over one pipe per worker.
num_workers=0 runs the same EnvGroup code in-process. Workers ignore SIGINT (the parent handles
Ctrl-C and closes them), exit when their pipe closes, and a dead or failing worker raises
SimulationError in the parent instead of hanging.
"""

from __future__ import annotations

import mmap
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from typing import Any

import numpy as np
import torch

from nil.config import SimConfig
from nil.errors import SimulationError
from nil.robots.spec import RobotSpec
from nil.sim.base import SimBatch
from nil.sim.mujoco_envs import (
    CMD_QUIT,
    CMD_RESET,
    CMD_STEP,
    REPLY_ERR,
    REPLY_OK,
    EnvGroup,
    buffer_layout,
    layout_size,
    map_buffers,
    model_dims,
    read_exact,
    write_all,
)

# Seconds to wait for a worker before declaring it hung (start-up compiles meshes and makes a GL context).
START_TIMEOUT = 300.0
STEP_TIMEOUT = 300.0


def _shm_dir() -> str:
    return (
        "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    )


def _shutdown(procs: list, shm_path: str | None) -> None:
    """Stop workers (quit command, then terminate/kill) and remove the shared-memory file; idempotent."""
    for p in procs:
        try:
            p.stdin.write(CMD_QUIT)
            p.stdin.flush()
        except Exception:
            pass
    for p in procs:
        for stop in (None, p.terminate, p.kill):
            if stop is not None:
                try:
                    stop()
                except Exception:
                    pass
            try:
                p.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        for f in (p.stdin, p.stdout):
            try:
                f.close()
            except Exception:
                pass
    if shm_path:
        try:
            os.unlink(shm_path)
        except FileNotFoundError:
            pass


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
        self.num_envs = int(num_envs if num_envs is not None else sim_cfg.num_envs)
        if self.num_envs < 1:
            raise SimulationError(f"num_envs must be >= 1, got {self.num_envs}")
        self.device = torch.device(sim_cfg.device)
        self.horizon: int | None = None
        self.seed = int(seed)
        self._closed = False
        self._procs: list[subprocess.Popen] = []
        self._shm_path: str | None = None
        self._group: EnvGroup | None = None
        self._finalizer: Any = None
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
        self._t = torch.from_numpy(self._np["t"])
        self._batch = self._make_batch()
        self.set_horizon(horizon)

    # ----------------------------------------------------------------- workers
    def _start_workers(self, sim_cfg: SimConfig, size: int) -> None:
        path = os.path.join(_shm_dir(), f"nil-sim-{os.getpid()}-{uuid.uuid4().hex[:12]}")
        self._shm_path = path
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            self._block = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._np = map_buffers(self._block, self.dims)
        # one llvmpipe thread per worker when the workers already fill the cores
        lp = 1 if self.num_workers >= (os.cpu_count() or 1) else None
        bounds = np.linspace(0, self.num_envs, self.num_workers + 1).round().astype(int)
        self._slices = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, path)
        # the worker must import this very copy of nil (e.g. a source tree put on sys.path at run time)
        import nil

        env = dict(os.environ)
        src = os.path.dirname(os.path.dirname(os.path.abspath(nil.__file__)))
        env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        try:
            for start, stop in self._slices:
                p = subprocess.Popen(
                    [sys.executable, "-m", "nil.sim._worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    bufsize=0,
                    close_fds=True,
                    env=env,
                )
                self._procs.append(p)
                args = {
                    "spec": self.spec,
                    "dims": self.dims,
                    "shm_path": path,
                    "start": start,
                    "stop": stop,
                    "seed": self.seed,
                    "reset_noise": sim_cfg.reset_noise,
                    "lp_threads": lp,
                }
                blob = pickle.dumps(args)
                write_all(p.stdin.fileno(), struct.pack("<I", len(blob)) + blob)
            self._wait(list(range(len(self._procs))), START_TIMEOUT, "start")
        except BaseException:
            self.close()
            raise
        # every worker has mapped the file: remove its name now so that nothing can leak
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def _fail(self, msg: str) -> None:
        self.close()
        raise SimulationError(msg)

    def _wait(self, which: list[int], timeout: float, what: str) -> None:
        """Collect one reply from each worker in `which`; a dead, failing or silent worker raises."""
        pending = {self._procs[k].stdout.fileno(): k for k in which}
        errors: list[str] = []
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select(list(pending), [], [], max(0.0, left))
            if not ready:
                self._fail(
                    f"simulator workers {sorted(pending.values())} did not answer '{what}' within "
                    f"{timeout:.0f} s; the machine may be overloaded: lower sim.num_envs/num_workers"
                )
            for fd in ready:
                k = pending.pop(fd)
                try:
                    reply = read_exact(fd, 1)
                    if reply == REPLY_ERR:
                        (n,) = struct.unpack("<I", read_exact(fd, 4))
                        errors.append(
                            f"worker {k}: " + read_exact(fd, n).decode(errors="replace").splitlines()[0]
                        )
                    elif reply != REPLY_OK:
                        errors.append(f"worker {k}: protocol error ({reply!r})")
                except EOFError:
                    code = (
                        self._procs[k].wait(timeout=5)
                        if self._procs[k].poll() is None
                        else self._procs[k].poll()
                    )
                    errors.append(f"worker {k} died (exit code {code})")
        if errors:
            self._fail(
                f"simulator {what} failed: {'; '.join(errors)} (run with sim.num_workers=0 to debug "
                "in-process)"
            )

    def _command(self, cmd: bytes, which: list[int] | None = None) -> None:
        if self._closed:
            raise SimulationError("the simulator is closed; create a new one with make_sim()")
        if self._group is not None:
            if cmd == CMD_STEP:
                self._group.step()
            else:
                self._group.reset(self._np["reset_in"])
            return
        ks = list(range(len(self._procs))) if which is None else which
        for k in ks:
            try:
                write_all(self._procs[k].stdin.fileno(), cmd)
            except OSError:
                self._fail(
                    f"simulator worker {k} is gone (exit code {self._procs[k].poll()}); "
                    "create a new simulator"
                )
        try:
            self._wait(ks, STEP_TIMEOUT, {CMD_STEP: "step", CMD_RESET: "reset"}.get(cmd, "command"))
        except BaseException:
            # Ctrl-C (or any error) mid-command leaves replies in flight: this simulator is unusable now.
            self.close()
            raise

    # ------------------------------------------------------------------- API
    def _make_batch(self) -> SimBatch:
        t = {k: torch.from_numpy(v) for k, v in self._np.items()}
        return SimBatch(
            obs=t["obs"],
            rgb=t["rgb"],
            mask=t["mask"],
            terminated=t["terminated"],
            truncated=t["truncated"],
            t=t["t"],
            qpos=t["qpos"],
            qvel=t["qvel"],
            joint_vel=t["qvel"][:, 6:],
            torque=t["torque"],
            action=t["action"],
            prev_action=t["prev_action"],
            foot_contact=t["foot_contact"],
            foot_vel_xy=t["foot_vel_xy"],
            torso_up_z=t["torso_up_z"],
            root_pos=t["root_pos"],
            root_lin_vel=t["root_lin_vel"],
            nonfinite=t["nonfinite"],
        )

    def _finish(self) -> SimBatch:
        b = self._np
        if self.horizon is None:
            b["truncated"][:] = False
            b["obs"][:, -1] = 0.0
        else:
            b["truncated"][:] = b["t"] >= self.horizon
            b["obs"][:, -1] = b["t"] / float(self.horizon)
        if self.device.type == "cpu":
            return self._batch
        return self._batch.to(self.device)

    def set_horizon(self, horizon: int | None) -> None:
        """Set the truncation horizon (the retimed reference length)."""
        if horizon is not None and int(horizon) < 1:
            raise SimulationError(f"horizon must be >= 1 control steps, got {horizon}")
        self.horizon = None if horizon is None else int(horizon)

    def reset(self, env_ids: torch.Tensor | None = None) -> SimBatch:
        """Reset all envs (None) or the given env indices (int tensor, or bool mask [N])."""
        flags = self._np["reset_in"]
        if env_ids is None:
            flags[:] = True
        else:
            ids = torch.as_tensor(env_ids).detach().cpu()
            flags[:] = False
            if ids.dtype == torch.bool:
                if ids.shape != (self.num_envs,):
                    raise SimulationError(
                        f"reset mask must have shape ({self.num_envs},), got {tuple(ids.shape)}"
                    )
                flags[:] = ids.numpy()
            else:
                idx = ids.long().reshape(-1).numpy()
                if idx.size and (idx.min() < 0 or idx.max() >= self.num_envs):
                    raise SimulationError(f"env_ids must be in [0, {self.num_envs}), got {idx.tolist()}")
                flags[idx] = True
        if not flags.any():
            return self._finish()
        which = None
        if self._group is None:
            which = [k for k, (a, b) in enumerate(self._slices) if flags[a:b].any()]
        self._command(CMD_RESET, which)
        self._np["t"][flags] = 0
        return self._finish()

    def step(self, action: torch.Tensor) -> SimBatch:
        """Apply action [N, action_dim] in [-1, 1] (clipped) for one control step and render."""
        a = torch.as_tensor(action).detach()
        if tuple(a.shape) != (self.num_envs, self.action_dim):
            raise SimulationError(
                f"action must have shape ({self.num_envs}, {self.action_dim}), got {tuple(a.shape)}"
            )
        a = a.to("cpu", torch.float32)
        if not torch.isfinite(a).all():
            raise SimulationError(
                "the action contains NaN or inf; check the policy's outputs (and its inputs)"
            )
        self._np["action_in"][:] = a.numpy()
        self._command(CMD_STEP)
        self._np["t"] += 1
        return self._finish()

    def close(self) -> None:
        """Stop workers and free renderers; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._group is not None:
            self._group.close()
            self._group = None
        if self._finalizer is not None:
            self._finalizer()  # runs _shutdown once

    def __enter__(self) -> MujocoSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


__all__ = ["MujocoSim", "buffer_layout"]
