"""Stage 2: `nil train DIR` — BatchedSim -> Reward -> SAC/BRO, with evaluation, logs and checkpoints.

Counting: a *step* is one environment transition; one batched sim step of N envs adds N steps.
total_steps and warmup_steps are in these steps. The update budget is rl.replay_ratio gradient
updates per env transition, i.e. ``replay_ratio * N`` updates per batched step once warm-up is over;
BRO's full resets (rl.reset_updates) are counted in updates, so they mean the same with any N.
The periodic work (logs, evaluation, videos, checkpoints) runs on a `Schedule` in batched steps,
resolved from the rl.*_interval settings (see Schedule).

One batched step, top to bottom (Trainer.run):
  act      the exploration policy (uniform random during warm-up) on the policy observation;
  step     sim.step_async(action), then `learn` (the updates owed so far) while the sim computes,
           then sim.step_wait(): on the CPU worker backend physics overlaps the learner;
  collect  the reward (once per step), transitions into the replay buffer (or the n-step window),
           one host read of the episode statistics, then reset the finished envs;
  periodic logs, evaluation, checkpoints when the schedule says so.

Episodes: the horizon is the retimed reference length - 1 (the sim truncates there); a fall
terminates. Truncated transitions bootstrap, terminated ones do not; next_obs of a finished env is
the final observation of the step batch, read before reset(ids). The policy input is built by
nil.rl.observation (sim obs, optionally the previous action and a gait clock); the reward matches
frame t of the reference.

Evaluation runs on envs of its own (eval_sim, eval_reward; `train` builds them), so it never resets
or cuts a training episode: rl.eval_episodes deterministic episodes (the conservative actor's
tanh(mean)) from the same initial states each time (the eval envs are reseeded). Eval transitions
never enter the replay buffer. At video points the first eval env is recorded next to the reference
(reference | agent) into train/videos/step_<N>.mp4. With rl.keep_best, each eval that beats every
earlier one also writes its policy to train/best/, which `nil eval` and `nil export` then use.

Host syncs: none per step except that one read of the episode statistics; a non-finite loss is
accumulated on the device and checked at the periodic points, before anything is saved.

Resume: every learner state (networks, targets, optimisers, temperature, duals, normaliser, replay
buffer, RNGs, counters) is restored exactly; the simulator itself is not checkpointed, so envs start
fresh episodes, and sim.seed(cfg.seed + step) gives them new reset noise.
"""

from __future__ import annotations

import math
import random
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nil.config import RLConfig, SkillConfig, load_config
from nil.errors import CheckpointError, MissingStageError, TrainingError
from nil.io import sha256_json
from nil.paths import SkillPaths
from nil.reward.base import Reward
from nil.rl.agents import SACAgent, make_agent
from nil.rl.checkpoint import latest_good, list_checkpoints, load_file, save_checkpoint
from nil.rl.logging import RateMeter, ScalarMeans, TrainLogger, write_progress
from nil.rl.nstep import NStepWindow
from nil.rl.observation import ObservationLayout, layout_from_config
from nil.rl.replay import ReplayBuffer
from nil.sim.base import BatchedSim, SimBatch

# Changing any of these makes a checkpoint unusable (different networks, inputs or buffer).
ARCH_FIELDS = (
    "algo",
    "actor_width",
    "actor_depth",
    "critic_width",
    "critic_depth",
    "n_quantiles",
    "buffer_size",
    "obs_norm",
    "critic_layernorm",
    "n_step",
    "obs_prev_action",
    "gait_clock",
)
EVAL_SEED_OFFSET = 7_919  # the eval envs' reset noise: a stream of its own, the same at every evaluation


