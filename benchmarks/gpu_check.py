"""GPU check: one command, one table, <= 8 minutes on one CUDA GPU (H100/H200 class).

    python benchmarks/gpu_check.py                  # on the GPU machine (needs the gpu extra: mujoco-warp)
    python benchmarks/gpu_check.py --quick          # any CPU: Warp's CPU device, tiny sizes (minutes)
    python benchmarks/gpu_check.py --json out.json --only parity bro

Sections (each runs in its own process under a time box, so a crash, a hang or an out-of-memory in one
becomes a row of the table, never the end of the check):
- parity: MuJoCo Warp against the CPU backend from the same state: qpos after 10 control steps, mask IoU
  and robot colours of the same pose;
- steps: env-steps/s of WarpSim + NILReward (RGB + mask render, IoU, regularisers; no video term) at
  224x224 for unitree_h1 and unitree_a1 at 1024 and 4096 worlds, random actions, resets included;
- timesformer: clips/s of the TimeSformer encoder in bf16 (random weights from the base config, i.e.
  the K400 model's shape, saved and loaded by path: no hub), SDPA attention, with the eager ratio;
- bro: BRO updates/s at the GPU preset's batch and widths, against what the preset's replay ratio needs
  at the 20k env-steps/s target;
- smoke: `nil init/generate/segment/train` on unitree_h1 (synthetic teacher, flow masks, no video term,
  evals and checkpoints pushed past the end) for 3 minutes; the episode return must rise. The reference
  is prepared in a CPU process while the GPU sections run.

--quick shrinks everything (ant for parity, 64x64, 4/16 worlds, a tiny TimeSformer and BRO, a 45 s
smoke on the CPU backend) so the script itself is known to work before a GPU is lent. Its figures say
nothing about GPU speed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BUDGET_S = 480.0  # the whole check on a GPU
FULL: dict[str, Any] = {
    "device": "cuda",
    "parity_robot": "unitree_h1",
    "parity_worlds": 4,
    "parity_res": 128,
    "res": 224,
    "worlds": [1024, 4096],
    "robots": ["unitree_h1", "unitree_a1"],
    "measure_s": 5.0,
    "tsf_batch": 256,
    "smoke_train_s": 175.0,
    "smoke_preset": "gpu",
    "boxes": {"warm": 150, "parity": 75, "steps": 40, "timesformer": 40, "bro": 20, "smoke_prep": 240},
}
QUICK: dict[str, Any] = {
    "device": "cpu",
    "parity_robot": "ant",
    "parity_worlds": 2,
    "parity_res": 64,
    "res": 64,
    "worlds": [4, 16],
    "robots": ["unitree_h1", "unitree_a1"],
    "measure_s": 2.0,
    "tsf_batch": 4,
    "smoke_train_s": 45.0,
    "smoke_preset": "cpu",
    "boxes": {"warm": 300, "parity": 240, "steps": 120, "timesformer": 90, "bro": 60, "smoke_prep": 300},
}
SMOKE_MIN_S = 120.0  # the smoke's training is shortened to fit the budget, never below this
SMOKE_GRACE_S = 30.0  # startup of `nil train` and its checkpoint after SIGINT
H1_TARGET_STEPS = 20_000  # env-steps/s with render + IoU + regularisers (issue 15)
TSF_TARGET = 2_000  # TimeSformer clips/s in bf16


def row(
    section: str, check: str, value, unit: str = "", target: str = "", status: str = "info", note: str = ""
):
    """One line of the table."""
    if isinstance(value, float):
        value = f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return {
        "section": section,
        "check": check,
        "value": value,
        "unit": unit,
        "target": target,
        "status": status,
        "note": note,
    }


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------ sections
def sec_parity(p: dict) -> list[dict]:
    """Warp vs CPU MuJoCo from the same state: qpos error after 10 steps, mask IoU and colours of one pose."""
    import mujoco
    import numpy as np
    import torch

    from nil.config import SimConfig
    from nil.robots import get_robot
    from nil.sim.render import RobotRenderer
    from nil.sim.warp_backend import WarpSim

    name, n, res = p["parity_robot"], p["parity_worlds"], p["parity_res"]
    spec = get_robot(name)
    spec.camera.width = spec.camera.height = res
    t0 = time.perf_counter()
    sim = WarpSim(spec, SimConfig(backend="warp", device=p["device"], num_envs=n), horizon=1000, seed=0)
    build_s = time.perf_counter() - t0
    try:
        b = sim.reset()
        model = spec.load_model()
        datas = []
        for w in range(n):
            d = mujoco.MjData(model)
            d.qpos[:] = b.qpos[w].double().cpu().numpy()
            d.qvel[:] = b.qvel[w].double().cpu().numpy()
            mujoco.mj_forward(model, d)
            datas.append(d)
        off, scale = spec.ctrl_affine(model)
        g = torch.Generator().manual_seed(0)
        steps = 10
        for _ in range(steps):
            a = torch.rand(n, sim.action_dim, generator=g) * 2 - 1
            b = sim.step(a.to(sim.device))
            for w, d in enumerate(datas):
                d.ctrl[:] = off + scale * a[w].double().numpy()
                mujoco.mj_step(model, d, nstep=spec.substeps(model))
        qerr = max(
            float(np.abs(b.qpos[w].double().cpu().numpy() - d.qpos).max()) for w, d in enumerate(datas)
        )
        ious, diffs = [], []
        with RobotRenderer(model, spec) as r:
            for w, d in enumerate(datas):
                d.qpos[:] = b.qpos[w].double().cpu().numpy()
                mujoco.mj_forward(model, d)
                rgb, mask = r.render(d)
                mw, rw = b.mask[w].cpu().numpy(), b.rgb[w].cpu().numpy()
                ious.append((mask & mw).sum() / max((mask | mw).sum(), 1))
                both = mask & mw
                diffs.append(
                    float(np.abs(rgb.astype(int) - rw.astype(int))[both].mean()) if both.any() else 255.0
                )
    finally:
        sim.close()
    sec = f"parity ({name}, {n} worlds, {res}px)"
    return [
        row(
            sec,
            f"qpos max abs(warp - cpu) after {steps} steps",
            qerr,
            "m or rad",
            "< 0.02",
            "ok" if qerr < 0.02 else "FAIL",
        ),
        row(
            sec,
            "robot mask IoU, same pose (min)",
            float(min(ious)),
            "",
            ">= 0.99",
            "ok" if min(ious) >= 0.99 else "FAIL",
        ),
        row(
            sec,
            "robot RGB mean abs diff (max)",
            max(diffs),
            "/255",
            "<= 8",
            "ok" if max(diffs) <= 8 else "FAIL",
        ),
        row(sec, "WarpSim build (compile + capture)", build_s, "s", note="cold Warp kernel cache: minutes"),
    ]


def sec_warm(p: dict) -> list[dict]:
    """Build a 1-world WarpSim of every benchmarked robot: Warp compiles their kernels into its cache while
    the parity section runs, so the timed sections start warm (Warp's cache is safe across processes)."""
    import torch

    from nil.config import SimConfig
    from nil.robots import get_robot
    from nil.sim import make_sim

    out = []
    for robot in p["robots"]:
        spec = get_robot(robot)
        spec.camera.width = spec.camera.height = p["res"]
        t0 = time.perf_counter()
        sim = make_sim(spec, SimConfig(backend="warp", device=p["device"], num_envs=1), horizon=10, seed=0)
        try:
            sim.reset()
            sim.step(torch.zeros(1, sim.action_dim, device=sim.device))
        finally:
            sim.close()
        out.append(row("warm-up", f"{robot}: first WarpSim build + step", time.perf_counter() - t0, "s"))
    return out


def sec_steps(p: dict, robot: str, n: int) -> list[dict]:
    """Env-steps/s of WarpSim + NILReward (render, IoU, regularisers) with random actions and resets."""
    import torch

    from nil.config import RewardConfig, SimConfig
    from nil.reward import NILReward
    from nil.robots import get_robot
    from nil.sim import make_sim

    res, horizon = p["res"], 600
    spec = get_robot(robot)
    spec.camera.width = spec.camera.height = res
    t0 = time.perf_counter()
    sim = make_sim(spec, SimConfig(backend="warp", device=p["device"], num_envs=n), horizon=horizon, seed=0)
    build_s = time.perf_counter() - t0
    try:
        b = sim.reset()
        ref = b.mask[:1].expand(horizon + 1, -1, -1).clone()  # the reset pose as a still reference
        reward = NILReward(
            RewardConfig(use_video=False),
            ref_masks=ref,
            num_envs=n,
            action_dim=sim.action_dim,
            device=sim.device,
            dt=1.0 / float(spec.control_hz),
        )
        reward.reset(None, b)
        g = torch.Generator(device=sim.device).manual_seed(0)

        def one() -> Any:
            nonlocal b
            a = torch.rand(n, sim.action_dim, device=sim.device, generator=g) * 2 - 1
            b = sim.step(a)
            out = reward(b)
            ids = (b.terminated | b.truncated).nonzero().flatten()
            if ids.numel():
                b = sim.reset(ids)
                reward.reset(ids, b)
            return out

        for _ in range(3):
            one()
        _sync(sim.device)
        steps, t0 = 0, time.perf_counter()
        while steps < 3 or time.perf_counter() - t0 < p["measure_s"]:
            out = one()
            steps += 1
        _sync(sim.device)
        dt = time.perf_counter() - t0
        finite = bool(torch.isfinite(out.total).all())
    finally:
        sim.close()
    rate = n * steps / dt
    target = f">= {H1_TARGET_STEPS:,}" if robot == "unitree_h1" and not p.get("quick") else ""
    status = "info" if not target else ("ok" if rate >= H1_TARGET_STEPS else "below target")
    if not finite:
        status = "FAIL"
    return [
        row(
            f"env-steps/s ({res}px)",
            f"{robot}, {n} worlds: sim + render + IoU + regs",
            rate,
            "steps/s",
            target,
            status,
            f"{steps} batched steps; build {build_s:.0f} s" + ("" if finite else "; NON-FINITE reward"),
        )
    ]


def _timesformer_dir(p: dict, root: Path) -> Path:
    from nil.compat import hide_broken_torchvision

    hide_broken_torchvision()
    import torch
    from transformers import TimesformerConfig, TimesformerModel

    if p.get("quick"):
        cfg = TimesformerConfig(
            image_size=32,
            patch_size=8,
            num_frames=8,
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=96,
        )
    else:
        cfg = TimesformerConfig()  # base: 224px, 8 frames, 12 layers, hidden 768 (the K400 model's shape)
    torch.manual_seed(0)
    TimesformerModel(cfg).save_pretrained(root)
    return root


def sec_timesformer(p: dict) -> list[dict]:
    """Clips/s of load_encoder(...) in bf16 with SDPA attention, and the eager-attention ratio."""
    import torch

    from nil.config import EncoderConfig
    from nil.reward import load_encoder

    with tempfile.TemporaryDirectory() as tmp:
        d = _timesformer_dir(p, Path(tmp) / "tsf")
        import json as _json

        mcfg = _json.loads((d / "config.json").read_text())
        res, frames, bs = int(mcfg["image_size"]), int(mcfg["num_frames"]), int(p["tsf_batch"])
        rates = {}
        for attn in ("sdpa", "eager"):
            enc: Any = load_encoder(
                EncoderConfig(
                    model_id=str(d),
                    clip_len=frames,
                    resolution=res,
                    device=p["device"],
                    dtype="bfloat16",
                    batch_size=bs,
                    attention=attn,
                )
            )
            clips = torch.randint(0, 256, (bs, frames, res, res, 3), dtype=torch.uint8, device=enc.device)
            enc.embed(clips)
            _sync(enc.device)
            n, t0 = 0, time.perf_counter()
            budget = p["measure_s"] if attn == "sdpa" else p["measure_s"] / 2
            while n < 2 or time.perf_counter() - t0 < budget:
                z = enc.embed(clips)
                n += 1
            _sync(enc.device)
            rates[attn] = n * bs / (time.perf_counter() - t0)
            finite = bool(torch.isfinite(z).all())
            del enc, clips
    size = "tiny config" if p.get("quick") else "base config (K400 shape), random weights"
    target = "" if p.get("quick") else f">= {TSF_TARGET:,}"
    st = "info" if not target else ("ok" if rates["sdpa"] >= TSF_TARGET else "below target")
    return [
        row(
            "timesformer (bf16)",
            f"clips/s, SDPA, batch {bs}",
            rates["sdpa"],
            "clips/s",
            target,
            st if finite else "FAIL",
            f"{size}; {frames}x{res}px",
        ),
        row("timesformer (bf16)", "SDPA / eager attention", rates["sdpa"] / rates["eager"], "x"),
    ]


def sec_bro(p: dict) -> list[dict]:
    """BRO updates/s at the GPU preset's batch and widths, against what its replay ratio needs."""
    import torch

    from nil.presets import get_preset
    from nil.rl.agents import make_agent
    from nil.rl.replay import Batch

    rl = get_preset("gpu").config().rl
    if p.get("quick"):
        rl = rl.model_copy(update={"batch_size": 64, "critic_width": 64, "actor_width": 64})
    dev = torch.device(p["device"])
    obs_dim, act_dim, bs = 70, 19, int(rl.batch_size)  # H1: qpos[2:] 24 + qvel 25 + phase ... (order of)
    rl = rl.model_copy(update={"device": str(dev)})
    agent = make_agent(rl, obs_dim, act_dim, dev)
    g = torch.Generator(device=dev).manual_seed(0)

    def batch() -> Batch:
        return Batch(
            obs=torch.randn(bs, obs_dim, device=dev, generator=g),
            action=torch.rand(bs, act_dim, device=dev, generator=g) * 2 - 1,
            reward=torch.randn(bs, device=dev, generator=g),
            next_obs=torch.randn(bs, obs_dim, device=dev, generator=g),
            terminated=torch.zeros(bs, device=dev),
        )

    batches = [batch() for _ in range(8)]
    agent.obs_norm.update(batches[0].obs)
    for i in range(3):
        agent.update(batches[i % 8])
    _sync(dev)
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < p["measure_s"]:
        agent.update(batches[n % 8])
        n += 1
    _sync(dev)
    rate = n / (time.perf_counter() - t0)
    need = float(rl.replay_ratio) * H1_TARGET_STEPS
    st = "info" if p.get("quick") else ("ok" if rate >= need else "learner-bound")
    return [
        row(
            "BRO learner",
            f"updates/s, batch {bs}, critic {rl.critic_width}x{rl.critic_depth}, actor {rl.actor_width}",
            rate,
            "updates/s",
            f">= {need:,.0f} (replay ratio {rl.replay_ratio:g} x {H1_TARGET_STEPS:,} steps/s)",
            st,
        )
    ]


def _nil(*args: str, cwd: Path | None = None) -> None:
    subprocess.run([sys.executable, "-m", "nil", *args], check=True, cwd=cwd, stdout=sys.stderr)


def sec_smoke_prep(p: dict, root: Path) -> list[dict]:
    """nil init + generate + segment for unitree_h1 (CPU work, run while the GPU sections measure)."""
    sets = [
        "reward.use_video=false",
        "segmenter.name=flow",
        "generator.seconds=3",
        "rl.eval_interval=100000000",  # no eval or checkpoint inside 3 minutes: the return is training's own
        "rl.checkpoint_interval=100000000",
        "rl.video_interval=100000000",
        "rl.total_steps=100000000",
    ]
    if p.get("quick"):
        sets += ["camera.width=64", "camera.height=64", "sim.num_envs=2", "rl.warmup_steps=200"]
    else:
        sets += ["sim.num_envs=1024"]
    t0 = time.perf_counter()
    args = ["init", str(root), "--robot", "unitree_h1", "--skill", "walking", "--preset", p["smoke_preset"]]
    for s in sets:
        args += ["--set", s]
    _nil(*args)
    _nil("generate", str(root))
    _nil("segment", str(root))
    return [row("H1 smoke", "reference (init + generate + segment)", time.perf_counter() - t0, "s")]


def _episode_returns(root: Path) -> list[tuple[int, float]]:
    """(step, return) of every finished training episode, from TensorBoard, else progress.json."""
    out: list[tuple[int, float]] = []
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        for ev_dir in {f.parent for f in (root / "train").rglob("events.out.tfevents.*")}:
            acc = EventAccumulator(str(ev_dir), size_guidance={"scalars": 0})
            acc.Reload()
            tags = acc.Tags().get("scalars", [])
            tag = next(
                (t for t in ("episode/return", "train/episode_return", "train/return") if t in tags), None
            )
            if tag is None:
                tag = next((t for t in tags if "return" in t and "eval" not in t), None)
            if tag:
                out += [(int(e.step), float(e.value)) for e in acc.Scalars(tag)]
    except Exception as e:  # noqa: BLE001 - fall back to progress.json
        print(f"tensorboard read failed: {e}", file=sys.stderr)
    if not out:
        prog = json.loads((root / "train" / "progress.json").read_text())
        out = list(enumerate(float(r) for r in prog.get("train_returns", [])))
    return sorted(out)


def sec_smoke_train(p: dict, root: Path) -> list[dict]:
    """`nil train` for smoke_train_s seconds, stopped by SIGINT; the training return must rise."""
    if not (root / "skill.yaml").exists():
        raise RuntimeError("the smoke reference was not prepared (see the smoke_prep row)")
    cmd = [sys.executable, "-m", "nil", "train", str(root)]
    log_path = root.parent / "nil_train.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=p["smoke_train_s"])
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # the trainer checkpoints and exits cleanly
            try:
                proc.wait(timeout=SMOKE_GRACE_S - 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    wall = time.perf_counter() - t0
    if not (root / "train").is_dir():
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
        raise RuntimeError(f"`nil train` exited with {proc.returncode} before training: {why[:200]}")
    rets = _episode_returns(root)
    if len(rets) < 4:
        return [
            row(
                "H1 smoke",
                f"training return over {wall:.0f} s",
                len(rets),
                "episodes",
                "rising",
                "FAIL",
                "fewer than 4 logged episode returns",
            )
        ]
    k = max(1, len(rets) // 4)
    first = sum(r for _, r in rets[:k]) / k
    last = sum(r for _, r in rets[-k:]) / k
    steps = rets[-1][0]
    status = "ok" if last > first else ("FAIL" if not p.get("quick") else "not rising (quick: short run)")
    return [
        row(
            "H1 smoke",
            f"training return, mean of the first vs last {k} logged",
            f"{first:.3g} -> {last:.3g}",
            "",
            "rising",
            status,
            f"{len(rets)} logged returns (episode means), ~{steps:,} env steps in {wall:.0f} s",
        ),
    ]


# ------------------------------------------------------------------------------------------ driver
def _child(args: argparse.Namespace) -> int:
    p = dict(QUICK if args.quick else FULL, quick=args.quick)
    name = args.section
    root = Path(args.workdir or tempfile.gettempdir())
    if p["device"] == "cpu":
        import torch

        torch.set_num_threads(1)  # a shared CPU: threads of parallel sections would thrash
    if name == "warm":
        rows = sec_warm(p)
    elif name == "parity":
        rows = sec_parity(p)
    elif name.startswith("steps:"):
        _, robot, n = name.split(":")
        rows = sec_steps(p, robot, int(n))
    elif name == "timesformer":
        rows = sec_timesformer(p)
    elif name == "bro":
        rows = sec_bro(p)
    elif name == "smoke_prep":
        rows = sec_smoke_prep(p, root / "h1_smoke")
    elif name == "smoke_train":
        p["smoke_train_s"] = float(args.smoke_seconds or p["smoke_train_s"])
        rows = sec_smoke_train(p, root / "h1_smoke")
    else:
        raise SystemExit(f"unknown section {name}")
    Path(args.rows_out).write_text(json.dumps(rows))
    return 0


def _label(name: str) -> str:
    return {
        "parity": "parity",
        "timesformer": "timesformer (bf16)",
        "bro": "BRO learner",
        "warm": "warm-up",
    }.get(name, "H1 smoke" if name.startswith("smoke") else "env-steps/s")


class Section:
    """A child process running one section under a time box."""

    def __init__(
        self, name: str, box: float, args: argparse.Namespace, workdir: Path, extra: list[str] | None = None
    ) -> None:
        self.name, self.box = name, box
        self.rows_out = workdir / f"rows_{name.replace(':', '_')}.json"
        self.log = workdir / f"log_{name.replace(':', '_')}.txt"
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--section",
            name,
            "--rows-out",
            str(self.rows_out),
            "--workdir",
            str(workdir),
        ]
        cmd += (["--quick"] if args.quick else []) + (extra or [])
        self.t0 = time.perf_counter()
        self._logf = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, box: float | None = None) -> list[dict]:
        """Rows of the section; a timeout, a crash or a non-zero exit becomes one row."""
        box = self.box if box is None else box
        left = max(1.0, box - (time.perf_counter() - self.t0))
        try:
            rc = self.proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self._logf.close()
            return [
                row(
                    _label(self.name),
                    self.name,
                    "-",
                    "",
                    "",
                    "TIMEOUT",
                    f"over its {box:.0f} s box; log {self.log}",
                )
            ]
        self._logf.close()
        wall = time.perf_counter() - self.t0
        if rc == 0 and self.rows_out.exists():
            rows = json.loads(self.rows_out.read_text())
            for r in rows:
                r["note"] = (r["note"] + "; " if r["note"] else "") + f"{wall:.0f} s"
            return rows
        tail = [ln.strip() for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        why = tail[-1][:160] if tail else f"exit code {rc}"
        return [row(_label(self.name), self.name, "-", "", "", "ERROR", f"{why} (log {self.log})")]


def _env_line(quick: bool) -> str:
    import torch

    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    else:
        parts.append("no CUDA GPU" + (" (quick mode)" if quick else ""))
    for mod in ("warp", "mujoco_warp", "mujoco"):
        try:
            m = __import__(mod)
            parts.append(
                f"{mod} {getattr(m, '__version__', getattr(m, 'config', None) and m.config.version)}"
            )
        except Exception:  # noqa: BLE001
            parts.append(f"{mod} missing")
    return ", ".join(parts)


COLUMNS = ("section", "check", "value", "unit", "target", "status", "note")


def markdown(rows: list[dict]) -> str:
    """The table, as markdown."""
    head = "| section | check | value | unit | target | status | note |\n|---|---|---|---|---|---|---|\n"
    return head + "\n".join("| " + " | ".join(str(r[k]) for k in COLUMNS) + " |" for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CPU, Warp CPU device, tiny sizes")
    ap.add_argument(
        "--only", nargs="+", default=None, help="sections: parity steps timesformer bro smoke (default: all)"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--workdir", default=None, help="where logs and the smoke skill go (default: a temp dir)")
    ap.add_argument("--section", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rows-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--smoke-seconds", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.section:
        return _child(args)

    os.environ.setdefault("MUJOCO_GL", "egl")
    p = QUICK if args.quick else FULL
    boxes = p["boxes"]
    only = set(args.only or ["parity", "steps", "timesformer", "bro", "smoke"])
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="nil_gpu_check_"))
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    deadline = t_start + (BUDGET_S if not args.quick else math.inf)
    print(f"GPU check ({'quick, CPU' if args.quick else 'full'}): {_env_line(args.quick)}", flush=True)
    print(f"logs and the smoke skill in {workdir}", flush=True)

    rows: list[dict] = []
    # CPU-side work starts first and runs beside the GPU sections: the smoke's reference, Warp's kernels
    prep = Section("smoke_prep", boxes["smoke_prep"], args, workdir) if "smoke" in only else None
    warm = Section("warm", boxes["warm"], args, workdir) if only & {"steps", "smoke"} else None
    plan: list[tuple[str, float]] = []
    if "parity" in only:
        plan.append(("parity", boxes["parity"]))
    if "steps" in only:
        plan += [(f"steps:{r}:{n}", boxes["steps"]) for r in p["robots"] for n in p["worlds"]]
    if "timesformer" in only:
        plan.append(("timesformer", boxes["timesformer"]))
    if "bro" in only:
        plan.append(("bro", boxes["bro"]))
    reserve = SMOKE_MIN_S + SMOKE_GRACE_S if "smoke" in only else 0.0

    def stamp(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:5.0f} s] {msg}", flush=True)

    def show(got: list[dict]) -> None:
        for r in got:
            print(f"        {r['check']}: {r['value']} {r['unit']} [{r['status']}]", flush=True)

    def wait_warm() -> None:
        nonlocal warm, rows
        if warm is not None:
            stamp("waiting for the Warp warm-up")
            got = warm.wait(max(1.0, min(warm.box, deadline - time.perf_counter() - reserve)))
            rows += got
            show(got)
            warm = None

    for name, box in plan:
        if name.startswith("steps:"):
            wait_warm()
        left = deadline - time.perf_counter() - reserve
        if left < 5:
            rows.append(
                row(_label(name), name, "-", "", "", "SKIPPED", "no time left in the 8-minute budget")
            )
            continue
        stamp(f"{name} (box {min(box, left):.0f} s)")
        got = Section(name, min(box, left), args, workdir).wait()
        rows += got
        show(got)
    wait_warm()
    if prep is not None:
        stamp("smoke: waiting for the reference")
        got = prep.wait(max(1.0, min(prep.box, deadline - time.perf_counter() - SMOKE_MIN_S - SMOKE_GRACE_S)))
        rows += got
        show(got)
        if got and got[0]["status"] in ("info", "ok"):
            train_s = min(p["smoke_train_s"], deadline - time.perf_counter() - SMOKE_GRACE_S)
            stamp(f"smoke: training for {train_s:.0f} s")
            got = Section(
                "smoke_train", train_s + SMOKE_GRACE_S, args, workdir, ["--smoke-seconds", f"{train_s:.0f}"]
            ).wait()
            rows += got
            show(got)
    total = time.perf_counter() - t_start
    rows.append(
        row(
            "total",
            "wall-clock of the whole check",
            total,
            "s",
            "<= 480" if not args.quick else "",
            "info" if args.quick else ("ok" if total <= BUDGET_S + 15 else "over budget"),
        )
    )
    print()
    print(markdown(rows))
    if args.json:
        args.json.write_text(
            json.dumps({"env": _env_line(args.quick), "quick": args.quick, "rows": rows}, indent=1)
        )
    bad = [r for r in rows if r["status"] in ("FAIL", "ERROR", "TIMEOUT")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
