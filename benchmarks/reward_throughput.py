"""Reward throughput: batched IoU + regularisers vs a naive per-env numpy loop, and TimeSformer-base clips/s.

    python benchmarks/reward_throughput.py                 # CPU: N = 1, 4, 16, 64 at 224², TimeSformer 1, 4
    python benchmarks/reward_throughput.py --gpu-batch 64  # also the GPU (bf16) when CUDA is present
    python benchmarks/reward_throughput.py --cpu-batches   # no TimeSformer: the cheap terms only

The "beyond the paper" table gives the cost of reward.iou_window and reward.speed_weight as a ratio to the
paper's IoU + regularisers in the same run.

    python benchmarks/reward_throughput.py --reference DIR --envs --cpu-batches --gpu-batch
        # DIR: a skill with a synthetic reference (nil generate + nil segment): how well the root velocity
        # and gait period estimated from the video match teacher.npz (and the estimate's time, against its
        # cached read from reference/root_velocity.npz), and S_M under phase slips

TimeSformer uses the base config (TimesformerConfig() defaults = the K400 model's shape) with random
weights, saved and loaded through load_encoder (no download); speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import numpy as np
import torch

from nil.compat import hide_broken_torchvision
from nil.config import EncoderConfig, RewardConfig
from nil.reward import NILReward, load_encoder
from nil.sim.base import SimBatch

HW = 224
NU, NJ, NFEET, T_REF = 19, 19, 2, 400  # an H1-sized robot


def make_batch(n: int, device: str = "cpu", seed: int = 0) -> SimBatch:
    """A random SimBatch of n envs at 224² with an H1-sized state."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    mask = torch.rand(n, HW, HW, generator=g) > 0.7
    b = SimBatch(
        obs=r(n, 50),
        rgb=torch.randint(0, 256, (n, HW, HW, 3), generator=g, dtype=torch.uint8),
        mask=mask,
        terminated=torch.zeros(n, dtype=torch.bool),
        truncated=torch.zeros(n, dtype=torch.bool),
        t=torch.randint(0, T_REF, (n,), generator=g),
        qpos=r(n, 26),
        qvel=r(n, 25),
        joint_vel=r(n, NJ),
        torque=r(n, NU) * 50,
        action=r(n, NU).clamp(-1, 1),
        prev_action=r(n, NU).clamp(-1, 1),
        foot_contact=torch.rand(n, NFEET, generator=g) > 0.5,
        foot_vel_xy=r(n, NFEET, 2),
        torso_up_z=torch.rand(n, generator=g),
        root_pos=r(n, 3),
        root_lin_vel=r(n, 3),
        nonfinite=torch.zeros(n, dtype=torch.bool),
    )
    return b.to(device)


def naive_reward(b: dict[str, np.ndarray], ref_masks: np.ndarray, cfg: RewardConfig) -> np.ndarray:
    """The same IoU + regularisers, one env at a time in numpy (what a per-env gym wrapper would do)."""
    out = np.zeros(len(b["t"]), dtype=np.float32)
    for i in range(len(b["t"])):
        ref = ref_masks[min(int(b["t"][i]), len(ref_masks) - 1)]
        m = b["mask"][i]
        union = np.logical_or(m, ref).sum()
        s_m = np.logical_and(m, ref).sum() / union if union else cfg.iou_empty
        p = -cfg.torque_coef * np.sum(b["torque"][i] ** 2)
        p -= cfg.action_rate_coef * np.sum((b["action"][i] - b["prev_action"][i]) ** 2)
        p -= cfg.joint_vel_coef * np.sum(b["joint_vel"][i] ** 2)
        p -= cfg.foot_slip_coef * np.sum(np.linalg.norm(b["foot_vel_xy"][i], axis=-1) * b["foot_contact"][i])
        p -= cfg.tilt_coef * (1.0 - b["torso_up_z"][i])
        out[i] = cfg.beta * s_m + cfg.eta * p
    return out


