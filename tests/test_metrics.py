"""Evaluation metrics on hand-made trajectories with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from nil.errors import NilError
from nil.evaluation.metrics import (
    aggregate_episodes,
    dtw,
    episode_metrics,
    joint_rmse_dtw,
    mask_iou,
    mean_forward_velocity,
    root_trajectory_error,
    velocity_ratio,
)
from nil.evaluation.rollout import Episode
from nil.evaluation.video import BOTH, REF_ONLY, compose_side_by_side, overlap_image


def gait(t: np.ndarray) -> np.ndarray:
    """A periodic 'joint trajectory' with 4 joints at different phases and harmonics."""
    w = 2 * np.pi * 1.5
    return np.stack(
        [0.6 * np.sin(w * t), 0.4 * np.cos(w * t), 0.3 * np.sin(2 * w * t + 0.5), 0.2 * np.sin(w * t + 2.0)],
        axis=1,
    )


def test_dtw_time_shifted_copy_is_zero():
    dt = 0.01
    t = np.arange(300) * dt
    a = gait(t)
    for shift in (1, 7, 20):
        b = gait(t + shift * dt)  # the same motion, started `shift` steps later in its cycle
        assert joint_rmse_dtw(a, b) == pytest.approx(0.0, abs=1e-9)
        # without alignment the copy is far off: the test can fail
        assert np.sqrt(np.mean((a - b) ** 2)) > 0.02
    res = dtw(a, gait(t + 7 * dt))
    assert res.path[0].tolist() == [7, 0]  # a's 7th frame is b's first
    assert np.all(np.diff(res.path, axis=0) >= 0)


def test_dtw_is_zero_for_time_stretched_copy_and_positive_otherwise():
    t = np.arange(200) * 0.01
    a = gait(t)
    slow = np.repeat(a, 2, axis=0)  # the same poses at half speed
    assert joint_rmse_dtw(slow, a) == pytest.approx(0.0, abs=1e-12)
    # a different motion keeps a clear error after alignment
    assert joint_rmse_dtw(a, gait(t) * 0.5) > 0.05
    # a standing agent cannot match by collapsing onto one frame
    still = np.repeat(a[:1], len(a), axis=0)
    assert joint_rmse_dtw(still, a) > 0.2


def test_dtw_rejects_bad_input():
    with pytest.raises(NilError):
        dtw(np.zeros((5, 3)), np.zeros((5, 2)))
    with pytest.raises(NilError):
        dtw(np.full((5, 2), np.nan), np.zeros((5, 2)))


def test_velocity_ratio_of_teacher_to_itself_is_one():
    dt = 0.01
    x = np.cumsum(np.full(400, 0.8 * dt)) + 0.05 * np.sin(np.arange(400) * 0.3)
    assert velocity_ratio(x, x, dt) == pytest.approx(1.0)
    assert velocity_ratio(0.5 * x, x, dt) == pytest.approx(0.5)
    assert velocity_ratio(x[::2], x, 2 * dt, dt) == pytest.approx(1.0, rel=1e-2)
    assert mean_forward_velocity(np.array([0.0, 1.0, 2.0]), 0.5) == pytest.approx(2.0)
    with pytest.raises(NilError):
        velocity_ratio(x, np.zeros(10), dt)  # a teacher that does not move has no ratio


def test_root_trajectory_error():
    t = np.linspace(0, 4, 401)
    path = np.stack([0.8 * t, 0.05 * np.sin(3 * t)], 1)
    assert root_trajectory_error(path + [5.0, -2.0], path) == pytest.approx(
        0.0, abs=1e-12
    )  # start offset ignored
    lateral = path + np.stack([np.zeros_like(t), 0.1 * t / 4], 1)
    assert root_trajectory_error(lateral, path) == pytest.approx(0.05, rel=1e-2)


def test_mask_iou_known_values():
    a = np.zeros((2, 4, 4), bool)
    b = np.zeros((2, 4, 4), bool)
    a[0, :, :2] = True
    b[0, :, 1:3] = True  # half overlap of equal areas -> 1/3
    a[1, :2] = True
    b[1, 2:] = True  # disjoint -> 0
    np.testing.assert_allclose(mask_iou(a, b), [1 / 3, 0.0])
    assert mask_iou(a[0], a[0]) == 1.0
    with pytest.raises(NilError):
        mask_iou(a, b[:, :3])


def _episode(masks: np.ndarray, x: np.ndarray, qj: np.ndarray, fell: bool = False) -> Episode:
    n = len(masks)
    qpos = np.zeros((n, 7 + qj.shape[1]))
    qpos[:, 0] = x
    qpos[:, 3] = 1
    qpos[:, 7:] = qj
    root = np.zeros((n, 3))
    root[:, 0] = x
    return Episode(
        rgb=np.zeros((n, *masks.shape[1:], 3), np.uint8),
        mask=masks,
        qpos=qpos,
        qvel=np.zeros((n, 6)),
        root_pos=root,
        torso_up_z=np.ones(n),
        actions=np.zeros((n - 1, 2), np.float32),
        reward_total=np.full(n - 1, 0.5),
        reward_terms={
            "raw/iou": np.ones(n - 1),
            "weighted/reg": np.full(n - 1, -0.1),
            "weighted/reg_tilt": np.full(n - 1, -0.1),
        },
        task=np.full(n - 1, 0.25),
        fell=fell,
    )


def test_episode_metrics_against_teacher():
    T, dt = 41, 0.05
    ref = np.zeros((T, 8, 8), bool)
    ref[:, 2:6, 2:6] = True
    t = np.arange(T) * dt
    x = 0.8 * t
    qj = gait(t)
    teacher_qpos = np.concatenate(
        [np.stack([x, 0 * t, 0 * t + 0.5, 1 + 0 * t, 0 * t, 0 * t, 0 * t], 1), qj], 1
    )
    ep = _episode(ref.copy(), x, qj)
    m, per_step = episode_metrics(ep, ref, dt=dt, joint_idx=np.arange(7, 11), teacher_qpos=teacher_qpos)
    assert per_step.shape == (T - 1,) and m["mean_iou"] == pytest.approx(1.0)
    assert m["velocity_ratio"] == pytest.approx(1.0)
    assert m["joint_rmse_dtw"] == pytest.approx(0.0, abs=1e-12)
    assert m["root_traj_error"] == pytest.approx(0.0, abs=1e-12)
    assert m["nil_return"] == pytest.approx(0.5 * (T - 1))
    assert m["task_reward"] == pytest.approx(0.25 * (T - 1))
    assert m["reg_total"] == pytest.approx(-0.1 * (T - 1)) and m["reg/reg_tilt"] == pytest.approx(
        -0.1 * (T - 1)
    )
    # an agent that falls halfway: IoU after the fall counts as 0, velocity measured while alive
    half = T // 2
    ep2 = _episode(ref[: half + 1].copy(), 0.4 * t[: half + 1], qj[: half + 1], fell=True)
    m2, _ = episode_metrics(ep2, ref, dt=dt, joint_idx=np.arange(7, 11), teacher_qpos=teacher_qpos)
    assert m2["mean_iou"] == pytest.approx(half / (T - 1))
    assert m2["mean_iou_alive"] == pytest.approx(1.0)
    assert m2["velocity_ratio"] == pytest.approx(0.5)
    assert m2["falls"] == 1.0 and m2["episode_length"] == half
    agg = aggregate_episodes([m, m2])
    assert agg["falls"] == 0.5 and agg["mean_iou"] == pytest.approx((1 + half / (T - 1)) / 2)


def test_side_by_side_composition():
    t, h, w = 3, 16, 20
    ref_m = np.zeros((t, h, w), bool)
    ref_m[:, 4:12, 4:12] = True
    ag_m = np.zeros_like(ref_m)
    ag_m[:, 4:12, 8:16] = True
    ov = overlap_image(ref_m[0], ag_m[0])
    assert tuple(ov[6, 5]) == REF_ONLY and tuple(ov[6, 9]) == BOTH
    frames = np.full((t, h, w, 3), 200, np.uint8)
    out = compose_side_by_side(frames, frames, ref_m, ag_m)
    assert out.dtype == np.uint8 and out.shape[0] == t
    assert out.shape[2] == 3 * out.shape[1] * w // h  # three panels of the upscaled frame size
    assert out.shape[1] >= 192  # upscaled so that the IoU text is legible
    # the per-frame IoU is drawn on the overlap panel only
    pw = out.shape[2] // 3
    other = compose_side_by_side(frames, frames, ref_m, ag_m, ious=np.full(t, 0.123))
    assert np.array_equal(out[:, :, : 2 * pw - 1], other[:, :, : 2 * pw - 1])
    assert not np.array_equal(out[:, :, 2 * pw + 1 :], other[:, :, 2 * pw + 1 :])
    with pytest.raises(NilError):
        compose_side_by_side(frames, frames[:2], ref_m, ag_m)
