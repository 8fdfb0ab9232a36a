"""`nil run` end to end on a tiny skill: every bundle file, stage caching, resuming, and the shipped presets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from nil.config import config_to_dict, load_config, parse_config, save_config
from nil.evaluation.pipeline import DEMO_OVERRIDES, demo_config, run_skill
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
]


def _tiny_skill(root: Path) -> SkillPaths:
    cfg = demo_config(TINY)
    save_config(cfg, root)
    return SkillPaths(root)


def test_examples_are_valid_and_have_the_paper_settings():
    for name in ("h1", "g1", "talos", "a1"):
        cfg = load_config(EXAMPLES / f"{name}_walk.yaml")
        assert (cfg.reward.zeta, cfg.reward.beta, cfg.reward.eta) == (1.0, 1.0, 1.0)
        assert cfg.reward.use_video and cfg.reward.use_iou and cfg.reward.use_reg
        assert cfg.generator.name == "diffusers" and "CogVideoX" in cfg.generator.model_id
        assert cfg.segmenter.name == "sam2" and cfg.encoder.name == "timesformer"
        assert cfg.rl.algo == "bro" and cfg.sim.backend == "warp" and cfg.sim.device == "cuda"


def test_demo_yaml_matches_what_nil_demo_writes():
    shipped = load_config(EXAMPLES / "demo.yaml")
    assert config_to_dict(shipped) == config_to_dict(demo_config())
    cfg = demo_config()
    assert cfg.robot.name == "ant" and cfg.generator.name == "synthetic" and cfg.segmenter.name == "flow"
    assert not cfg.reward.use_video and cfg.rl.algo == "sac"
    assert all("=" in o for o in DEMO_OVERRIDES)


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
