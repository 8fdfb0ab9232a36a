"""The CPG's walker for two-legged robots: a stepping pattern closed by balance feedback (SIMBICON-style).

An open-loop gait cannot carry a humanoid: measured on Unitree H1 (benchmarks/reference_gen.py
--measure), the CPG falls within 0.9 s, and the robot falls even standing still in its home pose (its
centre of mass is 2.4 cm ahead of the heels of a 17.5 cm foot, and the ankles give at most 40 N*m). So
the biped teacher reads its state, as a simple balance controller does (Yin et al. 2007, SIMBICON):

- both ankles push the centre of mass (COM) toward a point `lead` metres ahead of the feet's centre;
- the swing hip places the foot from the COM's offset and velocity relative to the stance foot
  (sagittal `place_d`, `place_v`; lateral `place_lat`), the stance hip keeps the pelvis upright;
- the clock lifts each foot in turn (knee `lift`, hip flexing with it) and swings it forward by
  `swing`; the ankle keeps the foot parallel to the pelvis.

Each leg's joints are found from the model: the chain from a foot body (spec.feet_bodies) up to the
root; pitch joints (axis ~ y) in chain order are hip, knee, ankle; the first roll joint (axis ~ x) is
the hip's; the others hold. Signs come from the joint axes and finite differences of the foot position.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nil.errors import GeneratorError
from nil.teachers.base import TEACHERS, PDTracker

if TYPE_CHECKING:
    import mujoco

    from nil.robots.spec import RobotSpec

BIPED_VERSION = 1


@dataclass
class BipedParams:
    """Gait and feedback gains (angles in radians, lengths in metres, velocities in m/s)."""

    gait_hz: float = 2.0
    amplitude: float = 1.0  # scales swing and lift
    swing: float = 0.1  # hip swing amplitude
    lift: float = 0.3  # knee bend of the swing leg at mid-swing
    lead: float = 0.02  # COM target ahead of the feet's centre (a lean that makes the robot walk)
    foot_centre: float | None = None  # the support's centre ahead of the ankle bodies; None: from the model
    ankle_com: float = 5.0  # ankle target per metre of COM error
    ankle_vel: float = 0.5  # ankle target per m/s of COM velocity
    place_d: float = 0.6  # swing hip per metre of COM offset from the stance foot
    place_v: float = 0.1  # swing hip per m/s of COM velocity
    place_lat: float = 1.0  # swing hip roll per metre of lateral COM offset
    place_lat_v: float = 0.2  # swing hip roll per m/s of lateral COM velocity
    heading: float = 1.0  # stance hip yaw per radian of pelvis yaw (keeps walking along +x)
    lateral: float = 0.0  # both hip rolls per metre of lateral COM offset from the feet's middle
    torso: float = 1.0  # stance hip per radian of pelvis pitch
    torso_roll: float = 1.0  # stance hip roll per radian of pelvis roll
    kp_scale: float = 1.0  # torque mode: teacher PD gains = spec gains x this (H1 preset: kp 300)
    kd_scale: float = 1.0
    ramp_s: float = 0.5


# Per-robot values (benchmarks/reference_gen.py --measure; docs/benchmarks.md "Teachers"). H1 was tuned
# with its support centre 9 cm ahead of the ankle bodies (the contacts' middle is 5.25 cm): the extra
# 3.75 cm is part of its forward lean.
TUNED_BIPED: dict[str, dict[str, float]] = {
    "unitree_h1": {"foot_centre": 0.09},
}


# The `balance` teacher: the same feedback without stepping, for standing on a balance board (the
# hip rolls carry the COM over the feet's middle as the deck rocks). Measured on H1 on the scene's
# board: upright and on the board for 15 / 15 noisy 4 s episodes (docs/benchmarks.md, "Teachers").
BALANCE: dict[str, float] = {
    "swing": 0.0,
    "lift": 0.0,
    "lead": 0.0,
    "place_d": 0.0,
    "place_v": 0.0,
    "place_lat": 1.0,
    "place_lat_v": 0.0,
    "heading": 0.0,
    "lateral": 4.0,
    "torso_roll": 0.0,
    "ankle_com": 3.0,
}


@dataclass
class BipedLeg:
    """Actuator indices (into the actuator vector) and signs of one leg."""

    name: str
    foot: int  # body id
    hip: int
    knee: int
    ankle: int
    roll: int | None
    yaw: int | None
    hip_fwd: float  # +1: increasing the hip angle moves the foot forward
    knee_bend: float  # +1: increasing the knee angle lifts the foot
    axis: tuple[float, float, float]  # y-axis signs of hip, knee, ankle (foot pitch = sum sign * angle)
    roll_axis: float  # x-axis sign of the hip roll joint
    yaw_axis: float  # z-axis sign of the hip yaw joint
    phase: float = 0.0


def _chain_joints(model: mujoco.MjModel, body: int, root: int) -> list[int]:
    """Hinge joints from the root down to `body` (root side first)."""
    import mujoco

    chain = []
    b = body
    while b != root and b != 0:
        for j in range(model.body_jntadr[b], model.body_jntadr[b] + model.body_jntnum[b]):
            if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE:
                chain.append(j)
        b = model.body_parentid[b]
    return chain[::-1]


def find_biped_legs(spec: RobotSpec, model: mujoco.MjModel, q0: np.ndarray) -> list[BipedLeg]:
    """Both legs' joints and signs; GeneratorError when the robot's feet do not make two such legs."""
    import mujoco

    data = mujoco.MjData(model)
    data.qpos[:] = q0
    mujoco.mj_kinematics(model, data)
    act_of_joint = {int(model.actuator_trnid[i, 0]): i for i in range(model.nu)}
    root = spec.root_id(model)
    legs = []
    for fb in spec.feet_ids(model):
        joints = [j for j in _chain_joints(model, fb, root) if j in act_of_joint]
        axes = {j: data.xaxis[j].copy() for j in joints}
        pitch = [j for j in joints if abs(axes[j][1]) > 0.9]
        roll = [j for j in joints if abs(axes[j][0]) > 0.9]
        yaw = [j for j in joints if abs(axes[j][2]) > 0.9]
        if len(pitch) < 3:
            raise GeneratorError(
                f"robot {spec.name!r}: the biped teacher needs hip, knee and ankle pitch joints above foot "
                f"{mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, fb)!r}; set robot.feet_bodies to the "
                "ankle bodies, or use generator.teacher: keyframes / policy"
            )
        hip, knee, ankle = pitch[0], pitch[1], pitch[-1]

        def moved(j: int, axis: int, fb: int = int(fb)) -> float:
            d = mujoco.MjData(model)
            pts = []
            for dq in (-0.05, 0.05):
                d.qpos[:] = q0
                d.qpos[model.jnt_qposadr[j]] += dq
                mujoco.mj_kinematics(model, d)
                pts.append(d.xpos[fb][axis])
            return 1.0 if pts[1] >= pts[0] else -1.0

        legs.append(
            BipedLeg(
                name=mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, fb) or f"foot{fb}",
                foot=int(fb),
                hip=act_of_joint[hip],
                knee=act_of_joint[knee],
                ankle=act_of_joint[ankle],
                roll=act_of_joint[roll[0]] if roll else None,
                yaw=act_of_joint[yaw[0]] if yaw else None,
                hip_fwd=moved(hip, 0),
                knee_bend=moved(knee, 2),
                axis=tuple(float(np.sign(axes[j][1])) for j in (hip, knee, ankle)),  # type: ignore[arg-type]
                roll_axis=float(np.sign(axes[roll[0]][0])) if roll else 1.0,
                yaw_axis=float(np.sign(axes[yaw[0]][2])) if yaw else 1.0,
            )
        )
    if len(legs) != 2:
        raise GeneratorError(f"robot {spec.name!r}: the biped teacher needs two feet, got {len(legs)}")
    legs[1].phase = math.pi
    return legs


def support_centre(model: mujoco.MjModel, q0: np.ndarray, feet: list[int]) -> float:
    """How far ahead of the foot bodies the middle of their floor contacts lies at the initial pose (m)."""
    import mujoco

    data = mujoco.MjData(model)
    data.qpos[:] = q0
    mujoco.mj_forward(model, data)
    on_foot = np.isin(model.geom_bodyid, feet)
    xs = [
        float(data.contact[c].pos[0]) - float(data.xpos[model.geom_bodyid[g]][0])
        for c in range(data.ncon)
        for g in data.contact[c].geom
        if on_foot[g]
    ]
    if not xs:  # not touching the floor: the middle of the feet's geoms
        geoms = np.flatnonzero(on_foot)
        xs = [float(data.geom_xpos[g][0] - data.xpos[model.geom_bodyid[g]][0]) for g in geoms] or [0.0]
    return 0.5 * (min(xs) + max(xs))


def _pitch_roll_yaw(qpos: np.ndarray) -> tuple[float, float, float]:
    w, x, y, z = qpos[3:7]
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return pitch, roll, yaw


class BipedWalker:
    """Closed-loop stepping for two-legged robots (registered under `cpg` for robots with two feet)."""

    name = "cpg"
    needs_obs = False

    def __init__(
        self, spec: RobotSpec, model: mujoco.MjModel, params: BipedParams, name: str = "cpg"
    ) -> None:
        import mujoco

        self.name = name
        self.spec, self.model, self.params = spec, model, params
        q0 = spec.initial_qpos(model)
        self.legs = find_biped_legs(spec, model, q0)
        self.pd = PDTracker(spec, model, params.kp_scale, params.kd_scale)
        self.q0 = q0[self.pd.qadr].astype(np.float64)
        self.root = spec.root_id(model)
        self._data = mujoco.MjData(model)
        fc = params.foot_centre
        self.foot_centre = support_centre(model, q0, [leg.foot for leg in self.legs]) if fc is None else fc
        self.kp, self.kd = self.pd.kp, self.pd.kd

    def targets(self, t: float, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """q* for every actuator from the clock and the state."""
        import mujoco

        p, d = self.params, self._data
        d.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, d)
        mujoco.mj_comPos(self.model, d)
        com = d.subtree_com[self.root]
        pitch, roll, yaw = _pitch_roll_yaw(qpos)
        vx, vy = float(qvel[0]), float(qvel[1])
        ramp = min(1.0, t / p.ramp_s) if p.ramp_s > 0 else 1.0
        feet_x = 0.5 * sum(float(d.xpos[leg.foot][0]) for leg in self.legs)
        lat_err = float(com[1]) - 0.5 * sum(float(d.xpos[leg.foot][1]) for leg in self.legs)
        centre = self.foot_centre
        com_err = float(com[0]) - (feet_x + centre + ramp * p.lead)
        phi = 2 * math.pi * p.gait_hz * t
        q = self.q0.copy()
        for k, leg in enumerate(self.legs):
            other = self.legs[1 - k]
            s = math.sin(phi + leg.phase)
            lift = ramp * p.amplitude * p.lift * max(0.0, s)
            # hip in "forward" units: the swing carries the foot from back to front while lifted
            fwd = -ramp * p.amplitude * p.swing * math.cos(phi + leg.phase) + 0.5 * lift
            roll_t = p.lateral * lat_err
            if s > 0:  # swing: place the foot where it catches the COM
                fwd += p.place_d * (float(com[0]) - (float(d.xpos[other.foot][0]) + 0.5 * centre))
                fwd += p.place_v * vx
                roll_t += p.place_lat * (float(com[1]) - float(d.xpos[other.foot][1])) + p.place_lat_v * vy
            else:  # stance: keep the pelvis upright
                fwd -= p.torso * pitch
                roll_t += p.torso_roll * roll
                if leg.yaw is not None:
                    q[leg.yaw] += leg.yaw_axis * p.heading * yaw
            dh = leg.hip_fwd * fwd
            dk = leg.knee_bend * lift
            ah, ak, aa = leg.axis
            q[leg.hip] += dh
            q[leg.knee] += dk
            # the ankle keeps the foot parallel to the pelvis and pushes the COM toward its target
            q[leg.ankle] += -(ah * dh + ak * dk) / aa + aa * (p.ankle_com * com_err + p.ankle_vel * vx)
            if leg.roll is not None:
                q[leg.roll] += leg.roll_axis * roll_t
        return q

    def action(self, t: float, qpos: np.ndarray, qvel: np.ndarray, obs: Any = None) -> np.ndarray:
        """PD action toward the feedback targets."""
        return self.pd.action(self.targets(t, qpos, qvel), qpos, qvel)

    def to_dict(self) -> dict[str, Any]:
        """Parameters and the derived legs."""
        return {
            "version": BIPED_VERSION,
            "kind": "biped" if self.name == "cpg" else self.name,
            "params": asdict(self.params),
            "foot_centre": self.foot_centre,
            "kp": self.kp,
            "kd": self.kd,
            "legs": [asdict(leg) for leg in self.legs],
        }

    def cache_params(self) -> dict[str, Any]:
        """The gait parameters and the walker's version."""
        return {"biped": asdict(self.params), "biped_version": BIPED_VERSION}


@TEACHERS.register("balance")
def _make_balance(spec: RobotSpec, model: mujoco.MjModel, gen_cfg: Any) -> BipedWalker:
    params = BipedParams(**{**TUNED_BIPED.get(spec.name, {}), **BALANCE})
    return BipedWalker(spec, model, params, name="balance")