def resolve_device(name: str | None) -> torch.device:
    """torch device from "auto" | "cpu" | "cuda" | "cuda:N"; TrainingError if it is not there."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise TrainingError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(
                f"device {name!r} was asked for but CUDA is not available here; use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TrainingError(
                f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise TrainingError(f"device {name!r} is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise TrainingError(f"unsupported device {name!r}; use cpu or cuda")
    return dev


def arch_of(cfg: SkillConfig) -> dict:
    """The rl fields a checkpoint's networks and buffer depend on."""
    rl = cfg.rl.model_dump(mode="json")
    return {k: rl[k] for k in ARCH_FIELDS}


def _arch_default(key: str) -> Any:
    """The value a checkpoint written before `key` existed was trained with (the field's default)."""
    return RLConfig.model_fields[key].default


# -- RNG state ----------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every global RNG state."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore rng_state()."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# -- stop on SIGINT / SIGTERM -------------------------------------------------------------------------
class StopFlag:
    """Signal handlers that ask the loop to checkpoint and stop; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# -- the schedule ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """When the periodic work happens, in batched steps (one sim.step of all N envs).

    The rl.*_interval settings are in env steps; each becomes a whole number of batched steps (at least
    one). Evaluation, videos and checkpoints are also at least one episode (the horizon) apart: with
    1024 envs a 5000-step interval would otherwise mean an eval every 5 batched steps.
    """

    num_envs: int
    log: int
    eval: int
    video: int
    checkpoint: int

    @classmethod
    def resolve(cls, rl: RLConfig, num_envs: int, horizon: int | None) -> Schedule:
        """The schedule for N envs and an episode of `horizon` batched steps."""
        n, floor = int(num_envs), int(horizon or 1)

        def every(interval: int, at_least: int = 1) -> int:
            return max(math.ceil(interval / n), at_least)

        return cls(
            num_envs=n,
            log=every(rl.log_interval),
            eval=every(rl.eval_interval, floor),
            video=every(rl.video_interval, floor),
            checkpoint=every(rl.checkpoint_interval, floor),
        )

    def due(self, name: str, prev_step: int, step: int) -> bool:
        """Whether the env-step counter crossed a multiple of that period between prev_step and step."""
        period = getattr(self, name) * self.num_envs
        return step // period > prev_step // period

    def describe(self) -> str:
        """One line for the log."""
        parts = [f"{k} every {getattr(self, k)}" for k in ("log", "eval", "video", "checkpoint")]
        return f"schedule ({self.num_envs} envs, in batched steps): " + ", ".join(parts)


# -- the loop -----------------------------------------------------------------------------------------
class _Counters:
    def __init__(self) -> None:
        self.step = 0  # env transitions so far
        self.episodes = 0
        self.best_eval: float | None = None
        self.evals: list[dict] = []
        self.recent_returns: list[float] = []
        self.update_debt = 0.0  # fractional updates owed when replay_ratio * N is not an integer

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, d: dict) -> None:
        self.__dict__.update({"update_debt": 0.0} | d)


def _side_by_side(ref: np.ndarray | None, agent: np.ndarray) -> np.ndarray:
    if ref is None:
        return agent
    import cv2

    h, w = agent.shape[:2]
    if ref.shape[:2] != (h, w):
        ref = cv2.resize(ref, (w, h), interpolation=cv2.INTER_AREA)
    return np.concatenate([ref, agent], axis=1)


def _finite_obs(obs: torch.Tensor, terminated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The NaN guard: a non-finite observation ends its episode and is zeroed; the critic never sees NaN."""
    bad = ~torch.isfinite(obs).all(dim=1)
    return torch.where(bad[:, None], torch.zeros_like(obs), obs), terminated | bad


