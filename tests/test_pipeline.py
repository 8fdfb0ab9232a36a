"""`nil run` end to end on a tiny skill: every bundle file, stage caching, resuming, the shipped presets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from nil.config import config_to_dict, load_config, parse_config, save_config
from nil.evaluation.pipeline import demo_config, run_skill
from nil.paths import SkillPaths

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# A skill small enough for a test: tiny renders, a short reference, a few hundred SAC steps.
TINY = [
    "camera.width=40",
    "camera.height=40",
    "generator.seconds=0.6",
    "robot.control_hz=25",
    "rl.total_steps=160",
    "rl.warmup_steps=64",
    "rl.batch_size=32",
    "rl.actor_width=32",
    "rl.critic_width=32",
    "rl.eval_interval=160",
    "rl.eval_episodes=1",
    "rl.checkpoint_interval=80",
    "rl.video_interval=100000",
    "rl.log_interval=16",
    "rl.device=cpu",
    "sim.num_envs=2",
    "sim.num_workers=0",
    # the demo's input-dependent switches need what a tiny reference lacks: a trackable floor at 40 px
    # (the speed cue) and a reference longer than one gait period (the gait clock)
    "reward.speed_weight=0",
    "rl.gait_clock=false",
]


def _tiny_skill(root: Path) -> SkillPaths:
    cfg = demo_config(TINY)
    save_config(cfg, root)
    return SkillPaths(root)


def test_examples_are_valid_and_have_the_paper_settings():
    for name in ("h1", "g1", "talos", "a1"):
        cfg = load_config(EXAMPLES / f"{name}_walk.yaml")
        assert (cfg.reward.zeta, cfg.reward.beta, cfg.reward.eta) == (1.0, 1.0, 1.0)
        assert cfg.reward.use_video and cfg.reward.beta > 0 and cfg.reward.eta > 0
        assert cfg.generator.name == "diffusers" and "CogVideoX" in cfg.generator.model_id
        assert cfg.segmenter.name == "sam2" and cfg.encoder.name == "timesformer"
        assert cfg.rl.algo == "bro" and cfg.sim.backend == "warp" and cfg.sim.device == "cuda"


def test_demo_yaml_matches_what_nil_demo_writes(tmp_path):
    shipped = load_config(EXAMPLES / "demo.yaml")
    assert config_to_dict(shipped) == config_to_dict(demo_config())
    # the text too (below its comment header): a key missing from the file would parse to its default
    # and pass the comparison above, yet the file would no longer show the user every value
    written = save_config(demo_config(), tmp_path / "skill.yaml").read_text()
    lines = (EXAMPLES / "demo.yaml").read_text().splitlines(keepends=True)
    body = "".join(line for line in lines if not line.startswith("#"))
    assert body == written, "examples/demo.yaml is stale: regenerate it (the command is in its header)"
    cfg = demo_config()
    assert cfg.robot.name == "ant" and cfg.generator.name == "synthetic" and cfg.segmenter.name == "flow"
    assert not cfg.reward.use_video and cfg.rl.algo == "sac"
    from nil.presets import get_preset

    demo = get_preset("demo").config()  # the one source of the demo's values
    assert (cfg.rl.total_steps, cfg.reward.eta, cfg.robot.control_hz, cfg.camera.width) == (
        demo.rl.total_steps,
        demo.reward.eta,
        demo.robot.control_hz,
        demo.camera.width,
    )


@pytest.mark.slow
def test_tiny_run_produces_every_file_then_skips_every_stage(tmp_path, monkeypatch):
    paths = _tiny_skill(tmp_path / "skill")
    m = run_skill(paths.root, steps=80, quiet=True)  # stops at step 80, like a killed run would
    assert m["stages"]["generate"] == "ran" and m["stages"]["segment"] == "ran"
    assert m["policy"]["step"] >= 80

    # resumed where it stopped: only the remaining steps are trained
    m = run_skill(paths.root, quiet=True)
    assert m["stages"]["generate"].startswith("skipped") and m["stages"]["segment"].startswith("skipped")
    assert "resumed at step 80" in m["stages"]["train"], m["stages"]
    assert m["policy"]["step"] >= 160

    for p in (
        paths.config,
        paths.frame0,
        paths.frame0_mask,
        paths.video,
        paths.retimed,
        paths.meta,
        paths.masks,
        paths.segment_meta,
        paths.teacher,
        paths.metrics,
        paths.side_by_side,
        paths.report,
    ):
        assert p.is_file() and p.stat().st_size > 0, p
    assert list(paths.checkpoints.glob("step_*/policy.pt"))
    assert list((paths.train / "tb").rglob("events.out.tfevents.*"))

    metrics = json.loads(paths.metrics.read_text())
    assert set(metrics["baselines"]) >= {"random", "zero", "teacher"}
    teacher = metrics["baselines"]["teacher"]
    assert teacher["velocity_ratio"] == 1.0 and teacher["mean_velocity"] > 0
    assert teacher["mean_iou"] > 0.6  # segmented reference vs the teacher's exact masks
    for row in (metrics["trained"], metrics["baselines"]["random"]):
        assert 0.0 <= row["mean_iou"] <= 1.0
        assert np.isfinite(row["joint_rmse_dtw"]) and np.isfinite(row["velocity_ratio"])
        assert row["reg_total"] <= 0.0
    horizon = metrics["horizon"]
    assert len(metrics["per_frame_iou"]["trained"]) == horizon
    # the per-frame mean over the 5 episodes is the figure's own breakdown: its mean is the row's mean IoU
    for row, figures in (("trained", metrics["trained"]), ("zero", metrics["baselines"]["zero"])):
        frames = metrics["per_frame_iou_mean"][row]
        assert len(frames) == horizon and abs(np.mean(frames) - figures["mean_iou"]) < 2e-4
    # the measurement protocol: >= 5 episodes by default, mean ± sd and each episode's headline figures
    assert metrics["episodes"] == 5 and len(metrics["per_episode"]["trained"]["mean_iou"]) == 5
    assert metrics["sd"]["trained"]["mean_iou"] >= 0.0 and metrics["ramp_steps"] <= horizon // 2
    assert metrics["warnings"] == [] and metrics["teacher_speed"] > 0.05
    assert "SYNTHETIC TEACHER REFERENCE" in paths.report.read_text()

    # second run: every stage is cached, so none of the expensive work may run
    def boom(*a, **k):
        raise AssertionError("an expensive stage ran although its cache was valid")

    import nil.evaluation.evaluate as ev
    import nil.evaluation.report as rep
    import nil.reference.generators as gens
    import nil.rl.trainer as trainer

    monkeypatch.setattr(trainer.Trainer, "run", boom)
    monkeypatch.setattr(ev, "run_episode", boom)
    monkeypatch.setattr(rep, "build_report", boom)
    gen_cls = type(gens.make_generator(load_config(paths.config)))
    monkeypatch.setattr(gen_cls, "generate", boom)
    from nil.reference.segment.flow import FlowSegmenter

    monkeypatch.setattr(FlowSegmenter, "segment", boom)
    before = {p: p.stat().st_mtime_ns for p in (paths.metrics, paths.report, paths.side_by_side, paths.masks)}
    m2 = run_skill(paths.root, quiet=True)
    assert all(v.startswith("skipped") for v in m2["stages"].values()), m2["stages"]
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert m2["trained"] == m["trained"]


@pytest.mark.slow
def test_eval_says_when_the_reference_does_not_move(tmp_path):
    """A teacher that stands still: eval warns (in metrics.json and the table) and gives no ratio."""
    from nil.evaluation.evaluate import evaluate

    paths = _tiny_skill(tmp_path / "skill")
    run_skill(paths.root, steps=32, episodes=1, quiet=True)
    with np.load(paths.teacher) as z:
        teacher = {k: z[k] for k in z.files}
    for key in ("qpos", "root_pos"):
        teacher[key][:, 0] = teacher[key][0, 0]  # the robot marches on the spot: no forward motion
    np.savez_compressed(paths.teacher, **teacher)
    m = evaluate(paths, episodes=1, force=True, write_video=False, quiet=True)
    assert len(m["warnings"]) == 1 and "does not move forward" in m["warnings"][0]
    assert "velocity_ratio" not in m["trained"] and "velocity_ratio" not in m["baselines"]["teacher"]
    assert m["teacher_speed"] == pytest.approx(0.0, abs=1e-9) and "mean_iou" in m["trained"]


def test_run_command_without_config_says_what_to_do(tmp_path):
    from nil.errors import ConfigError
    from nil.evaluation.pipeline import run_command

    with pytest.raises(ConfigError, match="nil init"):
        run_command(tmp_path / "nothing")


def test_demo_config_round_trips_through_yaml(tmp_path):
    cfg = demo_config()
    p = save_config(cfg, tmp_path)
    assert parse_config(yaml.safe_load(p.read_text())) == cfg


def test_interrupted_training_stops_the_pipeline_before_eval(tmp_path, monkeypatch):
    import nil.evaluation.evaluate as ev
    import nil.reference.bundle as bundle
    import nil.reference.segment as seg
    import nil.rl as rl

    paths = _tiny_skill(tmp_path / "skill")
    calls = []
    monkeypatch.setattr(bundle, "generate_reference", lambda p, c, force=False: calls.append("generate"))
    monkeypatch.setattr(seg, "segment_reference", lambda p, c, force=False: calls.append("segment"))
    monkeypatch.setattr(rl, "train", lambda p, c, steps=None, resume=False: {"interrupted": True, "step": 42})
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: calls.append("eval"))
    with pytest.raises(KeyboardInterrupt):
        run_skill(paths.root, quiet=True)
    assert calls == ["generate", "segment"]


@pytest.mark.slow
def test_eval_reads_a_still_robot_from_the_video_alone(tmp_path):
    """No teacher (a video model's or a user's reference): the floor's motion in the video says the robot
    stands still, and eval says so; a walking reference reads its speed."""
    from nil.evaluation.evaluate import video_motion
    from nil.reference.bundle import generate_reference
    from nil.reference.segment import load_masks, segment_reference
    from nil.reference.video import Video, read_video, write_video
    from nil.robots import robot_from_config

    cfg = demo_config([*TINY, "generator.seconds=1.0", "camera.width=80", "camera.height=80"])
    paths = SkillPaths(tmp_path / "skill")
    save_config(cfg, paths.root)
    generate_reference(paths, cfg)
    segment_reference(paths, cfg)
    spec, masks = robot_from_config(cfg), load_masks(paths)
    with np.load(paths.teacher) as z:  # ground truth, only to check the estimate
        true_speed = float(np.linalg.norm(z["root_pos"][-1, :2] - z["root_pos"][0, :2]) / 1.0)
    speed, warnings = video_motion(paths, spec, masks)
    assert speed == pytest.approx(true_speed, rel=0.35) and warnings == []
    video = read_video(paths.retimed)
    write_video(paths.retimed, Video(np.repeat(video.frames[:1], len(video.frames), 0), video.fps))
    speed, warnings = video_motion(paths, spec, np.repeat(masks[:1], len(masks), 0))
    assert speed < 0.05 and len(warnings) == 1 and "does not travel" in warnings[0]
