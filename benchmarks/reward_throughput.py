"""Reward throughput: batched IoU + regularisers vs a naive per-env numpy loop, and TimeSformer-base clips/s.

    python benchmarks/reward_throughput.py                 # CPU: N = 1, 4, 16, 64 at 224², TimeSformer batch 1, 4
    python benchmarks/reward_throughput.py --gpu-batch 64  # also the GPU (bf16) when CUDA is present

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

from nil.config import EncoderConfig, RewardConfig
from nil.reward import NILReward, load_encoder
from nil.reward.encoders import _guard_broken_torchvision
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


def bench_timesformer(batches: list[int], device: str, dtype: str, min_reps: int) -> None:
    _guard_broken_torchvision()
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
    ap.add_argument("--envs", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--min-time", type=float, default=1.5, help="seconds per timed reward measurement")
    ap.add_argument("--cpu-batches", type=int, nargs="*", default=[1, 4])
    ap.add_argument("--cpu-reps", type=int, default=1, help="timed TimeSformer calls per CPU batch size")
    ap.add_argument("--gpu-batch", type=int, nargs="*", default=[64, 128])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# reward_throughput on {platform.processor() or platform.machine()}, torch {torch.__version__}")
    bench_terms(args.envs, args.min_time)
    if args.cpu_batches:
        bench_timesformer(args.cpu_batches, "cpu", "float32", args.cpu_reps)
    if torch.cuda.is_available() and args.gpu_batch:
        print(f"\nGPU: {torch.cuda.get_device_name()}")
        bench_timesformer(args.gpu_batch, "cuda", "bfloat16", 5)


if __name__ == "__main__":
    main()
