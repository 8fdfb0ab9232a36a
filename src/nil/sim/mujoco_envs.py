"""CPU MuJoCo envs on numpy buffers: the physics + render core shared by the in-process and worker backends.

This module imports no torch, so worker processes start fast. An `EnvGroup` owns envs [start, stop)
of a batch: their MjData, one RobotRenderer, and per-env random generators seeded by (seed, env index),
so results do not depend on how envs are spread over workers. After physics it reads the raw state and
lets nil.sim.task derive the outputs, which it writes straight into the batch-wide buffers (plain
arrays in-process, or views of one shared-memory file in workers; the pipe protocol is nil.sim.workers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nil.gl import ensure_offscreen_gl

ensure_offscreen_gl()

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from nil.robots.spec import RobotSpec  # noqa: E402
from nil.scene.grip import GripTable  # noqa: E402
from nil.sim import task  # noqa: E402

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
        "foot_force": ((n, d.n_feet), np.float32),
        "torso_up_z": ((n,), np.float32),
        "root_pos": ((n, 3), np.float32),
        "root_lin_vel": ((n, 3), np.float32),
        "nonfinite": ((n,), np.bool_),
        # inputs written by the parent
        "action_in": ((n, d.nu), np.float32),
        "reset_in": ((n,), np.bool_),
        "seed_in": ((1,), np.int64),
        "skip_rgb_in": ((1,), np.bool_),  # set_render(False): no colour pass
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
    """Envs [start, stop) of a batch: CPU physics and rendering; nil.sim.task's rules fill the rest."""

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
        self.rules = task.TaskRules.build(spec, m, reset_noise)
        self.substeps = spec.substeps(m)
        self.ctrl_offset, self.ctrl_scale = spec.ctrl_affine(m)
        self.datas = [mujoco.MjData(m) for _ in range(start, stop)]
        self.grips = GripTable.of(m)  # a gripped bar's hands (nil.scene.grip); empty without one
        self.rngs = task.make_rngs(seed, start, stop)
        self._force6 = np.zeros(6)
        self.renderer = None
        if render:
            from nil.sim.render import RobotRenderer

            self.renderer = RobotRenderer(m, spec)

    def reseed(self, seed: int) -> None:
        """New reset-noise generators, seeded by (seed, env index)."""
        self.rngs = task.make_rngs(seed, self.start, self.stop)

    # ------------------------------------------------------------------
    def reset(self, which: np.ndarray | None = None) -> None:
        """Reset envs whose flag in `which` (bool [N], batch-wide) is set; all the group's envs when None."""
        m, b = self.model, self.bufs
        rows = [j for j in range(len(self.datas)) if which is None or which[self.start + j]]
        for j in rows:
            d = self.datas[j]
            mujoco.mj_resetData(m, d)
            d.qpos[:], d.qvel[:] = task.reset_pose(self.rules, self.rngs[j])
            d.ctrl[:] = self.ctrl_offset
            mujoco.mj_forward(m, d)
        if not rows:
            return
        self._write(np.asarray(rows), np.zeros(len(rows), bool))
        task.clear_on_reset(b["action"], b["prev_action"], b["torque"], self.start + np.asarray(rows))

    def step(self) -> None:
        """One control step of every env of the group, reading actions from the action_in buffer."""
        m, b = self.model, self.bufs
        sl = slice(self.start, self.stop)
        a = task.apply_action(b["action"][sl], b["prev_action"][sl], b["action_in"][sl])
        bad = np.zeros(len(self.datas), bool)
        for j, d in enumerate(self.datas):
            d.ctrl[:] = self.ctrl_offset + self.ctrl_scale * a[j]
            warnings_before = sum(d.warning[w].number for w in _BAD_WARNINGS)
            mujoco.mj_step(m, d, nstep=self.substeps)
            bad[j] = sum(d.warning[w].number for w in _BAD_WARNINGS) > warnings_before
            bad[j] = bad[j] or not (np.isfinite(d.qpos).all() and np.isfinite(d.qvel).all())
            if not bad[j]:
                # kinematics and contact forces at the new state (mj_step leaves them one substep behind)
                mujoco.mj_forward(m, d)
                self.grips.update(d)
        self._write(np.arange(len(self.datas)), bad)

    def _raw(self, rows: np.ndarray, bad: np.ndarray) -> task.RawState:
        """The raw state of envs `rows` (group-local indices) for the task rules."""
        m = self.model
        datas = [self.datas[j] for j in rows]
        worlds, geoms, pos, force = [], [], [], []
        for r, d in enumerate(datas):
            if bad[r] or not d.ncon:
                continue
            con = d.contact
            for c in range(d.ncon):
                mujoco.mj_contactForce(m, d, c, self._force6)
                force.append(self._force6[0])
            worlds.append(np.full(d.ncon, r))
            geoms.append(con.geom[: d.ncon])
            pos.append(con.pos[: d.ncon])
        k = sum(len(w) for w in worlds)
        return task.RawState(
            qpos=np.stack([d.qpos for d in datas]),
            qvel=np.stack([d.qvel for d in datas]),
            actuator_force=np.stack([d.actuator_force for d in datas]),
            torso_zz=np.array([d.xmat[self.rules.torso, 8] for d in datas]),
            nonfinite=bad,
            xipos=np.stack([d.xipos for d in datas]),
            cvel=np.stack([d.cvel for d in datas]),
            subtree_com=np.stack([d.subtree_com for d in datas]),
            con_world=np.concatenate(worlds) if k else np.zeros(0, np.int64),
            con_geom=np.concatenate(geoms) if k else np.zeros((0, 2), np.int64),
            con_pos=np.concatenate(pos) if k else np.zeros((0, 3)),
            con_force=np.asarray(force, np.float64),
        )

    def _write(self, rows: np.ndarray, bad: np.ndarray) -> None:
        """Task outputs and images of envs `rows` (group-local) into the batch buffers."""
        b = self.bufs
        out = task.evaluate(self.rules, self._raw(rows, bad))
        i = self.start + rows
        for name in task.OUTPUTS:
            b[name][i] = out[name]
        if self.renderer is not None:
            rgb_on = not b["skip_rgb_in"][0]
            for j in rows:
                k = self.start + j
                self.renderer.render_into(self.datas[j], b["rgb"][k] if rgb_on else None, b["mask"][k])

    def close(self) -> None:
        """Free the renderer."""
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None