def timeit(fn, min_time: float, min_reps: int = 3, rounds: int = 1) -> float:
    """Seconds per call (after one warm-up call); the best of `rounds` rounds (the 2 cores are shared)."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        reps, t0 = 0, time.perf_counter()
        while reps < min_reps or time.perf_counter() - t0 < min_time:
            fn()
            reps += 1
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def bench_terms(ns: list[int], min_time: float) -> None:
    cfg = RewardConfig(use_video=False)
    ref = torch.rand(T_REF, HW, HW, generator=torch.Generator().manual_seed(1)) > 0.7
    ref_np = ref.numpy()
    print(f"\n## IoU + regularisers, {HW}x{HW}, CPU, torch threads {torch.get_num_threads()}")
    print("| N envs | batched torch env-steps/s | naive numpy loop env-steps/s | speed-up |")
    print("|---:|---:|---:|---:|")
    for n in ns:
        b = make_batch(n)
        rew = NILReward(cfg, ref_masks=ref, num_envs=n, action_dim=NU, device="cpu")
        bn = {
            k: getattr(b, k).numpy()
            for k in (
                "t",
                "mask",
                "torque",
                "action",
                "prev_action",
                "joint_vel",
                "foot_vel_xy",
                "foot_contact",
                "torso_up_z",
            )
        }
        got, want = rew(b).total.numpy(), naive_reward(bn, ref_np, cfg)
        assert np.allclose(got, want, atol=1e-4), "batched and naive rewards disagree"
        tb = timeit(lambda: rew(b), min_time / 3, rounds=3)  # noqa: B023
        tn = timeit(lambda: naive_reward(bn, ref_np, cfg), min_time / 3, rounds=3)  # noqa: B023
        print(f"| {n} | {n / tb:,.0f} | {n / tn:,.0f} | {tn / tb:.1f}x |")


def bench_beyond_paper(ns: list[int], min_time: float) -> None:
    ref = torch.rand(T_REF, HW, HW, generator=torch.Generator().manual_seed(1)) > 0.7
    vel = torch.zeros(T_REF, 2)
    vel[:, 0] = 0.5
    variants = {
        "paper (IoU + P)": {},
        "iou_window 2": {"iou_window": 2},
        "iou_window 3": {"iou_window": 3},
        "speed_weight 1": {"speed_weight": 1.0},
    }
    print(f"\n## Beyond-paper terms, {HW}x{HW}, CPU: env-steps/s and cost relative to the paper's terms")
    print("| N envs | " + " | ".join(variants) + " |")
    print("|---:|" + "---:|" * len(variants))
    for n in ns:
        b = make_batch(n)
        rews = [
            NILReward(
                RewardConfig(use_video=False, **over),
                ref_masks=ref,
                num_envs=n,
                action_dim=NU,
                device="cpu",
                ref_root_vel=vel,
            )
            for over in variants.values()
        ]
        best = [float("inf")] * len(rews)
        # interleaved rounds, best of each: the shared cores' load hits every variant alike
        for _ in range(5):
            for i, rew in enumerate(rews):
                best[i] = min(best[i], timeit(lambda: rew(b), min_time / 10))  # noqa: B023
        rates = [n / s for s in best]
        cells = [f"{rates[0]:,.0f}"] + [f"{r:,.0f} ({rates[0] / r:.2f}x)" for r in rates[1:]]
        print(f"| {n} | " + " | ".join(cells) + " |")


def bench_reference(root: str) -> None:
    """Beyond-paper estimates from a synthetic reference's video against its teacher.npz (evaluation only)."""
    import json
    from pathlib import Path

    from nil.config import load_config
    from nil.paths import SkillPaths
    from nil.reference.motion import estimate_gait_period, reference_root_velocity
    from nil.reference.segment import load_masks
    from nil.robots import robot_from_config

    paths = SkillPaths(Path(root))
    spec = robot_from_config(load_config(paths.config))
    # reference_root_velocity caches its result: drop the cache so the first call times the real estimate
    # (the call writes the same file back), then time the second call, the cache hit a training run gets
    paths.root_velocity.unlink(missing_ok=True)
    t0 = time.perf_counter()
    est = reference_root_velocity(paths, spec)
    t_est = time.perf_counter() - t0
    t0 = time.perf_counter()
    cached = reference_root_velocity(paths, spec)
    t_cached = time.perf_counter() - t0
    assert paths.root_velocity.is_file(), "reference_root_velocity wrote no cache"
    assert np.array_equal(cached, est), "the cached root velocity differs from the estimate"
    with np.load(paths.teacher) as z:
        te = {k: z[k] for k in z.files}
    fps = float(te["fps"])
    true = np.gradient(te["root_pos"][:, :2].astype(np.float64), 1.0 / fps, axis=0)
    err = np.linalg.norm(est - true, axis=1)
    k = np.ones(20) / 20
    sm = np.hypot(*[np.convolve(est[:, i] - true[:, i], k, "valid") for i in range(2)])
    print(f"\n## Root velocity from the floor flow vs teacher.npz ({root}, {len(est)} frames)")
    print(
        f"estimate {t_est:.2f} s (cache removed); cached read {t_cached:.3f} s "
        f"({paths.root_velocity.name}, hashing the video and masks included)"
    )
    print("| | estimated | true |\n|---|---:|---:|")
    print(f"| mean v_x (m/s) | {est[:, 0].mean():.3f} | {true[:, 0].mean():.3f} |")
    print(f"| mean v_y (m/s) | {est[:, 1].mean():.3f} | {true[:, 1].mean():.3f} |")
    print(
        f"per-frame |error| median {np.median(err):.3f}, p90 {np.percentile(err, 90):.3f} m/s; "
        f"0.2 s averages: mean {sm.mean():.3f}, max {sm.max():.3f} m/s"
    )
    masks = load_masks(paths)
    params = json.loads(str(te["params"])).get("params", {})
    period = estimate_gait_period(masks, fps)
    hz = params.get("gait_hz")
    print(
        f"gait period from the masks: {period if period is None else round(period, 3)} s "
        f"(teacher gait_hz {hz}: {None if not hz else round(1 / hz, 3)} s)"
    )
    ref = torch.from_numpy(masks)
    agent = torch.from_numpy(np.asarray(te["masks"]))
    t = torch.arange(30, len(ref) - 10)
    base = make_batch(len(t))
    base.mask = agent[t]
    print("\n## S_M under phase slips (the teacher's sim masks shifted by k frames vs the reference masks)")
    shifts = (0, 1, 2, 3, 5, 10)
    print("| S_M setting | " + " | ".join(f"shift {k}" for k in shifts) + " | standing still (e0) |")
    print("|---|" + "---:|" * (len(shifts) + 1))
    settings = [{"iou_window": w} for w in (0, 1, 2, 3, 5, 10)]
    for over in settings:
        rew = NILReward(
            RewardConfig(use_video=False, **over),
            ref_masks=ref,
            num_envs=len(t),
            action_dim=NU,
            device="cpu",
        )
        vals = []
        for k in (*shifts, None):
            base.mask = agent[:1].expand(len(t), -1, -1) if k is None else agent[t + k]
            base.t = t
            vals.append(float(rew(base).terms["raw/iou"].mean()))
        label = ", ".join(f"{k} {v}" for k, v in over.items())
        print(f"| {label} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")


