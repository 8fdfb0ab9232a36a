"""Learner tests: buffer, normaliser, SAC/BRO updates, bootstrapping, checkpoints, resume, signals, the loop.

The loop runs on FakeSim (a BatchedSim-compatible linear system, tiny images) and FakeReward, so these
tests need neither MuJoCo nor the reward layer.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from nil.config import RLConfig, SkillConfig
from nil.errors import CheckpointError, MissingStageError, TrainingError
from nil.paths import SkillPaths
from nil.rl.agents import BROAgent, SACAgent, make_agent, quantile_huber_loss
from nil.rl.checkpoint import latest_good, list_checkpoints, load_file, load_policy, save_checkpoint
from nil.rl.networks import BroNet, Critics
from nil.rl.normalizer import RunningNormalizer
from nil.rl.replay import Batch, ReplayBuffer
from nil.rl.trainer import Trainer, resolve_device, rng_state, set_rng_state
from nil.sim.base import SimBatch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks are overhead-bound; OpenMP threads spinning on a shared 2-core box slow them 10x."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


TINY = dict(actor_width=32, actor_depth=1, critic_width=32, critic_depth=1, batch_size=32, n_quantiles=8)


# ---------------------------------------------------------------------------------------------- fakes
class FakeSim:
    """N envs of x' = x + 0.1 a (x in R^A); obs = [x, phase]; falls when |x_0| > 2; truncates at the horizon."""

    def __init__(
        self,
        num_envs: int = 4,
        action_dim: int = 2,
        horizon: int = 10,
        hw: int = 8,
        step_sleep: float = 0.0,
        fall: float = 2.0,
    ) -> None:
        self.num_envs, self.action_dim, self.horizon = num_envs, action_dim, horizon
        self.obs_dim = action_dim + 1
        self.device = torch.device("cpu")
        self.image_hw = (hw, hw)
        self.step_sleep, self.fall = step_sleep, fall
        self.gen = torch.Generator().manual_seed(0)
        self.x = torch.zeros(num_envs, action_dim)
        self.t = torch.zeros(num_envs, dtype=torch.long)
        self.last_action = torch.zeros(num_envs, action_dim)
        self.closed = False

    def seed(self, seed: int) -> None:
        self.gen.manual_seed(seed)

    def set_horizon(self, horizon: int | None) -> None:
        self.horizon = horizon

    def _batch(self, terminated: torch.Tensor, truncated: torch.Tensor) -> SimBatch:
        n, a = self.num_envs, self.action_dim
        phase = (self.t.float() / self.horizon).unsqueeze(1)
        h, w = self.image_hw
        z = torch.zeros
        return SimBatch(
            obs=torch.cat([self.x, phase], 1).float(),
            rgb=z(n, h, w, 3, dtype=torch.uint8),
            mask=z(n, h, w, dtype=torch.bool),
            terminated=terminated,
            truncated=truncated,
            t=self.t.clone(),
            qpos=z(n, 7 + a),
            qvel=z(n, 6 + a),
            joint_vel=z(n, a),
            torque=z(n, a),
            action=self.last_action.clone(),
            prev_action=z(n, a),
            foot_contact=z(n, 2, dtype=torch.bool),
            foot_vel_xy=z(n, 2, 2),
            torso_up_z=torch.ones(n),
            root_pos=z(n, 3),
            root_lin_vel=z(n, 3),
            nonfinite=z(n, dtype=torch.bool),
        )

    def reset(self, env_ids: torch.Tensor | None = None) -> SimBatch:
        ids = torch.arange(self.num_envs) if env_ids is None else env_ids.long()
        self.x[ids] = 0.05 * torch.randn(len(ids), self.action_dim, generator=self.gen)
        self.t[ids] = 0
        self.last_action[ids] = 0
        f = torch.zeros(self.num_envs, dtype=torch.bool)
        return self._batch(f, f.clone())

    def step(self, action: torch.Tensor) -> SimBatch:
        if self.step_sleep:
            time.sleep(self.step_sleep)
        a = action.clamp(-1, 1)
        self.x = self.x + 0.1 * a
        self.t = self.t + 1
        self.last_action = a.clone()
        terminated = self.x[:, 0].abs() > self.fall
        truncated = self.t >= self.horizon
        return self._batch(terminated, truncated)

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeOut:
    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


class FakeReward:
    """r = 1 - |a - target|_1 / A (best action: `target` in every dim); optionally NaN after `nan_after` calls."""

    def __init__(self, target: float = 0.5, nan_after: int | None = None) -> None:
        self.target, self.nan_after, self.calls, self.resets = target, nan_after, 0, 0

    def reset(self, env_ids: torch.Tensor | None = None) -> None:
        self.resets += 1

    def __call__(self, batch: SimBatch) -> FakeOut:
        self.calls += 1
        raw = -(batch.action - self.target).abs().mean(1)
        total = 1.0 + raw
        if self.nan_after is not None and self.calls > self.nan_after:
            total = torch.full_like(total, float("nan"))
        return FakeOut(total, {"raw/iou": raw, "weighted/iou": raw})


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


def run_trainer(
    tmp: Path, cfg: SkillConfig, sim: FakeSim | None = None, reward=None, resume=False, steps=None
):
    sim = sim or FakeSim()
    trainer = Trainer(
        SkillPaths(tmp),
        cfg,
        sim,
        reward or FakeReward(),
        device=torch.device("cpu"),
        total_steps=steps or cfg.rl.total_steps,
        progress=False,
    )
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
    norm.update(torch.tensor([[float("nan"), 0.0, 0.0]]))  # ignored
    assert norm.n == 1000
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
    # every update: replay_ratio * N per batched step after warm-up
    assert trainer.agent.num_updates == (200 - 40) // 4 * 4 + 4
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
    trainer = Trainer(
        SkillPaths(tmp_path),
        cfg,
        FakeSim(horizon=10),
        FakeReward(),
        device=torch.device("cpu"),
        total_steps=80,
        ref_frames=ref,
        video_fps=10,
        progress=False,
    )
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
from test_rl import FakeSim, FakeReward, make_cfg
from nil.paths import SkillPaths
from nil.rl.trainer import Trainer
cfg = make_cfg(total_steps=10**6, checkpoint_interval=10**6, warmup_steps=10**6)
sim = FakeSim(step_sleep=0.002)
from pathlib import Path
t = Trainer(SkillPaths(Path({root!r})), cfg, sim, FakeReward(), device=torch.device("cpu"), total_steps=10**6, progress=False)
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
