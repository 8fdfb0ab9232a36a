"""`policy` teacher: a trained NIL policy checkpoint acts (it reads the simulator's observation)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nil.errors import ConfigError, GeneratorError
from nil.teachers.base import TEACHERS

if TYPE_CHECKING:
    import mujoco

    from nil.robots.spec import RobotSpec


def checkpoint_path(gen_cfg: Any) -> Path:
    """generator.teacher_checkpoint, checked to be set."""
    if not getattr(gen_cfg, "teacher_checkpoint", None):
        raise ConfigError(
            "generator.teacher is 'policy' but generator.teacher_checkpoint is not set: give a "
            "trained skill directory, or use generator.teacher: cpg"
        )
    return Path(gen_cfg.teacher_checkpoint)


class PolicyTeacher:
    """Deterministic actions of the latest good checkpoint of a trained skill directory."""

    name = "policy"
    needs_obs = True

    def __init__(self, checkpoint: Path) -> None:
        try:
            from nil.rl import load_policy
        except ImportError as e:
            raise GeneratorError(
                f"generator.teacher: policy needs nil.rl ({e}); use generator.teacher: cpg"
            ) from None
        from nil.paths import SkillPaths

        if not checkpoint.exists():
            raise ConfigError(
                f"generator.teacher_checkpoint: {checkpoint} does not exist; give a trained skill directory"
            )
        self.checkpoint = checkpoint
        self.policy = load_policy(SkillPaths(checkpoint), device="cpu")

    def action(self, t: float, qpos: np.ndarray, qvel: np.ndarray, obs: Any = None) -> np.ndarray:
        """The policy's action for `obs`, the sim's SimBatch of one env (its input built as in training)."""
        import torch

        if obs is None:
            raise GeneratorError(
                "the policy teacher needs the simulator's observation (not a physics-only run)"
            )
        with torch.no_grad():
            if hasattr(self.policy, "act_batch"):  # previous action / gait clock, as in training
                a = self.policy.act_batch(obs, deterministic=True)
            else:
                a = self.policy.act(obs.obs, deterministic=True)
        return a.float().cpu().numpy()[0]

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint it acts from."""
        return {"checkpoint": str(self.checkpoint), "step": self.policy.step}

    def cache_params(self) -> dict[str, Any]:
        """Sizes of the checkpoint's files (a retrained skill changes them)."""
        ckpt = self.checkpoint
        files = sorted(p for p in ckpt.rglob("*") if p.is_file()) if ckpt.is_dir() else [ckpt]
        return {"checkpoint": {str(p): p.stat().st_size for p in files if p.exists()}}


@TEACHERS.register("policy")
def _make_policy(spec: RobotSpec, model: mujoco.MjModel, gen_cfg: Any) -> PolicyTeacher:
    return PolicyTeacher(checkpoint_path(gen_cfg))
