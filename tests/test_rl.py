"""Learner tests: buffer, normaliser, SAC/BRO updates, bootstrapping, checkpoints, resume, signals, the loop.

The loop runs on FakeSim (a BatchedSim-compatible linear system, tiny images) and FakeReward, so these
tests need neither MuJoCo nor the reward layer.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import FakeReward, FakeSim
from nil.config import RLConfig, SkillConfig
from nil.errors import CheckpointError, MissingStageError, TrainingError
from nil.paths import SkillPaths
from nil.rl.agents import BROAgent, SACAgent, make_agent, quantile_huber_loss
from nil.rl.checkpoint import (
    latest_good,
    list_checkpoints,
    load_file,
    load_policy,
    save_checkpoint,
    verify_checkpoint,
)
from nil.rl.networks import BroNet, Critics, EnsembleLayerNorm
from nil.rl.normalizer import RunningNormalizer
from nil.rl.replay import Batch, ReplayBuffer
from nil.rl.trainer import Trainer, resolve_device, rng_state, set_rng_state
from nil.sim.base import BatchedSim


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks are overhead-bound; OpenMP threads spinning on a shared 2-core box slow them 10x."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


TINY = dict(actor_width=32, actor_depth=1, critic_width=32, critic_depth=1, batch_size=32, n_quantiles=8)


# ---------------------------------------------------------------------------------------------- helpers
def make_cfg(**rl) -> SkillConfig:
    base = dict(
        TINY,
        total_steps=200,
        warmup_steps=40,
        eval_interval=10_000,
        checkpoint_interval=100,
        video_interval=10_000,
        log_interval=40,
        eval_episodes=1,
    )
    base.update(rl)
    return SkillConfig(rl=RLConfig(**base), seed=3)


def eval_env_for(sim: FakeSim, cfg: SkillConfig) -> dict:
    """Eval envs like the training envs, as `train` builds them (a sim of their own with its own reward)."""
    eval_sim = FakeSim(
        num_envs=cfg.rl.eval_episodes,
        action_dim=sim.action_dim,
        horizon=sim.horizon,
        fall=sim.fall,
        hw=sim.image_hw[0],
    )
    return {"eval_sim": eval_sim, "eval_reward": FakeReward()}


def make_trainer(tmp: Path, cfg: SkillConfig, sim: FakeSim | None = None, reward=None, steps=None, **kw):
    sim = sim or FakeSim()
    return Trainer(
        SkillPaths(tmp),
        cfg,
        sim,
        reward or FakeReward(),
        device=torch.device("cpu"),
        total_steps=steps or cfg.rl.total_steps,
        progress=False,
        **(eval_env_for(sim, cfg) | kw),
    )


def run_trainer(
    tmp: Path, cfg: SkillConfig, sim: FakeSim | None = None, reward=None, resume=False, steps=None, **kw
):
    trainer = make_trainer(tmp, cfg, sim, reward, steps, **kw)
    return trainer, trainer.run(resume=resume)


# ---------------------------------------------------------------------------------------------- buffer
def test_replay_buffer_wraps_and_round_trips(tmp_path):
    buf = ReplayBuffer(10, 3, 2)
    for k in range(4):  # 12 transitions into 10 slots: the two oldest are overwritten
        base = torch.arange(3) + 3 * k
        buf.add(
            base[:, None].float().repeat(1, 3),
            torch.ones(3, 2) * k,
            base.float(),
            -base[:, None].float().repeat(1, 3),
            (base % 2).float(),
        )
    assert len(buf) == 10 and buf.ptr == 2
    assert buf.reward[:2].tolist() == [10.0, 11.0]  # newest wrote over slots 0, 1
    buf.save(tmp_path / "r.pt")
    back = ReplayBuffer.load(tmp_path / "r.pt")
    assert back.ptr == 2 and len(back) == 10
    for name in ("obs", "action", "reward", "next_obs", "terminated"):
        assert torch.equal(getattr(back, name)[:10], getattr(buf, name)[:10])
    b = back.sample(5, torch.Generator().manual_seed(0))
    assert b.obs.shape == (5, 3) and b.action.shape == (5, 2) and b.terminated.shape == (5,)
    with pytest.raises(CheckpointError, match="obs_dim"):
        ReplayBuffer(10, 4, 2).load_state_dict(buf.state_dict())


def test_normalizer_matches_batch_statistics():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(1000, 3, generator=g) * torch.tensor([1.0, 5.0, 0.1]) + torch.tensor([3.0, -2.0, 0.0])
    norm = RunningNormalizer(3)
    for chunk in data.split(37):
        norm.update(chunk)
    assert torch.allclose(norm.mean.float(), data.mean(0), atol=1e-5)
    assert torch.allclose(norm.var.float(), data.var(0, unbiased=False), rtol=1e-4)
    z = norm(data)
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-4) and torch.allclose(
        z.std(0), torch.ones(3), atol=1e-2
    )
    before = norm.state_dict()
    norm.update(torch.tensor([[float("nan"), 0.0, 0.0]]))  # ignored (without a host sync)
    assert float(norm.count) == 1000 and torch.equal(norm.mean, before["mean"])
    assert torch.equal(norm.var, before["var"])
    empty = RunningNormalizer(3)
    empty.update(torch.full((2, 3), float("inf")))  # nothing finite seen yet: the initial statistics stay
    assert torch.equal(empty.mean, torch.zeros(3, dtype=torch.float64)) and float(empty.count) == 0
    other = RunningNormalizer(3)
    other.load_state_dict(norm.state_dict())
    assert torch.equal(other(data), z)
    assert norm(torch.tensor([[1e6, 0.0, 0.0]]))[0, 0] == 10.0  # clipped


# ---------------------------------------------------------------------------------------------- agents
def _const_target(agent: SACAgent, value: float) -> None:
    head = agent.critic_target.net.head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(value)


@pytest.mark.parametrize("algo", ["sac", "bro"])
def test_terminated_cuts_bootstrap_truncated_does_not(algo):
    torch.manual_seed(0)
    agent = make_agent(RLConfig(algo=algo, init_temperature=1e-12, gamma=0.9, **TINY), 3, 2)
    _const_target(agent, 5.0)  # Q_target(s', a') == 5 for every quantile and both critics
    obs = torch.randn(2, 3)
    batch = Batch(
        obs, torch.zeros(2, 2), torch.tensor([1.0, 1.0]), torch.randn(2, 3), torch.tensor([1.0, 0.0])
    )
    target = agent.td_target(
        batch, batch.next_obs
    )  # row 0: terminated (fall), row 1: truncated / mid-episode
    assert target.shape == (2, agent.n_quantiles)
    assert torch.allclose(target[0], torch.tensor(1.0), atol=1e-6)  # r only
    assert torch.allclose(target[1], torch.tensor(1.0 + 0.9 * 5.0), atol=1e-4)  # r + gamma * Q'


def test_sac_pessimism_is_min_of_critics():
    agent = SACAgent(RLConfig(**TINY), 3, 2)
    q = torch.tensor([[[1.0]], [[3.0]]])
    assert agent.combine(q, -agent.pessimism).item() == 1.0
    bro = BROAgent(RLConfig(algo="bro", **TINY), 3, 2)
    assert bro.combine(q, -bro.pessimism).item() == 2.0 and bro.target_entropy == -1.0


def test_bronet_shapes_and_quantile_loss():
    net = BroNet(5, 7, width=16, depth=2)
    assert net(torch.randn(4, 5)).shape == (4, 7)
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in net.modules()) == 1 + 2 * 2
    critics = Critics("bronet", 3, 2, 16, 2, n_out=10, members=2)
    q = critics(torch.randn(6, 3), torch.randn(6, 2))
    assert q.shape == (2, 6, 10)
    # the two ensemble members are different networks
    assert not torch.allclose(q[0], q[1])
    # fitting free quantiles to samples of N(3, 2^2): with a small kappa the loss recovers the quantiles;
    # with BRO's kappa = 1 the median is kept and the tails are pulled in (Huber)
    levels = (torch.arange(9) + 0.5) / 9
    expected = 3 + 2 * torch.distributions.Normal(0, 1).icdf(levels)
    for kappa in (0.05, 1.0):
        g = torch.Generator().manual_seed(0)
        pred = torch.zeros(1, 1, 9, requires_grad=True)
        opt = torch.optim.Adam([pred], lr=0.05)
        for _ in range(400):
            samples = 3 + 2 * torch.randn(1, 256, generator=g)
            loss = quantile_huber_loss(pred.expand(1, 1, 9), samples, kappa=kappa)
            opt.zero_grad()
            loss.backward()
            opt.step()
        got = pred.detach().flatten()
        assert (got.diff() > 0).all()  # monotone quantiles
        assert abs(got[4] - 3.0) < 0.15
        if kappa < 1:
            assert torch.allclose(got, expected, atol=0.3)
        else:
            assert expected[0] < got[0] < expected[1] and expected[-2] < got[-1] < expected[-1]


@pytest.mark.parametrize("algo", ["sac", "bro"])
def test_agent_learns_a_bandit(algo):
    """One-step task: reward = -|a - 0.5|; the deterministic action must move to ~0.5 in every dim."""
    torch.manual_seed(0)
    agent = make_agent(
        RLConfig(algo=algo, init_temperature=0.05, critic_lr=3e-3, actor_lr=1e-3, **TINY), 3, 2
    )
    g = torch.Generator().manual_seed(1)
    buf = ReplayBuffer(4000, 3, 2)
    a = torch.rand(4000, 2, generator=g) * 2 - 1
    buf.add(
        torch.randn(4000, 3, generator=g),
        a,
        -(a - 0.5).abs().sum(1),
        torch.randn(4000, 3, generator=g),
        torch.ones(4000),
    )
    agent.observe(buf.obs[:4000])
    for _ in range(400):
        stats = agent.update(buf.sample(64))
    act = agent.act(torch.randn(16, 3, generator=g))
    # the untrained policy gives |a - 0.5| = 0.5, uniform random actions 0.625 on average
    assert (act - 0.5).abs().mean() < 0.25, act.mean(0)
    assert all(torch.isfinite(v) for v in stats.values())
    if algo == "bro":
        assert {"train/kl", "train/optimism", "train/kl_weight"} <= stats.keys()
        assert agent.explore(torch.randn(4, 3)).abs().max() <= 1


def test_bro_reset_reinitialises_everything_but_normaliser():
    torch.manual_seed(0)
    agent = BROAgent(RLConfig(algo="bro", **TINY), 3, 2)
    agent.observe(torch.randn(50, 3) + 4)
    buf = ReplayBuffer(100, 3, 2)
    buf.add(torch.randn(100, 3), torch.rand(100, 2), torch.randn(100), torch.randn(100, 3), torch.zeros(100))
    for _ in range(5):
        agent.update(buf.sample(16))
    before = agent.critic.net.fc_in.weight.detach().clone()
    mean = agent.obs_norm.mean.clone()
    agent.reset_networks()
    assert not torch.equal(before, agent.critic.net.fc_in.weight)
    assert torch.equal(agent.critic.net.fc_in.weight, agent.critic_target.net.fc_in.weight)
    assert len(agent.critic_opt.state) == 0 and agent.num_resets == 1
    assert torch.equal(agent.obs_norm.mean, mean)


# ---------------------------------------------------------------------------------------------- checkpoints
def _state_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("algo", ["sac", "bro"])
def test_resume_is_exact_and_next_update_matches(tmp_path, algo):
    torch.manual_seed(0)
    cfg = RLConfig(algo=algo, **TINY)
    agent = make_agent(cfg, 3, 2)
    buf = ReplayBuffer(500, 3, 2)
    buf.add(torch.randn(300, 3), torch.rand(300, 2), torch.randn(300), torch.randn(300, 3), torch.zeros(300))
    agent.observe(buf.obs[:300])
    for _ in range(10):
        agent.update(buf.sample(16))
    ckpt = save_checkpoint(
        tmp_path,
        300,
        {"agent": {"agent": agent.state_dict(), "rng": rng_state()}, "replay": buf.state_dict()},
    )
    saved = copy.deepcopy(agent.state_dict())
    # uninterrupted: one more update
    agent.update(buf.sample(16))
    after = copy.deepcopy(agent.state_dict())

    torch.manual_seed(123)  # scramble the RNG: the checkpoint must restore it
    path, _ = latest_good(tmp_path)
    state = load_file(path, "agent")
    agent2 = make_agent(cfg, 3, 2)
    agent2.load_state_dict(state["agent"])
    buf2 = ReplayBuffer(500, 3, 2)
    buf2.load_state_dict(load_file(path, "replay"))
    set_rng_state(state["rng"])
    assert path == ckpt and _state_equal(agent2.state_dict(), saved)  # weights, optimisers, step counters
    agent2.update(buf2.sample(16))
    assert _state_equal(agent2.state_dict(), after)  # the next update is bit-identical


def test_corrupt_or_partial_checkpoint_is_skipped(tmp_path, capsys):
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, {"agent": {"w": torch.full((100,), float(step))}}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000000000030", "step_000000000020"]
    newest = list_checkpoints(tmp_path)[0]
    raw = bytearray((newest / "agent.pt").read_bytes())
    raw[-20] ^= 0xFF
    (newest / "agent.pt").write_bytes(bytes(raw))
    path, manifest = latest_good(tmp_path)
    assert manifest["step"] == 20
    assert "does not match its checksum" in capsys.readouterr().out
    (path / "manifest.json").unlink()  # now the older one is partial too
    with pytest.raises(CheckpointError, match="every checkpoint"):
        latest_good(tmp_path)


# ---------------------------------------------------------------------------------------------- the loop
def test_training_loop_stores_final_obs_and_resumes(tmp_path):
    cfg = make_cfg(total_steps=200)
    sim = FakeSim(horizon=10, fall=0.3)  # short episodes; some envs fall (|x0| > 0.3) under random actions
    trainer, summary = run_trainer(tmp_path, cfg, sim)
    assert summary["step"] == 200 and not summary["interrupted"]
    buf = trainer.buffer
    n = len(buf)
    assert n == 200
    phase, term = buf.next_obs[:n, -1], buf.terminated[:n]
    truncated = torch.isclose(phase, torch.tensor(1.0))
    # truncated transitions keep the final obs (phase 1 = t at the horizon, not a reset obs) and bootstrap
    assert truncated.sum() > 0 and term[truncated & (buf.next_obs[:n, 0].abs() <= 0.3)].sum() == 0
    # falls are stored as terminated, with their final (fallen) observation
    fell = term.bool()
    assert fell.sum() > 0 and (buf.next_obs[:n][fell, 0].abs() > 0.3).all()
    # replay_ratio * N updates per batched step once warm-up is over, run while the sim steps
    assert trainer.agent.num_updates == (200 - 40) * cfg.rl.replay_ratio
    assert (tmp_path / "train" / "progress.json").exists() and list((tmp_path / "train" / "tb").iterdir())

    # resume to 300: continues from step 200 with the same learner state
    before = copy.deepcopy(trainer.agent.state_dict())
    cfg2 = make_cfg(total_steps=300)
    t2 = Trainer(
        SkillPaths(tmp_path),
        cfg2,
        FakeSim(horizon=10, fall=0.3),
        FakeReward(),
        device=torch.device("cpu"),
        total_steps=100,
        progress=False,
    )
    t2._resume()
    assert t2.counters.step == 200 and _state_equal(t2.agent.state_dict(), before)
    assert torch.equal(t2.buffer.obs[:200], buf.obs[:200])
    t3, s3 = run_trainer(tmp_path, cfg2, FakeSim(horizon=10, fall=0.3), resume=True)
    assert s3["step"] == 300 and t3.agent.num_updates == trainer.agent.num_updates + 100
    policy = load_policy(SkillPaths(tmp_path))
    obs = torch.randn(5, sim.obs_dim)
    assert policy.step == 300 and torch.equal(policy.act(obs), t3.agent.act(obs))


def test_resume_with_other_robot_sizes_is_refused(tmp_path):
    run_trainer(tmp_path, make_cfg(total_steps=60, warmup_steps=60))
    with pytest.raises(TrainingError, match="obs_dim"):
        run_trainer(tmp_path, make_cfg(total_steps=80), FakeSim(action_dim=3), resume=True)
    with pytest.raises(TrainingError, match="critic_width"):
        run_trainer(tmp_path, make_cfg(total_steps=80, critic_width=64), resume=True)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = make_cfg(total_steps=400, checkpoint_interval=100)
    with pytest.raises(TrainingError, match="non-finite loss"):
        run_trainer(tmp_path, cfg, reward=FakeReward(nan_after=60))  # NaN rewards from step ~240
    path, manifest = latest_good(tmp_path / "train" / "checkpoints")
    assert manifest["step"] == 200
    agent = load_file(path, "agent")["agent"]
    assert all(torch.isfinite(v).all() for v in agent["critic"].values())


def test_eval_and_video(tmp_path):
    cfg = make_cfg(total_steps=80, eval_interval=40, video_interval=80, eval_episodes=6)
    ref = np.full((11, 16, 16, 3), 200, np.uint8)
    trainer = make_trainer(tmp_path, cfg, FakeSim(horizon=10), ref_frames=ref, video_fps=10, render_rgb=False)
    summary = trainer.run()
    evals = trainer.counters.evals
    assert [e["step"] for e in evals] == [40, 80] and all(e["length"] == 10 for e in evals)
    assert summary["eval_return"] == evals[-1]["return"]
    videos = sorted((tmp_path / "train" / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["step_000000080.mp4"]
    from nil.reference.video import read_video

    v = read_video(videos[0])
    assert v.num_frames == 10 and v.frames.shape[1:3] == (8, 16)  # reference | agent, at the agent's size
    assert v.frames[:, :, :8].mean() > 150 and v.frames[:, :, 8:].mean() < 50
    # the video's frames were rendered (RGB on for the recording only: the reward here reads none)
    assert abs(v.frames[:, :, 8:].mean() - FakeSim.RGB_VALUE) < 5
    assert not trainer.sim.render_rgb and not trainer.eval_sim.render_rgb


def test_device_and_missing_inputs(tmp_path):
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(TrainingError, match="unknown device"):
        resolve_device("gpu0")
    from nil.rl.trainer import train

    with pytest.raises(MissingStageError, match="nil generate"):
        train(SkillPaths(tmp_path), SkillConfig(rl=RLConfig(device="cpu")))
    paths = SkillPaths(tmp_path)
    paths.reference.mkdir(parents=True)
    paths.meta.write_text("{}")
    paths.retimed.write_bytes(b"")
    with pytest.raises(MissingStageError, match="nil segment"):
        train(paths, SkillConfig(rl=RLConfig(device="cpu")))
    with pytest.raises(CheckpointError, match="without --resume"):
        from nil.rl.trainer import train_command

        (tmp_path / "skill.yaml").write_text("seed: 1\n")
        train_command(tmp_path, resume=True)


SIGTERM_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from fakes import FakeSim, FakeReward
from test_rl import make_cfg
from nil.paths import SkillPaths
from nil.rl.trainer import Trainer
cfg = make_cfg(total_steps=10**6, checkpoint_interval=10**6, warmup_steps=10**6)
sim = FakeSim(step_sleep=0.002)
from pathlib import Path
t = Trainer(SkillPaths(Path({root!r})), cfg, sim, FakeReward(), device=torch.device("cpu"),
            total_steps=10**6, progress=False)
s = t.run()
print("SUMMARY", s["step"], s["interrupted"], sim.closed, flush=True)
"""


