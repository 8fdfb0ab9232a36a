"""Stage 2: `nil train DIR` — BatchedSim -> NILReward -> SAC/BRO, with evaluation, logs and checkpoints.

Counting: a *step* is one environment transition; one batched sim step of N envs adds N steps.
total_steps, warmup_steps, reset_steps and every *_interval are in these steps, and the agent does
``replay_ratio * N`` gradient updates after each batched step (once warm-up is over).

Episodes: the horizon is the retimed reference length - 1 (the sim truncates there); a fall
terminates. Truncated transitions bootstrap, terminated ones do not; next_obs of a finished env is
the final observation of the step batch, read before reset(ids). The policy sees the phase t/horizon
(part of obs), and the reward matches frame t of the reference.

Evaluation runs on the training sim (no second simulator to start): at an eval point every env is
reset and runs one deterministic episode (the conservative actor's tanh(mean)), repeated until
rl.eval_episodes episodes are done; then all envs are reset and training continues. Episodes in
progress at that moment are dropped (their stored transitions stay valid: none of them was marked
terminated). Eval transitions never enter the replay buffer. At video points the first eval env is
recorded next to the reference (reference | agent) into train/videos/step_<N>.mp4.

Resume: every learner state (networks, targets, optimisers, temperature, duals, normaliser, replay
buffer, RNGs, counters) is restored exactly; the simulator itself is not checkpointed, so envs start
fresh episodes (reset noise seeded from cfg.seed and the resumed step).
"""

from __future__ import annotations

import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nil.config import SkillConfig, load_config
from nil.errors import CheckpointError, MissingStageError, TrainingError
from nil.io import sha256_json
from nil.paths import SkillPaths
from nil.rl.agents import SACAgent, make_agent
from nil.rl.checkpoint import latest_good, list_checkpoints, load_file, save_checkpoint
from nil.rl.logging import RateMeter, ScalarMeans, TrainLogger, write_progress
from nil.rl.replay import ReplayBuffer

# Changing any of these makes a checkpoint unusable (different networks or buffer).
ARCH_FIELDS = (
    "algo",
    "actor_width",
    "actor_depth",
    "critic_width",
    "critic_depth",
    "n_quantiles",
    "buffer_size",
    "obs_norm",
)


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


def _crossed(prev: int, now: int, interval: int) -> bool:
    return now // interval > prev // interval


def _side_by_side(ref: np.ndarray | None, agent: np.ndarray) -> np.ndarray:
    if ref is None:
        return agent
    import cv2

    h, w = agent.shape[:2]
    if ref.shape[:2] != (h, w):
        ref = cv2.resize(ref, (w, h), interpolation=cv2.INTER_AREA)
    return np.concatenate([ref, agent], axis=1)


