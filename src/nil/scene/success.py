"""Success measures and a task reward for the whole-body tasks (in the spirit of HumanoidBench).

Every function takes one episode's states (qpos [T, nq], as the simulator recorded them) and the robot
spec whose `scene` holds the objects; contacts are recomputed by MuJoCo at each state (positions
only). Per step:

- sitting: the pelvis (root) is below `SIT_HEIGHT_FRAC` of its standing height and a robot geom that
  is not a foot rests on the chair's seat;
- hanging: a robot geom touches the bar (or a gripping hand holds it, nil.scene.grip) and no robot geom
  touches the floor;
- balancing: the torso is upright (the fall rule), no robot geom touches the floor and the board
  tilts less than `MAX_BOARD_TILT`.

An episode succeeds when the last `HOLD_FRAC` of its steps are successful at least `HOLD_RATE` of
the time (the pose is reached and held). The task reward is a shaped per-step score in [0, 1]; its
sum over an episode is the "environment reward" for the paper-style "relative to the expert" figure.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nil.errors import ConfigError
from nil.scene.build import object_index_of_body
from nil.scene.grip import GRIP_HOLD, GripTable

if TYPE_CHECKING:
    import mujoco

    from nil.robots.spec import RobotSpec

TASKS = ("sitting", "hanging", "balancing")
SIT_HEIGHT_FRAC = 0.75
MAX_BOARD_TILT = math.radians(15.0)
HOLD_FRAC, HOLD_RATE = 0.2, 0.8


@dataclass
class TaskScore:
    """One episode's success on a task, its per-step measures (means) and the task return."""

    task: str
    success: bool
    success_rate: float  # fraction of all steps that were successful
    task_return: float  # sum of the per-step task reward
    measures: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for metrics.json."""
        d = asdict(self)
        d["measures"] = {k: round(v, 4) for k, v in self.measures.items()}
        return d


def scene_task(spec: RobotSpec) -> str | None:
    """The task of the robot's scene (scene.task), None without one."""
    if not spec.scene:
        return None
    task = json.loads(spec.scene).get("task", "none")
    return task if task in TASKS else None


class _Contacts:
    """Which robot geoms touch the floor, an object's geoms, at one state."""

    def __init__(self, spec: RobotSpec, model: mujoco.MjModel) -> None:
        import mujoco

        self.model, self.data = model, mujoco.MjData(model)
        self.robot = spec.robot_geom_mask(model)
        self.obj = object_index_of_body(model)[model.geom_bodyid]
        self.floor = (model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE) & (model.geom_bodyid == 0)
        self.feet = spec.foot_geom_index(model) >= 0

    def at(self, qpos: np.ndarray) -> list[tuple[int, int, float]]:
        """(robot geom, other geom, dist) of every robot contact at this state."""
        import mujoco

        d = self.data
        d.qpos[:] = qpos
        d.qvel[:] = 0.0
        mujoco.mj_forward(self.model, d)
        out = []
        for c in range(d.ncon):
            g1, g2, dist = int(d.contact[c].geom[0]), int(d.contact[c].geom[1]), float(d.contact[c].dist)
            if self.robot[g1] and not self.robot[g2]:
                out.append((g1, g2, dist))
            elif self.robot[g2] and not self.robot[g1]:
                out.append((g2, g1, dist))
        return out


def _held(ok: np.ndarray) -> bool:
    tail = ok[-max(1, int(round(HOLD_FRAC * len(ok)))) :]
    return bool(tail.mean() >= HOLD_RATE)


