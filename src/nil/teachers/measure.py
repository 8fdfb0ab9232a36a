"""Physics-only check of a state-based teacher: speed after the ramp, foot slip at the contact point, falls.

The rollout steps MuJoCo exactly as the agent's CPU simulator does (control rate, substeps,
ctrl = offset + scale * action, no reset noise) but renders nothing, so a teacher can be tuned and
checked in seconds. Slip is the horizontal velocity of the foot's contact point (not the foot body's
centre of mass: on the A1 the calf's centre is ~7 cm above the foot sphere), counted only while that
contact carries a normal load above `load_n` newtons.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nil.scene.grip import GripTable

if TYPE_CHECKING:
    import mujoco

    from nil.robots.spec import RobotSpec
    from nil.teachers.base import Teacher


@dataclass
class GaitMeasure:
    """What `measure_teacher` found (speeds in m/s, over the time after `skip_s`)."""

    robot: str
    control_mode: str
    control_hz: float
    seconds: float
    speed_x: float  # mean forward (+x) root speed after the ramp
    drift_y: float  # mean |lateral| root speed after the ramp
    slip: float  # mean horizontal contact-point speed of loaded feet
    slip_p90: float
    stance_fraction: float  # fraction of foot-steps with a loaded contact
    min_up_z: float
    min_height: float
    fell_at_s: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, rounded for printing."""
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def contact_slip(
    model: mujoco.MjModel,
    data: mujoco.MjData,
    foot_of_geom: np.ndarray,
    robot_geom: np.ndarray,
    load_n: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(loaded[n_feet], slip[n_feet]): per foot, whether a contact with the world carries > load_n, and
    the horizontal speed of that foot's most loaded contact point."""
    import mujoco

    n_feet = int(foot_of_geom.max()) + 1 if foot_of_geom.size and foot_of_geom.max() >= 0 else 0
    loaded, slip, best = np.zeros(n_feet, bool), np.zeros(n_feet), np.zeros(n_feet)
    force = np.zeros(6)
    jacp = np.zeros((3, model.nv))
    for c in range(data.ncon):
        con = data.contact[c]
        g1, g2 = int(con.geom[0]), int(con.geom[1])
        for g, other in ((g1, g2), (g2, g1)):
            k = foot_of_geom[g]
            if k < 0 or robot_geom[other]:
                continue
            mujoco.mj_contactForce(model, data, c, force)
            fn = abs(float(force[0]))  # normal component in the contact frame
            if fn <= load_n or fn <= best[k]:
                continue
            mujoco.mj_jac(model, data, jacp, None, con.pos, int(model.geom_bodyid[g]))
            v = jacp @ data.qvel
            loaded[k], best[k], slip[k] = True, fn, math.hypot(v[0], v[1])
    return loaded, slip


class _Rollout:
    """MuJoCo stepped as the agent's CPU simulator steps it (see the module docstring), from the initial
    pose; measure_teacher and rollout_states share it so that both see the motion the agent's sim gives."""

    def __init__(self, spec: RobotSpec, model: mujoco.MjModel | None) -> None:
        import mujoco

        self.model = model if model is not None else spec.load_model()
        self.data = mujoco.MjData(self.model)
        self.data.qpos[:] = spec.initial_qpos(self.model)
        self.off, self.scale = spec.ctrl_affine(self.model)
        self.data.ctrl[:] = self.off
        mujoco.mj_forward(self.model, self.data)
        self.n_sub, self.dt = spec.substeps(self.model), 1.0 / spec.control_hz
        self.grips = GripTable.of(self.model)

    def step(self, teacher: Teacher, t: int) -> None:
        """Control step t (1-based): the teacher's action at time (t - 1) * dt, then the substeps."""
        import mujoco

        d = self.data
        d.ctrl[:] = self.off + self.scale * teacher.action((t - 1) * self.dt, d.qpos.copy(), d.qvel.copy())
        mujoco.mj_step(self.model, d, nstep=self.n_sub)
        if len(self.grips):  # the sim takes hold after the step's kinematics, as EnvGroup.step does
            mujoco.mj_forward(self.model, d)
            self.grips.update(d)


def measure_teacher(
    spec: RobotSpec,
    teacher: Teacher,
    seconds: float = 4.0,
    *,
    skip_s: float = 1.0,
    load_n: float = 1.0,
    model: mujoco.MjModel | None = None,
) -> GaitMeasure:
    """Roll a state-based teacher out in physics only and measure its gait."""
    import mujoco

    rollout = _Rollout(spec, model)
    model, data, dt = rollout.model, rollout.data, rollout.dt
    root, torso = spec.root_id(model), spec.torso_id(model)
    foot_of_geom = spec.foot_geom_index(model)
    robot_geom = spec.robot_geom_mask(model)
    n = int(round(seconds * spec.control_hz))
    skip = min(int(round(skip_s * spec.control_hz)), n - 1)
    pos = np.zeros((n + 1, 3))
    pos[0] = data.xpos[root]
    up, low, slips, stance, steps, fell = 1.0, math.inf, [], 0, 0, None
    for t in range(1, n + 1):
        rollout.step(teacher, t)
        if not np.isfinite(data.qpos).all():
            fell = t * dt
            pos[t:] = pos[t - 1]
            break
        mujoco.mj_forward(model, data)
        pos[t] = data.xpos[root]
        up_z = float(data.xmat[torso][8])
        if fell is None and (
            pos[t, 2] < spec.fall_height or up_z < math.cos(math.radians(spec.max_tilt_deg))
        ):
            fell = t * dt
        if t > skip:
            up, low = min(up, up_z), min(low, float(pos[t, 2]))
            loaded, slip = contact_slip(model, data, foot_of_geom, robot_geom, load_n)
            slips.extend(slip[loaded].tolist())
            stance += int(loaded.sum())
            steps += len(loaded)
    span = (n - skip) * dt
    s = np.asarray(slips) if slips else np.zeros(1)
    return GaitMeasure(
        robot=spec.name,
        control_mode=spec.control_mode,
        control_hz=float(spec.control_hz),
        seconds=float(seconds),
        speed_x=float(pos[n, 0] - pos[skip, 0]) / span,
        drift_y=abs(float(pos[n, 1] - pos[skip, 1])) / span,
        slip=float(s.mean()),
        slip_p90=float(np.quantile(s, 0.9)),
        stance_fraction=stance / max(1, steps),
        min_up_z=up,
        min_height=low if math.isfinite(low) else float("nan"),
        fell_at_s=fell,
    )


def rollout_states(
    spec: RobotSpec, teacher: Teacher, seconds: float, *, model: mujoco.MjModel | None = None
) -> np.ndarray:
    """qpos [n + 1, nq] of a state-based teacher's rollout in physics only (no render), as the sim steps."""
    rollout = _Rollout(spec, model)
    n = int(round(seconds * spec.control_hz))
    out = np.zeros((n + 1, rollout.model.nq))
    out[0] = rollout.data.qpos
    for t in range(1, n + 1):
        rollout.step(teacher, t)
        out[t] = rollout.data.qpos
    return out
