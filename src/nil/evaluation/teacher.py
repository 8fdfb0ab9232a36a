"""The synthetic teacher as a row of the evaluation: its motion replayed through the agent's renderer.

reference/teacher.npz is ground truth for evaluation only (training never reads it). Its replay is
the ceiling the segmented reference allows (its IoU against the reference masks), and its root motion
fixes the start-up ramp after which velocities are compared (nil.evaluation.metrics.ramp_end).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import torch

from nil.evaluation.metrics import (
    STILL_SPEED,
    mask_iou,
    mean_forward_velocity,
    moving_iou,
    ramp_end,
    velocity_after,
)
from nil.sim.base import SimBatch


def replay(spec: Any, model: Any, qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's states through the agent's renderer: (mask [T,H,W], torso up_z [T]); no colour pass."""
    import mujoco

    from nil.sim.render import RobotRenderer

    data = mujoco.MjData(model)
    torso = spec.torso_id(model)
    ups = []
    with RobotRenderer(model, spec) as r:
        masks = np.zeros((len(qpos), r.height, r.width), bool)
        for k, q in enumerate(qpos):
            data.qpos[:] = q
            data.qvel[:] = 0
            mujoco.mj_forward(model, data)
            r.render_into(data, None, masks[k])
            ups.append(float(data.xmat[torso][8]))
    return masks, np.asarray(ups)


def teacher_row(
    spec: Any,
    model: Any,
    teacher: dict[str, np.ndarray],
    ref_masks: np.ndarray,
    dt: float,
    target_speed: float,
    ramp: int,
    moving: np.ndarray | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """The teacher's metrics (as a policy's) and its per-step IoU against the reference masks."""
    from nil.reward import task_reward
    from nil.scene.success import task_metrics

    qpos = np.asarray(teacher["qpos"], dtype=np.float64)
    root = np.asarray(teacher.get("root_pos", qpos[:, :3]), dtype=np.float64)
    masks, ups = replay(spec, model, qpos)
    per_step = mask_iou(ref_masks[1:], masks[1 : len(ref_masks)])
    if "qvel" in teacher:
        lin_vel = np.asarray(teacher["qvel"], dtype=np.float64)[:, :3]
    else:
        lin_vel = np.gradient(root, dt, axis=0)
    # task_reward reads only torso_up_z and root_lin_vel of a batch
    state = SimpleNamespace(
        torso_up_z=torch.as_tensor(ups[1:], dtype=torch.float32),
        root_lin_vel=torch.as_tensor(lin_vel[1:], dtype=torch.float32),
    )
    task = task_reward(cast(SimBatch, state), target_speed)
    m = {
        "mean_iou": float(per_step.mean()),
        "mean_iou_alive": float(per_step.mean()),
        "episode_length": float(len(qpos) - 1),
        "falls": 0.0,
        "forward_distance": float(root[-1, 0] - root[0, 0]),
        "mean_velocity": mean_forward_velocity(root[:, 0], dt),
        "velocity_after_ramp": velocity_after(root[:, 0], dt, ramp),
        "task_reward": float(task.sum()),
        "velocity_ratio": 1.0,
        "root_traj_error": 0.0,
        "joint_rmse_dtw": 0.0,
    }
    if moving is not None:
        m["moving_iou"] = float(moving_iou(ref_masks, masks, moving).mean())
    if velocity_after(root[:, 0], dt, ramp) < STILL_SPEED:
        m.pop("velocity_ratio")  # a teacher that does not move has no velocity to be a ratio of
    m.update(task_metrics(spec, qpos))  # scene tasks: success measures (nil.scene)
    return m, per_step


def teacher_motion(teacher: dict[str, np.ndarray], dt: float) -> tuple[int, float, list[str]]:
    """(ramp end frame, forward speed after it [m/s], warnings) of the synthetic teacher's root motion."""
    qpos = np.asarray(teacher["qpos"], dtype=np.float64)
    root_x = np.asarray(teacher.get("root_pos", qpos[:, :3]), dtype=np.float64)[:, 0]
    ramp = ramp_end(root_x, dt)
    speed = velocity_after(root_x, dt, ramp)
    warnings = []
    if speed < STILL_SPEED:
        warnings.append(
            f"the reference's teacher does not move forward ({speed:.3f} m/s after its start-up ramp, "
            f"below {STILL_SPEED} m/s): there is no speed to imitate, so no velocity ratio is reported; "
            "check the generator settings or the skill text"
        )
    return ramp, speed, warnings