class Trainer:
    """One training run of a BatchedSim and a Reward; evaluation on separate envs (eval_sim, eval_reward)."""

    def __init__(
        self,
        paths: SkillPaths,
        cfg: SkillConfig,
        sim: BatchedSim,
        reward: Reward,
        *,
        device: torch.device,
        total_steps: int,
        eval_sim: BatchedSim | None = None,
        eval_reward: Reward | None = None,
        ref_frames: np.ndarray | None = None,
        video_fps: float = 30.0,
        progress: bool = True,
        gait_period_steps: float | None = None,
        render_rgb: bool = True,
    ) -> None:
        if (eval_sim is None) != (eval_reward is None):
            raise TrainingError("pass eval_sim and eval_reward together (the eval envs and their reward)")
        self.paths, self.cfg, self.rl = paths, cfg, cfg.rl
        self.sim, self.reward, self.device = sim, reward, device
        self.eval_sim, self.eval_reward = eval_sim, eval_reward
        self.total_steps = int(total_steps)
        self.ref_frames, self.video_fps, self.progress = ref_frames, video_fps, progress
        self.render_rgb = render_rgb  # whether the reward reads RGB (the video term): else the sims skip it
        self.n = int(sim.num_envs)
        self.schedule = Schedule.resolve(self.rl, self.n, sim.horizon)
        self.obs_layout = layout_from_config(self.rl, sim.obs_dim, sim.action_dim, gait_period_steps)
        self.counters = _Counters()
        self.reset_at = set(self.rl.reset_updates)
        self.agent: SACAgent
        self.buffer: ReplayBuffer
        self.nstep: NStepWindow | None = None

    # -- setup --------------------------------------------------------------------------------------
    def _new_learner(self) -> None:
        dim, a_dim = self.obs_layout.dim, self.sim.action_dim
        self.agent = make_agent(self.rl, dim, a_dim, self.device)
        self.buffer = ReplayBuffer(
            self.rl.buffer_size, dim, a_dim, self.device, with_discount=self.rl.n_step > 1
        )
        if self.rl.n_step > 1:
            self.nstep = NStepWindow(self.rl.n_step, self.n, dim, a_dim, self.rl.gamma, self.device)

    def _fresh(self) -> None:
        if list_checkpoints(self.paths.checkpoints) or (self.paths.train / "progress.json").exists():
            prev = self.paths.root / "train.prev"
            shutil.rmtree(prev, ignore_errors=True)
            shutil.move(str(self.paths.train), str(prev))
            print(f"starting over (no --resume): the previous run was moved to {prev}")
        seed_everything(self.cfg.seed)
        self.sim.seed(self.cfg.seed)
        self._new_learner()

    def _resume(self) -> None:
        ckpt, manifest = latest_good(self.paths.checkpoints)
        want = {"obs_dim": self.sim.obs_dim, "action_dim": self.sim.action_dim}
        for key, now in want.items():
            if int(manifest.get(key, -1)) != int(now):
                raise TrainingError(
                    f"checkpoint {ckpt.name} was trained with {key}={manifest.get(key)} but the robot/sim "
                    f"now has {key}={now}; the config changed (robot or sim) — train without --resume to "
                    "start over"
                )
        old_arch, new_arch = manifest.get("arch", {}), arch_of(self.cfg)
        changed = {
            k: (old_arch.get(k), v) for k, v in new_arch.items() if old_arch.get(k, _arch_default(k)) != v
        }
        if changed:
            desc = ", ".join(f"rl.{k}: {a} -> {b}" for k, (a, b) in changed.items())
            raise TrainingError(
                f"the config changed since checkpoint {ckpt.name} ({desc}); restore those values "
                "or train without --resume to start over"
            )
        # the networks were trained on the checkpoint's observation layout (incl. its gait period)
        self.obs_layout = ObservationLayout.from_dict(
            manifest.get("observation"), self.sim.obs_dim, self.sim.action_dim
        )
        state = load_file(ckpt, "agent", self.device)
        self._new_learner()
        self.agent.load_state_dict(state["agent"])
        if "replay.pt" in manifest["files"]:
            self.buffer.load_state_dict(load_file(ckpt, "replay", "cpu"))
        else:  # only the newest checkpoint keeps the buffer; an older one was picked (the newest is bad)
            print(
                f"warning: {ckpt.name} holds no replay buffer (only the newest checkpoint keeps one); "
                "resuming with an empty buffer that warm-up refills"
            )
        self.counters.load_state_dict(state["counters"])
        if self.rl.keep_best and (on_disk := self._best_on_disk()) is not None:
            # the best may postdate the checkpoint resumed from; a later eval must beat it to replace it
            c = self.counters
            c.best_eval = on_disk if c.best_eval is None else max(c.best_eval, on_disk)
        set_rng_state(state["rng"])
        # a new reset-noise stream per resume, so resumed episodes do not replay the first ones
        self.sim.seed(self.cfg.seed + self.counters.step)
        print(f"resuming from {ckpt} (step {self.counters.step})")

    def checkpoint(self) -> Path:
        """Write a checkpoint of the whole learner state at this step (the replay only in the newest)."""
        c = self.counters
        files: dict[str, object] = {
            "agent": {"agent": self.agent.state_dict(), "counters": c.state_dict(), "rng": rng_state()},
            "replay": self.buffer.state_dict(),
            **self._policy_files(),
        }
        meta = {
            "obs_dim": self.sim.obs_dim,
            "action_dim": self.sim.action_dim,
            "policy_obs_dim": self.obs_layout.dim,
            "observation": self.obs_layout.to_dict(),
            "algo": self.rl.algo,
            "arch": arch_of(self.cfg),
            "config_hash": sha256_json(self.cfg.model_dump(mode="json")),
            "num_updates": self.agent.num_updates,
            "episodes": c.episodes,
            "time": time.time(),
        }
        return save_checkpoint(
            self.paths.checkpoints,
            c.step,
            files,
            meta,
            keep=self.rl.keep_checkpoints,
            newest_only=("replay",),
        )

    def _policy_files(self) -> dict[str, object]:
        return {"policy": self.agent.policy_state() | {"observation": self.obs_layout.to_dict()}}

    def _save_best(self, eval_return: float) -> Path:
        """The policy alone, as the one checkpoint in train/best/ (rl.keep_best), with its eval return."""
        meta = {"eval_return": float(eval_return)}  # the layout travels in policy.pt, as in a checkpoint
        return save_checkpoint(self.paths.best, self.counters.step, self._policy_files(), meta, keep=1)

    def _best_on_disk(self) -> float | None:
        """The eval return of train/best/ (None without one): a resume from an older checkpoint keeps it."""
        try:  # latest_good raises on an empty or missing folder too
            _, manifest = latest_good(self.paths.best, names=["policy"], warn=None)
        except CheckpointError:
            return None
        r = manifest.get("eval_return")
        return float(r) if r is not None else None

    # -- collect: act, step, reward, store, reset finished envs --------------------------------------
    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        """Uniform random actions during warm-up, then the exploration policy."""
        if self.counters.step < self.rl.warmup_steps:
            return torch.rand(self.n, self.sim.action_dim, device=self.device) * 2 - 1
        return self.agent.explore(obs)

    def _start_episodes(self) -> torch.Tensor:
        batch = self.sim.reset()
        self.reward.reset(None, batch)
        if self.nstep is not None:
            self.nstep.clear()
        self.ep_ret = torch.zeros(self.n, device=self.device)
        self.ep_len = torch.zeros(self.n, device=self.device)
        return self.obs_layout(batch).to(self.device, torch.float32).clone()

    def _collect(self, obs: torch.Tensor, action: torch.Tensor, batch: SimBatch) -> torch.Tensor:
        """Store the step's transitions, reset the finished envs; returns the next policy observation."""
        out = self.reward(batch)  # once per step: reset() primes new episodes without a reward call
        r = out.total.to(self.device, torch.float32)
        raw_next = self.obs_layout(batch).to(self.device, torch.float32)
        next_obs, terminated = _finite_obs(raw_next, batch.terminated.to(self.device).bool())
        done = terminated | batch.truncated.to(self.device).bool()
        # next_obs is the final observation of an episode that ended here (read before the reset)
        if self.nstep is not None:
            self.nstep.push(self.buffer, obs, action, r, next_obs, terminated, done)
        else:
            self.buffer.add(obs, action, r, next_obs, terminated)
        self.agent.observe(raw_next)  # the normaliser skips non-finite rows itself
        self.terms.add({k: v.float().mean() for k, v in out.terms.items()} | {"reward/total": r.mean()})
        self.ep_ret += r
        self.ep_len += 1
        # the one host read per step: which envs finished, with their return, length and fall flag
        stats = torch.stack([done.float(), terminated.float(), self.ep_ret, self.ep_len]).cpu().numpy()
        self.counters.step += self.n
        ids = np.flatnonzero(stats[0])
        if len(ids):
            self._finished_episodes(stats[:, ids], at_step=self.counters.step)
            ids_t = torch.as_tensor(ids, device=self.sim.device)
            reset_batch = self.sim.reset(ids_t)
            self.reward.reset(ids_t, reset_batch)
            ids_d = ids_t.to(self.device)
            fresh = self.obs_layout(reset_batch).to(self.device, torch.float32)
            next_obs = next_obs.index_copy(0, ids_d, fresh.index_select(0, ids_d))
            self.ep_ret.index_fill_(0, ids_d, 0.0)
            self.ep_len.index_fill_(0, ids_d, 0.0)
        return next_obs

    def _finished_episodes(self, stats: np.ndarray, at_step: int) -> None:
        """Episode statistics of the envs that finished in this step ([done, fell, return, length] x M)."""
        c = self.counters
        c.episodes += stats.shape[1]
        c.recent_returns = (c.recent_returns + stats[2].tolist())[-20:]
        w = self.log.writer
        w.add_scalar("episode/return", float(stats[2].mean()), at_step)
        w.add_scalar("episode/length", float(stats[3].mean()), at_step)
        w.add_scalar("episode/fell", float(stats[1].mean()), at_step)

    # -- learn: replay_ratio updates per env transition ---------------------------------------------
    def _learn(self) -> None:
        """The updates owed for the last batched step (runs while the sim computes the next one)."""
        rl, c = self.rl, self.counters
        if c.step < rl.warmup_steps or len(self.buffer) < rl.batch_size:
            return
        c.update_debt += rl.replay_ratio * self.n
        n_updates = int(c.update_debt)
        c.update_debt -= n_updates
        stats = None
        for _ in range(n_updates):
            stats = self.agent.update(self.buffer.sample(rl.batch_size))
            if self.agent.num_updates in self.reset_at:  # BRO: full resets at given update counts
                self.agent.reset_networks()
                self.log.print(
                    f"update {self.agent.num_updates}: full network reset #{self.agent.num_resets}"
                )
        if stats is not None:  # the last update's statistics stand for the step (no sync, few kernels)
            self.learn_stats.add(stats)
            self.loss_ok &= torch.isfinite(stats["loss/critic"] + stats["loss/actor"])

    def _check_losses(self) -> None:
        """Raise on a non-finite loss since the last check (read at log/eval/checkpoint points only)."""
        if not bool(self.loss_ok):
            raise TrainingError(
                f"non-finite loss by step {self.counters.step} (update {self.agent.num_updates}); stopped "
                f"without saving — the last good checkpoint in {self.paths.checkpoints} is kept. "
                "Lower rl.critic_lr/actor_lr, check the reward scale, or enable rl.obs_norm"
            )

    # -- periodic: logs, evaluation, checkpoints ---------------------------------------------------
    def _periodic(self, prev_step: int) -> None:
        c, sch = self.counters, self.schedule
        last = c.step >= self.total_steps
        due = {name: sch.due(name, prev_step, c.step) for name in ("log", "eval", "video", "checkpoint")}
        if not (last or due["log"] or due["eval"] or due["checkpoint"]):
            return
        self._check_losses()
        if due["log"] or last:
            scalars = self.terms.flush() | self.learn_stats.flush()
            scalars |= self.rate.rates(c.step, self.agent.num_updates)
            scalars["train/buffer_size"] = len(self.buffer)
            self.log.scalars(scalars, c.step)
            ret = np.mean(c.recent_returns[-10:]) if c.recent_returns else float("nan")
            self.log.advance(c.step, f"ret {ret:.2f} | {scalars['perf/env_steps_per_s']:.0f} st/s")
            self._write_progress(done=False)
        if due["eval"]:
            self._eval_and_log(record=last or due["video"])
        if due["checkpoint"]:
            self.checkpoint()

    # -- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, record: bool) -> dict | None:
        """Deterministic episodes on the eval envs (never the training envs); None without eval envs.

        The eval envs are reseeded each time, so every evaluation starts from the same initial states.
        """
        if self.eval_sim is None or self.eval_reward is None:
            return None
        sim, reward = self.eval_sim, self.eval_reward
        sim.seed(self.cfg.seed + EVAL_SEED_OFFSET)
        returns: list[float] = []
        lengths: list[int] = []
        frames: list[np.ndarray] = []
        while len(returns) < self.rl.eval_episodes:
            rec = record and not frames
            sim.set_render(rec or self.render_rgb)
            batch = sim.reset()
            reward.reset(None, batch)
            k = sim.num_envs
            ep_ret = torch.zeros(k, device=self.device)
            ep_len = torch.zeros(k, device=self.device)
            live = torch.ones(k, dtype=torch.bool, device=self.device)
            while True:
                action = self.agent.act(self._eval_obs(batch), deterministic=True)
                batch = sim.step(action.to(sim.device))
                r = reward(batch).total.to(self.device, torch.float32)
                if rec and bool(live[0]):
                    t = int(batch.t[0])
                    ref = (
                        None if self.ref_frames is None else self.ref_frames[min(t, len(self.ref_frames) - 1)]
                    )
                    frames.append(_side_by_side(ref, batch.rgb[0].cpu().numpy()))
                ep_ret += torch.where(live, r, torch.zeros_like(r))
                ep_len += live.float()
                live &= ~(batch.terminated | batch.truncated).to(self.device)
                if not bool(live.any()):
                    break
            take = min(k, self.rl.eval_episodes - len(returns))
            returns += ep_ret[:take].tolist()
            lengths += [int(x) for x in ep_len[:take].tolist()]
        sim.set_render(self.render_rgb)
        video = None
        if frames:
            from nil.reference.video import Video, write_video

            video = self.paths.train / "videos" / f"step_{self.counters.step:09d}.mp4"
            write_video(video, Video(np.stack(frames).astype(np.uint8), self.video_fps))
        return {
            "return": float(np.mean(returns)),
            "length": float(np.mean(lengths)),
            "episodes": len(returns),
            "video": str(video) if video else None,
        }

    def _eval_obs(self, batch: SimBatch) -> torch.Tensor:
        obs = self.obs_layout(batch).to(self.device, torch.float32)
        return _finite_obs(obs, batch.terminated.to(self.device).bool())[0]

    def _eval_and_log(self, record: bool) -> None:
        ev = self.evaluate(record)
        if ev is None:
            return
        c = self.counters
        c.evals.append({"step": c.step, "return": ev["return"], "length": ev["length"]})
        if c.best_eval is None or ev["return"] > c.best_eval:
            c.best_eval = ev["return"]
            if self.rl.keep_best:
                self._save_best(ev["return"])
        self.log.scalars({"eval/return": ev["return"], "eval/length": ev["length"]}, c.step)
        self.log.print(
            f"step {c.step}: eval return {ev['return']:.3f} length {ev['length']:.0f}"
            + (f" video {ev['video']}" if ev["video"] else "")
        )

    # -- main loop -------------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict:
        """Train until total_steps (or a stop signal); returns a summary."""
        c = self.counters
        self._set_threads()
        self._resume() if resume else self._fresh()
        start_step = c.step
        if start_step >= self.total_steps:
            print(f"already trained to step {start_step} (>= {self.total_steps}); nothing to do")
            return self._summary(interrupted=False, wall=0.0, start_step=start_step)
        self.sim.set_render(self.render_rgb)
        self.log = TrainLogger(
            self.paths.train / "tb",
            self.total_steps,
            start_step,
            self.progress,
            purge_step=start_step if resume else None,
        )
        self.log.print(self.schedule.describe())
        self.terms, self.learn_stats, self.rate = ScalarMeans(), ScalarMeans(), RateMeter()
        self.rate.rates(start_step, self.agent.num_updates)
        self.loss_ok = torch.ones((), dtype=torch.bool, device=self.device)
        t0 = time.perf_counter()
        interrupted = False
        stop = StopFlag()
        try:
            with stop:
                obs = self._start_episodes()
                while c.step < self.total_steps and not stop.requested:
                    action = self._act(obs)
                    self.sim.step_async(action.to(self.sim.device))
                    self._learn()  # overlaps the sim's step (CPU workers / GPU stream)
                    batch = self.sim.step_wait()
                    prev_step = c.step
                    obs = self._collect(obs, action, batch)
                    self._periodic(prev_step)
                interrupted = c.step < self.total_steps
        except Exception:
            # a sim failure caused by the stop signal (e.g. workers hit by the same SIGINT) still saves
            if not (stop.requested and c.step > start_step):
                self.log.close()
                raise
            interrupted = True
        wall = time.perf_counter() - t0
        try:
            self._check_losses()  # never save (or evaluate) a learner that went non-finite
        except TrainingError:
            self.log.close()
            raise
        if not interrupted and (not c.evals or c.evals[-1]["step"] != c.step):
            self._eval_and_log(record=True)  # the final eval always leaves a video
        path = self.checkpoint()
        self.log.advance(c.step)
        self.log.close()
        why = f"stopped by {stop.requested}" if interrupted else "done"
        print(f"training {why} at step {c.step}; checkpoint {path}; TensorBoard: {self.paths.train / 'tb'}")
        self._write_progress(done=not interrupted)
        return self._summary(interrupted=interrupted, wall=wall, start_step=start_step) | {
            "checkpoint": str(path)
        }

    def _set_threads(self) -> None:
        if self.rl.torch_threads:
            torch.set_num_threads(self.rl.torch_threads)
        elif self.device.type == "cpu":
            # The learner's matmuls are small: extra OpenMP threads mostly spin, and on a shared CPU
            # (sim workers, other jobs) they made updates ~10x slower in our measurements.
            torch.set_num_threads(1)

    def _summary(self, *, interrupted: bool, wall: float, start_step: int) -> dict:
        c = self.counters
        return {
            "step": c.step,
            "total_steps": self.total_steps,
            "episodes": c.episodes,
            "updates": self.agent.num_updates,
            "interrupted": interrupted,
            "train_return": float(np.mean(c.recent_returns[-10:])) if c.recent_returns else None,
            "eval_return": c.evals[-1]["return"] if c.evals else None,
            "best_eval_return": c.best_eval,
            "wall_s": wall,
            "env_steps_per_s": (c.step - start_step) / wall if wall > 0 else None,
        }

    def _write_progress(self, done: bool) -> None:
        c = self.counters
        write_progress(
            self.paths.train / "progress.json",
            {
                "step": c.step,
                "total_steps": self.total_steps,
                "episodes": c.episodes,
                "done": done,
                "algo": self.rl.algo,
                "updates": self.agent.num_updates,
                "train_returns": c.recent_returns,
                "evals": c.evals,
                "best_eval_return": c.best_eval,
                "schedule": asdict(self.schedule),
                "time": time.time(),
            },
        )