def test_sigterm_leaves_a_loadable_checkpoint(tmp_path):
    script = SIGTERM_SCRIPT.format(tests=str(Path(__file__).parent), root=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    progress = tmp_path / "train" / "progress.json"
    deadline = time.time() + 60
    while not progress.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)  # progress.json appears at the first log interval: the loop is running
    assert progress.exists(), proc.stderr.read() if proc.poll() is not None else "no progress"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    line = [x for x in out.splitlines() if x.startswith("SUMMARY")][0].split()
    step, interrupted = int(line[1]), line[2] == "True"
    assert interrupted and step >= 40
    path, manifest = latest_good(tmp_path / "train" / "checkpoints")
    assert manifest["step"] == step
    replay = load_file(path, "replay")
    assert replay["size"] == step
    assert load_policy(tmp_path).act(torch.zeros(2, 3)).shape == (2, 2)


# ---------------------------------------------------------------------------------------------- the fakes
def _params(fn) -> list[str]:
    import inspect

    return [p for p in inspect.signature(fn).parameters if p != "self"]


def test_fakes_implement_the_protocols():
    from nil.reward.base import Reward

    sim, reward = FakeSim(num_envs=1024), FakeReward()
    assert isinstance(sim, BatchedSim) and isinstance(reward, Reward)
    for proto, fake in ((BatchedSim, FakeSim), (Reward, FakeReward)):
        for name, member in vars(proto).items():
            if callable(member) and not name.startswith("_") or name == "__call__":
                assert _params(getattr(fake, name)) == _params(member), (proto.__name__, name)
    # deterministic given the seed; step == step_async + step_wait; set_render switches RGB only
    a = torch.full((1024, 2), 0.3)
    sim.seed(5)
    first = sim.reset().obs.clone()
    sim.step_async(a)
    b1 = sim.step_wait()
    other = FakeSim(num_envs=1024)
    other.seed(5)
    assert torch.equal(other.reset().obs, first)
    assert torch.equal(other.step(a).obs, b1.obs)
    other.set_render(False)
    b2 = other.step(a)
    assert b2.rgb.sum() == 0 and b1.rgb.float().mean() == FakeSim.RGB_VALUE
    sim.seed(6)
    assert not torch.equal(sim.reset().obs, first)
    with pytest.raises(RuntimeError):
        sim.step_wait()
    reward.reset(None, sim.reset())
    out = reward(b1)
    assert out.total.shape == (1024,) and reward.calls == 1 and reward.resets == [None]


