"""Simulator throughput: env-steps/s with RGB + exact robot mask, against a naive baseline in the same run.

Each env step = one control step (spec.substeps physics steps) + an RGB render + a robot mask.
The naive baseline is what a gymnasium-style env with render() does: one process, the model's own
visual settings (shadows, reflections, 4x MSAA), and separate RGB and segmentation renders, each with
its own scene update (mujoco.Renderer), mask from the segmentation ids.

    python benchmarks/sim_throughput.py                         # full table (H1 + ant, 224/112, 1/2 workers)
    python benchmarks/sim_throughput.py --robots ant --res 112 --steps 50
    python benchmarks/sim_throughput.py --backend warp --workers 0   # other backends through make_sim
    python benchmarks/sim_throughput.py --backend warp --device cuda:0 --robots unitree_h1 unitree_a1 \
        --res 224 --num-envs 1024 4096 --no-naive                    # MuJoCo Warp on a GPU
    python benchmarks/sim_throughput.py --robots ant --res 112 --workers 1 --no-naive --compare-rgb
        # also with set_render(False) (mask only: what the reward needs when S_V is off): the median
        # ratio of alternating pairs, so that load from other processes hits both settings alike
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def naive_steps_per_s(spec, steps: int, seed: int = 0) -> float:
    """One env, default render settings, separate RGB and segmentation renders (two scene updates)."""
    import mujoco

    model = mujoco.MjModel.from_xml_path(spec.mjcf_path)  # untouched visual settings
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, spec.camera.width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, spec.camera.height)
    prepared = spec.load_model()  # same control law and initial pose as the real backend
    model.actuator_gaintype[:] = prepared.actuator_gaintype
    model.actuator_gainprm[:] = prepared.actuator_gainprm
    model.actuator_biastype[:] = prepared.actuator_biastype
    model.actuator_biasprm[:] = prepared.actuator_biasprm
    model.actuator_ctrlrange[:] = prepared.actuator_ctrlrange
    model.actuator_ctrllimited[:] = prepared.actuator_ctrllimited
    data = mujoco.MjData(model)
    q0 = spec.initial_qpos(prepared)
    off, scale = spec.ctrl_affine(prepared)
    n_sub = spec.substeps(prepared)
    is_robot = spec.robot_geom_mask(prepared)
    root = spec.root_id(prepared)
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.distance, cam.elevation, cam.azimuth = (
        spec.camera.distance,
        spec.camera.elevation,
        spec.camera.azimuth,
    )
    rgb_r = mujoco.Renderer(model, spec.camera.height, spec.camera.width)
    seg_r = mujoco.Renderer(model, spec.camera.height, spec.camera.width)
    seg_r.enable_segmentation_rendering()
    rng = np.random.default_rng(seed)

    def reset() -> None:
        mujoco.mj_resetData(model, data)
        data.qpos[:] = q0
        mujoco.mj_forward(model, data)

    def one_step() -> None:
        data.ctrl[:] = off + scale * rng.uniform(-1, 1, model.nu)
        mujoco.mj_step(model, data, nstep=n_sub)
        cam.lookat[:] = data.xpos[root] + [0, 0, spec.camera.lookat_z]
        rgb_r.update_scene(data, cam)
        rgb = rgb_r.render()
        seg_r.update_scene(data, cam)
        seg = seg_r.render()
        ids = seg[..., 0]
        mask = (seg[..., 1] == mujoco.mjtObj.mjOBJ_GEOM) & is_robot[np.clip(ids, 0, None)] & (ids >= 0)
        assert rgb.shape[-1] == 3 and mask.dtype == bool
        if data.qpos[2] < spec.fall_height:
            reset()

    reset()
    for _ in range(3):
        one_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        one_step()
    dt = time.perf_counter() - t0
    rgb_r.close()
    seg_r.close()
    return steps / dt


def sim_steps_per_s(
    spec, backend: str, workers: int, num_envs: int, steps: int, device: str, seed: int = 0, rgb: bool = True
) -> float:
    """Env-steps/s of make_sim (any backend), random actions, resetting envs that end (rgb: set_render)."""
    import torch

    from nil.config import SimConfig
    from nil.sim import make_sim

    cfg = SimConfig(backend=backend, num_envs=num_envs, num_workers=workers, device=device)
    sim = make_sim(spec, cfg, num_envs=num_envs, horizon=1000, seed=seed)
    try:
        sim.set_render(rgb)
        g = torch.Generator().manual_seed(seed)
        sim.reset()
        for _ in range(3):
            sim.step(torch.rand(num_envs, sim.action_dim, generator=g) * 2 - 1)
        t0 = time.perf_counter()
        for _ in range(steps):
            b = sim.step((torch.rand(num_envs, sim.action_dim, generator=g) * 2 - 1).to(sim.device))
            assert b.rgb.shape[1:3] == (spec.camera.height, spec.camera.width) and b.mask.dtype == torch.bool
            done = (b.terminated | b.truncated).nonzero().flatten()
            if done.numel():
                sim.reset(done)
        if sim.device.type == "cuda":
            torch.cuda.synchronize(sim.device)
        dt = time.perf_counter() - t0
    finally:
        sim.close()
    return num_envs * steps / dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--robots", nargs="+", default=["unitree_h1", "ant"])
    ap.add_argument("--res", nargs="+", type=int, default=[224, 112])
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--backend", default="mujoco", help="sim.backend passed to make_sim (mujoco | warp)")
    ap.add_argument("--device", default="cpu", help="sim.device")
    ap.add_argument("--num-envs", nargs="+", type=int, default=[4])
    ap.add_argument("--steps", type=int, default=100, help="timed control steps per configuration")
    ap.add_argument("--naive-steps", type=int, default=20)
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument(
        "--compare-rgb",
        action="store_true",
        help="also time set_render(False) (mask only) and report the ratio",
    )
    ap.add_argument("--repeats", type=int, default=3, help="with --compare-rgb: alternating pairs (median)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    from nil.config import CameraConfig
    from nil.robots import get_robot

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# {platform.node()} cpus={os.cpu_count()} load(1m)={load:.1f} python {platform.python_version()}",
        file=sys.stderr,
    )
    if args.device.startswith("cuda"):
        import torch

        print(
            f"# device {args.device}: {torch.cuda.get_device_name(torch.device(args.device))}",
            file=sys.stderr,
        )
    rows = []
    for robot in args.robots:
        for res in args.res:
            spec = get_robot(robot, camera=CameraConfig(width=res, height=res))
            naive = None if args.no_naive else naive_steps_per_s(spec, args.naive_steps)
            # the warp backend runs every world in one process: worker counts do not apply
            workers = [0] if args.backend == "warp" else args.workers
            for w, n_envs in ((w, n) for n in args.num_envs for w in workers):
                mask_only = ratio = None
                if args.compare_rgb:
                    # alternate the two settings so that load from other processes hits both alike
                    on, off = [], []
                    for _ in range(args.repeats):
                        for rgb, out in ((True, on), (False, off)):
                            out.append(
                                sim_steps_per_s(
                                    spec, args.backend, w, n_envs, args.steps, args.device, rgb=rgb
                                )
                            )
                    sps, mask_only = float(np.median(on)), float(np.median(off))
                    ratio = float(np.median([b / a for a, b in zip(on, off, strict=True)]))
                else:
                    sps = sim_steps_per_s(spec, args.backend, w, n_envs, args.steps, args.device)
                row = {
                    "robot": robot,
                    "res": res,
                    "backend": args.backend,
                    "workers": w,
                    "num_envs": n_envs,
                    "env_steps_per_s": round(sps, 1),
                    "naive_env_steps_per_s": None if naive is None else round(naive, 2),
                    "speedup_vs_naive": None if naive is None else round(sps / naive, 1),
                    "mask_only_env_steps_per_s": None if mask_only is None else round(mask_only, 1),
                    "mask_only_speedup": None if ratio is None else round(ratio, 2),
                }
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(
        "| robot | res | backend | workers | envs | env-steps/s | naive env-steps/s | x naive "
        "| mask-only env-steps/s | x (mask only) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        naive_s = "-" if r["naive_env_steps_per_s"] is None else f"{r['naive_env_steps_per_s']:.1f}"
        x = "-" if r["speedup_vs_naive"] is None else f"{r['speedup_vs_naive']:.1f}x"
        mo = r["mask_only_env_steps_per_s"]
        mo_s, mo_x = ("-", "-") if mo is None else (f"{mo:.1f}", f"{r['mask_only_speedup']:.2f}x")
        print(
            f"| {r['robot']} | {r['res']}² | {r['backend']} | {r['workers']} | {r['num_envs']} | "
            f"{r['env_steps_per_s']:.1f} | {naive_s} | {x} | {mo_s} | {mo_x} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load_1m": load, "cpus": os.cpu_count(), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    from nil.errors import NilError

    try:
        sys.exit(main())
    except NilError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
