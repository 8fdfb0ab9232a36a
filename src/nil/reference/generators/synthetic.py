"""`synthetic` generator: a teacher motion simulated and rendered exactly like the agent.

This is NIL's offline default and a benchmark instrument, NOT a video model: a central pattern
generator (CPG) drives the robot's legs (sinusoidal joint targets with a trot phase pattern, tracked
by PD torques computed from the simulator's qpos/qvel, or by the simulator's own servos in pd mode),
or a trained policy checkpoint acts; the motion runs through nil.sim.make_sim (one env, in-process,
no reset noise) so its frames and masks come from the very renderer the agent is scored with. The
ground truth goes to reference/teacher.npz.

Timing: the simulation runs at the control rate (spec.control_hz). The emitted video keeps every
k-th frame, k = round(control_hz / fps), so it plays at control_hz / k fps (25 fps by default, like
a video model's output) and the bundle's retiming must bring it back to the control rate. With n
control steps (a multiple of k) the video has n/k + 1 frames, the retimed video n + 1 frames, and
teacher.npz holds the n + 1 simulated states: retimed frame t <-> teacher state t <-> control step t
(frames at multiples of k are exact renders, those between are interpolated by the retimer).

The CPG finds each leg's structure from the model: a leg is a subtree under the root body; its
joints are taken in chain order; a joint whose axis is (nearly) the forward axis is an abduction
joint and holds its pose, the first other joint swings the leg, the next one lifts the foot. Signs
come from finite differences of the foot position, so that the foot moves forward while lifted and
backward while on the ground (the body moves +x); diagonal legs share a phase (trot).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nil.errors import ConfigError, GeneratorError
from nil.io import sha256_file
from nil.reference.generators.base import register_generator
from nil.reference.video import Video

if TYPE_CHECKING:
    import mujoco

    from nil.config import SkillConfig
    from nil.robots.spec import RobotSpec

log = logging.getLogger(__name__)

CPG_VERSION = 1
DEFAULT_FPS = 25.0


@dataclass
class CPGParams:
    """Gait parameters (amplitudes in radians, before `amplitude` scaling)."""

    gait_hz: float = 1.5
    amplitude: float = 1.0  # scales swing and lift
    swing: float = 0.35  # hip swing amplitude
    lift: float = 0.45  # knee lift amplitude
    duty_bias: float = 0.0  # shifts the lift window (>0: shorter lift)
    kp_scale: float = 1.0  # teacher PD gains = spec gains x this (torque-controlled robots)
    kd_scale: float = 1.0
    ramp_s: float = 0.3  # amplitude ramps in over this time so frame 0 is the standing pose
    max_frac: float = 0.45  # no amplitude beyond this fraction of a joint's range


@dataclass
class LegJoint:
    """One actuated joint of a leg and its role in the gait."""

    actuator: int
    qadr: int
    dadr: int
    role: str  # "swing" | "lift" | "hold"
    sign: float = 1.0  # +1: increasing q moves the foot forward (swing) / up (lift)
    half_range: float = math.inf


@dataclass
class Leg:
    """A leg: its joints in chain order and its trot phase."""

    name: str
    anchor_xy: tuple[float, float]
    phase: float
    joints: list[LegJoint] = field(default_factory=list)


def _subtree(model: mujoco.MjModel, body: int) -> np.ndarray:
    inside = np.zeros(model.nbody, bool)
    inside[body] = True
    for b in range(body + 1, model.nbody):  # MuJoCo orders children after their parents
        if inside[model.body_parentid[b]]:
            inside[b] = True
    return inside


def _lowest_point(model: mujoco.MjModel, data: mujoco.MjData, geoms: np.ndarray) -> np.ndarray:
    """Centre of the lowest collision geom of `geoms` (a foot)."""
    g = geoms[int(np.argmin(data.geom_xpos[geoms, 2]))]
    return data.geom_xpos[g].copy()


def find_legs(spec: RobotSpec, model: mujoco.MjModel, q0: np.ndarray) -> list[Leg]:
    """Legs (subtrees under the root with actuated joints), joint roles, signs and trot phases."""
    import mujoco

    root = spec.root_id(model)
    data = mujoco.MjData(model)
    data.qpos[:] = q0
    mujoco.mj_kinematics(model, data)
    children = [b for b in range(model.nbody) if model.body_parentid[b] == root and b != root]
    act_joint = {
        int(model.actuator_trnid[i, 0]): i
        for i in range(model.nu)
        if model.actuator_trntype[i] == mujoco.mjtTrn.mjTRN_JOINT
    }
    root_pos = data.xpos[root].copy()
    legs: list[Leg] = []
    for c in children:
        sub = _subtree(model, c)
        joints = [
            j
            for j in range(model.njnt)
            if sub[model.jnt_bodyid[j]]
            and j in act_joint
            and model.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE
        ]
        if not joints:
            continue
        joints.sort(key=lambda j: (_depth(model, model.jnt_bodyid[j]), j))
        geoms = np.flatnonzero(
            sub[model.geom_bodyid] & ((model.geom_contype != 0) | (model.geom_conaffinity != 0))
        )
        if geoms.size == 0:
            continue
        anchor = data.xanchor[joints[0]] - root_pos
        leg = Leg(
            mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, c) or f"leg{c}",
            (float(anchor[0]), float(anchor[1])),
            0.0,
        )
        roles = iter(["swing", "lift"])
        for j in joints:
            axis = data.xaxis[j]
            abduction = (
                abs(axis[0]) > 0.9
            )  # rotates about the walking direction: keeps the leg's stance width
            role = "hold" if abduction else next(roles, "hold")
            lo, hi = model.jnt_range[j] if model.jnt_limited[j] else (-math.inf, math.inf)
            q = q0[model.jnt_qposadr[j]]
            lj = LegJoint(
                int(act_joint[j]),
                int(model.jnt_qposadr[j]),
                int(model.jnt_dofadr[j]),
                role,
                half_range=float(min(q - lo, hi - q)) if model.jnt_limited[j] else math.inf,
            )
            if role != "hold":
                lj.sign = _foot_sign(model, q0, lj.qadr, geoms, axis_index=0 if role == "swing" else 2)
            leg.joints.append(lj)
        legs.append(leg)
    if len(legs) < 2:
        raise GeneratorError(
            f"robot {spec.name!r}: the CPG teacher found {len(legs)} actuated legs under the root; "
            "it drives legged robots only. Use generator.teacher: policy, or generator.name: file"
        )
    # trot: diagonal legs in phase. Humanoids (two legs) alternate.
    for leg in legs:
        x, y = leg.anchor_xy
        if len(legs) == 2:
            leg.phase = 0.0 if y > 0 else math.pi
        else:
            leg.phase = 0.0 if (x >= 0) == (y >= 0) else math.pi
    return legs


def _depth(model: mujoco.MjModel, b: int) -> int:
    d = 0
    while b != 0:
        b = model.body_parentid[b]
        d += 1
    return d


def _foot_sign(model: mujoco.MjModel, q0: np.ndarray, qadr: int, geoms: np.ndarray, axis_index: int) -> float:
    """+1 when increasing the joint moves the leg's lowest geom toward +x (axis 0) or +z (axis 2)."""
    import mujoco

    data = mujoco.MjData(model)
    eps = 0.05
    pts = []
    for dq in (-eps, eps):
        data.qpos[:] = q0
        data.qpos[qadr] += dq
        mujoco.mj_kinematics(model, data)
        pts.append(_lowest_point(model, data, geoms))
    d = pts[1][axis_index] - pts[0][axis_index]
    return 1.0 if d >= 0 else -1.0