# -- entry points ---------------------------------------------------------------------------------------
def _check_inputs(paths: SkillPaths, cfg: SkillConfig) -> None:
    if not paths.meta.exists() or not paths.retimed.exists():
        raise MissingStageError(
            f"no reference video in {paths.reference}; run `nil generate {paths.root}` first"
        )
    if not paths.masks.exists():
        raise MissingStageError(f"no reference masks ({paths.masks}); run `nil segment {paths.root}` first")


def train(
    paths: SkillPaths,
    cfg: SkillConfig,
    *,
    steps: int | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Train the skill's policy against its reference; returns a summary (steps, returns, checkpoint)."""
    dev = resolve_device(device or cfg.rl.device)
    if steps is not None and steps < 1:
        raise TrainingError(f"--steps must be >= 1, got {steps}")
    _check_inputs(paths, cfg)
    from nil.reference.bundle import load_reference
    from nil.reference.segment import load_masks
    from nil.reward.nil_reward import skill_reward
    from nil.robots import robot_from_config
    from nil.sim import make_sim

    spec = robot_from_config(cfg)
    ref = load_reference(paths)
    masks = load_masks(paths)
    if len(masks) != ref.num_frames:
        raise MissingStageError(
            f"{paths.masks} has {len(masks)} masks but the reference has {ref.num_frames} "
            f"frames; run `nil segment {paths.root} --force`"
        )
    horizon = ref.num_frames - 1
    if horizon < 1:
        raise TrainingError(
            f"the reference has {ref.num_frames} frame(s); it needs at least 2 for an episode"
        )
    reward_for = skill_reward(paths, cfg, spec, masks)  # builds the reward of a sim (training, eval envs)
    gait_period_steps = _gait_period_steps(cfg, masks, ref.fps, float(spec.control_hz))

    sim = make_sim(spec, cfg.sim, horizon=horizon, seed=cfg.seed)
    # the eval envs: a small in-process sim of their own, so evaluation never touches a training episode
    eval_cfg = cfg.sim.model_copy(update={"num_workers": 0})
    eval_sim = None
    try:
        eval_sim = make_sim(
            spec, eval_cfg, num_envs=cfg.rl.eval_episodes, horizon=horizon, seed=cfg.seed + EVAL_SEED_OFFSET
        )
        trainer = Trainer(
            paths,
            cfg,
            sim,
            reward_for(sim),
            eval_sim=eval_sim,
            eval_reward=reward_for(eval_sim),
            device=dev,
            total_steps=steps or cfg.rl.total_steps,
            ref_frames=ref.frames,
            video_fps=ref.fps,
            progress=progress,
            gait_period_steps=gait_period_steps,
            render_rgb=cfg.reward.use_video,  # only the video term reads RGB; the masks are always rendered
        )
        return trainer.run(resume=resume)
    finally:
        if eval_sim is not None:
            eval_sim.close()
        sim.close()


def _gait_period_steps(cfg: SkillConfig, masks: np.ndarray, fps: float, control_hz: float) -> float | None:
    """The gait clock's period in control steps (rl.gait_period_s, else estimated from the masks only)."""
    if not cfg.rl.gait_clock:
        return None
    period_s = cfg.rl.gait_period_s
    if period_s is None:
        from nil.reference.motion import estimate_gait_period

        period_s = estimate_gait_period(np.asarray(masks), fps)
        if period_s is None:
            raise TrainingError(
                "rl.gait_clock is on but no gait period could be estimated from the reference masks "
                "(the silhouette does not repeat); set rl.gait_period_s (seconds) or rl.gait_clock: false"
            )
    return float(period_s) * control_hz


def train_command(
    directory: str | Path, steps: int | None = None, resume: bool = False, device: str | None = None
) -> dict:
    """`nil train DIR [--steps N] [--resume] [--device D]`."""
    paths = SkillPaths(Path(directory))
    cfg = load_config(paths.root)
    if resume and not list_checkpoints(paths.checkpoints):
        raise CheckpointError(
            f"no checkpoint in {paths.checkpoints} to resume; run `nil train {paths.root}` without --resume"
        )
    return train(paths, cfg, steps=steps, resume=resume, device=device)