class Trainer:
    """One training run on a BatchedSim and a reward callable (NILReward or anything with its interface)."""

    def __init__(
        self,
        paths: SkillPaths,
        cfg: SkillConfig,
        sim: Any,
        reward: Any,
        *,
        device: torch.device,
        total_steps: int,
        ref_frames: np.ndarray | None = None,
        video_fps: float = 30.0,
        progress: bool = True,
    ) -> None:
        self.paths, self.cfg, self.rl = paths, cfg, cfg.rl
        self.sim, self.reward, self.device = sim, reward, device
        self.total_steps = int(total_steps)
        self.ref_frames, self.video_fps, self.progress = ref_frames, video_fps, progress
        self.n = int(sim.num_envs)
        self.counters = _Counters()
        self.agent: SACAgent
        self.buffer: ReplayBuffer

    # -- setup --------------------------------------------------------------------------------------
    def _fresh(self) -> None:
        if list_checkpoints(self.paths.checkpoints) or (self.paths.train / "progress.json").exists():
            prev = self.paths.root / "train.prev"
            shutil.rmtree(prev, ignore_errors=True)
            shutil.move(str(self.paths.train), str(prev))
            print(f"starting over (no --resume): the previous run was moved to {prev}")
        seed_everything(self.cfg.seed)
        self.agent = make_agent(self.rl, self.sim.obs_dim, self.sim.action_dim, self.device)
        self.buffer = ReplayBuffer(self.rl.buffer_size, self.sim.obs_dim, self.sim.action_dim, self.device)

    def _resume(self) -> None:
        ckpt, manifest = latest_good(self.paths.checkpoints)
        want = {"obs_dim": self.sim.obs_dim, "action_dim": self.sim.action_dim}
        for key, now in want.items():
            if int(manifest.get(key, -1)) != int(now):
                raise TrainingError(
                    f"checkpoint {ckpt.name} was trained with {key}={manifest.get(key)} but the robot/sim now has "
                    f"{key}={now}; the config changed (robot or sim) — train without --resume to start over"
                )
        old_arch, new_arch = manifest.get("arch", {}), arch_of(self.cfg)
        changed = {k: (old_arch.get(k), v) for k, v in new_arch.items() if old_arch.get(k) != v}
        if changed:
            desc = ", ".join(f"rl.{k}: {a} -> {b}" for k, (a, b) in changed.items())
            raise TrainingError(
                f"the config changed since checkpoint {ckpt.name} ({desc}); restore those values "
                "or train without --resume to start over"
            )
        state = load_file(ckpt, "agent", self.device)
        self.agent = make_agent(self.rl, self.sim.obs_dim, self.sim.action_dim, self.device)
        self.agent.load_state_dict(state["agent"])
        self.buffer = ReplayBuffer(self.rl.buffer_size, self.sim.obs_dim, self.sim.action_dim, self.device)
        self.buffer.load_state_dict(load_file(ckpt, "replay", "cpu"))
        self.counters.load_state_dict(state["counters"])
        set_rng_state(state["rng"])
        print(f"resuming from {ckpt} (step {self.counters.step})")

    def checkpoint(self) -> Path:
        """Write a checkpoint of the whole learner state at the current step."""
        c = self.counters
        files = {
            "agent": {"agent": self.agent.state_dict(), "counters": c.state_dict(), "rng": rng_state()},
            "replay": self.buffer.state_dict(),
            "policy": self.agent.policy_state(),
        }
        meta = {
            "obs_dim": self.sim.obs_dim,
            "action_dim": self.sim.action_dim,
            "algo": self.rl.algo,
            "arch": arch_of(self.cfg),
            "config_hash": sha256_json(self.cfg.model_dump(mode="json")),
            "num_updates": self.agent.num_updates,
            "episodes": c.episodes,
            "time": time.time(),
        }
        return save_checkpoint(self.paths.checkpoints, c.step, files, meta, keep=self.rl.keep_checkpoints)

    # -- environment helpers -------------------------------------------------------------------------
    def _reset_all(self) -> torch.Tensor:
        batch = self.sim.reset()
        self.reward.reset()
        self.reward(batch)  # the reward keeps a frame history: show it frame 0 of every episode
        return batch.obs.to(self.device, torch.float32).clone()

    def evaluate(self, record: bool) -> dict:
        """Deterministic episodes on the training sim (see module docstring); returns mean return/length."""
        returns, lengths, frames = [], [], []
        while len(returns) < self.rl.eval_episodes:
            obs = self._reset_all()
            ep_ret = torch.zeros(self.n, device=self.device)
            ep_len = torch.zeros(self.n, dtype=torch.long, device=self.device)
            live = torch.ones(self.n, dtype=torch.bool, device=self.device)
            rec = record and not frames
            while bool(live.any()):
                batch = self.sim.step(self.agent.act(obs, deterministic=True).to(self.sim.device))
                r = self.reward(batch).total.to(self.device, torch.float32)
                if rec and bool(live[0]):
                    t = int(batch.t[0])
                    ref = None
                    if self.ref_frames is not None:
                        ref = self.ref_frames[min(t, len(self.ref_frames) - 1)]
                    frames.append(_side_by_side(ref, batch.rgb[0].cpu().numpy()))
                ep_ret += torch.where(live, r, torch.zeros_like(r))
                ep_len += live.long()
                done = (batch.terminated | batch.truncated).to(self.device) & live
                if bool(done.any()):
                    for i in torch.nonzero(done).flatten().tolist():
                        returns.append(float(ep_ret[i]))
                        lengths.append(int(ep_len[i]))
                    live &= ~done
                obs = torch.nan_to_num(batch.obs.to(self.device, torch.float32))
            rec = False
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

    # -- main loop -------------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict:
        """Train until total_steps (or a stop signal); returns a summary."""
        rl, c = self.rl, self.counters
        if rl.torch_threads:
            torch.set_num_threads(rl.torch_threads)
        elif self.device.type == "cpu":
            # The learner's matmuls are small: extra OpenMP threads mostly spin, and on a shared CPU
            # (sim workers, other jobs) they made updates ~10x slower in our measurements.
            torch.set_num_threads(1)
        if resume:
            self._resume()
        else:
            self._fresh()
        start_step = c.step
        if start_step >= self.total_steps:
            print(f"already trained to step {start_step} (>= {self.total_steps}); nothing to do")
            return self._summary(interrupted=False, wall=0.0, start_step=start_step)
        # a new seed per resume, so resumed episodes do not replay the noise of the first ones
        if hasattr(self.sim, "seed") and callable(self.sim.seed):
            self.sim.seed(self.cfg.seed + start_step)

        log = TrainLogger(
            self.paths.train / "tb",
            self.total_steps,
            start_step,
            self.progress,
            purge_step=start_step if resume else None,
        )
        terms, learn = ScalarMeans(), ScalarMeans()
        rate = RateMeter()
        rate.rates(start_step, self.agent.num_updates)
        t0 = time.perf_counter()
        interrupted = False
        ep_ret = torch.zeros(self.n, device=self.device)
        ep_len = torch.zeros(self.n, dtype=torch.long, device=self.device)
        stop = StopFlag()
        try:
            with stop:
                obs = self._reset_all()
                while c.step < self.total_steps:
                    if stop.requested:
                        interrupted = True
                        break
                    # 1. act: uniform random during warm-up, then the exploration policy
                    if c.step < rl.warmup_steps:
                        action = torch.rand(self.n, self.sim.action_dim, device=self.device) * 2 - 1
                    else:
                        action = self.agent.explore(obs)
                    batch = self.sim.step(action.to(self.sim.device))
                    out = self.reward(batch)

                    # 2. store (obs, a, r, final next_obs, terminated) before any reset
                    r = out.total.to(self.device, torch.float32)
                    next_obs = batch.obs.to(self.device, torch.float32).clone()
                    terminated = batch.terminated.to(self.device).bool()
                    truncated = batch.truncated.to(self.device).bool()
                    bad = ~torch.isfinite(next_obs).all(dim=1)
                    if bool(bad.any()):  # a NaN physics state ends the episode; never feed NaN to the critic
                        next_obs[bad] = 0.0
                        terminated = terminated | bad
                    self.buffer.add(obs, action, r, next_obs, terminated)
                    self.agent.observe(next_obs[~bad])
                    terms.add(
                        {k: v.float().mean() for k, v in out.terms.items()} | {"reward/total": r.mean()}
                    )

                    # 3. episode bookkeeping, then reset finished envs
                    ep_ret += r
                    ep_len += 1
                    done = terminated | truncated
                    if bool(done.any()):
                        ids = torch.nonzero(done).flatten()
                        for i in ids.tolist():
                            c.recent_returns = (c.recent_returns + [float(ep_ret[i])])[-20:]
                            log.writer.add_scalar("episode/return", float(ep_ret[i]), c.step + self.n)
                            log.writer.add_scalar("episode/length", int(ep_len[i]), c.step + self.n)
                            log.writer.add_scalar("episode/fell", float(terminated[i]), c.step + self.n)
                        c.episodes += len(ids)
                        reset_batch = self.sim.reset(ids.to(self.sim.device))
                        self.reward.reset(ids.to(self.sim.device))
                        self.reward(
                            reset_batch
                        )  # frame 0 into the reward's history (untouched envs keep theirs)
                        next_obs[ids] = reset_batch.obs.to(self.device, torch.float32)[ids]
                        ep_ret[ids] = 0.0
                        ep_len[ids] = 0
                    obs = next_obs
                    prev, c.step = c.step, c.step + self.n

                    # 4. BRO-style full resets at configured steps
                    if any(prev < s <= c.step for s in rl.reset_steps):
                        self.agent.reset_networks()
                        log.print(f"step {c.step}: full network reset #{self.agent.num_resets}")

                    # 5. learn: replay_ratio updates per env transition
                    if c.step >= rl.warmup_steps and len(self.buffer) >= rl.batch_size:
                        check = None
                        c.update_debt += rl.replay_ratio * self.n
                        n_updates, c.update_debt = int(c.update_debt), c.update_debt - int(c.update_debt)
                        for _ in range(n_updates):
                            stats = self.agent.update(self.buffer.sample(rl.batch_size))
                            learn.add(stats)
                            loss = stats["loss/critic"] + stats["loss/actor"]
                            check = loss if check is None else check + loss
                        if check is not None and not bool(torch.isfinite(check)):
                            raise TrainingError(
                                f"non-finite loss at step {c.step} (update {self.agent.num_updates}); stopped "
                                f"without saving — the last good checkpoint in {self.paths.checkpoints} is kept. "
                                "Lower rl.critic_lr/actor_lr, check the reward scale, or enable rl.obs_norm"
                            )

                    # 6. logs, evaluation, checkpoints
                    if _crossed(prev, c.step, rl.log_interval) or c.step >= self.total_steps:
                        scalars = terms.flush() | learn.flush() | rate.rates(c.step, self.agent.num_updates)
                        scalars["train/buffer_size"] = len(self.buffer)
                        log.scalars(scalars, c.step)
                        last = np.mean(c.recent_returns[-10:]) if c.recent_returns else float("nan")
                        log.advance(c.step, f"ret {last:.2f} | {scalars['perf/env_steps_per_s']:.0f} st/s")
                        self._write_progress(done=False)
                    if _crossed(prev, c.step, rl.eval_interval):
                        last = c.step >= self.total_steps  # the final eval always leaves a video
                        self._eval_and_log(log, record=last or _crossed(prev, c.step, rl.video_interval))
                        obs = self._reset_all()
                        ep_ret.zero_()
                        ep_len.zero_()
                    if _crossed(prev, c.step, rl.checkpoint_interval):
                        self.checkpoint()
        except Exception:
            # a sim failure caused by the stop signal (e.g. workers hit by the same SIGINT) still saves
            if not (stop.requested and c.step > start_step):
                log.close()
                raise
            interrupted = True
        wall = time.perf_counter() - t0
        if not interrupted and c.step >= self.total_steps and rl.eval_episodes > 0:
            if not c.evals or c.evals[-1]["step"] != c.step:
                self._eval_and_log(log, record=True)
        path = self.checkpoint()
        log.advance(c.step)
        log.close()
        why = f"stopped by {stop.requested}" if interrupted else "done"
        print(f"training {why} at step {c.step}; checkpoint {path}; TensorBoard: {self.paths.train / 'tb'}")
        self._write_progress(done=not interrupted)
        return self._summary(interrupted=interrupted, wall=wall, start_step=start_step) | {
            "checkpoint": str(path)
        }

    def _eval_and_log(self, log: TrainLogger, record: bool) -> None:
        ev = self.evaluate(record)
        c = self.counters
        c.evals.append({"step": c.step, "return": ev["return"], "length": ev["length"]})
        c.best_eval = ev["return"] if c.best_eval is None else max(c.best_eval, ev["return"])
        log.scalars({"eval/return": ev["return"], "eval/length": ev["length"]}, c.step)
        log.print(
            f"step {c.step}: eval return {ev['return']:.3f} length {ev['length']:.0f}"
            + (f" video {ev['video']}" if ev["video"] else "")
        )

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
    from nil.reward import NILReward, load_encoder, reference_embeddings
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
    encoder = emb = None
    if cfg.reward.use_video:
        encoder = load_encoder(cfg.encoder)
        emb = reference_embeddings(paths, cfg.encoder, encoder)
    sim = make_sim(spec, cfg.sim, horizon=horizon, seed=cfg.seed)
    try:
        reward = NILReward(
            cfg.reward,
            ref_masks=torch.as_tensor(masks),
            num_envs=sim.num_envs,
            action_dim=sim.action_dim,
            device=sim.device,
            encoder=encoder,
            ref_embeddings=emb,
            dt=1.0 / float(spec.control_hz),
        )
        trainer = Trainer(
            paths,
            cfg,
            sim,
            reward,
            device=dev,
            total_steps=steps or cfg.rl.total_steps,
            ref_frames=ref.frames,
            video_fps=ref.fps,
            progress=progress,
        )
        return trainer.run(resume=resume)
    finally:
        sim.close()


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
