"""CPU MuJoCo envs on numpy buffers: the physics + render core shared by the in-process and worker backends.

This module imports no torch, so worker processes start fast. An `EnvGroup` owns envs [start, stop)
of a batch: their MjData, one RobotRenderer, and per-env random generators seeded by (seed, env index),
so results do not depend on how envs are spread over workers. It writes every output straight into
the batch-wide buffers (plain arrays in-process, or views of one shared-memory file in workers).
"""

from __future__ import annotations

import math
import mmap
import os
import pickle
import signal
import struct
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from nil.gl import ensure_offscreen_gl

ensure_offscreen_gl()

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from nil.robots.spec import RobotSpec  # noqa: E402

_ALIGN = 64
_BAD_WARNINGS = (
    mujoco.mjtWarning.mjWARN_BADQACC,
    mujoco.mjtWarning.mjWARN_BADQPOS,
    mujoco.mjtWarning.mjWARN_BADQVEL,
)


@dataclass(frozen=True)
class Dims:
    """Sizes of one robot's batch buffers."""

    num_envs: int
    nq: int
    nv: int
    nu: int
    n_feet: int
    height: int
    width: int

    @property
    def obs_dim(self) -> int:
        """[qpos[2:], qvel, phase]."""
        return self.nq - 2 + self.nv + 1