# ---------------------------------------------------------------------------------------------- schedule
def test_schedule_with_1024_envs_keeps_training_episodes_whole(tmp_path):
    """Cadence in batched steps, evals on their own envs, training episodes reach the horizon."""
    n, horizon = 1024, 10
    cfg = make_cfg(
        total_steps=n * 40,
        warmup_steps=n,
        replay_ratio=1 / n,  # one update per batched step
        eval_interval=5_000,  # 5 batched steps -> at least one episode (10) apart
        video_interval=10_000,
        checkpoint_interval=5_000,
        log_interval=1_000,  # every batched step
        keep_checkpoints=10,
        eval_episodes=3,
    )
    sim, reward = FakeSim(num_envs=n, horizon=horizon, fall=1e9), FakeReward()
    trainer, summary = run_trainer(tmp_path, cfg, sim, reward)
    sch = trainer.schedule
    assert (sch.log, sch.eval, sch.video, sch.checkpoint) == (1, horizon, horizon, horizon)
    assert summary["step"] == 40 * n
    assert [e["step"] for e in trainer.counters.evals] == [k * horizon * n for k in (1, 2, 3, 4)]
    assert all(e["length"] == horizon for e in trainer.counters.evals)
    steps = sorted(int(p.name.split("_")[1]) for p in list_checkpoints(tmp_path / "train" / "checkpoints"))
    assert steps == [k * horizon * n for k in (1, 2, 3, 4)]
    # the training envs were only ever reset at the start and where their episode ended, at the horizon
    assert sim.reset_calls[0] is None and all(ids == list(range(n)) for ids in sim.reset_calls[1:])
    assert len(sim.reset_calls) == 1 + 40 // horizon
    assert set(sim.episode_lengths) == {horizon} and len(sim.episode_lengths) == n * 40 // horizon
    assert trainer.counters.episodes == n * 4
    # the reward ran once per batched step; reset() primed every new episode from its reset frame (t = 0)
    assert reward.calls == 40 and set(reward.primed_t) == {0} and len(reward.resets) == len(sim.reset_calls)
    # every evaluation starts from the same initial states (its own seed stream), 3 episodes on 3 envs
    assert len(set(trainer.eval_sim.seeds)) == 1 and len(trainer.eval_sim.seeds) == 4
    assert trainer.agent.num_updates == 40 - 1