def score_episode(spec: RobotSpec, qpos: np.ndarray, task: str | None = None) -> TaskScore:
    """Success and task return of one episode's states on `task` (default: the scene's task)."""
    task = task or scene_task(spec)
    if task not in TASKS:
        raise ConfigError(f"scene.task: {task!r} has no success measure; use one of {', '.join(TASKS)}")
    if not spec.scene:
        raise ConfigError(f"scene.task {task!r} needs scene.objects (a chair, a bar or a board)")
    scene = json.loads(spec.scene)
    kinds = {o["index"]: o["kind"] for o in scene["objects"]}
    want = {"sitting": "chair", "hanging": "bar", "balancing": "board"}[task]
    if want not in kinds.values():
        raise ConfigError(f"scene.task {task!r} needs a {want} in scene.objects")
    model = spec.load_model()
    con = _Contacts(spec, model)
    qpos = np.asarray(qpos, dtype=np.float64)
    if qpos.ndim != 2 or qpos.shape[1] != model.nq:
        raise ConfigError(
            f"an episode's qpos must be [T, {model.nq}] for {spec.name} in this scene, got {qpos.shape}"
        )
    import mujoco

    root, torso = spec.root_id(model), spec.torso_id(model)
    cos_tilt = math.cos(math.radians(spec.max_tilt_deg))
    stand_z = float(scene["robot"]["root_z"]) + float(scene.get("robot_lift", 0.0))
    tilt_adr = None
    if task == "balancing":
        body_obj = object_index_of_body(model)
        hinges = [
            j
            for j in range(model.njnt)
            if body_obj[model.jnt_bodyid[j]] >= 0 and model.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE
        ]
        j = hinges[0] if hinges else None
        tilt_adr = int(model.jnt_qposadr[j]) if j is not None else None
    grips = GripTable.of(model)  # a gripped hand sits on the bar's axis, its contact excluded
    ok, reward = np.zeros(len(qpos), bool), np.zeros(len(qpos))
    m1, m2 = np.zeros(len(qpos)), np.zeros(len(qpos))
    for t, q in enumerate(qpos):
        contacts = con.at(q)
        on_floor = any(con.floor[o] for _, o, _ in contacts)
        z = float(con.data.xpos[root, 2])
        if task == "sitting":
            seat = any(kinds.get(int(con.obj[o])) == "chair" and not con.feet[g] for g, o, _ in contacts)
            low = z < SIT_HEIGHT_FRAC * stand_z
            ok[t], m1[t], m2[t] = seat and low, z, float(seat)
            reward[t] = 0.5 * float(seat) + 0.5 * min(
                1.0, max(0.0, (stand_z - z) / ((1 - SIT_HEIGHT_FRAC) * stand_z))
            )
        elif task == "hanging":
            bar = any(kinds.get(int(con.obj[o])) == "bar" for _, o, _ in contacts)
            bar = bar or bool(len(grips) and (grips.distances(con.data) < GRIP_HOLD).any())
            ok[t], m1[t], m2[t] = bar and not on_floor, float(bar), float(not on_floor)
            reward[t] = 0.5 * float(bar) + 0.5 * float(not on_floor)
        else:
            upright = float(con.data.xmat[torso][8]) >= cos_tilt and z >= spec.fall_height
            tilt = abs(float(q[tilt_adr])) if tilt_adr is not None else 0.0
            ok[t] = upright and not on_floor and tilt < MAX_BOARD_TILT
            m1[t], m2[t] = tilt, float(upright and not on_floor)
            reward[t] = float(upright and not on_floor) * max(0.0, 1.0 - tilt / MAX_BOARD_TILT)
    names = {
        "sitting": ("pelvis_height_m", "seat_contact"),
        "hanging": ("hands_on_bar", "feet_off_ground"),
        "balancing": ("board_tilt_rad", "time_upright"),
    }[task]
    measures = {names[0]: float(m1.mean()), names[1]: float(m2.mean())}
    if task == "sitting":
        measures["pelvis_height_final_m"] = float(m1[-1])
    return TaskScore(task, _held(ok), float(ok.mean()), float(reward.sum()), measures)


def score_episodes(spec: RobotSpec, episodes: list[np.ndarray], task: str | None = None) -> dict[str, Any]:
    """Success rate and mean measures over several episodes (what `nil eval` reports)."""
    scores = [score_episode(spec, q, task) for q in episodes]
    keys = scores[0].measures.keys() if scores else []
    return {
        "task": scores[0].task if scores else task,
        "episodes": len(scores),
        "success": float(np.mean([s.success for s in scores])) if scores else float("nan"),
        "task_return": float(np.mean([s.task_return for s in scores])) if scores else float("nan"),
        "measures": {k: float(np.mean([s.measures[k] for s in scores])) for k in keys},
    }


def task_metrics(spec: RobotSpec, qpos: np.ndarray, fell: bool = False) -> dict[str, float]:
    """Flat metrics of one episode for metrics.json ({} without a scene task): task_success, ...

    An episode the fall rule ended is no success, however its last steps score: a robot that sits and
    then slides off the seat below the fall height was "held" for the steps it had left.
    """
    if scene_task(spec) is None:
        return {}
    s = score_episode(spec, qpos)
    return {
        "task_success": float(s.success and not fell),
        "task_success_rate": s.success_rate,
        "task_env_return": s.task_return,
        **{f"task_{k}": v for k, v in s.measures.items()},
    }
