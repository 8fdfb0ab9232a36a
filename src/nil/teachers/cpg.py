"""`cpg` teacher: a central pattern generator walks a legged robot (sinusoidal joint targets, PD-tracked).

The CPG finds each leg's structure from the model: a leg is a subtree under the root body; its joints
are taken in chain order; a joint whose axis is (nearly) the forward axis is an abduction joint and
holds its pose, the first other joint swings the leg, the next one lifts the foot. Signs come from
finite differences of the foot position, so that the foot moves forward while lifted and backward
while on the ground (the body moves +x); diagonal legs share a phase (trot), a biped alternates.

Tracking: in torque mode the CPG computes PD torques with the robot's gains times kp_scale/kd_scale;
in pd mode the simulator's servos track the targets, so the robot preset's pd gains and action scale
decide how well (nil.robots.presets); amplitudes are capped to what the action range can express.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nil.errors import GeneratorError
from nil.teachers.base import TEACHERS, PDTracker

if TYPE_CHECKING:
    import mujoco

    from nil.robots.spec import RobotSpec

CPG_VERSION = 2


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

    name = "cpg"
    needs_obs = False

    def __init__(self, spec: RobotSpec, model: mujoco.MjModel, params: CPGParams) -> None:
        self.spec, self.params = spec, params
        self.q0 = spec.initial_qpos(model)
        self.legs = find_legs(spec, model, self.q0)
        self.pd = PDTracker(spec, model, params.kp_scale, params.kd_scale)
        self.kp, self.kd, self.qadr = self.pd.kp, self.pd.kd, self.pd.qadr
        self._k = {int(q): k for k, q in enumerate(self.qadr)}

    def targets(self, t: float) -> np.ndarray:
        """q* for every actuator at time t (seconds)."""
        p = self.params
        ramp = min(1.0, t / p.ramp_s) if p.ramp_s > 0 else 1.0
        ramp = 0.5 - 0.5 * math.cos(math.pi * ramp)
        q = self.q0[self.qadr].astype(np.float64).copy()
        # in pd mode the servo target cannot leave q0 +- action_scale: cap the amplitudes there, so the
        # teacher's motion is one the agent's actions can express (a clipped lift drags the foot)
        reach = float(np.min(self.pd.scale)) if self.pd.pd_mode else math.inf
        for leg in self.legs:
            ph = 2 * math.pi * p.gait_hz * t + leg.phase
            for j in leg.joints:
                k = self._k[j.qadr]
                cap = p.max_frac * 2 * j.half_range if math.isfinite(j.half_range) else math.inf
                cap = min(cap, reach)
                if j.role == "swing":
                    amp = min(p.swing * p.amplitude, cap)
                    q[k] += ramp * j.sign * amp * math.sin(ph)
                elif j.role == "lift":
                    amp = min(p.lift * p.amplitude, cap)
                    # lift while the foot swings forward (d/dt sin = cos > 0)
                    q[k] += ramp * j.sign * amp * max(0.0, math.cos(ph) - p.duty_bias) / (1 - p.duty_bias)
        return q

    def action(self, t: float, qpos: np.ndarray, qvel: np.ndarray, obs: Any = None) -> np.ndarray:
        """Action in [-1, 1] for the simulator: PD torque (torque mode) or target offset (pd mode)."""
        return self.pd.action(self.targets(t), qpos, qvel)

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

    def cache_params(self) -> dict[str, Any]:
        """The gait parameters and the CPG's version."""
        return {"cpg": asdict(self.params), "cpg_version": CPG_VERSION}


# Per-robot gait tuning (benchmarks/reference_gen.py --tune ROBOT): the setting that walks +x upright
# with the least contact-point foot slip also at 0.8x and 1.2x amplitude, in torque mode and in pd mode
# at 25 and 100 Hz (docs/benchmarks.md, "Teachers"). Quadrupeds use their presets' kp 100 / kd 2.
_QUADRUPED = {"gait_hz": 3.0, "swing": 0.25, "lift": 0.7, "kp_scale": 1.0}
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


def default_gait_hz(spec: RobotSpec) -> float:
    """The gait frequency the robot's `cpg` teacher uses when generator.gait_hz is not set."""
    if len(spec.feet_bodies) == 2:
        return float(biped_params(spec).gait_hz)
    return float(cpg_params(spec).gait_hz)


def biped_params(spec: RobotSpec, gait_hz: float | None = None, amplitude: float = 1.0) -> Any:
    """The biped walker's parameters: its defaults (tuned on H1), generator.gait_hz and gait_amplitude."""
    from nil.teachers.biped import TUNED_BIPED, BipedParams

    p = BipedParams(**TUNED_BIPED.get(spec.name, {}), amplitude=amplitude)
    if gait_hz is not None:
        p.gait_hz = gait_hz
    return p


@TEACHERS.register("cpg")
def _make_cpg(spec: RobotSpec, model: mujoco.MjModel, gen_cfg: Any) -> Any:
    """The gait teacher: the open-loop CPG, or for a two-legged robot the balance-feedback walker."""
    if len(spec.feet_bodies) == 2:
        from nil.teachers.biped import BipedWalker

        return BipedWalker(spec, model, biped_params(spec, gen_cfg.gait_hz, gen_cfg.gait_amplitude))
    return CPG(spec, model, cpg_params(spec, gen_cfg.gait_hz, gen_cfg.gait_amplitude))
