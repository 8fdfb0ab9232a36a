"""nil.reference.motion: root velocity from the reference's floor, gait period from its masks.

Ground truth: a ray-cast checker floor under a camera moving at a known velocity (no simulator), and
the synthetic ant teacher (teacher.npz is read here, in a test, only to check the estimate).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nil.errors import VideoError
from nil.reference import motion as M
from nil.robots.spec import CameraSpec

CAM = CameraSpec(width=96, height=96, distance=3.0, elevation=-30.0, azimuth=90.0, fovy=45.0, lookat_z=0.0)


def checker_video(vel_xy: tuple[float, float], frames: int = 40, fps: float = 100.0, root_h: float = 0.5):
    """Frames [T,H,W,3] of a 0.25 m checker floor seen by CAM tracking a root moving at vel_xy (m/s)."""
    geo = M.camera_geometry(CAM, root_h)
    ss = 3  # supersampling: the checker edges are antialiased, as a renderer's would be
    h, w = CAM.height * ss, CAM.width * ss
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    u = (u + 0.5) / ss - CAM.width / 2.0
    v = (v + 0.5) / ss - CAM.height / 2.0
    d = geo.fwd[None, None] + (u / geo.focal)[..., None] * geo.right + (v / geo.focal)[..., None] * geo.down
    out = np.empty((frames, CAM.height, CAM.width, 3), np.uint8)
    for t in range(frames):
        cx, cy = vel_xy[0] * t / fps, vel_xy[1] * t / fps
        s = np.where(d[..., 2] < -1e-6, geo.cam_height / -np.minimum(d[..., 2], -1e-6), np.nan)
        x, y = cx + s * d[..., 0], cy + s * d[..., 1]
        c = ((np.floor(x / 0.25) + np.floor(y / 0.25)) % 2) * 160.0 + 50.0
        c = np.where(np.isfinite(c), c, 220.0)  # sky
        g = c.reshape(CAM.height, ss, CAM.width, ss).mean(axis=(1, 3))
        out[t] = np.repeat(g[..., None], 3, axis=2).astype(np.uint8)
    return out


def test_camera_shift_recovered_from_exact_floor_flow():
    geo = M.camera_geometry(CAM, 0.5)
    rng = np.random.default_rng(0)
    p0 = np.stack([rng.uniform(5, 90, 200), rng.uniform(50, 90, 200)], axis=1)
    shift = np.array([0.02, -0.01, 0.005])  # camera moves by this (world metres)

    def project(p: np.ndarray, cam_shift: np.ndarray) -> np.ndarray:
        u, v = p[:, 0] + 0.5 - 48, p[:, 1] + 0.5 - 48
        z = M._floor_depth(geo, u, v)
        world = z[:, None] * (
            geo.fwd + (u / geo.focal)[:, None] * geo.right + (v / geo.focal)[:, None] * geo.down
        )
        rel = world - cam_shift
        zc = rel @ geo.fwd
        return np.stack([geo.focal * (rel @ geo.right) / zc, geo.focal * (rel @ geo.down) / zc], 1) + 48 - 0.5

    got = M._camera_shift(geo, p0, project(p0, shift))
    assert got is not None
    np.testing.assert_allclose(got, shift, atol=5e-4)


@pytest.mark.parametrize("vel", [(0.5, 0.0), (0.3, -0.2), (-0.4, 0.1)])
def test_root_velocity_of_a_moving_camera_over_a_checker_floor(vel):
    frames = checker_video(vel)
    masks = np.zeros(frames.shape[:3], bool)
    masks[:, 30:60, 35:60] = True  # a "robot" in the middle hides some floor
    est = M.estimate_root_velocity(frames, masks, 100.0, CAM, root_height=0.5)
    assert est.shape == (len(frames), 2) and est.dtype == np.float32
    np.testing.assert_allclose(est.mean(0), vel, atol=0.025)
    err = np.abs(est - np.asarray(vel)).max(0)
    # x crosses the image (azimuth 90); y runs along the view, where the floor's flow is ~5x weaker
    assert err[0] < 0.03 and err[1] < 0.12, err


def test_still_camera_reads_zero_speed():
    frames = checker_video((0.0, 0.0), frames=20)
    masks = np.zeros(frames.shape[:3], bool)
    est = M.estimate_root_velocity(frames, masks, 100.0, CAM, root_height=0.5)
    assert np.abs(est).max() < 0.005


def test_flat_background_is_an_error_naming_the_switch():
    frames = np.full((20, 96, 96, 3), 255, np.uint8)
    masks = np.zeros((20, 96, 96), bool)
    masks[:, 30:60, 35:60] = True
    frames[masks] = 90  # a grey robot on a white (removed) background
    with pytest.raises(VideoError, match=r"reward\.speed_weight"):
        M.estimate_root_velocity(frames, masks, 100.0, CAM, root_height=0.5)


def test_size_and_length_mismatches_are_errors():
    frames = checker_video((0.2, 0.0), frames=4)
    with pytest.raises(VideoError, match="too short"):
        M.estimate_root_velocity(frames, np.zeros(frames.shape[:3], bool), 100.0, CAM, 0.5)
    with pytest.raises(VideoError, match="camera"):
        M.estimate_root_velocity(frames[:, :64], np.zeros((4, 64, 96), bool), 100.0, CAM, 0.5)


def swinging_leg_masks(period_frames: float, frames: int, hw: int = 48) -> np.ndarray:
    """A body with one leg swinging back and forth with the given period (frames)."""
    m = np.zeros((frames, hw, hw), bool)
    m[:, 10:24, 12:36] = True
    for t in range(frames):
        x = int(round(24 + 10 * math.sin(2 * math.pi * t / period_frames)))
        m[t, 24:40, x - 2 : x + 2] = True
    return m


@pytest.mark.parametrize("period", [25.0, 40.0, 62.5])
def test_gait_period_of_a_periodic_silhouette(period):
    fps = 100.0
    got = M.estimate_gait_period(swinging_leg_masks(period, 300), fps)
    assert got == pytest.approx(period / fps, rel=0.04)


@pytest.mark.parametrize("jitter", [0.3, 0.5])
def test_gait_period_of_a_noisily_segmented_silhouette(jitter):
    """Edge pixels flipped at random in every frame (a small robot, flow masks): the repeat is still found."""
    import cv2

    rng = np.random.default_rng(0)
    m = swinging_leg_masks(25.0, 51)
    for t in range(len(m)):
        edge = cv2.dilate(m[t].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        m[t] ^= edge & (rng.random(m[t].shape) < jitter)
    assert M.estimate_gait_period(m, 25.0) == pytest.approx(1.0, rel=0.04)


def test_gait_period_none_when_still_and_warns_when_too_short(caplog):
    still = np.repeat(swinging_leg_masks(40.0, 1), 200, axis=0)
    assert M.estimate_gait_period(still, 100.0) is None
    with caplog.at_level(logging.WARNING, logger="nil.reference.motion"):
        assert M.estimate_gait_period(swinging_leg_masks(100.0, 60), 100.0) is None
    msg = caplog.text
    assert "shorter than one gait period" in msg and "generator.seconds" in msg and "rl.gait_clock" in msg


def batch_with_masks(masks: torch.Tensor, t: torch.Tensor):
    """A SimBatch of len(t) envs at rest with the given robot masks."""
    from nil.sim.base import SimBatch

    n = len(t)
    z = lambda *s: torch.zeros(*s)  # noqa: E731
    return SimBatch(
        obs=z(n, 4),
        rgb=torch.zeros(n, *masks.shape[1:], 3, dtype=torch.uint8),
        mask=masks.bool(),
        terminated=torch.zeros(n, dtype=torch.bool),
        truncated=torch.zeros(n, dtype=torch.bool),
        t=t.long(),
        qpos=z(n, 15),
        qvel=z(n, 14),
        joint_vel=z(n, 8),
        torque=z(n, 8),
        action=z(n, 8),
        prev_action=z(n, 8),
        foot_contact=torch.zeros(n, 4, dtype=torch.bool),
        foot_vel_xy=z(n, 4, 2),
        torso_up_z=torch.ones(n),
        root_pos=z(n, 3),
        root_lin_vel=z(n, 3),
        nonfinite=torch.zeros(n, dtype=torch.bool),
    )


# ------------------------------------------------------------------ against the synthetic ant teacher
@pytest.fixture(scope="module")
def ant_reference(tmp_path_factory):
    """A 2.5 s synthetic ant reference (generated, segmented) on the textured scene floor."""
    from nil.config import load_config
    from nil.paths import SkillPaths
    from nil.reference.bundle import generate_reference
    from nil.reference.segment.stage import segment_command

    root = tmp_path_factory.mktemp("ant_ref")
    (root / "skill.yaml").write_text("robot:\n  name: ant\nskill: walking\ngenerator:\n  seconds: 2.5\n")
    paths = SkillPaths(root)
    cfg = load_config(paths.config)
    generate_reference(paths, cfg)
    segment_command(root)
    return paths, cfg


def _teacher(paths) -> dict:
    with np.load(paths.teacher) as z:
        return {k: z[k] for k in z.files}


def test_root_velocity_matches_the_teacher(ant_reference):
    from nil.robots import robot_from_config

    paths, cfg = ant_reference
    est = M.reference_root_velocity(paths, robot_from_config(cfg))
    te = _teacher(paths)
    true = np.gradient(te["root_pos"][:, :2].astype(np.float64), 1.0 / float(te["fps"]), axis=0)
    assert est.shape == true.shape
    mean_est, mean_true = est.mean(0), true.mean(0)
    assert mean_true[0] > 0.3  # the teacher walks
    # measured on this reference: 0.470 vs 0.469 and 0.098 vs 0.096 m/s, median 0.035, 0.2 s max 0.043
    assert abs(mean_est[0] - mean_true[0]) < 0.03 * mean_true[0]
    assert abs(mean_est[1] - mean_true[1]) < 0.02
    err = np.linalg.norm(est - true, axis=1)
    assert np.median(err) < 0.06
    k = np.ones(20) / 20  # 0.2 s averages (a policy is rewarded over many steps)
    smooth = [np.convolve(a, k, "valid") for a in (est[:, 0] - true[:, 0], est[:, 1] - true[:, 1])]
    assert np.hypot(*smooth).max() < 0.07


def test_gait_period_matches_the_teacher(ant_reference):
    import json

    from nil.reference.segment import load_masks

    paths, _ = ant_reference
    te = _teacher(paths)
    gait_hz = json.loads(str(te["params"]))["params"]["gait_hz"]
    got = M.estimate_gait_period(load_masks(paths), float(te["fps"]))
    assert got == pytest.approx(1.0 / gait_hz, rel=0.05)


def test_iou_window_keeps_signal_when_the_phase_slips(ant_reference):
    """The reference against itself shifted by 1-3 frames: the frame-exact IoU drops, the window keeps it."""
    from nil.config import RewardConfig
    from nil.reference.segment import load_masks
    from nil.reward import NILReward

    paths, _ = ant_reference
    ref = torch.from_numpy(load_masks(paths))
    t = torch.arange(20, len(ref) - 4, 3)
    res = {}
    for w in (0, 3):
        r = NILReward(
            RewardConfig(use_video=False, iou_window=w),
            ref_masks=ref,
            num_envs=len(t),
            action_dim=8,
            device="cpu",
        )
        for k in (0, 1, 2, 3):
            res[w, k] = float(r(batch_with_masks(ref[t + k], t)).terms["raw/iou"].mean())
        res[w, "still"] = float(
            r(batch_with_masks(ref[:1].expand(len(t), -1, -1), t)).terms["raw/iou"].mean()
        )
    assert res[0, 0] == pytest.approx(1.0) and res[3, 0] == pytest.approx(1.0)
    assert res[0, 3] < res[0, 1] < 0.99  # the paper's IoU loses signal as the phase slips
    assert min(res[3, k] for k in (1, 2, 3)) == pytest.approx(1.0)  # within the window: full credit
    assert res[3, 3] - res[3, "still"] > res[0, 3] - res[0, "still"]  # more margin over standing still


def test_training_never_reads_teacher_npz(ant_reference, monkeypatch, tmp_path):
    """Train a few steps with every beyond-paper reward term on and teacher.npz moved away and watched."""
    import shutil

    from nil.config import load_config
    from nil.paths import SkillPaths
    from nil.rl.trainer import train

    src, _ = ant_reference
    root = tmp_path / "skill"
    shutil.copytree(src.root, root)
    (root / "reference" / "teacher.npz").unlink()
    text = (root / "skill.yaml").read_text()
    text += (
        "reward: {use_video: false, speed_weight: 1.0, iou_window: 2}\n"
        "sim: {num_envs: 2, num_workers: 0}\n"
        "rl: {total_steps: 40, warmup_steps: 20, batch_size: 8, eval_interval: 100000, "
        "checkpoint_interval: 100000, video_interval: 100000, eval_episodes: 1}\n"
    )
    (root / "skill.yaml").write_text(text)
    opened: list[str] = []
    real_load = np.load

    def watched_load(f, *a, **kw):
        opened.append(str(f))
        return real_load(f, *a, **kw)

    monkeypatch.setattr(np, "load", watched_load)
    paths = SkillPaths(root)
    out = train(paths, load_config(paths.config), steps=40, device="cpu", progress=False)
    assert out is not None
    assert not any("teacher" in Path(p).name for p in opened), opened
    assert not (root / "reference" / "teacher.npz").exists()


def test_a_robot_that_does_not_move_reads_zero(ant_reference):
    """e0 held for 0.5 s (the teacher's first frame repeated): no speed, no gait."""
    from nil.reference.segment import load_masks
    from nil.reference.video import read_video
    from nil.robots import robot_from_config

    paths, cfg = ant_reference
    spec = robot_from_config(cfg)
    frames = np.repeat(read_video(paths.retimed).frames[:1], 50, axis=0)
    masks = np.repeat(load_masks(paths)[:1], 50, axis=0)
    model = spec.load_model()
    est = M.estimate_root_velocity(frames, masks, 100.0, spec.camera, float(spec.initial_qpos(model)[2]))
    assert np.abs(est).max() < 0.01
    assert M.estimate_gait_period(masks, 100.0) is None


# ------------------------------------------------------------------ reference/root_velocity.npz cache
@pytest.fixture
def checker_skill(tmp_path, monkeypatch):
    """A skill folder holding a retimed checker-floor reference and its masks; the ant's spec under CAM.

    Returns (paths, spec, calls): `calls` counts the runs of estimate_root_velocity (the real one)."""
    import dataclasses

    from nil.config import parse_config
    from nil.paths import SkillPaths
    from nil.reference.segment.stage import save_masks
    from nil.reference.video import Video, write_video
    from nil.robots import robot_from_config

    paths = SkillPaths(tmp_path / "skill")
    write_video(paths.retimed, Video(checker_video((0.4, 0.1), frames=30), 100.0), quality=10)
    masks = np.zeros((30, 96, 96), bool)
    masks[:, 30:60, 35:60] = True
    save_masks(paths.masks, masks)
    spec = robot_from_config(parse_config({"robot": {"name": "ant"}, "camera": {"width": 96, "height": 96}}))
    spec = dataclasses.replace(spec, camera=CAM)
    calls = [0]
    real = M.estimate_root_velocity

    def counted(*a, **kw):
        calls[0] += 1
        return real(*a, **kw)

    monkeypatch.setattr(M, "estimate_root_velocity", counted)
    return paths, spec, calls


def _root_height(spec) -> float:
    model = spec.load_model()
    return float(spec.initial_qpos(model)[2])


def test_root_velocity_is_computed_once_and_equals_the_uncached_estimate(checker_skill):
    from nil.reference.segment import load_masks
    from nil.reference.video import read_video

    paths, spec, calls = checker_skill
    first = M.reference_root_velocity(paths, spec)
    assert calls == [1] and paths.root_velocity.is_file()
    second = M.reference_root_velocity(paths, spec, load_masks(paths))  # masks given: same content, same key
    assert calls == [1]
    video = read_video(paths.retimed)
    direct = M.estimate_root_velocity(video.frames, load_masks(paths), video.fps, CAM, _root_height(spec))
    assert second.dtype == np.float32 and second.shape == (30, 2)
    np.testing.assert_array_equal(first, direct)
    np.testing.assert_array_equal(second, direct)
    assert abs(float(second[:, 0].mean())) > 0.1  # a real estimate, not zeros


def test_root_velocity_recomputed_when_camera_masks_or_video_change(checker_skill):
    import dataclasses

    from nil.reference.segment.stage import save_masks
    from nil.reference.video import Video, write_video

    paths, spec, calls = checker_skill
    base = M.reference_root_velocity(paths, spec)
    moved = dataclasses.replace(spec, camera=dataclasses.replace(CAM, elevation=-35.0))
    M.reference_root_velocity(paths, moved)
    assert calls == [2]
    offset = dataclasses.replace(spec, camera=dataclasses.replace(CAM, lookat_offset=(0.0, 0.0, 0.05)))
    M.reference_root_velocity(paths, offset)
    assert calls == [3]
    np.testing.assert_array_equal(M.reference_root_velocity(paths, spec), base)  # back: recomputed, same
    assert calls == [4]
    masks = np.zeros((30, 96, 96), bool)
    masks[:, 40:70, 30:55] = True  # re-segmented: another robot outline
    save_masks(paths.masks, masks)
    M.reference_root_velocity(paths, spec)
    assert calls == [5]
    write_video(paths.retimed, Video(checker_video((-0.3, 0.0), frames=30), 100.0), quality=10)
    new = M.reference_root_velocity(paths, spec)
    assert calls == [6] and float(new[:, 0].mean()) < -0.1
    M.reference_root_velocity(paths, spec)
    assert calls == [6]


def test_corrupt_or_malformed_root_velocity_cache_is_recomputed(checker_skill, caplog):
    paths, spec, calls = checker_skill
    good = M.reference_root_velocity(paths, spec)
    paths.root_velocity.write_bytes(b"PK\x03\x04 not an npz")
    with caplog.at_level(logging.WARNING, logger="nil.reference.motion"):
        again = M.reference_root_velocity(paths, spec)
    assert calls == [2] and "unreadable" in caplog.text
    np.testing.assert_array_equal(again, good)
    with np.load(paths.root_velocity) as z:
        key = str(z["key"])
    np.savez(
        paths.root_velocity, key=np.asarray(key), vel=np.zeros((5, 2), np.float32)
    )  # right key, bad shape
    np.testing.assert_array_equal(M.reference_root_velocity(paths, spec), good)
    assert calls == [3]
    M.reference_root_velocity(paths, spec)
    assert calls == [3]


def test_a_flat_floor_error_is_remembered_for_the_same_inputs(checker_skill):
    from nil.reference.video import Video, write_video

    paths, spec, calls = checker_skill
    frames = np.full((30, 96, 96, 3), 255, np.uint8)
    frames[:, 30:60, 35:60] = 90  # the robot on a removed (flat) background
    write_video(paths.retimed, Video(frames, 100.0), quality=10)
    for _ in range(2):
        with pytest.raises(VideoError, match=r"reward\.speed_weight"):
            M.reference_root_velocity(paths, spec)
    assert calls == [1]


def test_linked_seed_folders_share_the_cache_and_a_resegmented_seed_gets_its_own(checker_skill, tmp_path):
    import os

    from nil.paths import SkillPaths
    from nil.reference.segment.stage import save_masks
    from nil.scale.references import link_stage1, stage1_files

    ref, spec, calls = checker_skill
    base = M.reference_root_velocity(ref, spec)
    assert ref.root_velocity.relative_to(ref.root) in stage1_files(ref.root)
    seeds = [SkillPaths(tmp_path / f"seed{i}") for i in range(2)]
    for s in seeds:
        link_stage1(ref.root, s.root)
        np.testing.assert_array_equal(M.reference_root_velocity(s, spec), base)
    assert calls == [1]
    masks = np.zeros((30, 96, 96), bool)
    masks[:, 40:70, 30:55] = True
    save_masks(seeds[0].masks, masks)  # seed 0 re-segmented: its own masks, atomically (the link replaced)
    M.reference_root_velocity(seeds[0], spec)
    assert calls == [2]
    assert not os.path.samefile(seeds[0].root_velocity, ref.root_velocity)
    assert os.path.samefile(seeds[1].root_velocity, ref.root_velocity)  # the shared copy was not rewritten
    for s in (ref, seeds[1]):
        np.testing.assert_array_equal(M.reference_root_velocity(s, spec), base)
    assert calls == [2]


def test_a_static_watermark_does_not_pull_the_speed_towards_zero(menagerie_root, monkeypatch):
    """The A1 seen by issue 14's perturbed camera (near level, the floor kept) under an "AI VIDEO" stamp:
    the watermark's corners stay put while the floor slides, and they used to read as "not moving"."""

    import cv2

    from nil.config import parse_config
    from nil.reference import known_answer as ka
    from nil.reference.calibrate import Camera
    from nil.robots import robot_from_config

    side = 160
    spec = robot_from_config(
        parse_config({"robot": {"name": "unitree_a1"}, "camera": {"width": side, "height": side}})
    )
    true = ka.perturbed(Camera.of(spec.camera))
    rgb, masks = ka.render_clip(spec, true, hw=(2 * side, 2 * side), num_frames=30, fps=25.0)  # glides at 0.3
    clip = ka.stamp_watermark(ka.restyle(rgb, masks, "scene", watermark=False))
    frames = np.stack([cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA) for f in clip])
    small = np.stack(
        [cv2.resize(m.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST) > 0 for m in masks]
    )
    cam = true.on(spec.camera)
    h = float(M.initial_root_pose(spec)[2])
    est = M.estimate_root_velocity(frames, small, 25.0, cam, h).mean(0)
    np.testing.assert_allclose(est, (0.3, 0.0), atol=0.03)
    monkeypatch.setattr(M, "_drop_overlay", lambda p0, p1: (p0, p1))  # what the estimate was before
    biased = M.estimate_root_velocity(frames, small, 25.0, cam, h).mean(0)
    assert np.linalg.norm(biased - (0.3, 0.0)) > 0.1, biased