def test_bro_resets_are_counted_in_updates(tmp_path):
    done_at: dict[int, list[int]] = {}
    for n in (4, 64):
        cfg = make_cfg(
            algo="bro",
            total_steps=n * 30,
            warmup_steps=n * 8,
            replay_ratio=2 / n,  # 2 updates per batched step, whatever N
            reset_updates=[10, 25],
            checkpoint_interval=10**6,
        )
        trainer = make_trainer(tmp_path / str(n), cfg, FakeSim(num_envs=n))
        seen: list[int] = []
        orig_new = trainer._new_learner

        def new_learner(t=trainer, seen=seen, orig=orig_new) -> None:
            orig()
            inner = t.agent.reset_networks

            def reset() -> None:
                seen.append(t.agent.num_updates)
                inner()

            t.agent.reset_networks = reset

        trainer._new_learner = new_learner
        trainer.run()
        assert trainer.agent.num_updates == 2 * (30 - 8) and trainer.agent.num_resets == 2
        done_at[n] = seen
    assert done_at[4] == done_at[64] == [10, 25]


# ------------------------------------------------------------------------------------------- replay on disk
def test_replay_checkpoint_grows_with_filled_size_and_lives_in_the_newest_only(tmp_path):
    sizes = {}
    for capacity, steps in ((10_000, 200), (200_000, 200), (200_000, 400)):
        root = tmp_path / f"{capacity}_{steps}"
        cfg = make_cfg(total_steps=steps, buffer_size=capacity, checkpoint_interval=40, keep_checkpoints=3)
        run_trainer(root, cfg)
        ckpts = list_checkpoints(root / "train" / "checkpoints")
        assert len(ckpts) == 3
        assert (ckpts[0] / "replay.pt").exists()
        assert not any((c / "replay.pt").exists() for c in ckpts[1:])
        for c in ckpts[1:]:  # the older ones still verify (their manifest no longer lists the replay)
            assert "replay.pt" not in verify_checkpoint(c)["files"] and load_file(c, "policy")["obs_dim"] == 3
        sizes[(capacity, steps)] = (ckpts[0] / "replay.pt").stat().st_size
    per_transition = (3 + 2 + 1 + 3 + 1) * 4
    assert abs(sizes[(10_000, 200)] - sizes[(200_000, 200)]) < 1024  # not the capacity
    assert sizes[(200_000, 200)] < 200 * per_transition + 8192
    assert sizes[(200_000, 400)] - sizes[(200_000, 200)] == pytest.approx(200 * per_transition, rel=0.05)


