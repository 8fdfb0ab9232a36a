"""MuJoCo Warp backend: N worlds stepped and ray-traced (RGB + segmentation) by mujoco-warp, outputs as torch.

The same robot model, tracking camera, render settings, observations, actions, terminations, resets
and regulariser state as the CPU backend (nil.sim.mujoco_backend); only the engine differs. It runs on
`cuda:N` (the point of it: thousands of worlds on one GPU) and, slowly, on Warp's `cpu` device, which
is how CI proves it without a GPU.

Per control step: ctrl <- action -> n physics substeps -> non-finite worlds put back to the initial
pose (flagged) -> kinematics at the final state -> tracking-camera pose per world -> BVH refit ->
render. On CUDA that sequence is captured once as a CUDA graph and replayed. Every buffer is wrapped
with `wp.to_torch` (zero copy); RGB uint8 and the robot mask are unpacked from the packed render
buffers with torch ops on the device.

Warp's kernel cache honours WARP_CACHE_PATH (CI keeps it between runs); a cold compile takes ~25-40 s
on a 2-core CPU, a warm start ~1 s.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import mujoco
import numpy as np
import torch

from nil.errors import RobotError, SimulationError
from nil.sim.base import SimBatch

if TYPE_CHECKING:
    from nil.config import SimConfig
    from nil.robots.spec import RobotSpec

CAMERA_NAME = "nil_track"
INSTALL_HINT = "pip install 'nil-imitation[gpu]' (mujoco-warp and warp-lang)"
# mujoco_warp.OverflowType bits that mean a buffer was too small (solver-iteration bits are not errors).
_NEFC, _NJMAX_NNZ, _BROADPHASE, _NARROWPHASE, _CCD, _HFIELD = 1, 2, 4, 8, 16, 32
_CAPACITY_BITS = _NEFC | _NJMAX_NNZ | _BROADPHASE | _NARROWPHASE | _CCD | _HFIELD
_MJOBJ_GEOM = int(mujoco.mjtObj.mjOBJ_GEOM)


# --------------------------------------------------------------------------- import / status
def _import_warp() -> tuple[Any, Any]:
    """(warp, mujoco_warp), initialised quietly; SimulationError with the install command if missing."""
    try:
        import warp as wp

        # Warp logs every kernel-module load at INFO; keep warnings only (set before anything initialises Warp)
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


def _versions() -> str:
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
        wp, _ = _import_warp()
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
    return {"available": True, "device": device, "version": _versions(), "error": None, "note": note}


def resolve_device(device: str) -> str:
    """Normalise sim.device for Warp ("cpu", "cuda" -> "cuda:0", "auto" -> cuda:0 when present)."""
    wp, _ = _import_warp()
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


# --------------------------------------------------------------------------- model
def _model_arrays(model: mujoco.MjModel) -> dict[str, np.ndarray]:
    out = {}
    for k in dir(model):
        if k.startswith("_"):
            continue
        try:
            v = getattr(model, k)
        except Exception:
            continue
        if isinstance(v, np.ndarray):
            out[k] = v
    return out


def _copy_struct(dst: Any, src: Any) -> None:
    for k in dir(src):
        if k.startswith("_"):
            continue
        try:
            v = getattr(src, k)
        except Exception:
            continue
        if callable(v):
            continue
        if isinstance(v, np.ndarray):
            np.copyto(getattr(dst, k), v)
            continue
        try:
            setattr(dst, k, v)
        except (AttributeError, TypeError):
            pass


def tracking_model(spec: RobotSpec, base: mujoco.MjModel | None = None) -> mujoco.MjModel:
    """The CPU backend's model (spec.load_model()) plus one world camera that the tracking pose is written to.

    MuJoCo Warp renders model cameras only, while the GL renderer uses a free camera; a camera does not
    change the physics. The model is recompiled from the MJCF with the camera added (and the floor/light
    that load_model adds when the MJCF lacks them), then every array and option of spec.load_model() is
    copied over, so whatever the robot layer changes (control mode, visual settings) carries across.
    """
    if base is None:
        # MJWarp ray-traces meshes through a BVH: no need for the CPU renderer's decimated visual meshes,
        # and the exact meshes are what a fresh compile of the MJCF gives (physics is identical either way)
        exact = dataclasses.replace(spec, simplify_meshes=False) if hasattr(spec, "simplify_meshes") else spec
        base = exact.load_model()
    names = [mujoco.mj_id2name(base, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(base.ncam)]
    if CAMERA_NAME in names:
        model = base
    else:
        try:
            ms = mujoco.MjSpec.from_file(str(spec.mjcf_path))
            fresh = ms.compile()
        except Exception as e:
            raise RobotError(f"cannot load MJCF {spec.mjcf_path} for the warp backend: {e}") from None
        body_names = [mujoco.mj_id2name(base, mujoco.mjtObj.mjOBJ_BODY, i) for i in range(base.nbody)]
        if len(ms.bodies) == base.nbody:  # both list the bodies depth-first, world first
            for body, name in zip(ms.bodies, body_names, strict=True):
                if name and body.name != name:
                    body.name = name
        for _ in range(base.ngeom - fresh.ngeom):  # the floor load_model adds to floor-less models
            ms.worldbody.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 0.05])
        for _ in range(base.nlight - fresh.nlight):
            ms.worldbody.add_light(pos=[0, 0, 4.0], dir=[0, 0, -1.0])
        ms.worldbody.add_camera(name=CAMERA_NAME, pos=[0, 0, 0])
        model = ms.compile()
        sizes = ("nq", "nv", "nu", "na", "nbody", "njnt", "ngeom", "nmesh", "nlight", "nmat", "ntex", "neq")
        bad = [s for s in sizes if getattr(model, s) != getattr(base, s)]
        if (
            not bad
            and [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, i) for i in range(model.nbody)]
            != body_names
        ):
            bad = ["body names"]
        if bad:
            raise SimulationError(
                f"the warp backend could not rebuild {spec.name}'s model ({', '.join(bad)} differ from "
                "RobotSpec.load_model()); use sim.backend=mujoco and report this"
            )
        dst = _model_arrays(model)
        src = _model_arrays(base)
        skip = ("name", "cam_", "text_", "paths")
        bad = [k for k, v in src.items() if not k.startswith(skip) and k in dst and dst[k].shape != v.shape]
        if bad:
            raise SimulationError(
                f"the warp backend could not rebuild {spec.name}'s model ({', '.join(bad[:5])} differ from "
                "RobotSpec.load_model()); use sim.backend=mujoco and report this"
            )
        for k, v in src.items():
            if not k.startswith(skip) and k in dst:
                np.copyto(dst[k], v)
        for sub in ("opt", "stat"):
            _copy_struct(getattr(model, sub), getattr(base, sub))
        for sub in ("global_", "quality", "headlight", "map", "scale", "rgba"):
            _copy_struct(getattr(model.vis, sub), getattr(base.vis, sub))
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA_NAME)
    model.cam_mode[cam] = mujoco.mjtCamLight.mjCAMLIGHT_FIXED
    model.cam_bodyid[cam] = 0
    model.cam_fovy[cam] = float(spec.camera.fovy)
    model.cam_projection[cam] = mujoco.mjtProjection.mjPROJ_PERSPECTIVE
    model.cam_intrinsic[cam] = 0.0
    model.cam_sensorsize[cam] = 0.0
    model.cam_resolution[cam] = (int(spec.camera.width), int(spec.camera.height))
    return model


def check_put_model(spec: RobotSpec) -> dict[str, Any]:
    """Load the model the CPU backend uses through mujoco_warp.put_model (on Warp's CPU device).

    Raises RobotError naming the unsupported feature, so CI fails instead of a user's GPU run.
    """
    wp, mjw = _import_warp()
    model = tracking_model(spec)
    try:
        with wp.ScopedDevice("cpu"):
            mjw.put_model(model)
    except Exception as e:
        raise RobotError(
            f"robot {spec.name!r} uses a feature MuJoCo Warp does not support ({type(e).__name__}: {e}); "
            "use sim.backend=mujoco for it"
        ) from None
    return {
        "robot": spec.name,
        "nq": int(model.nq),
        "nv": int(model.nv),
        "nu": int(model.nu),
        "ngeom": int(model.ngeom),
        "nmesh": int(model.nmesh),
    }


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


# --------------------------------------------------------------------------- warp kernels
@lru_cache(maxsize=1)
def _kernels() -> dict[str, Any]:
    wp, _ = _import_warp()

    @wp.kernel(module="nil_warp_backend")
    def tracking_camera(
        xpos: wp.array2d(dtype=wp.vec3),
        root: int,
        cam: int,
        lookat_z: float,
        offset: wp.vec3,
        cam_mat: wp.mat33,
        cam_xpos: wp.array2d(dtype=wp.vec3),
        cam_xmat: wp.array2d(dtype=wp.mat33),
    ):
        w = wp.tid()
        p = xpos[w, root]
        if not (wp.isfinite(p[0]) and wp.isfinite(p[1]) and wp.isfinite(p[2])):
            p = wp.vec3(0.0, 0.0, 0.0)  # as the GL renderer does
        cam_xpos[w, cam] = wp.vec3(p[0], p[1], p[2] + lookat_z) + offset
        cam_xmat[w, cam] = cam_mat

    @wp.kernel(module="nil_warp_backend")
    def sanitize(
        qpos: wp.array2d(dtype=float),
        qvel: wp.array2d(dtype=float),
        qpos0: wp.array(dtype=float),
        bad: wp.array(dtype=wp.int32),
    ):
        # A non-finite world would poison the shared scene BVH; put it back to the initial pose and flag it.
        w = wp.tid()
        ok = int(1)  # noqa: UP018 (Warp: a plain literal cannot be reassigned in a dynamic loop)
        for i in range(qpos.shape[1]):
            if not wp.isfinite(qpos[w, i]):
                ok = 0
        for i in range(qvel.shape[1]):
            if not wp.isfinite(qvel[w, i]):
                ok = 0
        if ok == 0:
            bad[w] = 1
            for i in range(qpos.shape[1]):
                qpos[w, i] = qpos0[i]
            for i in range(qvel.shape[1]):
                qvel[w, i] = 0.0

    return {"tracking_camera": tracking_camera, "sanitize": sanitize}


def camera_pose(distance: float, elevation: float, azimuth: float) -> tuple[np.ndarray, np.ndarray]:
    """(offset from the lookat point, camera xmat) of MuJoCo's free camera (mjv_updateCamera's convention)."""
    el, az = math.radians(elevation), math.radians(azimuth)
    fwd = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    up = np.array([-math.sin(el) * math.cos(az), -math.sin(el) * math.sin(az), math.cos(el)])
    right = np.cross(fwd, up)
    # camera frame: x right, y up, looking along -z
    return -distance * fwd, np.stack([right, up, -fwd], axis=1)


# --------------------------------------------------------------------------- the backend
@dataclass
class _Views:
    """Zero-copy torch views of the Warp buffers the backend reads and writes."""

    qpos: torch.Tensor
    qvel: torch.Tensor
    ctrl: torch.Tensor
    xpos: torch.Tensor
    xipos: torch.Tensor
    xmat: torch.Tensor
    cvel: torch.Tensor
    subtree_com: torch.Tensor
    actuator_force: torch.Tensor
    overflow: torch.Tensor
    nacon: torch.Tensor
    contact_geom: torch.Tensor
    contact_world: torch.Tensor
    rgb_packed: torch.Tensor
    seg: torch.Tensor
    bad: torch.Tensor
    reset_mask: torch.Tensor


class WarpSim:
    """BatchedSim on MuJoCo Warp: N worlds in one Warp Data, RGB + robot mask from Warp's ray tracer."""

    def __init__(
        self,
        spec: RobotSpec,
        sim_cfg: SimConfig,
        num_envs: int | None = None,
        horizon: int | None = None,
        seed: int = 0,
    ) -> None:
        wp, mjw = _import_warp()
        self._wp, self._mjw = wp, mjw
        self.spec = spec
        self.cfg = sim_cfg
        self.num_envs = int(num_envs if num_envs is not None else sim_cfg.num_envs)
        if self.num_envs < 1:
            raise SimulationError(f"num_envs must be >= 1, got {self.num_envs}")
        self.horizon = horizon
        self._closed = False
        dev = resolve_device(sim_cfg.device)
        self._wdev = wp.get_device(dev)
        self.device = torch.device(dev)
        self._cuda = self._wdev.is_cuda
        self._use_graph = self._cuda and bool(getattr(sim_cfg, "cuda_graph", True))

        self.model = tracking_model(spec)
        m = self.model
        self._cam = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA_NAME)
        self._root = spec.root_id(m)
        self._torso = spec.torso_id(m)
        self._feet = spec.feet_ids(m)
        self._tree_root = int(m.body_rootid[self._root])
        self.substeps = spec.substeps(m)
        self.action_dim = spec.action_dim(m)
        self.nq, self.nv, self.nu = int(m.nq), int(m.nv), int(m.nu)
        self.obs_dim = (self.nq - 2) + self.nv + 1
        self.image_hw = (int(spec.camera.height), int(spec.camera.width))
        self.dt = self.substeps * float(m.opt.timestep)
        qpos0 = spec.initial_qpos(m).astype(np.float64)
        auto_con, auto_j = contact_budget(m, qpos0, self.substeps, seed=seed)
        self.nconmax = int(sim_cfg.nconmax or auto_con)
        self.njmax = int(sim_cfg.njmax or auto_j)
        self._noise = float(sim_cfg.reset_noise)
        self._gen = torch.Generator(device="cpu").manual_seed(int(seed))

        H, W = self.image_hw
        with wp.ScopedDevice(self._wdev):
            try:
                self._m = mjw.put_model(m)
            except Exception as e:
                raise RobotError(
                    f"robot {spec.name!r}: MuJoCo Warp cannot load it ({e}); use sim.backend=mujoco"
                ) from None
            # we detect overflow ourselves and raise; the in-kernel printf would only add noise
            self._m.opt.warn_overflow = 0
            self._d = mjw.make_data(m, nworld=self.num_envs, nconmax=self.nconmax, njmax=self.njmax)
            self._rc = mjw.create_render_context(
                m,
                nworld=self.num_envs,
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
            self._qpos0_wp = wp.array(qpos0.astype(np.float32), dtype=float)
            self._bad_wp = wp.zeros(self.num_envs, dtype=wp.int32)
            self._reset_wp = wp.zeros(self.num_envs, dtype=bool)
        d, rc = self._d, self._rc
        rgb_adr, seg_adr = int(rc.rgb_adr.numpy()[0]), int(rc.seg_adr.numpy()[0])
        npix = H * W
        self._v = _Views(
            qpos=wp.to_torch(d.qpos),
            qvel=wp.to_torch(d.qvel),
            ctrl=wp.to_torch(d.ctrl),
            xpos=wp.to_torch(d.xpos),
            xipos=wp.to_torch(d.xipos),
            xmat=wp.to_torch(d.xmat),
            cvel=wp.to_torch(d.cvel),
            subtree_com=wp.to_torch(d.subtree_com),
            actuator_force=wp.to_torch(d.actuator_force),
            overflow=wp.to_torch(d.overflow),
            nacon=wp.to_torch(d.nacon),
            contact_geom=wp.to_torch(d.contact.geom),
            contact_world=wp.to_torch(d.contact.worldid),
            rgb_packed=wp.to_torch(rc.rgb_data)[:, rgb_adr : rgb_adr + npix],
            seg=wp.to_torch(rc.seg_data)[:, seg_adr : seg_adr + npix],
            bad=wp.to_torch(self._bad_wp),
            reset_mask=wp.to_torch(self._reset_wp),
        )
        dv = self.device
        offset, cam_mat = camera_pose(spec.camera.distance, spec.camera.elevation, spec.camera.azimuth)
        self._cam_offset = wp.vec3(*offset.astype(np.float32))
        self._cam_mat = wp.mat33(*cam_mat.astype(np.float32).ravel())
        self._lookat_z = float(spec.camera.lookat_z)
        self._qpos0 = torch.as_tensor(qpos0, dtype=torch.float32, device=dv)
        off, scale = spec.ctrl_affine(m)
        self._ctrl_off = torch.as_tensor(off, dtype=torch.float32, device=dv)
        self._ctrl_scale = torch.as_tensor(scale, dtype=torch.float32, device=dv)
        self._is_robot_geom = torch.as_tensor(spec.robot_geom_mask(m), dtype=torch.bool, device=dv)
        # foot index of each geom (-1: not a foot); a foot touches the ground when one of its geoms
        # has a contact with a geom that is not the robot's
        foot_of_geom = np.full(m.ngeom, -1, dtype=np.int64)
        for k, fb in enumerate(self._feet):
            in_sub = np.zeros(m.nbody, bool)
            in_sub[fb] = True
            for body in range(fb + 1, m.nbody):  # children come after their parent in MuJoCo's body order
                in_sub[body] |= in_sub[m.body_parentid[body]]
            foot_of_geom[in_sub[m.geom_bodyid]] = k
        # joint-space torque = actuator force x gear (the CPU backend's definition)
        self._gear = torch.as_tensor(m.actuator_gear[:, 0], dtype=torch.float32, device=dv)
        self._foot_of_geom = torch.as_tensor(foot_of_geom, device=dv)
        self._feet_t = torch.as_tensor(self._feet, dtype=torch.long, device=dv)
        self._cos_max_tilt = math.cos(math.radians(float(spec.max_tilt_deg)))
        self._fall_height = float(spec.fall_height)

        N, A = self.num_envs, self.action_dim
        nf = len(self._feet)
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
        )
        self._graph = None
        if self._cuda:
            self._stream = torch.cuda.Stream(device=self.device)
            self._wstream = wp.stream_from_torch(self._stream)
        self.reset()

    # ----------------------------------------------------------------- warp sequences
    def _scope(self) -> Any:
        """Run torch and Warp work on one stream (CUDA) so their ordering holds without host syncs."""
        import contextlib

        if not self._cuda:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.cuda.stream(self._stream))
        stack.enter_context(self._wp.ScopedStream(self._wstream))
        return stack

    def _render(self) -> None:
        """Derived quantities at the current state (as mj_forward gives the CPU backend), then the frame."""
        wp, mjw, k = self._wp, self._mjw, _kernels()
        m, d = self._m, self._d
        # mjw.step leaves kinematics, contacts and velocities one substep behind qpos/qvel
        mjw.kinematics(m, d)
        mjw.com_pos(m, d)
        mjw.camlight(m, d)  # lights that track the robot
        mjw.com_vel(m, d)
        mjw.collision(m, d)
        wp.launch(
            k["tracking_camera"],
            dim=self.num_envs,
            inputs=[self._d.xpos, self._root, self._cam, self._lookat_z, self._cam_offset, self._cam_mat],
            outputs=[self._d.cam_xpos, self._d.cam_xmat],
        )
        mjw.refit_bvh(self._m, self._d, self._rc)
        mjw.render(self._m, self._d, self._rc)

    def _physics_and_render(self) -> None:
        wp, mjw = self._wp, self._mjw
        for _ in range(self.substeps):
            mjw.step(self._m, self._d)
        wp.launch(
            _kernels()["sanitize"],
            dim=self.num_envs,
            inputs=[self._d.qpos, self._d.qvel, self._qpos0_wp, self._bad_wp],
        )
        self._render()

    def _advance(self) -> None:
        wp = self._wp
        with wp.ScopedDevice(self._wdev):
            if not self._use_graph:
                self._physics_and_render()
                return
            if self._graph is None:
                # kernels must be compiled (first eager run) before capture; then one graph per step
                self._physics_and_render()
                with wp.ScopedCapture(device=self._wdev, stream=self._wstream) as cap:
                    self._physics_and_render()
                self._graph = cap.graph
            wp.capture_launch(self._graph, stream=self._wstream)

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

    def _foot_contact(self) -> torch.Tensor:
        N, nf = self.num_envs, len(self._feet)
        v = self._v
        if nf == 0:
            return torch.zeros(N, 0, dtype=torch.bool, device=self.device)
        cap = v.contact_geom.shape[0]
        valid = torch.arange(cap, device=self.device) < v.nacon[0]
        g = v.contact_geom.long().clamp(min=0)
        f0, f1 = self._foot_of_geom[g[:, 0]], self._foot_of_geom[g[:, 1]]
        r0, r1 = self._is_robot_geom[g[:, 0]], self._is_robot_geom[g[:, 1]]
        foot = torch.where((f0 >= 0) & ~r1, f0, torch.where((f1 >= 0) & ~r0, f1, -1))
        hit = valid & (foot >= 0)
        slot = torch.where(hit, v.contact_world.long().clamp(0, N - 1) * nf + foot.clamp(min=0), N * nf)
        counts = torch.zeros(N * nf + 1, dtype=torch.int32, device=self.device)
        counts.index_add_(0, slot, torch.ones_like(slot, dtype=torch.int32))
        return counts[: N * nf].view(N, nf) > 0

    def _foot_vel_xy(self) -> torch.Tensor:
        """World-frame linear velocity (x, y) of each foot's centre of mass (mj_objectVelocity of the body)."""
        v = self._v
        feet = self._feet_t
        if feet.numel() == 0:
            return torch.zeros(self.num_envs, 0, 2, device=self.device)
        cvel = v.cvel[:, feet]  # [N, nf, 6] (angular, linear), linear part taken at the tree's com
        com = v.subtree_com[:, self._tree_root]
        lin = cvel[..., 3:] - torch.cross(v.xipos[:, feet] - com[:, None], cvel[..., :3], dim=-1)
        return lin[..., :2]

    def _fill(self, rows: torch.Tensor | None) -> None:
        """Write the current state into the batch buffers (all envs, or only `rows`)."""
        v, b = self._v, self._batch
        qpos, qvel = v.qpos, v.qvel
        rgb, mask = self._images()
        xmat = v.xmat[:, self._torso].reshape(-1, 9)
        up_z = xmat[:, 8]
        bad = v.bad.bool()
        up_z = torch.where(bad, torch.zeros_like(up_z), up_z)
        root_pos = qpos[:, :3]
        foot_contact = self._foot_contact() & ~bad[:, None]
        foot_vel = self._foot_vel_xy() * (~bad).float()[:, None, None]
        phase = (
            (self._t.float() / float(self.horizon))
            if self.horizon
            else torch.zeros_like(self._t, dtype=torch.float32)
        )
        obs = torch.cat([qpos[:, 2:], qvel, phase[:, None]], dim=1)
        fell = (qpos[:, 2] < self._fall_height) | (up_z < self._cos_max_tilt)
        terminated = fell | bad
        truncated = (self._t >= self.horizon) if self.horizon else torch.zeros_like(terminated)
        values = {
            "obs": obs,
            "rgb": rgb,
            "mask": mask,
            "terminated": terminated,
            "truncated": truncated,
            "qpos": qpos,
            "qvel": qvel,
            "joint_vel": qvel[:, 6:],
            "torque": v.actuator_force * self._gear,
            "foot_contact": foot_contact,
            "foot_vel_xy": foot_vel,
            "torso_up_z": up_z,
            "root_pos": root_pos,
            "root_lin_vel": qvel[:, 0:3],
            "nonfinite": bad,
        }
        for name, val in values.items():
            buf = getattr(b, name)
            if rows is None:
                buf.copy_(val)
            else:
                buf[rows] = val[rows].to(buf.dtype)

    def _check_overflow(self) -> None:
        over = (self._v.overflow & _CAPACITY_BITS) != 0
        if bool(over.any()):
            world = int(torch.nonzero(over)[0, 0])
            bits = int(self._v.overflow[world])
            what = (
                "constraint rows (raise sim.njmax)"
                if bits & (_NEFC | _NJMAX_NNZ)
                else "contacts (raise sim.nconmax)"
            )
            raise SimulationError(
                f"MuJoCo Warp ran out of {what} in world {world} (nconmax={self.nconmax}, njmax={self.njmax} per "
                f"world); set sim.nconmax={2 * self.nconmax} sim.njmax={2 * self.njmax} and restart"
            )

    # ----------------------------------------------------------------- BatchedSim
    def set_horizon(self, horizon: int | None) -> None:
        """Set the truncation horizon (the retimed reference length)."""
        self.horizon = horizon

    def reset(self, env_ids: torch.Tensor | None = None) -> SimBatch:
        """Reset all envs (None) or `env_ids` (indices or bool mask [N]) to the initial pose plus noise;
        the other envs' state and batch rows are untouched."""
        self._require_open()
        N = self.num_envs
        if env_ids is None:
            ids = torch.arange(N, device=self.device)
        else:
            ids = torch.as_tensor(env_ids, device=self.device)
            if ids.dtype == torch.bool:
                if ids.shape != (N,):
                    raise SimulationError(f"reset mask must have shape ({N},), got {tuple(ids.shape)}")
                ids = torch.nonzero(ids).flatten()
            ids = ids.long().flatten()
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= N):
                raise SimulationError(f"reset env_ids must be in [0, {N}), got {ids.tolist()}")
        if ids.numel() == 0:
            return self._batch
        n = ids.numel()
        dq = torch.zeros(n, self.nq)
        dv = torch.zeros(n, self.nv)
        if self._noise > 0:
            # as the CPU backend: joints only, uniform in [-noise, noise]; the root starts at rest on the floor
            dq[:, 7:] = (torch.rand(n, self.nq - 7, generator=self._gen) * 2 - 1) * self._noise
            dv[:, 6:] = (torch.rand(n, self.nv - 6, generator=self._gen) * 2 - 1) * self._noise
        with self._scope():
            v = self._v
            v.reset_mask.zero_()
            v.reset_mask[ids] = True
            with self._wp.ScopedDevice(self._wdev):
                self._mjw.reset_data(self._m, self._d, reset=self._reset_wp)
            v.qpos[ids] = self._qpos0 + dq.to(self.device)
            v.qvel[ids] = dv.to(self.device)
            v.ctrl[ids] = self._ctrl_off
            v.bad[ids] = 0
            self._t[ids] = 0
            b = self._batch
            b.action[ids] = 0.0
            b.prev_action[ids] = 0.0
            with self._wp.ScopedDevice(self._wdev):
                self._mjw.forward(self._m, self._d)
                self._render()
            self._fill(ids)
            b.torque[ids] = 0.0
        self._sync_out()
        self._check_overflow()
        return self._batch

    def step(self, action: torch.Tensor) -> SimBatch:
        """Apply actions [N, action_dim] in [-1, 1] for one control step, then render every world."""
        self._require_open()
        a = torch.as_tensor(action, dtype=torch.float32)
        if a.shape != (self.num_envs, self.action_dim):
            raise SimulationError(
                f"action must have shape ({self.num_envs}, {self.action_dim}), got {tuple(a.shape)}"
            )
        if not bool(torch.isfinite(a).all()):
            raise SimulationError(
                "the action contains NaN or inf; check the policy's outputs (and its inputs)"
            )
        if self._cuda:
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with self._scope():
            a = a.to(self.device, non_blocking=True).clamp(-1.0, 1.0)
            b = self._batch
            b.prev_action.copy_(b.action)
            b.action.copy_(a)
            self._v.ctrl.copy_(self._ctrl_off + self._ctrl_scale * a)
            self._advance()
            self._t += 1
            self._fill(None)
        self._sync_out()
        self._check_overflow()
        return self._batch

    def _sync_out(self) -> None:
        if self._cuda:
            torch.cuda.current_stream(self.device).wait_stream(self._stream)

    def _require_open(self) -> None:
        if self._closed:
            raise SimulationError("this WarpSim is closed; create a new one with nil.sim.make_sim")

    def close(self) -> None:
        """Drop the Warp buffers and graph (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        self._graph = None
        self._v = None  # type: ignore[assignment]
        self._rc = None
        self._d = None
        self._m = None

    def __enter__(self) -> WarpSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_cache_dir() -> str | None:
    """Where Warp keeps compiled kernels (WARP_CACHE_PATH when set, for CI caching)."""
    return os.environ.get("WARP_CACHE_PATH")