class CPG:
    """Joint targets q*(t) of a trot and the PD action that tracks them."""

    def __init__(self, spec: RobotSpec, model: mujoco.MjModel, params: CPGParams) -> None:
        self.spec, self.params = spec, params
        self.q0 = spec.initial_qpos(model)
        self.legs = find_legs(spec, model, self.q0)
        self.nu = int(model.nu)
        self.offset, self.scale = spec.ctrl_affine(model)
        self.gear = np.abs(model.actuator_gear[:, 0]).copy()
        self.gear[self.gear == 0] = 1.0
        self.pd_mode = spec.control_mode == "pd"
        self.kp = spec.kp * params.kp_scale
        self.kd = spec.kd * params.kd_scale
        self.qadr = np.array([model.jnt_qposadr[model.actuator_trnid[i, 0]] for i in range(self.nu)])
        self.dadr = np.array([model.jnt_dofadr[model.actuator_trnid[i, 0]] for i in range(self.nu)])

    def targets(self, t: float) -> np.ndarray:
        """q* for every actuator at time t (seconds)."""
        p = self.params
        ramp = min(1.0, t / p.ramp_s) if p.ramp_s > 0 else 1.0
        ramp = 0.5 - 0.5 * math.cos(math.pi * ramp)
        q = self.q0[self.qadr].astype(np.float64).copy()
        for leg in self.legs:
            ph = 2 * math.pi * p.gait_hz * t + leg.phase
            for j in leg.joints:
                k = int(np.flatnonzero(self.qadr == j.qadr)[0])
                cap = p.max_frac * 2 * j.half_range if math.isfinite(j.half_range) else math.inf
                if j.role == "swing":
                    amp = min(p.swing * p.amplitude, cap)
                    q[k] += ramp * j.sign * amp * math.sin(ph)
                elif j.role == "lift":
                    amp = min(p.lift * p.amplitude, cap)
                    # lift while the foot swings forward (d/dt sin = cos > 0)
                    q[k] += ramp * j.sign * amp * max(0.0, math.cos(ph) - p.duty_bias) / (1 - p.duty_bias)
        return q

    def action(self, t: float, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Action in [-1, 1] for the simulator: PD torque (torque mode) or target offset (pd mode)."""
        q_star = self.targets(t)
        if self.pd_mode:
            a = (q_star - self.offset) / self.scale
        else:
            tau = self.kp * (q_star - qpos[self.qadr]) - self.kd * qvel[self.dadr]
            a = (tau / self.gear - self.offset) / self.scale  # joint torque = gear * ctrl
        return np.clip(a, -1.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """Parameters and the derived leg structure (for meta.json / teacher.npz)."""
        return {
            "version": CPG_VERSION,
            "params": asdict(self.params),
            "kp": self.kp,
            "kd": self.kd,
            "legs": [
                {
                    "name": leg.name,
                    "phase": leg.phase,
                    "joints": [{"actuator": j.actuator, "role": j.role, "sign": j.sign} for j in leg.joints],
                }
                for leg in self.legs
            ],
        }


# Per-robot gait tuning from a grid search (benchmarks/reference_gen.py --tune ROBOT): the setting that
# walks +x upright and straightest also at 0.8x and 1.2x amplitude. Speeds over 3 s at amplitude 1:
# ant ~0.5 m/s, A1 ~0.7 m/s, Go2 ~0.7 m/s. Other robots use CPGParams() defaults.
_QUADRUPED = {"gait_hz": 2.5, "swing": 0.35, "lift": 0.7, "kp_scale": 3.0}
TUNED: dict[str, dict[str, float]] = {
    "ant": {"gait_hz": 1.0, "swing": 0.25, "lift": 0.5, "kp_scale": 1.0},
    "unitree_a1": _QUADRUPED,
    "unitree_go2": _QUADRUPED,
}


def cpg_params(spec: RobotSpec, gait_hz: float | None = None, amplitude: float = 1.0) -> CPGParams:
    """The CPG parameters for a robot: its tuned values (if any), generator.gait_hz and gait_amplitude."""
    base = dict(TUNED.get(spec.name, {}))
    if gait_hz is not None:
        base["gait_hz"] = gait_hz
    base["amplitude"] = amplitude * base.get("amplitude", 1.0)
    return CPGParams(**base)


def rollout_physics(spec: RobotSpec, params: CPGParams, seconds: float) -> dict[str, np.ndarray]:
    """Simulate the CPG without rendering (tuning/diagnostics): root positions and up-axis per control step."""
    import mujoco

    model = spec.load_model()
    cpg = CPG(spec, model, params)
    data = mujoco.MjData(model)
    data.qpos[:] = cpg.q0
    off, sc = spec.ctrl_affine(model)
    data.ctrl[:] = off
    mujoco.mj_forward(model, data)
    n_sub = spec.substeps(model)
    dt = 1.0 / spec.control_hz
    root, torso = spec.root_id(model), spec.torso_id(model)
    n = int(round(seconds * spec.control_hz))
    pos, up = np.zeros((n + 1, 3)), np.zeros(n + 1)
    pos[0], up[0] = data.xpos[root], data.xmat[torso][8]
    for t in range(1, n + 1):
        a = cpg.action((t - 1) * dt, data.qpos, data.qvel)
        data.ctrl[:] = off + sc * a
        mujoco.mj_step(model, data, nstep=n_sub)
        mujoco.mj_kinematics(model, data)
        pos[t], up[t] = data.xpos[root], data.xmat[torso][8]
        if not np.isfinite(data.qpos).all():
            pos[t:], up[t:] = np.nan, np.nan
            break
    return {"root_pos": pos, "up_z": up}


class SyntheticGenerator:
    """Renders a CPG (or policy) teacher through nil.sim.make_sim; labelled synthetic in every output."""

    name = "synthetic"
    synthetic = True

    def __init__(self, cfg: SkillConfig, spec: RobotSpec | None = None) -> None:
        self.cfg = cfg
        g = cfg.generator
        if g.teacher == "policy" and not g.teacher_checkpoint:
            raise ConfigError(
                "generator.teacher is 'policy' but generator.teacher_checkpoint is not set: give a "
                "trained skill directory, or use generator.teacher: cpg"
            )
        self._spec = spec
        self.info: dict[str, Any] = {}
        self.teacher: dict[str, np.ndarray] | None = None

    @property
    def spec(self) -> RobotSpec:
        """The robot (from the skill config unless given)."""
        if self._spec is None:
            from nil.robots import robot_from_config

            self._spec = robot_from_config(self.cfg)
        return self._spec

    def _fps_k(self, fps: float | None) -> tuple[int, float]:
        hz = float(self.spec.control_hz)
        target = float(fps or DEFAULT_FPS)
        k = max(1, int(round(hz / target)))
        return k, hz / k

    def params(self) -> CPGParams:
        """The CPG parameters this skill uses."""
        g = self.cfg.generator
        return cpg_params(self.spec, g.gait_hz, g.gait_amplitude)

    def cache_params(self) -> dict[str, Any]:
        """Teacher kind and parameters, robot spec and model file, length, background, simulator."""
        g = self.cfg.generator
        spec = self.spec
        out: dict[str, Any] = {
            "teacher": g.teacher,
            "seconds": g.seconds,
            "background": g.teacher_background,
            "robot_spec": spec.to_dict(),
            "mjcf_sha256": sha256_file(spec.mjcf_path),
            "sim_backend": "mujoco",
            "cpg_version": CPG_VERSION,
        }
        if g.teacher == "cpg":
            out["cpg"] = asdict(self.params())
        else:
            ckpt = Path(g.teacher_checkpoint or "")
            files = sorted(p for p in ckpt.rglob("*") if p.is_file()) if ckpt.is_dir() else [ckpt]
            out["checkpoint"] = {str(p): p.stat().st_size for p in files if p.exists()}
        return out

    def _policy(self, sim: Any):
        try:
            from nil.rl import load_policy
        except ImportError as e:
            raise GeneratorError(
                f"generator.teacher: policy needs nil.rl ({e}); use generator.teacher: cpg"
            ) from None
        from nil.paths import SkillPaths

        ckpt = Path(self.cfg.generator.teacher_checkpoint or "")
        if not ckpt.exists():
            raise ConfigError(
                f"generator.teacher_checkpoint: {ckpt} does not exist; give a trained skill directory"
            )
        return load_policy(SkillPaths(ckpt), device="cpu")

    def generate(
        self,
        frame0: np.ndarray,
        prompt: str,
        *,
        num_frames: int | None = None,
        fps: float | None = None,
        seed: int = 0,
    ) -> Video:
        """Simulate and render the teacher; the prompt is not used (recorded only)."""
        import torch
        from rich.progress import track

        from nil.config import SimConfig
        from nil.sim import make_sim

        spec = self.spec
        g = self.cfg.generator
        k, fps_out = self._fps_k(fps)
        hz = float(spec.control_hz)
        n_steps = (int(num_frames) - 1) * k if num_frames else int(math.ceil(g.seconds * hz / k)) * k
        if n_steps < 1:
            raise ConfigError(f"generator.seconds={g.seconds} gives no control steps at {hz:g} Hz")
        sim = make_sim(
            spec,
            SimConfig(backend="mujoco", device="cpu", num_envs=1, num_workers=0, reset_noise=0.0),
            num_envs=1,
            horizon=n_steps,
            seed=seed,
        )
        try:
            cpg = policy = None
            if g.teacher == "cpg":
                cpg = CPG(spec, sim.model if hasattr(sim, "model") else spec.load_model(), self.params())
            else:
                policy = self._policy(sim)
            b = sim.reset()
            H, W = sim.image_hw
            nq, nv = b.qpos.shape[1], b.qvel.shape[1]
            rgb = np.empty((n_steps + 1, H, W, 3), np.uint8)
            mask = np.empty((n_steps + 1, H, W), bool)
            qpos = np.empty((n_steps + 1, nq), np.float32)
            qvel = np.empty((n_steps + 1, nv), np.float32)
            actions = np.zeros((n_steps + 1, sim.action_dim), np.float32)
            fell_at = None

            def record(t: int, batch: Any) -> None:
                rgb[t] = batch.rgb[0].numpy()
                mask[t] = batch.mask[0].numpy()
                qpos[t] = batch.qpos[0].numpy()
                qvel[t] = batch.qvel[0].numpy()

            record(0, b)
            label = f"synthetic teacher ({g.teacher}, {spec.name})"
            for t in track(range(1, n_steps + 1), description=label, transient=True):
                if cpg is not None:
                    a = cpg.action((t - 1) / hz, b.qpos[0].double().numpy(), b.qvel[0].double().numpy())
                    a_t = torch.as_tensor(a, dtype=torch.float32)[None]
                else:
                    with torch.no_grad():
                        a_t = policy.act(b.obs, deterministic=True).float().cpu()
                b = sim.step(a_t)
                actions[t] = b.action[0].numpy()
                record(t, b)
                if bool(b.terminated[0]) and fell_at is None:
                    fell_at = t
                    if bool(b.nonfinite[0]):
                        raise GeneratorError(
                            f"the {g.teacher} teacher's physics blew up at step {t} on {spec.name}; "
                            "lower generator.gait_amplitude or generator.gait_hz"
                        )
        finally:
            sim.close()
        root_pos = qpos[:, :3].astype(np.float32)
        if g.teacher_background == "flat":
            bg = np.asarray(self.cfg.camera.background, np.uint8)
            rgb = np.where(mask[..., None], rgb, bg).astype(np.uint8)
        progress = float(root_pos[-1, 0] - root_pos[0, 0])
        e0_diff = (
            float(np.abs(rgb[0][mask[0]].astype(np.int16) - frame0[mask[0]].astype(np.int16)).mean())
            if frame0.shape == rgb[0].shape and mask[0].any()
            else None
        )
        params = cpg.to_dict() if cpg is not None else {"checkpoint": g.teacher_checkpoint}
        self.info = {
            "label": "synthetic teacher (benchmark instrument / offline default, not a video model)",
            "teacher": g.teacher,
            "robot": spec.name,
            "control_hz": hz,
            "subsample": k,
            "fps": fps_out,
            "control_steps": n_steps,
            "root_x_progress_m": round(progress, 4),
            "mean_speed_mps": round(progress / (n_steps / hz), 4),
            "fell_at_step": fell_at,
            "frame0_masked_mad": None if e0_diff is None else round(e0_diff, 3),
            "teacher_params": params,
            "prompt_used": False,
            "background": g.teacher_background,
        }
        if fell_at is not None:
            log.warning("the synthetic teacher fell at step %d of %d on %s", fell_at, n_steps, spec.name)
            self.info["warning"] = (
                f"the synthetic teacher fell at step {fell_at} of {n_steps}; lower "
                "generator.gait_amplitude or generator.gait_hz"
            )
        self.teacher = {
            "qpos": qpos,
            "qvel": qvel,
            "root_pos": root_pos,
            "root_x": root_pos[:, 0].copy(),
            "action": actions,
            "masks": mask,
            "t": np.arange(n_steps + 1, dtype=np.int64),
            "fps": np.float64(hz),
            "video_fps": np.float64(fps_out),
            "subsample": np.int64(k),
            "params": np.array(json.dumps(params)),
            "robot": np.array(spec.name),
            "teacher": np.array(g.teacher),
        }
        return Video(np.ascontiguousarray(rgb[::k]), fps_out)


@register_generator("synthetic")
def _make_synthetic(cfg: SkillConfig) -> SyntheticGenerator:
    return SyntheticGenerator(cfg)
