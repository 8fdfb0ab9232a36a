"""`nil export DIR --format onnx|torchscript`: the trained policy as one self-contained file for deployment.

The exported graph maps the raw policy observation [B, obs_dim] (float32, exactly what the trainer fed
the policy) to two outputs:
- `ctrl` [B, nu]: what NIL writes into MuJoCo's `data.ctrl` (torques, or PD targets in pd mode), with the
  observation normaliser and the robot's action scaling folded in and clamped to the control range as
  MuJoCo clamps it;
- `action` [B, nu]: the deterministic action in [-1, 1] (tanh of the actor's mean), before scaling.

Next to it, `policy.json` says how to build the observation (its layout, named entry by entry), the
control rate, the horizon the phase entry is divided by, and the affine action map, so a controller
outside NIL can drive the robot without importing NIL.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from nil.errors import CheckpointError, ConfigError, MissingStageError
from nil.paths import SkillPaths

log = logging.getLogger(__name__)

ExportFormat = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
OPSET = 17


class ExportedPolicy(nn.Module):
    """Normaliser -> actor mean -> tanh -> ctrl = clamp(offset + scale * action); no sampling, no state."""

    obs_mean: torch.Tensor
    obs_std: torch.Tensor
    ctrl_offset: torch.Tensor
    ctrl_scale: torch.Tensor
    ctrl_lo: torch.Tensor
    ctrl_hi: torch.Tensor

    def __init__(
        self,
        actor: nn.Module,
        norm: dict[str, Any] | None,
        offset: np.ndarray,
        scale: np.ndarray,
        ctrl_lo: np.ndarray,
        ctrl_hi: np.ndarray,
    ) -> None:
        super().__init__()
        self.actor = actor
        self.normalise = norm is not None
        f32 = torch.float32
        if norm is not None:
            self.register_buffer("obs_mean", norm["mean"].to(f32))
            self.register_buffer("obs_std", (norm["var"] + norm["eps"]).sqrt().to(f32))
            self.clip = float(norm["clip"])
        else:
            self.register_buffer("obs_mean", torch.zeros(0))
            self.register_buffer("obs_std", torch.ones(0))
            self.clip = 0.0
        self.register_buffer("ctrl_offset", torch.as_tensor(offset, dtype=f32))
        self.register_buffer("ctrl_scale", torch.as_tensor(scale, dtype=f32))
        self.register_buffer("ctrl_lo", torch.as_tensor(ctrl_lo, dtype=f32))
        self.register_buffer("ctrl_hi", torch.as_tensor(ctrl_hi, dtype=f32))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs
        if self.normalise:
            x = torch.clamp((x - self.obs_mean) / self.obs_std, -self.clip, self.clip)
        mean, _ = self.actor(x)
        action = torch.tanh(mean)
        ctrl = torch.maximum(
            torch.minimum(self.ctrl_offset + self.ctrl_scale * action, self.ctrl_hi), self.ctrl_lo
        )
        return ctrl, action


def _norm_state(policy: Any) -> dict[str, Any] | None:
    """The normaliser's statistics when it is applied (enabled and fitted), else None (identity)."""
    n = policy.obs_norm
    if not n.enabled or n.n == 0:
        return None
    return {"mean": n.mean.cpu(), "var": n.var.cpu(), "eps": float(n.eps), "clip": float(n.clip)}


def _joint_entries(model: Any) -> tuple[list[str], list[str]]:
    """Names of every qpos and qvel entry of a MuJoCo model, joint by joint."""
    import mujoco

    qpos: list[str] = [""] * model.nq
    qvel: list[str] = [""] * model.nv
    axes = {
        mujoco.mjtJoint.mjJNT_FREE: (
            ["x", "y", "z", "qw", "qx", "qy", "qz"],
            ["vx", "vy", "vz", "wx", "wy", "wz"],
        ),
        mujoco.mjtJoint.mjJNT_BALL: (["qw", "qx", "qy", "qz"], ["wx", "wy", "wz"]),
    }
    for j in range(model.njnt):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) or f"joint{j}"
        pa, va = axes.get(int(model.jnt_type[j]), ([""], [""]))
        p0, v0 = int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j])
        for k, a in enumerate(pa):
            qpos[p0 + k] = f"{name}.{a}" if a else name
        for k, a in enumerate(va):
            qvel[v0 + k] = f"{name}.{a}" if a else name
    return qpos, qvel