def test_resume_continues_with_the_same_buffer_and_new_reset_noise(tmp_path):
    cfg = make_cfg(total_steps=120, checkpoint_interval=40)
    first = FakeSim()
    trainer, _ = run_trainer(tmp_path, cfg, first)
    assert first.seeds == [cfg.seed]
    saved = {k: v.clone() for k, v in trainer.buffer.state_dict().items() if isinstance(v, torch.Tensor)}
    resumed_sim = FakeSim()
    t2 = make_trainer(tmp_path, make_cfg(total_steps=200, checkpoint_interval=40), resumed_sim)
    t2._resume()
    assert t2.counters.step == 120 and len(t2.buffer) == 120
    for k, v in saved.items():
        assert torch.equal(t2.buffer.state_dict()[k], v), k
    # a new reset-noise stream: the resumed envs do not start where the first run's envs started
    assert resumed_sim.seeds == [cfg.seed + 120]
    fresh = FakeSim()
    fresh.seed(cfg.seed)
    assert not torch.allclose(resumed_sim.reset().obs, fresh.reset().obs)
    _, s3 = run_trainer(tmp_path, make_cfg(total_steps=200, checkpoint_interval=40), FakeSim(), resume=True)
    assert s3["step"] == 200


def test_resume_from_an_older_checkpoint_without_replay_warns_and_refills(tmp_path, capsys):
    cfg = make_cfg(total_steps=160, checkpoint_interval=80)
    run_trainer(tmp_path, cfg)
    newest, older = list_checkpoints(tmp_path / "train" / "checkpoints")[:2]
    (newest / "manifest.json").unlink()  # the newest is broken: resume falls back to the older one
    t = make_trainer(tmp_path, make_cfg(total_steps=240, checkpoint_interval=80))
    t._resume()
    assert t.counters.step == 80 and len(t.buffer) == 0
    assert "holds no replay buffer" in capsys.readouterr().out