def bench_rollouts(root: str) -> None:
    """Per-step reward terms of the teacher's action replay, standing still and random actions in the sim."""
    from pathlib import Path

    from nil.config import SimConfig, load_config
    from nil.paths import SkillPaths
    from nil.reference.motion import reference_root_velocity
    from nil.reference.segment import load_masks
    from nil.robots import robot_from_config
    from nil.sim import make_sim

    paths = SkillPaths(Path(root))
    cfg = load_config(paths.config)
    spec = robot_from_config(cfg)
    masks = torch.from_numpy(load_masks(paths))
    vel = torch.from_numpy(reference_root_velocity(paths, spec, masks.numpy()))
    with np.load(paths.teacher) as z:
        actions = torch.from_numpy(np.asarray(z["action"], np.float32))
    horizon = len(masks) - 1
    rcfg = RewardConfig(use_video=False, speed_weight=1.0, iou_window=3)
    sim = make_sim(spec, SimConfig(num_envs=1, num_workers=0, reset_noise=0.0), horizon=horizon, seed=0)
    g = torch.Generator().manual_seed(0)
    policies = {
        "teacher's actions replayed": lambda t: actions[min(t + 1, len(actions) - 1)][None],
        "standing still (zero action)": lambda t: torch.zeros(1, sim.action_dim),
        "random actions": lambda t: torch.rand(1, sim.action_dim, generator=g) * 2 - 1,
    }
    keys = ("raw/iou_exact", "raw/iou", "raw/speed", "raw/reg")
    print(f"\n## Mean per-step terms in the simulator ({root}, {horizon} steps, 1 episode each)")
    print("| policy | S_M (paper) | S_M, iou_window 3 | S_R (σ 0.25) | P | fell at |")
    print("|---|---:|---:|---:|---:|---:|")
    try:
        for name, act in policies.items():
            rew = NILReward(
                rcfg, ref_masks=masks, num_envs=1, action_dim=sim.action_dim, device="cpu", ref_root_vel=vel
            )
            b = sim.reset()
            rew.reset(None, b)
            sums = dict.fromkeys(keys, 0.0)
            steps, fell = 0, None
            for t in range(horizon):
                b = sim.step(act(t))
                out = rew(b)
                for k in keys:
                    sums[k] += float(out.terms[k][0])
                steps += 1
                if bool(b.terminated[0]):
                    fell = t + 1
                    break
                if bool(b.truncated[0]):
                    break
            cells = " | ".join(f"{sums[k] / steps:.3f}" for k in keys)
            print(f"| {name} | {cells} | {fell if fell is not None else '-'} |")
    finally:
        sim.close()