def _stored_layout(paths: SkillPaths) -> dict[str, Any] | None:
    """The observation layout the trainer saved with the policy (policy.pt's "observation"), if any."""
    from nil.rl.checkpoint import load_file, policy_checkpoint

    ckpt, _ = policy_checkpoint(paths)
    d = load_file(ckpt, "policy", "cpu").get("observation")
    return d if isinstance(d, dict) else None


def _policy_obs_switches(policy: Any, cfg: Any, paths: SkillPaths) -> tuple[bool, bool, float | None]:
    """(prev_action, gait_clock, gait_period_steps): the layout stored with the policy, else the config's."""
    from nil.rl.observation import ObservationLayout

    stored = getattr(policy, "obs_layout", None) or _stored_layout(paths)
    if isinstance(stored, dict):
        stored = ObservationLayout(**stored)
    if isinstance(stored, ObservationLayout):
        return stored.prev_action, stored.gait_clock, stored.gait_period_steps
    rl = cfg.rl  # a checkpoint from before layouts were stored: the plain observation unless configured
    return bool(getattr(rl, "obs_prev_action", False)), bool(getattr(rl, "gait_clock", False)), None


def observation_layout(
    model: Any, obs_dim: int, *, prev_action: bool = False, gait_clock: bool = False
) -> list[dict[str, Any]]:
    """[{name, start, size, entries, doc}] of the policy observation (nil.rl.observation's order), checked
    against the policy's obs_dim."""
    import mujoco

    qpos, qvel = _joint_entries(model)
    acts = [
        mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_ACTUATOR, i) or f"actuator{i}" for i in range(model.nu)
    ]
    parts: list[tuple[str, list[str], str]] = [
        ("qpos", qpos[2:], "joint positions without the root's x and y"),
        ("qvel", qvel, "joint velocities"),
        ("phase", ["phase"], "t / horizon (control steps since reset over the horizon; 0 when no horizon)"),
    ]
    if prev_action:
        parts.append(("prev_action", acts, "the previous action in [-1, 1] (zeros after a reset)"))
    if gait_clock:
        parts.append(("gait_clock", ["sin", "cos"], "sin and cos of 2*pi*t / gait_period_steps"))
    layout, start = [], 0
    for name, entries, doc in parts:
        layout.append({"name": name, "start": start, "size": len(entries), "entries": entries, "doc": doc})
        start += len(entries)
    if start != obs_dim:
        sizes = ", ".join(f"{p['name']}:{p['size']}" for p in layout)
        raise CheckpointError(
            f"the policy takes {obs_dim} observation entries but the skill config describes {start} "
            f"({sizes}); export with the skill.yaml it was trained with"
        )
    return layout


def _load_trained_policy(paths: SkillPaths) -> Any:
    from nil.rl.checkpoint import list_checkpoints, load_policy

    if not list_checkpoints(paths.checkpoints):
        raise MissingStageError(
            f"nil export: {paths.root} has no trained policy (no checkpoint in {paths.checkpoints}); "
            f"run `nil train {paths.root}` first"
        )
    return load_policy(paths, "cpu")