def _scripted_evals(trainer: Trainer, returns: list[float], probe: torch.Tensor) -> dict[int, torch.Tensor]:
    """Make each evaluation return the next scripted value; record the agent's actions on `probe` then."""
    acts: dict[int, torch.Tensor] = {}
    script = iter(returns)

    def evaluate(record: bool) -> dict:
        acts[trainer.counters.step] = trainer.agent.act(probe, deterministic=True).clone()
        return {"return": next(script), "length": 10.0, "video": None}

    trainer.evaluate = evaluate
    return acts


def test_keep_best_keeps_the_best_evals_policy_and_eval_uses_it(tmp_path):
    from nil.config import save_config
    from nil.evaluation.evaluate import _checkpoint_fingerprint

    paths = SkillPaths(tmp_path)
    cfg = make_cfg(total_steps=200, eval_interval=40, keep_best=True)
    probe = torch.randn(4, FakeSim().obs_dim)
    trainer = make_trainer(tmp_path, cfg)
    acts = _scripted_evals(trainer, [1.0, 3.0, 2.0, 3.0, 0.0], probe)  # a tie later does not replace it
    trainer.run()
    assert sorted(acts) == [40, 80, 120, 160, 200]
    (best,) = list_checkpoints(paths.best)
    manifest = verify_checkpoint(best)
    assert manifest["step"] == 80 and manifest["eval_return"] == 3.0
    assert list(manifest["files"]) == ["policy.pt"]
    save_config(cfg, paths.config)
    policy = load_policy(paths)
    assert policy.step == 80 and torch.allclose(policy.act(probe), acts[80], atol=1e-6)
    assert not torch.allclose(acts[80], acts[200], atol=1e-3)  # the last policy really differs
    assert _checkpoint_fingerprint(paths)["checkpoint"] == "best/step_000000000080"
    # the same folder with keep_best off evaluates the last policy
    save_config(make_cfg(total_steps=200, eval_interval=40), paths.config)
    assert load_policy(paths).step == 200
    assert _checkpoint_fingerprint(paths)["checkpoint"] == "checkpoints/step_000000000200"


def test_keep_best_off_writes_no_best(tmp_path):
    trainer = make_trainer(tmp_path, make_cfg(total_steps=80, eval_interval=40))
    _scripted_evals(trainer, [1.0, 2.0], torch.zeros(1, FakeSim().obs_dim))
    trainer.run()
    assert trainer.counters.best_eval == 2.0 and not SkillPaths(tmp_path).best.exists()


def test_keep_best_survives_a_resume_from_an_older_checkpoint(tmp_path):
    paths = SkillPaths(tmp_path)
    cfg = make_cfg(total_steps=200, eval_interval=40, keep_best=True, checkpoint_interval=100)
    trainer = make_trainer(tmp_path, cfg)
    _scripted_evals(trainer, [1.0, 2.0, 5.0, 1.0, 1.0], torch.zeros(1, FakeSim().obs_dim))
    trainer.run()
    newest = list_checkpoints(paths.checkpoints)[0]
    assert newest.name.endswith("200")
    shutil.rmtree(newest)  # resume from step 100, whose counters know only the 2.0 at step 80
    t2 = make_trainer(tmp_path, cfg)
    _scripted_evals(t2, [4.0, 4.0, 4.0], torch.zeros(1, FakeSim().obs_dim))
    t2.run(resume=True)
    (best,) = list_checkpoints(paths.best)
    assert verify_checkpoint(best)["step"] == 120 and t2.counters.best_eval == 5.0  # 4.0 never replaced it


