"""`nil export`: the exported ONNX / TorchScript policy reproduces the PyTorch policy on recorded obs."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from nil.cli import main
from nil.config import parse_config, save_config
from nil.errors import MissingStageError
from nil.paths import SkillPaths
from nil.rl.agents import make_agent
from nil.rl.checkpoint import load_policy, save_checkpoint
from nil.rl.export import build_exported, export_policy

HORIZON = 40


def _record_observations(cfg, steps: int = 25) -> tuple[torch.Tensor, object]:
    """Observations of a real one-env rollout under random actions (plus the spec)."""
    from nil.robots import robot_from_config
    from nil.sim import make_sim

    spec = robot_from_config(cfg)
    sim = make_sim(spec, cfg.sim, num_envs=1, horizon=HORIZON, seed=0)
    try:
        gen = torch.Generator().manual_seed(0)
        batch = sim.reset()
        obs = [batch.obs.clone()]
        for _ in range(steps):
            batch = sim.step(torch.rand((1, sim.action_dim), generator=gen) * 2 - 1)
            obs.append(batch.obs.clone())
    finally:
        sim.close()
    return torch.cat(obs), spec


@pytest.fixture(scope="module", params=["sac", "bro"])
def trained_skill(request, tmp_path_factory):
    """A skill dir with a checkpoint whose normaliser has seen real observations."""
    algo = request.param
    root = tmp_path_factory.mktemp(f"skill_{algo}")
    cfg = parse_config(
        {
            "robot": {"name": "ant"},
            "sim": {"backend": "mujoco", "num_envs": 1, "num_workers": 0},
            "rl": {"algo": algo, "actor_width": 32, "actor_depth": 2, "critic_width": 16, "critic_depth": 1},
        }
    )
    save_config(cfg, root)
    obs, spec = _record_observations(cfg)
    torch.manual_seed(1)
    agent = make_agent(cfg.rl, obs.shape[1], 8)
    agent.obs_norm.update(obs * 3.0 + 0.5)  # statistics that differ from the identity
    with torch.no_grad():
        for p in agent.actor.parameters():
            p.mul_(3.0)  # larger weights: actions spread over (-1, 1), some near the tanh saturation
    paths = SkillPaths(root)
    save_checkpoint(paths.checkpoints, 123, {"policy": agent.policy_state()})
    paths.reference.mkdir(parents=True, exist_ok=True)
    paths.meta.write_text(json.dumps({"retimed_num_frames": HORIZON + 1}))
    return root, obs, spec, algo


def _reference_outputs(root, obs, spec):
    """PyTorch actions of the policy NIL itself loads, and the ctrl the simulator would write."""
    policy = load_policy(root)
    action = policy.act(obs, deterministic=True).numpy()
    model = spec.load_model()
    offset, scale = spec.ctrl_affine(model)
    ctrl = offset + scale * action
    limited = model.actuator_ctrllimited.astype(bool)
    lo, hi = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
    ctrl = np.where(limited, np.clip(ctrl, lo, hi), ctrl)
    return action, ctrl.astype(np.float32)


def test_onnx_matches_pytorch_on_recorded_observations(trained_skill, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    root, obs, spec, algo = trained_skill
    res = export_policy(root, "onnx", tmp_path / "out")
    sess = ort.InferenceSession(res["path"], providers=["CPUExecutionProvider"])
    ctrl, action = sess.run(["ctrl", "action"], {"obs": obs.numpy().astype(np.float32)})
    want_action, want_ctrl = _reference_outputs(root, obs, spec)
    assert action.shape == (obs.shape[0], 8)
    np.testing.assert_allclose(action, want_action, atol=1e-5)
    np.testing.assert_allclose(ctrl, want_ctrl, atol=1e-5)
    assert np.abs(want_action).max() > 0.5 and np.std(want_action) > 0.1  # a policy that does something
    # a batch of one (deployment) works too: the batch axis is dynamic
    one = sess.run(["action"], {"obs": obs[:1].numpy()})[0]
    np.testing.assert_allclose(one, want_action[:1], atol=1e-5)
    info = json.loads((tmp_path / "out" / "policy.json").read_text())
    assert info["algo"] == algo and info["checkpoint_step"] == 123 and info["file"] == "policy.onnx"


def test_torchscript_matches_pytorch_on_recorded_observations(trained_skill, tmp_path):
    root, obs, spec, _ = trained_skill
    res = export_policy(root, "torchscript", tmp_path / "ts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load: deprecated, still supported
        loaded = torch.jit.load(res["path"])
    with torch.no_grad():
        ctrl, action = loaded(obs)
    want_action, want_ctrl = _reference_outputs(root, obs, spec)
    np.testing.assert_allclose(action.numpy(), want_action, atol=1e-5)
    np.testing.assert_allclose(ctrl.numpy(), want_ctrl, atol=1e-5)


def test_policy_json_describes_observation_and_control_rate(trained_skill):
    root, obs, spec, _ = trained_skill
    module, info = build_exported(root)
    assert info["control_hz"] == pytest.approx(spec.control_hz) and info["horizon"] == HORIZON
    layout = info["observation_layout"]
    assert [p["name"] for p in layout] == ["qpos", "qvel", "phase"]
    assert sum(p["size"] for p in layout) == obs.shape[1] == info["inputs"]["obs"]["shape"][1]
    qpos = layout[0]
    assert qpos["entries"][0].endswith(".z") and len(qpos["entries"]) == spec.load_model().nq - 2
    # the phase entry is t/horizon: the recorded rollout's last obs is at t=25
    assert obs[-1, layout[2]["start"]].item() == pytest.approx(25 / HORIZON, abs=1e-6)
    amap = info["action_map"]
    assert len(amap["actuators"]) == len(amap["ctrl_scale"]) == 8
    assert info["normaliser_folded_in"] is True


def test_export_before_training_is_a_one_line_error(tmp_path, capsys):
    cfg = parse_config({"robot": {"name": "ant"}})
    save_config(cfg, tmp_path)
    with pytest.raises(MissingStageError, match="no trained policy.*nil train"):
        export_policy(tmp_path, "onnx")
    assert main(["export", str(tmp_path), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: nil export:") and "nil train" in err and "\n" not in err
    assert main(["export", str(tmp_path), "--format", "tflite"]) == 2
    assert "--format must be one of" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "not_a_skill")]) == 2
    assert "no skill.yaml" in capsys.readouterr().err


def test_layout_names_prev_action_and_gait_clock_and_refuses_a_mismatch():
    from nil.errors import CheckpointError
    from nil.rl.export import observation_layout
    from nil.robots import get_robot

    model = get_robot("ant").load_model()
    sim_dim = model.nq - 2 + model.nv + 1
    lay = observation_layout(model, sim_dim + model.nu + 2, prev_action=True, gait_clock=True)
    assert [p["name"] for p in lay] == ["qpos", "qvel", "phase", "prev_action", "gait_clock"]
    assert lay[3]["start"] == sim_dim and lay[3]["size"] == model.nu and lay[4]["entries"] == ["sin", "cos"]
    assert lay[1]["entries"][:3] == [f"{lay[1]['entries'][0].split('.')[0]}.{a}" for a in ("vx", "vy", "vz")]
    with pytest.raises(
        CheckpointError, match=r"takes \d+ observation entries but the skill config describes"
    ):
        observation_layout(model, sim_dim + 3)


def test_layout_stored_with_the_policy_is_exported(tmp_path):
    """Trained with rl.obs_prev_action + rl.gait_clock: the JSON names both, and ONNX still matches."""
    ort = pytest.importorskip("onnxruntime")
    from nil.rl.observation import ObservationLayout

    cfg = parse_config({"robot": {"name": "ant"}, "rl": {"actor_width": 16, "critic_width": 16}})
    save_config(cfg, tmp_path)
    sim_obs, spec = _record_observations(cfg, steps=5)
    layout = ObservationLayout(sim_obs.shape[1], 8, prev_action=True, gait_clock=True, gait_period_steps=20.0)
    g = torch.Generator().manual_seed(3)
    obs = layout.build(sim_obs, torch.rand(len(sim_obs), 8, generator=g) * 2 - 1, torch.arange(len(sim_obs)))
    agent = make_agent(cfg.rl, layout.dim, 8)
    agent.obs_norm.update(obs)
    save_checkpoint(
        SkillPaths(tmp_path).checkpoints,
        7,
        {"policy": agent.policy_state() | {"observation": layout.to_dict()}},
    )
    res = export_policy(tmp_path, "onnx")
    names = [p["name"] for p in res["observation_layout"]]
    assert (
        names == ["qpos", "qvel", "phase", "prev_action", "gait_clock"] and res["gait_period_steps"] == 20.0
    )
    sess = ort.InferenceSession(res["path"], providers=["CPUExecutionProvider"])
    action = sess.run(["action"], {"obs": obs.numpy()})[0]
    np.testing.assert_allclose(action, load_policy(tmp_path).act(obs).numpy(), atol=1e-5)
