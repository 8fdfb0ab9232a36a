"""`keyframes` teacher: PD tracking of a short sequence of poses (e.g. stand -> sit), for non-gait skills.

Poses come from `generator.keyframes`: each item is an MJCF keyframe name (its actuated joints' qpos)
or a list of joint targets, one per actuator in actuator order. Pose i is reached at
`generator.keyframe_times[i]` seconds (default: evenly over the first 60 % of the reference, the last
pose held to the end); between poses the target moves along a smoothstep from the previous pose, and
before the first pose from the robot's initial pose. Tracking is the CPG's: the simulator's servos in
pd mode, PD torques with the robot's gains in torque mode.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from nil.errors import ConfigError
from nil.teachers.base import TEACHERS, PDTracker

if TYPE_CHECKING:
    import mujoco

    from nil.robots.spec import RobotSpec

KEYFRAMES_VERSION = 1


def _key_names(model: mujoco.MjModel) -> list[str]:
    import mujoco

    return [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_KEY, i) or str(i) for i in range(model.nkey)]


def resolve_poses(
    spec: RobotSpec, model: mujoco.MjModel, keyframes: list[str | list[float]], qadr: np.ndarray
) -> np.ndarray:
    """float[K, nu]: actuated-joint targets of each `generator.keyframes` item (ConfigError naming it)."""
    import mujoco

    if not keyframes:
        raise ConfigError(
            "generator.teacher is 'keyframes' but generator.keyframes is empty: list MJCF keyframe names "
            f"({', '.join(_key_names(model)) or 'the model has none'}) or joint-target lists"
        )
    nu = int(model.nu)
    poses = []
    for i, item in enumerate(keyframes):
        if isinstance(item, str):
            kid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, item)
            if kid < 0:
                raise ConfigError(
                    f"generator.keyframes[{i}]: {spec.name} has no MJCF keyframe {item!r} "
                    f"(it has: {', '.join(_key_names(model)) or 'none'}); give a name or a joint-target list"
                )
            poses.append(model.key_qpos[kid][qadr])
            continue
        vals = np.asarray(item, dtype=np.float64)
        if vals.shape != (nu,):
            raise ConfigError(
                f"generator.keyframes[{i}]: {vals.size} joint targets, but {spec.name} has {nu} actuated "
                "joints; give one target per actuator (in actuator order) or an MJCF keyframe name"
            )
        poses.append(vals)
    return np.stack(poses).astype(np.float64)


def resolve_times(times: list[float] | None, n_poses: int, seconds: float) -> np.ndarray:
    """Seconds at which each pose is reached (given, or evenly over the first 60 % of the reference)."""
    if times is None:
        return np.linspace(0.6 * seconds / n_poses, 0.6 * seconds, n_poses)
    t = np.asarray(times, dtype=np.float64)
    if t.shape != (n_poses,):
        raise ConfigError(
            f"generator.keyframe_times has {t.size} values for {n_poses} keyframes; give one time per "
            "keyframe"
        )
    if (t < 0).any() or (np.diff(t) <= 0).any():
        raise ConfigError("generator.keyframe_times must be >= 0 and strictly increasing (seconds)")
    return t


class KeyframeTeacher:
    """Smoothstep interpolation through poses, tracked by PD."""

    name = "keyframes"
    needs_obs = False

    def __init__(
        self,
        spec: RobotSpec,
        model: mujoco.MjModel,
        keyframes: list[str | list[float]],
        times: np.ndarray | None,
        seconds: float,
    ) -> None:
        self.spec = spec
        self.pd = PDTracker(spec, model)
        self.start = spec.initial_qpos(model)[self.pd.qadr].astype(np.float64)
        self.keyframes = list(keyframes)
        self.poses = resolve_poses(spec, model, self.keyframes, self.pd.qadr)
        self.times = resolve_times(None if times is None else list(times), len(self.poses), seconds)
        rng = self.pd.target_range()
        if rng is not None:
            lo, hi = rng
            bad = np.flatnonzero(((self.poses < lo - 1e-6) | (self.poses > hi + 1e-6)).any(axis=1))
            if bad.size:
                need = float(np.abs(self.poses - self.pd.offset).max())
                raise ConfigError(
                    f"generator.keyframes[{int(bad[0])}] lies {need:.2f} rad from the initial pose, beyond "
                    f"robot.action_scale={float(self.pd.scale.min()):g} in pd mode; raise robot.action_scale "
                    "or use robot.control_mode: torque"
                )

    def targets(self, t: float) -> np.ndarray:
        """q* (one per actuator) at time t seconds."""
        prev_q, prev_t = self.start, 0.0
        for q, tk in zip(self.poses, self.times, strict=True):
            if t < tk:
                s = (t - prev_t) / max(tk - prev_t, 1e-9)
                s = 0.5 - 0.5 * math.cos(math.pi * min(max(s, 0.0), 1.0))
                return prev_q + s * (q - prev_q)
            prev_q, prev_t = q, tk
        return prev_q.copy()

    def action(self, t: float, qpos: np.ndarray, qvel: np.ndarray, obs: Any = None) -> np.ndarray:
        """PD action toward the interpolated pose."""
        return self.pd.action(self.targets(t), qpos, qvel)

    def to_dict(self) -> dict[str, Any]:
        """Poses (as given and resolved), times and gains."""
        return {
            "version": KEYFRAMES_VERSION,
            "keyframes": self.keyframes,
            "poses": self.poses.round(6).tolist(),
            "times_s": self.times.round(6).tolist(),
            "kp": self.pd.kp,
            "kd": self.pd.kd,
        }

    def cache_params(self) -> dict[str, Any]:
        """The resolved poses and times (an edited MJCF keyframe changes them)."""
        return {"keyframes": self.to_dict()}


@TEACHERS.register("keyframes")
def _make_keyframes(spec: RobotSpec, model: mujoco.MjModel, gen_cfg: Any) -> KeyframeTeacher:
    return KeyframeTeacher(
        spec,
        model,
        list(getattr(gen_cfg, "keyframes", None) or []),
        getattr(gen_cfg, "keyframe_times", None),
        float(gen_cfg.seconds),
    )