# ---------------------------------------------------------------------------------------------- the hot loop
def test_learner_updates_run_between_step_async_and_step_wait(tmp_path):
    events: list[str] = []

    class Recording(FakeSim):
        def step_async(self, action):
            events.append("async")
            super().step_async(action)

        def step_wait(self):
            events.append("wait")
            return super().step_wait()

    cfg = make_cfg(total_steps=80, warmup_steps=40)
    trainer = make_trainer(tmp_path, cfg, Recording())
    orig = trainer._new_learner

    def new_learner() -> None:
        orig()
        upd = trainer.agent.update

        def update(batch):
            events.append("update")
            return upd(batch)

        trainer.agent.update = update

    trainer._new_learner = new_learner
    trainer.run()
    text = " ".join(events)
    assert text.count("async") == 20 and "update update update update" in text
    assert "wait update" not in text and "update async" not in text  # updates only inside a step


def test_nonfinite_observation_ends_the_episode_and_never_reaches_the_buffer(tmp_path):
    class NaNSim(FakeSim):
        def _advance(self, action):
            b = super()._advance(action)
            if self.steps == 7:  # physics blew up in env 1 (the reset batch after it is fine again)
                b.obs[1] = float("nan")
            return b

    cfg = make_cfg(total_steps=80, warmup_steps=80)
    trainer, _ = run_trainer(tmp_path, cfg, NaNSim())
    buf = trainer.buffer
    assert torch.isfinite(buf.next_obs[: len(buf)]).all() and torch.isfinite(buf.obs[: len(buf)]).all()
    row = 6 * 4 + 1  # batched step 7 (index 6), env 1
    assert buf.terminated[row] == 1 and torch.equal(buf.next_obs[row], torch.zeros(3))
    assert buf.obs[row + 4].abs().max() < 0.5  # env 1 was reset: its next obs is a fresh start


# ---------------------------------------------------------------------------------------------- upgrades
def test_nstep_window_returns_and_discounts():
    from nil.rl.nstep import NStepWindow

    buf = ReplayBuffer(100, 1, 1, with_discount=True)
    win = NStepWindow(3, 1, 1, 1, gamma=0.5, device="cpu")
    rewards = [1.0, 2.0, 4.0, 8.0, 16.0]
    dones = [False, False, False, True, False]  # the episode ends at step 3 (a fall)
    for k, (r, d) in enumerate(zip(rewards, dones, strict=True)):
        win.push(
            buf,
            torch.tensor([[float(k)]]),
            torch.tensor([[0.0]]),
            torch.tensor([r]),
            torch.tensor([[float(k + 1)]]),
            torch.tensor([d]),
            torch.tensor([d]),
        )
    assert len(buf) == 3  # steps 0, 1, 2 are out (started 2 steps before the newest)
    assert buf.obs[:3, 0].tolist() == [0.0, 1.0, 2.0]
    assert buf.reward[:3].tolist() == [1 + 0.5 * 2 + 0.25 * 4, 2 + 0.5 * 4 + 0.25 * 8, 4 + 0.5 * 8]
    assert buf.discount[:3].tolist() == [0.125, 0.125, 0.25]  # the last one was cut by the fall
    assert buf.next_obs[:3, 0].tolist() == [3.0, 4.0, 4.0] and buf.terminated[:3].tolist() == [0, 1, 1]
    # one-step windows reduce to plain transitions
    one = ReplayBuffer(10, 1, 1, with_discount=True)
    w1 = NStepWindow(1, 1, 1, 1, gamma=0.9, device="cpu")
    w1.push(
        one,
        torch.ones(1, 1),
        torch.zeros(1, 1),
        torch.tensor([2.0]),
        2 * torch.ones(1, 1),
        torch.tensor([False]),
        torch.tensor([False]),
    )
    assert one.reward[0] == 2.0 and one.discount[0] == pytest.approx(0.9) and one.next_obs[0, 0] == 2.0


def test_nstep_target_uses_the_stored_discount():
    torch.manual_seed(0)
    agent = make_agent(RLConfig(init_temperature=1e-12, gamma=0.9, **TINY), 3, 2)
    _const_target(agent, 5.0)
    b = Batch(
        torch.randn(2, 3),
        torch.zeros(2, 2),
        torch.ones(2),
        torch.randn(2, 3),
        torch.zeros(2),
        torch.tensor([0.81, 0.5]),
    )
    target = agent.td_target(b, b.next_obs)
    assert torch.allclose(target[:, 0], torch.tensor([1 + 0.81 * 5, 1 + 0.5 * 5]), atol=1e-4)


def test_training_with_every_upgrade_on_and_the_policy_reloads_the_same_observation(tmp_path):
    cfg = make_cfg(total_steps=120, critic_layernorm=True, n_step=3, obs_prev_action=True, gait_clock=True)
    trainer, summary = run_trainer(tmp_path, cfg, gait_period_steps=4.0)
    assert summary["step"] == 120
    assert (
        sum(isinstance(m, torch.nn.LayerNorm | EnsembleLayerNorm) for m in trainer.agent.critic.modules())
        == 1
    )
    assert trainer.buffer.discount is not None and len(trainer.buffer) == 120 - 2 * 4  # 2 steps in flight
    layout = trainer.obs_layout
    assert layout.dim == 3 + 2 + 2 and trainer.agent.obs_dim == 7
    policy = load_policy(tmp_path)
    assert policy.obs_layout == layout and policy.sim_obs_dim == 3
    sim = FakeSim()
    batch = sim.step(torch.full((4, 2), 0.2))
    assert torch.equal(policy.act_batch(batch), trainer.agent.act(layout(batch)))
    assert torch.equal(policy.act(policy.obs_layout(batch)), policy.act_batch(batch))
    with pytest.raises(TrainingError, match="obs_layout"):
        policy.act(batch.obs)  # the bare sim observation is not this policy's input
    # the resume refuses another layout
    with pytest.raises(TrainingError, match="gait_clock"):
        run_trainer(
            tmp_path,
            make_cfg(total_steps=200, critic_layernorm=True, n_step=3, obs_prev_action=True),
            resume=True,
        )


