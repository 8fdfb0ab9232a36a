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
    ramp_end,
    root_trajectory_error,
    spread_episodes,
    velocity_after,
    velocity_ratio,
)
from nil.evaluation.rollout import Episode
from nil.evaluation.video import BOTH, REF_ONLY, compose_side_by_side, overlap_image
from nil.reference.motion import moving_region


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


def ramped(v: float, ramp_s: float, seconds: float, dt: float) -> np.ndarray:
    """Root x of a start from rest: speed rises linearly to v over ramp_s, then stays v (plus a wobble)."""
    t = np.arange(int(round(seconds / dt)) + 1) * dt
    x = np.where(t < ramp_s, 0.5 * v / ramp_s * t**2, 0.5 * v * ramp_s + v * (t - ramp_s))
    return x + 0.01 * np.sin(2 * np.pi * 2.0 * t) * (t >= ramp_s)  # 2 Hz wobble: 0.5-s window averages it out


def test_velocity_after_the_ramp_is_the_known_speed():
    dt, v = 0.04, 0.8  # 25 Hz, as the demo
    x = ramped(v, 0.4, 2.0, dt)
    r = ramp_end(x, dt)
    # the speed reaches 0.9 v at 0.36 s; the cut is half a 0.5-s window later: after the ramp, before 1 s
    assert 0.4 / dt <= r <= 1.0 / dt
    assert velocity_after(x, dt, r) == pytest.approx(v, rel=0.02)
    assert mean_forward_velocity(x, dt) < 0.92 * v  # the whole clip, ramp included, reads slow
    # a trajectory with no ramp has (almost) nothing cut, and a constant speed reads exactly
    steady = np.arange(51) * v * dt
    assert ramp_end(steady, dt) == 0 and velocity_after(steady, dt, ramp_end(steady, dt)) == (
        pytest.approx(v)
    )
    # the agent at half the teacher's speed after the ramp: ratio 0.5 (its own ramp does not count)
    assert velocity_ratio(0.5 * x, x, dt, start=r) == pytest.approx(0.5, rel=1e-6)
    # a standing robot: no ramp, zero speed
    assert ramp_end(np.zeros(51), dt) == 0 and velocity_after(np.zeros(51), dt, 0) == 0.0
    # never later than half the clip, even if the speed never settles
    accel = 0.5 * (np.arange(51) * dt) ** 2
    assert ramp_end(accel, dt) <= 25


def test_spread_over_episodes():
    eps = [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 2.0}, {"a": 5.0}]
    sd = spread_episodes(eps)
    assert sd["a"] == pytest.approx(np.std([1.0, 3.0, 5.0])) and sd["b"] == 0.0
    assert spread_episodes([{"a": 1.0}]) == {"a": 0.0}


def test_a_teacher_that_does_not_move_gets_a_warning_not_a_ratio():
    from nil.evaluation.teacher import teacher_motion

    dt = 0.04
    T = 51
    still = {"qpos": np.zeros((T, 15)), "root_pos": np.zeros((T, 3))}
    still["root_pos"][:, 0] = 0.001 * np.sin(np.arange(T))  # it sways in place
    ramp, speed, warnings = teacher_motion(still, dt)
    assert abs(speed) < 0.01 and len(warnings) == 1 and "does not move" in warnings[0]
    walker = {"qpos": np.zeros((T, 15)), "root_pos": np.zeros((T, 3))}
    walker["root_pos"][:, 0] = ramped(0.8, 0.4, 2.0, dt)
    ramp, speed, warnings = teacher_motion(walker, dt)
    assert ramp > 0 and speed == pytest.approx(0.8, rel=0.02) and warnings == []
    # episode metrics against a still teacher: no velocity ratio, the agent's own speed still reported
    ref = np.ones((T, 4, 4), bool)
    qpos = np.zeros((T, 15))
    qpos[:, 0] = np.arange(T) * 0.02
    ep = _episode(ref, qpos[:, 0], np.zeros((T, 8)))
    m, _ = episode_metrics(ep, ref, dt=dt, teacher_qpos=still["qpos"], teacher_root=still["root_pos"])
    assert "velocity_ratio" not in m and m["velocity_after_ramp"] == pytest.approx(0.5)


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