def buffer_layout(d: Dims) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Name -> (shape, dtype) of every batch buffer (outputs, inputs, and the parent's step counter)."""
    n = d.num_envs
    return {
        "obs": ((n, d.obs_dim), np.float32),
        "rgb": ((n, d.height, d.width, 3), np.uint8),
        "mask": ((n, d.height, d.width), np.bool_),
        "terminated": ((n,), np.bool_),
        "truncated": ((n,), np.bool_),
        "t": ((n,), np.int64),
        "qpos": ((n, d.nq), np.float32),
        "qvel": ((n, d.nv), np.float32),
        "torque": ((n, d.nu), np.float32),
        "action": ((n, d.nu), np.float32),
        "prev_action": ((n, d.nu), np.float32),
        "foot_contact": ((n, d.n_feet), np.bool_),
        "foot_vel_xy": ((n, d.n_feet, 2), np.float32),
        "torso_up_z": ((n,), np.float32),
        "root_pos": ((n, 3), np.float32),
        "root_lin_vel": ((n, 3), np.float32),
        "nonfinite": ((n,), np.bool_),
        # inputs written by the parent
        "action_in": ((n, d.nu), np.float32),
        "reset_in": ((n,), np.bool_),
    }


def layout_size(d: Dims) -> tuple[int, dict[str, int]]:
    """(total bytes, name -> byte offset) of the buffers packed into one block."""
    off, offsets = 0, {}
    for name, (shape, dtype) in buffer_layout(d).items():
        offsets[name] = off
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        off += (nbytes + _ALIGN - 1) // _ALIGN * _ALIGN
    return max(off, _ALIGN), offsets


def map_buffers(buf: Any, d: Dims) -> dict[str, np.ndarray]:
    """Numpy views of every buffer inside one block (bytearray, mmap, ...)."""
    _, offsets = layout_size(d)
    out = {}
    for name, (shape, dtype) in buffer_layout(d).items():
        count = int(np.prod(shape))
        out[name] = np.frombuffer(buf, dtype=dtype, count=count, offset=offsets[name]).reshape(shape)
    return out


def model_dims(spec: RobotSpec, model: mujoco.MjModel, num_envs: int) -> Dims:
    """Dims of a batch of this robot."""
    return Dims(
        num_envs,
        int(model.nq),
        int(model.nv),
        int(model.nu),
        len(spec.feet_bodies),
        int(spec.camera.height),
        int(spec.camera.width),
    )


class EnvGroup:
    """Envs [start, stop) of a batch: physics, fall rule, regulariser state and rendering into shared buffers."""

    def __init__(
        self,
        spec: RobotSpec,
        bufs: dict[str, np.ndarray],
        start: int,
        stop: int,
        *,
        seed: int = 0,
        reset_noise: float = 0.02,
        render: bool = True,
        model: mujoco.MjModel | None = None,
    ) -> None:
        self.spec = spec
        self.model = model if model is not None else spec.load_model()
        m = self.model
        self.bufs, self.start, self.stop = bufs, start, stop
        self.reset_noise = float(reset_noise)
        self.substeps = spec.substeps(m)
        self.q0 = spec.initial_qpos(m)
        self.ctrl_offset, self.ctrl_scale = spec.ctrl_affine(m)
        self.root = spec.root_id(m)
        self.torso = spec.torso_id(m)
        self.feet = spec.feet_ids(m)
        self.cos_tilt = math.cos(math.radians(spec.max_tilt_deg))
        self._gear = m.actuator_gear[:, 0].copy()
        robot_geom = spec.robot_geom_mask(m)
        self._geom_is_robot = robot_geom
        # geom -> foot index (-1 when not part of a foot's subtree)
        self._geom_foot = np.full(m.ngeom, -1, np.int64)
        for k, fb in enumerate(self.feet):
            in_sub = np.zeros(m.nbody, bool)
            in_sub[fb] = True
            for b in range(fb + 1, m.nbody):  # children come after their parent in MuJoCo's body order
                if in_sub[m.body_parentid[b]]:
                    in_sub[b] = True
            self._geom_foot[in_sub[m.geom_bodyid]] = k
        self.datas = [mujoco.MjData(m) for _ in range(start, stop)]
        self.rngs = [np.random.default_rng([int(seed), i]) for i in range(start, stop)]
        self._vel6 = np.zeros(6)
        self.renderer = None
        if render:
            from nil.sim.render import RobotRenderer

            self.renderer = RobotRenderer(m, spec)

    # ------------------------------------------------------------------
    def reset(self, which: np.ndarray | None = None) -> None:
        """Reset envs whose flag in `which` (bool [N], batch-wide) is set; all of this group's envs when None."""
        m, b = self.model, self.bufs
        for j, d in enumerate(self.datas):
            i = self.start + j
            if which is not None and not which[i]:
                continue
            mujoco.mj_resetData(m, d)
            qpos = self.q0.copy()
            rng = self.rngs[j]
            if self.reset_noise > 0:
                qpos[7:] += rng.uniform(-self.reset_noise, self.reset_noise, m.nq - 7)
                d.qvel[6:] = rng.uniform(-self.reset_noise, self.reset_noise, m.nv - 6)
            d.qpos[:] = qpos
            d.ctrl[:] = self.ctrl_offset
            mujoco.mj_forward(m, d)
            b["action"][i] = 0.0
            b["prev_action"][i] = 0.0
            b["torque"][i] = 0.0
            self._write(i, d, nonfinite=False)

    def step(self) -> None:
        """One control step of every env of the group, reading actions from the action_in buffer."""
        m, b = self.model, self.bufs
        for j, d in enumerate(self.datas):
            i = self.start + j
            a = np.clip(b["action_in"][i], -1.0, 1.0)
            b["prev_action"][i] = b["action"][i]
            b["action"][i] = a
            d.ctrl[:] = self.ctrl_offset + self.ctrl_scale * a
            bad_before = sum(d.warning[w].number for w in _BAD_WARNINGS)
            mujoco.mj_step(m, d, nstep=self.substeps)
            # joint-space torque of each actuator (actuator force times its gear), the paper's torque term
            b["torque"][i] = d.actuator_force * self._gear
            bad = sum(d.warning[w].number for w in _BAD_WARNINGS) > bad_before
            bad = bad or not (np.isfinite(d.qpos).all() and np.isfinite(d.qvel).all())
            if not bad:
                # kinematics at the new state (mj_step leaves them one substep behind)
                mujoco.mj_forward(m, d)
            self._write(i, d, nonfinite=bad)

    def _write(self, i: int, d: mujoco.MjData, nonfinite: bool) -> None:
        m, b = self.model, self.bufs
        nq, nv = m.nq, m.nv
        if nonfinite:
            b["qpos"][i] = np.nan_to_num(d.qpos, nan=0.0, posinf=0.0, neginf=0.0)
            b["qvel"][i] = np.nan_to_num(d.qvel, nan=0.0, posinf=0.0, neginf=0.0)
            np.nan_to_num(b["torque"][i], copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        else:
            b["qpos"][i] = d.qpos
            b["qvel"][i] = d.qvel
        obs = b["obs"][i]
        obs[: nq - 2] = b["qpos"][i, 2:]
        obs[nq - 2 : nq - 2 + nv] = b["qvel"][i]
        b["root_pos"][i] = b["qpos"][i, :3]
        b["root_lin_vel"][i] = b["qvel"][i, :3]  # a free joint's linear velocity is in the world frame
        up_z = float(d.xmat[self.torso, 8]) if not nonfinite else 0.0
        b["torso_up_z"][i] = up_z
        fell = bool(b["qpos"][i, 2] < self.spec.fall_height) or up_z < self.cos_tilt
        b["terminated"][i] = fell or nonfinite
        b["nonfinite"][i] = nonfinite
        # feet: contact with anything that is not the robot, and horizontal world-frame velocity
        contact = b["foot_contact"][i]
        contact[:] = False
        if d.ncon and len(self.feet) and not nonfinite:
            g = d.contact.geom[: d.ncon]
            f1, f2 = self._geom_foot[g[:, 0]], self._geom_foot[g[:, 1]]
            r1, r2 = self._geom_is_robot[g[:, 0]], self._geom_is_robot[g[:, 1]]
            hits = np.concatenate([f1[(f1 >= 0) & ~r2], f2[(f2 >= 0) & ~r1]])
            contact[hits] = True
        for k, fb in enumerate(self.feet):
            if nonfinite:
                b["foot_vel_xy"][i, k] = 0.0
                continue
            mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_BODY, fb, self._vel6, 0)
            b["foot_vel_xy"][i, k] = self._vel6[3:5]
        if self.renderer is not None:
            self.renderer.render_into(d, b["rgb"][i], b["mask"][i])

    def close(self) -> None:
        """Free the renderer."""
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None


# ---------------------------------------------------------------- worker side
# Workers are plain `python -m nil.sim.mujoco_envs` processes (not multiprocessing children) so that
# they never re-import the parent's __main__ and never inherit its threads or GL state. Protocol over
# the worker's stdin/stdout: a length-prefixed pickle of the start arguments, then one-byte commands
# (s = step, r = reset, q = quit); each answered by b"k" or b"e" + length-prefixed error text.
CMD_STEP, CMD_RESET, CMD_QUIT = b"s", b"r", b"q"
REPLY_OK, REPLY_ERR = b"k", b"e"


def open_shared(path: str, size: int) -> mmap.mmap:
    """Map a shared-memory file (created by the parent) into this process."""
    fd = os.open(path, os.O_RDWR)
    try:
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def read_exact(fd: int, n: int) -> bytes:
    """Read exactly n bytes from a file descriptor (EOFError when it closes first)."""
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    """Write all of data to a file descriptor."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _reply_error(fd: int, e: BaseException) -> None:
    msg = f"{type(e).__name__}: {e}\n{traceback.format_exc()}".encode(errors="replace")
    try:
        write_all(fd, REPLY_ERR + struct.pack("<I", len(msg)) + msg)
    except OSError:
        pass


def worker_main() -> None:
    """Worker process: own envs [start, stop) of a batch and answer step/reset commands until quit or EOF."""
    # Ctrl-C goes to the whole process group: the parent handles it and shuts us down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cmd_in = sys.stdin.fileno()
    reply_out = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt the protocol
    group = None
    try:
        (n,) = struct.unpack("<I", read_exact(cmd_in, 4))
        args = pickle.loads(read_exact(cmd_in, n))
        if args.get("lp_threads"):
            os.environ.setdefault("LP_NUM_THREADS", str(args["lp_threads"]))
        dims: Dims = args["dims"]
        size, _ = layout_size(dims)
        mm = open_shared(args["shm_path"], size)
        bufs = map_buffers(mm, dims)
        group = EnvGroup(
            args["spec"],
            bufs,
            args["start"],
            args["stop"],
            seed=args["seed"],
            reset_noise=args["reset_noise"],
        )
        write_all(reply_out, REPLY_OK)
    except BaseException as e:
        _reply_error(reply_out, e)
        return
    try:
        while True:
            try:
                cmd = read_exact(cmd_in, 1)
            except (EOFError, OSError):
                break  # parent gone
            if cmd == CMD_QUIT:
                break
            try:
                if cmd == CMD_STEP:
                    group.step()
                elif cmd == CMD_RESET:
                    group.reset(bufs["reset_in"])
                else:
                    raise ValueError(f"unknown command {cmd!r}")
            except Exception as e:
                _reply_error(reply_out, e)
                continue
            write_all(reply_out, REPLY_OK)
    finally:
        group.close()
