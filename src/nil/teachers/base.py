"""The Teacher interface and the TEACHERS registry (`generator.teacher` in skill.yaml)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from nil.registry import Registry

if TYPE_CHECKING:
    import mujoco

    from nil.robots.spec import RobotSpec


@runtime_checkable
class Teacher(Protocol):
    """Acts on one simulated robot; `needs_obs` teachers (a policy) read the sim's observation."""

    name: str
    needs_obs: bool

    def action(self, t: float, qpos: np.ndarray, qvel: np.ndarray, obs: Any = None) -> np.ndarray:
        """Action in [-1, 1] (one per actuator) at time t seconds from the state; `obs` is the sim's
        SimBatch of one env for teachers that need it (None in physics-only runs)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """What the teacher is (parameters, derived structure): meta.json and teacher.npz record it."""
        ...

    def cache_params(self) -> dict[str, Any]:
        """Everything that changes the teacher's motion (folded into the reference's cache key)."""
        ...


# factory(spec, model, generator_config) -> Teacher; the generator config is the synthetic generator's section
TeacherFactory = Callable[["RobotSpec", "mujoco.MjModel", Any], Teacher]

TEACHERS: Registry[TeacherFactory] = Registry(
    "generator.teacher",
    lazy={
        "balance": "nil.teachers.biped",
        "cpg": "nil.teachers.cpg",
        "keyframes": "nil.teachers.keyframes",
        "policy": "nil.teachers.policy",
    },
)


def make_teacher(name: str, spec: RobotSpec, model: mujoco.MjModel, gen_cfg: Any) -> Teacher:
    """The teacher `generator.teacher` names, for this robot and model."""
    return TEACHERS.get(name)(spec, model, gen_cfg)


class PDTracker:
    """Tracks joint targets q* (one per actuator): the sim's servo target (pd mode) or a PD torque.

    In pd mode the simulator's own servos (spec.kp, spec.kd) do the tracking and the action is the
    target offset over spec.action_scale; targets beyond the action range are clipped there, so a
    teacher must keep its targets inside `target_range()` to be reproducible by the agent.
    """

    def __init__(self, spec: RobotSpec, model: mujoco.MjModel, kp_scale: float = 1.0, kd_scale: float = 1.0):
        self.nu = int(model.nu)
        self.offset, self.scale = spec.ctrl_affine(model)
        self.gear = np.abs(model.actuator_gear[:, 0]).copy()
        self.gear[self.gear == 0] = 1.0
        self.pd_mode = spec.control_mode == "pd"
        self.kp = spec.kp * kp_scale
        self.kd = spec.kd * kd_scale
        self.qadr = np.array([model.jnt_qposadr[model.actuator_trnid[i, 0]] for i in range(self.nu)])
        self.dadr = np.array([model.jnt_dofadr[model.actuator_trnid[i, 0]] for i in range(self.nu)])

    def target_range(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(lo, hi) of the targets the action can express in pd mode; None in torque mode."""
        if not self.pd_mode:
            return None
        return self.offset - self.scale, self.offset + self.scale

    def action(self, q_star: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Action in [-1, 1] that drives the actuated joints toward q_star."""
        if self.pd_mode:
            a = (q_star - self.offset) / self.scale
        else:
            tau = self.kp * (q_star - qpos[self.qadr]) - self.kd * qvel[self.dadr]
            a = (tau / self.gear - self.offset) / self.scale  # joint torque = gear * ctrl
        return np.clip(a, -1.0, 1.0)