def test_moving_iou_scores_the_legs_apart_from_the_static_body():
    """A body in every frame and a leg that swings under it: standing still matches most of the
    silhouette (mean_iou high) but none of the moving region; the reference's own motion matches both."""
    T, dt = 11, 0.05
    ref = np.zeros((T, 12, 12), bool)
    ref[:, 1:5, 1:11] = True  # the body, 40 px in every frame
    for k in range(T):
        c = 1 + (k % 4) * 2
        ref[k, 6:10, c : c + 2] = True  # the leg, 8 px, at one of 4 places
    region = moving_region(ref)
    assert not region[1:5, 1:11].any() and region[6:10, 1:9].all()  # the body is the core, the leg is not
    x = np.zeros(T)
    qj = np.zeros((T, 4))
    standing = np.repeat(ref[:1], T, 0)
    m_stand, _ = episode_metrics(_episode(standing, x, qj), ref, dt=dt, moving=region)
    m_ref, _ = episode_metrics(_episode(ref.copy(), x, qj), ref, dt=dt, moving=region)
    # standing matches the leg only on the steps whose leg is where frame 0's is (k = 4, 8 of 1..10)
    assert m_stand["moving_iou"] == pytest.approx(2 / 10)
    assert m_stand["mean_iou"] == pytest.approx((2 * 1.0 + 8 * 40 / 56) / 10)
    assert m_ref["moving_iou"] == pytest.approx(1.0) and m_ref["mean_iou"] == pytest.approx(1.0)
    # a fall at step 5: the steps after it count as 0 here too
    m_fell, _ = episode_metrics(_episode(ref[:6].copy(), x[:6], qj[:6], fell=True), ref, dt=dt, moving=region)
    assert m_fell["moving_iou"] == pytest.approx(5 / 10)
    assert "moving_iou" not in episode_metrics(_episode(ref.copy(), x, qj), ref, dt=dt)[0]


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


def test_imitation_benchmark_summary_mean_sd_and_worst_seed():
    """benchmarks/imitation.py: per figure, mean ± sd over seeds, the worst seed, and the baselines."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "imitation.py"
    spec = importlib.util.spec_from_file_location("bench_imitation", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def run(seed, iou, ratio, err, falls):
        base = {"mean_iou": 0.5, "velocity_ratio": 0.2, "root_traj_error": 1.0, "falls": 0.0}
        return {
            "seed": seed,
            "episodes": 5,
            "policy": {"step": 1000},
            "ramp_steps": 8,
            "wall_s": 60.0,
            "trained": {"mean_iou": iou, "velocity_ratio": ratio, "root_traj_error": err, "falls": falls},
            "baselines": {
                "random": base,
                "zero": {**base, "mean_iou": 0.6, "velocity_ratio": 0.0},
                "teacher": {"mean_iou": 0.9, "velocity_ratio": 1.0, "root_traj_error": 0.0, "falls": 0.0},
            },
        }

    runs = [run(0, 0.8, 0.9, 0.2, 0.0), run(1, 0.7, 0.7, 0.4, 0.2), run(2, 0.55, 0.1, 0.9, 0.0)]
    s = bench.summarize_robot("ant", runs)
    iou, ratio, err, falls = (
        s["figures"][k] for k in ("mean_iou", "velocity_ratio", "root_traj_error", "falls")
    )
    assert iou["mean"] == pytest.approx(0.6833333) and iou["sd"] == pytest.approx(np.std([0.8, 0.7, 0.55]))
    assert iou["worst"] == 0.55 and ratio["worst"] == 0.1 and err["worst"] == 0.9 and falls["worst"] == 0.2
    assert iou["random"] == 0.5 and iou["zero"] == 0.6 and ratio["teacher"] == 1.0
    assert s["seeds_beating_baselines"] == 2  # seed 2 loses to standing on IoU and to random on velocity
    table = bench.markdown([s])
    assert "0.68 ± 0.10" in table and "| 0.55 |" in table and "2/3 seeds beat" in table


def test_scene_task_success_reaches_the_eval_metrics():
    """A skill with a scene task: nil eval adds its success measures (nil.scene.success) to each episode."""
    from nil.config import parse_config
    from nil.robots import robot_from_config
    from nil.scene.success import scene_task, task_metrics

    cfg = parse_config({"scene": {"objects": [{"kind": "chair"}], "task": "sitting"}}, "test")
    spec = robot_from_config(cfg)
    assert scene_task(spec) == "sitting"
    model = spec.load_model()
    standing = np.tile(spec.initial_qpos(model), (12, 1))  # never sits down
    m = task_metrics(spec, standing)
    assert m["task_success"] == 0.0 and m["task_success_rate"] == 0.0
    assert aggregate_episodes([m, {**m, "task_success": 1.0}])["task_success"] == 0.5
    assert task_metrics(robot_from_config(parse_config({}, "plain")), standing) == {}  # no scene: nothing


def test_iou_by_phase_splits_the_mean_at_the_start_and_the_ramp():
    """benchmarks/iou_by_phase.py: the per-frame IoU's mean over the start, the rest of the ramp, after it."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "iou_by_phase.py"
    spec = importlib.util.spec_from_file_location("bench_iou_by_phase", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    iou = np.array([0.2] * 5 + [0.5] * 5 + [0.8] * 10)
    m = bench.phase_means(iou, ramp=10, start=5)
    assert m["start"] == pytest.approx(0.2) and m["ramp"] == pytest.approx(0.5)
    assert m["after_ramp"] == pytest.approx(0.8) and m["all"] == pytest.approx(iou.mean())
    # a ramp inside the start leaves the middle span empty, and a ramp past the end the last one
    short = bench.phase_means(iou, ramp=3, start=5)
    assert np.isnan(short["ramp"]) and short["after_ramp"] == pytest.approx(iou[5:].mean())
    assert np.isnan(bench.phase_means(iou, ramp=40)["after_ramp"])
