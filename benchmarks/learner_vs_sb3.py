"""Our SAC (nil.rl.agents.SACAgent) against Stable-Baselines3 SAC on a gymnasium MuJoCo task and its reward.

Same task, step budget, seeds, hyperparameters (SB3's SAC defaults: lr 3e-4, batch 256, tau 0.005,
gamma 0.99, 256x256 MLPs, auto temperature from 1.0, target entropy -|A|, one update per env step,
`--warmup` uniform random steps first), same torch thread count, same process. Final return is the
mean of `--eval-episodes` deterministic episodes after training; wall-clock covers the whole
training loop (env steps + updates).

    python benchmarks/learner_vs_sb3.py --env Hopper-v5 --steps 8000 --seeds 0 1

The learner upgrades beyond the paper (rl.critic_layernorm, rl.n_step) are measured the same way, as
more rows: `--learners ours ours-ln ours-n3 ours-ln-n3 sb3`.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch

from nil.config import RLConfig
from nil.rl.agents import SACAgent
from nil.rl.nstep import NStepWindow
from nil.rl.replay import ReplayBuffer

# our learner's variants: (rl.critic_layernorm, rl.n_step)
VARIANTS = {"ours": (False, 1), "ours-ln": (True, 1), "ours-n3": (False, 3), "ours-ln-n3": (True, 3)}


def evaluate(env_id: str, act, episodes: int, seed: int) -> float:
    """Mean undiscounted return of deterministic episodes."""
    env = gym.make(env_id)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed * 100 + ep)
        done, ret = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(act(obs))
            ret += float(r)
            done = term or trunc
        returns.append(ret)
    env.close()
    return float(np.mean(returns))


def run_ours(
    env_id: str, steps: int, warmup: int, seed: int, layernorm: bool = False, n_step: int = 1
) -> tuple[float, float]:
    """Train our SAC (optionally with LayerNorm critics / n-step returns); returns (wall s, eval return)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    env = gym.make(env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    high = env.action_space.high
    cfg = RLConfig(
        algo="sac",
        batch_size=256,
        actor_width=256,
        actor_depth=2,
        critic_width=256,
        critic_depth=2,
        obs_norm=False,
        replay_ratio=1,
        critic_layernorm=layernorm,
        n_step=n_step,
    )
    agent = SACAgent(cfg, obs_dim, act_dim)
    buf = ReplayBuffer(steps, obs_dim, act_dim, with_discount=n_step > 1)
    window = NStepWindow(n_step, 1, obs_dim, act_dim, cfg.gamma, "cpu") if n_step > 1 else None
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    obs_t = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
    for step in range(steps):
        if step < warmup:
            a = torch.rand(1, act_dim) * 2 - 1
        else:
            a = agent.explore(obs_t)
        nobs, r, term, trunc, _ = env.step(a[0].numpy() * high)
        nobs_t = torch.as_tensor(nobs, dtype=torch.float32).unsqueeze(0)
        r_t, term_t = torch.tensor([r], dtype=torch.float32), torch.tensor([bool(term)])
        if window is None:
            buf.add(obs_t, a, r_t, nobs_t, term_t.float())
        else:
            window.push(buf, obs_t, a, r_t, nobs_t, term_t, torch.tensor([bool(term or trunc)]))
        if term or trunc:
            nobs, _ = env.reset()
            nobs_t = torch.as_tensor(nobs, dtype=torch.float32).unsqueeze(0)
        obs_t = nobs_t
        if step + 1 >= warmup and len(buf) > 0:
            agent.update(buf.sample(cfg.batch_size))
    wall = time.perf_counter() - t0
    env.close()
    ret = evaluate(
        env_id,
        lambda o: agent.act(torch.as_tensor(o, dtype=torch.float32)[None])[0].numpy() * high,
        ARGS.eval_episodes,
        seed,
    )
    return wall, ret


def run_sb3(env_id: str, steps: int, warmup: int, seed: int) -> tuple[float, float]:
    """Train Stable-Baselines3 SAC with its defaults; returns (wall seconds, final eval return)."""
    from stable_baselines3 import SAC

    env = gym.make(env_id)
    model = SAC("MlpPolicy", env, learning_starts=warmup, seed=seed, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - t0
    env.close()
    ret = evaluate(env_id, lambda o: model.predict(o, deterministic=True)[0], ARGS.eval_episodes, seed)
    return wall, ret


def main() -> None:
    """Run both learners on every seed and print a markdown table."""
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--learners", nargs="+", default=["ours", "sb3"], choices=[*VARIANTS, "sb3"])
    ARGS = p.parse_args()
    torch.set_num_threads(ARGS.threads)
    rows = []
    for seed in ARGS.seeds:
        for name in ARGS.learners:
            if name == "sb3":
                wall, ret = run_sb3(ARGS.env, ARGS.steps, ARGS.warmup, seed)
            else:
                ln, n = VARIANTS[name]
                wall, ret = run_ours(ARGS.env, ARGS.steps, ARGS.warmup, seed, layernorm=ln, n_step=n)
            rows.append(
                {
                    "learner": name,
                    "seed": seed,
                    "return": ret,
                    "wall_s": wall,
                    "ms_per_step": 1000 * wall / ARGS.steps,
                }
            )
            print(
                f"{name:5s} seed {seed}: return {ret:8.1f}  {1000 * wall / ARGS.steps:6.2f} ms/env-step",
                flush=True,
            )
    print(
        f"\n{ARGS.env}, {ARGS.steps} steps ({ARGS.warmup} random), seeds {ARGS.seeds}, "
        f"torch threads {ARGS.threads}\n"
    )
    print("| learner | final return (mean ± sd over seeds) | per-seed returns | ms / env step |")
    print("|---|---|---|---|")
    for name in ARGS.learners:
        r = [x for x in rows if x["learner"] == name]
        rets = [x["return"] for x in r]
        ms = np.mean([x["ms_per_step"] for x in r])
        per_seed = ", ".join(f"{v:.1f}" for v in rets)
        print(f"| {name} | {np.mean(rets):.1f} ± {np.std(rets):.1f} | {per_seed} | {ms:.2f} |")
    if "ours" in ARGS.learners and "sb3" in ARGS.learners:
        ours = np.mean([x["ms_per_step"] for x in rows if x["learner"] == "ours"])
        sb3 = np.mean([x["ms_per_step"] for x in rows if x["learner"] == "sb3"])
        print(f"\nspeed-up (sb3 ms / ours ms): {sb3 / ours:.2f}x")
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump({"args": vars(ARGS), "rows": rows}, f, indent=2)


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()