def _horizon(paths: SkillPaths) -> int | None:
    try:
        meta = json.loads(paths.meta.read_text())
        return int(meta["retimed_num_frames"]) - 1
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_exported(directory: str | Path) -> tuple[ExportedPolicy, dict[str, Any]]:
    """The export module (CPU, eval mode) and the JSON description of its inputs and outputs."""
    from nil.config import load_config
    from nil.robots import robot_from_config

    paths = SkillPaths(Path(directory))
    if not paths.config.exists():
        raise ConfigError(f"nil export: no skill.yaml in {paths.root}; pass the skill directory")
    policy = _load_trained_policy(paths)
    cfg = load_config(paths.config)
    spec = robot_from_config(cfg)
    model = spec.load_model()
    if int(model.nu) != policy.action_dim:
        raise CheckpointError(
            f"the policy has {policy.action_dim} actions but robot {spec.name!r} has {model.nu} actuators; "
            "export with the skill.yaml it was trained with"
        )
    offset, scale = spec.ctrl_affine(model)
    limited = model.actuator_ctrllimited.astype(bool)
    lo = np.where(limited, model.actuator_ctrlrange[:, 0], -np.inf)
    hi = np.where(limited, model.actuator_ctrlrange[:, 1], np.inf)
    module = ExportedPolicy(policy.actor, _norm_state(policy), offset, scale, lo, hi).eval()
    prev_action, gait_clock, period = _policy_obs_switches(policy, cfg, paths)
    layout = observation_layout(model, policy.obs_dim, prev_action=prev_action, gait_clock=gait_clock)
    import mujoco

    info = {
        "format_version": 1,
        "robot": spec.name,
        "skill": getattr(cfg, "skill", None),
        "algo": policy.algo,
        "checkpoint_step": policy.step,
        "control_hz": float(spec.control_hz),
        "control_mode": spec.control_mode,
        "horizon": _horizon(paths),
        "gait_period_steps": period if gait_clock else None,
        "inputs": {"obs": {"shape": ["batch", policy.obs_dim], "dtype": "float32"}},
        "outputs": {
            "ctrl": {"shape": ["batch", policy.action_dim], "doc": "MuJoCo data.ctrl, clamped to ctrlrange"},
            "action": {"shape": ["batch", policy.action_dim], "doc": "deterministic action in [-1, 1]"},
        },
        "observation_layout": layout,
        "action_map": {
            "actuators": [
                mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_ACTUATOR, i) or f"actuator{i}"
                for i in range(model.nu)
            ],
            "ctrl_offset": [float(v) for v in offset],
            "ctrl_scale": [float(v) for v in scale],
            "ctrl_min": [float(v) if np.isfinite(v) else None for v in lo],
            "ctrl_max": [float(v) if np.isfinite(v) else None for v in hi],
        },
        "normaliser_folded_in": module.normalise,
    }
    return module, info


def _write_onnx(module: ExportedPolicy, obs_dim: int, out: Path) -> None:
    if importlib.util.find_spec("onnx") is None:
        raise ConfigError("nil export --format onnx needs the onnx package: `pip install onnx onnxruntime`")
    example = torch.zeros(2, obs_dim)
    # The TorchScript-based exporter (deprecated, still shipped) needs no onnxscript and handles this
    # small static graph exactly; the batch axis stays dynamic.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(out),
            dynamo=False,
            opset_version=OPSET,
            input_names=["obs"],
            output_names=["ctrl", "action"],
            dynamic_axes={"obs": {0: "batch"}, "ctrl": {0: "batch"}, "action": {0: "batch"}},
        )


def _write_torchscript(module: ExportedPolicy, obs_dim: int, out: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still the C++ runtime
        traced = torch.jit.trace(module, torch.zeros(2, obs_dim), check_trace=False)
        traced.save(str(out))


def export_policy(directory: str | Path, fmt: str = "onnx", out: str | Path | None = None) -> dict[str, Any]:
    """Write DIR/export/policy.{onnx|pt} and policy.json; returns the JSON (plus the file paths)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    module, info = build_exported(directory)
    out_dir = Path(out) if out is not None else SkillPaths(Path(directory)).root / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    f = out_dir / f"policy{SUFFIX[fmt]}"
    tmp = f.with_name(f".{f.name}.tmp")
    obs_dim = int(info["inputs"]["obs"]["shape"][1])
    (_write_onnx if fmt == "onnx" else _write_torchscript)(module, obs_dim, tmp)
    tmp.replace(f)
    info = {**info, "format": fmt, "file": f.name}
    from nil.io import atomic_write_json

    atomic_write_json(out_dir / "policy.json", info)
    return {**info, "path": str(f), "json_path": str(out_dir / "policy.json")}


def export_command(directory: Path, fmt: str = "onnx", out: Path | None = None) -> None:
    """CLI: export and print where the files went."""
    res = export_policy(directory, fmt, out)
    print(
        f"exported the step-{res['checkpoint_step']} policy ({res['algo']}, {res['robot']}) to {res['path']} "
        f"and {res['json_path']}: obs [{res['inputs']['obs']['shape'][1]}] -> ctrl/action "
        f"[{res['outputs']['ctrl']['shape'][1]}] at {res['control_hz']:g} Hz"
    )


__all__ = [
    "FORMATS",
    "ExportedPolicy",
    "build_exported",
    "export_command",
    "export_policy",
    "observation_layout",
]
