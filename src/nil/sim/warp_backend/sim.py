"""WarpSim: N worlds in one MuJoCo Warp Data, RGB + robot mask from MJWarp's ray tracer, outputs as torch.

Per control step: ctrl <- action -> n physics substeps -> non-finite worlds put back to the initial pose
(flagged) -> forward at the final state (kinematics, contacts, contact forces, as mj_forward gives the
CPU backend) -> tracking-camera pose per world -> BVH refit -> render. A reset runs reset_data on the
flagged worlds, writes their reset pose, then the same forward + render. Both sequences are Warp-only,
so on CUDA each is captured once as a graph and replayed (resets included: they happen almost every
step at thousands of worlds). The task rules (obs, falls, feet, reset noise, checks) are nil.sim.task's,
evaluated with torch on the device from zero-copy views of the Warp buffers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mujoco
import numpy as np
import torch

from nil.errors import ConfigError, RobotError, SimulationError
from nil.scene.grip import GripTable
from nil.sim import SIMS, task
from nil.sim.base import SimBatch
from nil.sim.render import camera_anchor
from nil.sim.warp_backend.camera import camera_pose
from nil.sim.warp_backend.contacts import check_overflow, contact_budget
from nil.sim.warp_backend.device import resolve_device
from nil.sim.warp_backend.kernels import kernels
from nil.sim.warp_backend.model import CAMERA_NAME, tracking_model
from nil.sim.warp_backend.status import import_warp

if TYPE_CHECKING:
    from nil.config import SimConfig
    from nil.robots.spec import RobotSpec

_MJOBJ_GEOM = int(mujoco.mjtObj.mjOBJ_GEOM)
# MJWarp's overflow bits stay set until the world is reset: reading them (a host sync) every few steps
# and before every reset misses nothing
_OVERFLOW_CHECK_EVERY = 16
# the state a warm-up run must leave untouched (everything that carries from one step to the next)
_STATE_SIG = int(mujoco.mjtState.mjSTATE_INTEGRATION) & ~int(mujoco.mjtState.mjSTATE_PLUGIN)


def configure_solver(m: Any, *, capture: bool, conditional_ok: bool) -> None:
    """Solver options for how the sequences run. Inside a captured graph the solver's early exit is a
    conditional graph node, which needs CUDA 12.4+ (wp.is_conditional_graph_supported()); without it,
    run the fixed number of iterations instead of failing at capture."""
    if capture and not conditional_ok:
        m.opt.graph_conditional = False


@dataclass
class _Views:
    """Zero-copy torch views of the Warp buffers the backend reads and writes."""

    qpos: torch.Tensor
    qvel: torch.Tensor
    ctrl: torch.Tensor
    xipos: torch.Tensor
    xmat: torch.Tensor
    cvel: torch.Tensor
    subtree_com: torch.Tensor
    actuator_force: torch.Tensor
    overflow: torch.Tensor
    nacon: torch.Tensor
    contact_geom: torch.Tensor
    contact_world: torch.Tensor
    contact_pos: torch.Tensor
    contact_force: torch.Tensor
    rgb_packed: torch.Tensor
    seg: torch.Tensor
    bad: torch.Tensor
    reset_mask: torch.Tensor
    reset_qpos: torch.Tensor
    reset_qvel: torch.Tensor


class WarpSim:
    """BatchedSim on MuJoCo Warp (see the module docstring)."""

    def __init__(
        self,
        spec: RobotSpec,
        sim_cfg: SimConfig,
        num_envs: int | None = None,
        horizon: int | None = None,
        seed: int = 0,
    ) -> None:
        wp, mjw = import_warp()
        self._wp, self._mjw = wp, mjw
        self.spec = spec
        self.cfg = sim_cfg
        self.num_envs = task.num_envs(num_envs, sim_cfg.num_envs)
        self.horizon = horizon
        self._closed = False
        self._stepping = False
        self._render_rgb = True
        dev = resolve_device(sim_cfg.device)
        self._wdev = wp.get_device(dev)
        self.device = torch.device(dev)
        self._cuda = self._wdev.is_cuda
        self._use_graph = self._cuda and bool(getattr(sim_cfg, "cuda_graph", True))

        self.model = tracking_model(spec)
        m = self.model
        if len(GripTable.of(m)):
            raise ConfigError(
                "scene.objects[].grip: gripping a bar runs on the CPU simulator only; set "
                "sim.backend: mujoco or remove the grip"
            )
        self.rules = task.TaskRules.build(spec, m, sim_cfg.reset_noise)
        self._rngs = task.make_rngs(seed, 0, self.num_envs)
        self._cam = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA_NAME)
        self._root = spec.root_id(m)
        self.substeps = spec.substeps(m)
        self.action_dim = spec.action_dim(m)
        self.nq, self.nv, self.nu = int(m.nq), int(m.nv), int(m.nu)
        self.obs_dim = self.rules.obs_dim
        self.image_hw = (int(spec.camera.height), int(spec.camera.width))
        self.dt = self.substeps * float(m.opt.timestep)
        qpos0 = self.rules.q0
        auto_con, auto_j = contact_budget(m, qpos0, self.substeps, seed=seed)
        self.nconmax = int(sim_cfg.nconmax or auto_con)
        self.njmax = int(sim_cfg.njmax or auto_j)

        N, (H, W) = self.num_envs, self.image_hw
        off, scale = spec.ctrl_affine(m)
        with wp.ScopedDevice(self._wdev):
            try:
                self._m = mjw.put_model(m)
            except Exception as e:
                raise RobotError(
                    f"robot {spec.name!r}: MuJoCo Warp cannot load it ({e}); use sim.backend=mujoco"
                ) from None
            # we detect overflow ourselves and raise; the in-kernel printf would only add noise
            self._m.opt.warn_overflow = 0
            configure_solver(
                self._m, capture=self._use_graph, conditional_ok=wp.is_conditional_graph_supported()
            )
            self._d = mjw.make_data(m, nworld=N, nconmax=self.nconmax, njmax=self.njmax)
            self._rc = mjw.create_render_context(
                m,
                nworld=N,
                cam_res=(W, H),
                render_rgb=True,
                render_depth=False,
                render_seg=True,
                cam_active=[self._cam],
                use_shadows=False,
                samples_per_pixel=1,
                use_textures=True,
                render_skybox=False,
                enabled_geom_groups=[0, 1, 2],
                background_color=(0.0, 0.0, 0.0, 1.0),
            )
            ncon = int(self._d.contact.geom.shape[0])
            self._w = {
                "qpos0": wp.array(qpos0.astype(np.float32), dtype=float),
                "ctrl0": wp.array(off.astype(np.float32), dtype=float),
                "bad": wp.zeros(N, dtype=wp.int32),
                "reset": wp.zeros(N, dtype=bool),
                "reset_qpos": wp.zeros((N, self.nq), dtype=float),
                "reset_qvel": wp.zeros((N, self.nv), dtype=float),
                "con_ids": wp.array(np.arange(ncon, dtype=np.int32), dtype=int),
                "con_force": wp.zeros(ncon, dtype=wp.spatial_vector),
            }
        d, rc = self._d, self._rc
        rgb_adr, seg_adr = int(rc.rgb_adr.numpy()[0]), int(rc.seg_adr.numpy()[0])
        npix = H * W
        t = wp.to_torch
        self._v = _Views(
            qpos=t(d.qpos),
            qvel=t(d.qvel),
            ctrl=t(d.ctrl),
            xipos=t(d.xipos),
            xmat=t(d.xmat),
            cvel=t(d.cvel),
            subtree_com=t(d.subtree_com),
            actuator_force=t(d.actuator_force),
            overflow=t(d.overflow),
            nacon=t(d.nacon),
            contact_geom=t(d.contact.geom),
            contact_world=t(d.contact.worldid),
            contact_pos=t(d.contact.pos),
            contact_force=t(self._w["con_force"]),
            rgb_packed=t(rc.rgb_data)[:, rgb_adr : rgb_adr + npix],
            seg=t(rc.seg_data)[:, seg_adr : seg_adr + npix],
            bad=t(self._w["bad"]),
            reset_mask=t(self._w["reset"]),
            reset_qpos=t(self._w["reset_qpos"]),
            reset_qvel=t(self._w["reset_qvel"]),
        )
        dv = self.device
        offset, cam_mat = camera_pose(spec.camera.distance, spec.camera.elevation, spec.camera.azimuth)
        offset = offset + np.asarray(spec.camera.lookat_offset, dtype=np.float64)  # a fitted camera's
        self._cam_offset = wp.vec3(*offset.astype(np.float32))
        self._cam_mat = wp.mat33(*cam_mat.astype(np.float32).ravel())
        self._lookat_z = float(spec.camera.lookat_z)
        anchor = camera_anchor(spec, self.model)
        self._cam_fixed = int(anchor is not None)
        self._cam_anchor = wp.vec3(*(np.zeros(3) if anchor is None else anchor).astype(np.float32))
        self._qpos0 = torch.as_tensor(qpos0, dtype=torch.float32, device=dv)
        self._ctrl_off = torch.as_tensor(off, dtype=torch.float32, device=dv)
        self._ctrl_scale = torch.as_tensor(scale, dtype=torch.float32, device=dv)
        self._is_robot_geom = torch.as_tensor(spec.robot_geom_mask(m), dtype=torch.bool, device=dv)
        self._con_slots = torch.arange(ncon, device=dv)

        A, nf = self.action_dim, self.rules.n_feet
        z = lambda *s, dt=torch.float32: torch.zeros(*s, dtype=dt, device=dv)  # noqa: E731
        self._t = z(N, dt=torch.int64)
        self._batch = SimBatch(
            obs=z(N, self.obs_dim),
            rgb=z(N, H, W, 3, dt=torch.uint8),
            mask=z(N, H, W, dt=torch.bool),
            terminated=z(N, dt=torch.bool),
            truncated=z(N, dt=torch.bool),
            t=self._t,
            qpos=z(N, self.nq),
            qvel=z(N, self.nv),
            joint_vel=z(N, self.nv - 6),
            torque=z(N, self.nu),
            action=z(N, A),
            prev_action=z(N, A),
            foot_contact=z(N, nf, dt=torch.bool),
            foot_vel_xy=z(N, nf, 2),
            torso_up_z=z(N),
            root_pos=z(N, 3),
            root_lin_vel=z(N, 3),
            nonfinite=z(N, dt=torch.bool),
            foot_force=z(N, nf),
        )
        self._graphs: dict[str, Any] = {}
        self._unchecked_steps = 0
        if self._cuda:
            self._stream = torch.cuda.Stream(device=self.device)
            self._wstream = wp.stream_from_torch(self._stream)
        self.reset()

    # ----------------------------------------------------------------- warp sequences (capturable)
    def _derived(self) -> None:
        """What the outputs read at the current state (as mj_forward gives the CPU backend); the frame."""
        wp, mjw = self._wp, self._mjw
        m, d = self._m, self._d
        mjw.forward(m, d)  # kinematics, contacts and constraint forces at the final state
        mjw.contact_force(m, d, self._w["con_ids"], False, self._w["con_force"])
        wp.launch(
            kernels()["tracking_camera"],
            dim=self.num_envs,
            inputs=[
                d.xpos,
                self._root,
                self._cam,
                self._lookat_z,
                self._cam_offset,
                self._cam_mat,
                self._cam_fixed,
                self._cam_anchor,
            ],
            outputs=[d.cam_xpos, d.cam_xmat],
        )
        mjw.refit_bvh(m, d, self._rc)
        mjw.render(m, d, self._rc)

    def _seq_step(self) -> None:
        wp, mjw = self._wp, self._mjw
        for _ in range(self.substeps):
            mjw.step(self._m, self._d)
        w = self._w
        wp.launch(
            kernels()["sanitize"],
            dim=self.num_envs,
            inputs=[self._d.qpos, self._d.qvel, w["qpos0"], w["bad"]],
        )
        self._derived()

    def _seq_reset(self) -> None:
        wp, mjw = self._wp, self._mjw
        w, d = self._w, self._d
        mjw.reset_data(self._m, d, reset=w["reset"])
        wp.launch(
            kernels()["apply_reset"],
            dim=self.num_envs,
            inputs=[w["reset"], w["reset_qpos"], w["reset_qvel"], w["ctrl0"]],
            outputs=[d.qpos, d.qvel, d.ctrl, w["bad"]],
        )
        self._derived()

    def _run(self, name: str) -> None:
        """Run sequence `name` ("step" | "reset"): eagerly, or its graph (captured on first use)."""
        wp = self._wp
        seq = self._seq_step if name == "step" else self._seq_reset
        with wp.ScopedDevice(self._wdev):
            if not self._use_graph:
                seq()
                return
            if name not in self._graphs:
                self._graphs[name] = self._capture(seq)
            wp.capture_launch(self._graphs[name], stream=self._wstream if self._cuda else None)

    def _capture(self, seq: Any) -> Any:
        """Capture `seq` as a graph. Kernels must be loaded before a capture, so `seq` runs once eagerly
        first; the state it advanced is put back, so the first replay is the first real step."""
        wp, mjw = self._wp, self._mjw
        m, d = self._m, self._d
        size = mujoco.mj_stateSize(self.model, _STATE_SIG)
        state = wp.zeros((self.num_envs, size), dtype=float)
        mjw.get_state(m, d, state, _STATE_SIG)
        bad = wp.clone(self._w["bad"])
        seq()
        mjw.set_state(m, d, state, _STATE_SIG)
        wp.copy(self._w["bad"], bad)
        kw = {"stream": self._wstream} if self._cuda else {}
        with wp.ScopedCapture(device=self._wdev, **kw) as cap:
            seq()
        return cap.graph

    # ----------------------------------------------------------------- outputs
    def _images(self) -> tuple[torch.Tensor, torch.Tensor]:
        N, (H, W) = self.num_envs, self.image_hw
        v = self._v
        # packed little-endian pixels are bytes (B, G, R, A)
        rgb = v.rgb_packed.view(torch.uint8).reshape(N, H, W, 4)[..., [2, 1, 0]]
        seg = v.seg.reshape(N, H, W, 2)
        gid = seg[..., 0].long()
        mask = (gid >= 0) & (seg[..., 1] == _MJOBJ_GEOM) & self._is_robot_geom[gid.clamp(min=0)]
        return rgb, mask

    def raw_state(self) -> task.RawState:
        """The raw state of every world for the task rules (views of the Warp buffers)."""
        v = self._v
        nbody = v.xipos.shape[1]
        return task.RawState(
            qpos=v.qpos,
            qvel=v.qvel,
            actuator_force=v.actuator_force,
            torso_zz=v.xmat.reshape(self.num_envs, nbody, 9)[:, self.rules.torso, 8],
            nonfinite=v.bad.bool(),
            xipos=v.xipos,
            cvel=v.cvel,
            subtree_com=v.subtree_com,
            con_world=v.contact_world.long(),
            con_geom=v.contact_geom.long(),
            con_pos=v.contact_pos,
            con_force=v.contact_force[:, 0],
            con_valid=self._con_slots < v.nacon[0],
        )

    def _fill(self, rows: torch.Tensor | None) -> None:
        """Write the current state into the batch buffers (all envs, or only `rows`)."""
        b = self._batch
        values = task.evaluate(self.rules, self.raw_state())
        truncated = torch.zeros_like(values["terminated"])
        task.apply_time(values["obs"], truncated, self._t, self.horizon)
        values["truncated"] = truncated
        values["joint_vel"] = values["qvel"][:, 6:]
        rgb, values["mask"] = self._images()
        if self._render_rgb:
            values["rgb"] = rgb
        for name, val in values.items():
            buf = getattr(b, name)
            if rows is None:
                buf.copy_(val)
            else:
                buf[rows] = val[rows].to(buf.dtype)

    # ----------------------------------------------------------------- BatchedSim
    def set_horizon(self, horizon: int | None) -> None:
        """Set the truncation horizon (the retimed reference length)."""
        self.horizon = horizon

    def seed(self, seed: int) -> None:
        """Reseed every world's reset-noise generator with (seed, world index)."""
        self._require_idle("seed()")
        self._rngs = task.make_rngs(seed, 0, self.num_envs)

    def set_render(self, rgb: bool) -> None:
        """rgb=False: the ray tracer skips shading (batch.rgb stays all zero); the mask is always rendered."""
        self._require_idle("set_render()")
        self._render_rgb = bool(rgb)
        with self._scope():
            # read by the render kernel at run time, so captured graphs follow it
            wp_flags = self._wp.to_torch(self._rc.render_rgb)
            wp_flags.fill_(self._render_rgb)
            if not rgb:
                self._batch.rgb.zero_()
        self._sync_out()

    def reset(self, env_ids: torch.Tensor | None = None) -> SimBatch:
        """Reset all envs (None) or `env_ids` (indices or bool mask [N]) to the initial pose plus noise;
        the other envs' state and batch rows are untouched."""
        self._require_idle("reset()")
        flags = task.reset_rows(env_ids, self.num_envs)
        rows = np.flatnonzero(flags)
        if rows.size == 0:
            return self._batch
        self._check_overflow()  # before the reset clears the flags of the worlds it resets
        poses = [task.reset_pose(self.rules, self._rngs[i]) for i in rows]
        qpos = torch.as_tensor(np.stack([p[0] for p in poses]), dtype=torch.float32)
        qvel = torch.as_tensor(np.stack([p[1] for p in poses]), dtype=torch.float32)
        if self._cuda:
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with self._scope():
            v, b = self._v, self._batch
            ids = torch.as_tensor(rows, device=self.device)
            v.reset_mask.copy_(torch.as_tensor(flags).to(self.device))
            v.reset_qpos[ids] = qpos.to(self.device)
            v.reset_qvel[ids] = qvel.to(self.device)
            self._run("reset")
            self._t[ids] = 0
            self._fill(ids)
            task.clear_on_reset(b.action, b.prev_action, b.torque, ids)
        self._sync_out()
        self._check_overflow()
        return self._batch

    def _check_overflow(self) -> None:
        self._unchecked_steps = 0
        check_overflow(self._v.overflow, self.nconmax, self.njmax)

    def step_async(self, action: torch.Tensor) -> None:
        """Enqueue one control step of actions [N, action_dim] in [-1, 1] (the GPU runs it asynchronously)."""
        self._require_idle("step_async()")
        a = task.check_action(action, self.num_envs, self.action_dim)
        if self._cuda:
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with self._scope():
            b = self._batch
            a = task.apply_action(b.action, b.prev_action, a.to(self.device, non_blocking=True))
            self._v.ctrl.copy_(self._ctrl_off + self._ctrl_scale * a)
            self._run("step")
            self._t += 1
            self._fill(None)
        self._sync_out()
        self._stepping = True

    def step_wait(self) -> SimBatch:
        """The batch of the step enqueued by step_async() (checks the contact budget every few steps)."""
        if not self._stepping:
            raise SimulationError("step_wait() without step_async()")
        self._stepping = False
        self._unchecked_steps += 1
        if self._unchecked_steps >= _OVERFLOW_CHECK_EVERY:
            self._check_overflow()
        return self._batch

    def step(self, action: torch.Tensor) -> SimBatch:
        """Apply actions [N, action_dim] in [-1, 1] for one control step, then render every world."""
        self.step_async(action)
        return self.step_wait()

    def _scope(self) -> Any:
        """Run torch and Warp work on one stream (CUDA) so their ordering holds without host syncs."""
        if not self._cuda:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.cuda.stream(self._stream))
        stack.enter_context(self._wp.ScopedStream(self._wstream))
        return stack

    def _sync_out(self) -> None:
        """Order the caller's stream after ours (no host sync)."""
        if self._cuda:
            torch.cuda.current_stream(self.device).wait_stream(self._stream)

    def _require_idle(self, what: str) -> None:
        task.check_idle(self._closed, self._stepping, what)

    def close(self) -> None:
        """Drop the Warp buffers and graphs (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        self._stepping = False
        self._graphs = {}
        self._v = None  # type: ignore[assignment]
        self._w = {}
        self._rc = None
        self._d = None
        self._m = None

    def __enter__(self) -> WarpSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@SIMS.register("warp")
def _make_warp(
    spec: RobotSpec, sim_cfg: SimConfig, *, num_envs: int | None, horizon: int | None, seed: int
) -> WarpSim:
    return WarpSim(spec, sim_cfg, num_envs=num_envs, horizon=horizon, seed=seed)