def test_observation_layout_values():
    from nil.rl.observation import ObservationLayout

    lay = ObservationLayout(3, 2, prev_action=True, gait_clock=True, gait_period_steps=8.0)
    obs, prev = torch.zeros(2, 3), torch.tensor([[0.1, -0.2], [0.3, 0.4]])
    x = lay.build(obs, prev, torch.tensor([0, 2]))
    assert x.shape == (2, 7) and torch.equal(x[:, 3:5], prev)
    assert torch.allclose(x[:, 5:], torch.tensor([[0.0, 1.0], [1.0, 0.0]]), atol=1e-6)  # t = P/4: sin 1
    assert ObservationLayout.from_dict(lay.to_dict(), 3, 2) == lay
    plain = ObservationLayout(3, 2)
    assert plain.build(obs) is obs and plain.dim == 3
    with pytest.raises(TrainingError, match="gait_period_s"):
        ObservationLayout(3, 2, gait_clock=True)


def test_layernorm_critics_and_the_compiled_update_path():
    critics = Critics("mlp", 3, 2, 16, 2, layernorm=True)
    assert sum(isinstance(m, EnsembleLayerNorm) for m in critics.modules()) == 2
    assert sum(isinstance(m, EnsembleLayerNorm) for m in Critics("mlp", 3, 2, 16, 2).modules()) == 0
    # rl.compile traces the same update (the "eager" backend stands in for inductor on a CPU)
    buf = ReplayBuffer(200, 3, 2)
    buf.add(torch.randn(200, 3), torch.rand(200, 2), torch.randn(200), torch.randn(200, 3), torch.zeros(200))
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        SACAgent.compile_backend = "eager" if compiled else None
        try:
            agent = make_agent(RLConfig(compile=compiled, critic_layernorm=True, **TINY), 3, 2)
            assert (agent._critic_objective != agent.critic_objective) == compiled
            g = torch.Generator().manual_seed(1)
            for _ in range(3):
                stats = agent.update(buf.sample(16, g))
        finally:
            SACAgent.compile_backend = None
        results.append((stats["loss/critic"], agent.actor.mean.weight.detach().clone()))
    assert torch.allclose(results[0][0], results[1][0]) and torch.allclose(results[0][1], results[1][1])
    # on a CPU the switch is ignored (compiling costs more than it saves there)
    cpu = make_agent(RLConfig(compile=True, **TINY), 3, 2)
    assert cpu._critic_objective == cpu.critic_objective and cpu._actor_objective == cpu.actor_objective


class _HostReads:
    """Counts the tensor -> host reads (item, tolist, bool, float, int, cpu, numpy, nonzero, mask indexing)
    that code in src/nil/rl makes while `active`; on a GPU each is a device sync."""

    NAMES = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy", "nonzero")

    def __init__(self, monkeypatch) -> None:
        import inspect

        self.active, self.counts = False, dict.fromkeys(self.NAMES, 0) | {"mask_index": 0}
        rl_dir = str(Path(__import__("nil.rl", fromlist=["x"]).__file__).parent)

        def from_rl() -> bool:
            frame = inspect.currentframe()
            caller = frame.f_back.f_back if frame and frame.f_back else None
            return caller is not None and caller.f_code.co_filename.startswith(rl_dir)

        for name in self.NAMES:
            orig = getattr(torch.Tensor, name)

            def wrapped(t, *a, _orig=orig, _name=name, **k):
                if self.active and from_rl():
                    self.counts[_name] += 1
                return _orig(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, wrapped)
        getitem = torch.Tensor.__getitem__

        def getitem_counted(t, idx):
            if self.active and isinstance(idx, torch.Tensor) and idx.dtype == torch.bool and from_rl():
                self.counts["mask_index"] += 1
            return getitem(t, idx)

        monkeypatch.setattr(torch.Tensor, "__getitem__", getitem_counted)


@pytest.mark.parametrize("algo", ["sac", "bro"])
def test_the_hot_loop_reads_the_host_once_per_step(tmp_path, monkeypatch, algo):
    """Outside the periodic points a batched step makes one host read (the episode statistics)."""
    cfg = make_cfg(
        algo=algo,
        total_steps=4 * 60,
        warmup_steps=4 * 10,
        log_interval=10**6,
        checkpoint_interval=10**6,
        n_step=3,
        obs_prev_action=True,
        critic_layernorm=True,
    )
    trainer = make_trainer(tmp_path, cfg, FakeSim(horizon=7, fall=0.3))
    reads = _HostReads(monkeypatch)
    hot = {"steps": 0}
    for name in ("_act", "_learn", "_collect"):
        orig = getattr(trainer, name)

        def scoped(*a, _orig=orig, _name=name):
            reads.active = True
            try:
                return _orig(*a)
            finally:
                reads.active = False
                hot["steps"] += _name == "_collect"

        setattr(trainer, name, scoped)
    trainer.run()
    assert hot["steps"] == 60 and trainer.agent.num_updates == 4 * 50 and trainer.counters.episodes > 0
    assert reads.counts.pop("cpu") == 60 and reads.counts.pop("numpy") == 60
    assert reads.counts == dict.fromkeys(reads.counts, 0)