def bench_timesformer(batches: list[int], device: str, dtype: str, min_reps: int) -> None:
    hide_broken_torchvision()
    from transformers import TimesformerConfig, TimesformerModel

    mcfg = TimesformerConfig()  # base: 224², 8 frames, 12 layers, hidden 768, divided space-time attention
    with tempfile.TemporaryDirectory() as d:
        torch.manual_seed(0)
        TimesformerModel(mcfg).save_pretrained(d)
        enc = load_encoder(EncoderConfig(model_id=d, device=device, dtype=dtype, batch_size=max(batches)))
    print(
        f"\n## TimeSformer-base ({sum(p.numel() for p in enc.model.parameters()) / 1e6:.0f}M params), "
        f"{device} {str(enc.dtype).removeprefix('torch.')}, torch threads {torch.get_num_threads()}"
    )
    print("| batch (clips of 8x224²) | s per call | clips/s |")
    print("|---:|---:|---:|")
    for bs in batches:
        clips = torch.randint(0, 256, (bs, 8, HW, HW, 3), dtype=torch.uint8, device=device)

        def call():
            enc.embed(clips)  # noqa: B023
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        s = timeit(call, 0.0, min_reps)
        print(f"| {bs} | {s:.3f} | {bs / s:.2f} |")


def main() -> None:
    """Run the benchmark and print markdown tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", type=int, nargs="*", default=[1, 4, 16, 64])
    ap.add_argument("--min-time", type=float, default=1.5, help="seconds per timed reward measurement")
    ap.add_argument("--cpu-batches", type=int, nargs="*", default=[1, 4])
    ap.add_argument("--cpu-reps", type=int, default=1, help="timed TimeSformer calls per CPU batch size")
    ap.add_argument("--gpu-batch", type=int, nargs="*", default=[64, 128])
    ap.add_argument("--reference", default=None, help="a synthetic skill dir: estimates vs teacher.npz")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# reward_throughput on {platform.processor() or platform.machine()}, torch {torch.__version__}")
    if args.envs:
        bench_terms(args.envs, args.min_time)
        bench_beyond_paper(args.envs, args.min_time)
    if args.reference:
        bench_reference(args.reference)
        bench_rollouts(args.reference)
    if args.cpu_batches:
        bench_timesformer(args.cpu_batches, "cpu", "float32", args.cpu_reps)
    if torch.cuda.is_available() and args.gpu_batch:
        print(f"\nGPU: {torch.cuda.get_device_name()}")
        bench_timesformer(args.gpu_batch, "cuda", "bfloat16", 5)


if __name__ == "__main__":
    main()
