"""`synthetic` generator: a teacher motion simulated and rendered exactly like the agent.

This is NIL's offline default and a benchmark instrument, NOT a video model: a teacher from
nil.teachers (`generator.teacher`: a CPG gait, PD-tracked keyframes, or a trained policy) acts on the
robot; the motion runs through nil.sim.make_sim (one env, in-process, no reset noise) so its frames and
masks come from the very renderer the agent is scored with. The ground truth goes to
reference/teacher.npz (evaluation only; training never reads it).

Timing: the simulation runs at the control rate (spec.control_hz). The emitted video keeps every
k-th frame, k = round(control_hz / fps), so it plays at control_hz / k fps (25 fps by default, like
a video model's output) and the bundle's retiming must bring it back to the control rate. With n
control steps (a multiple of k) the video has n/k + 1 frames, the retimed video n + 1 frames, and
teacher.npz holds the n + 1 simulated states: retimed frame t <-> teacher state t <-> control step t
(frames at multiples of k are exact renders, those between are interpolated by the retimer).
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from nil.errors import ConfigError, GeneratorError
from nil.io import sha256_file
from nil.reference.generators.base import GENERATORS, GeneratorResult
from nil.reference.video import Video
from nil.teachers import TEACHERS, Teacher, make_teacher

if TYPE_CHECKING:
    from nil.config import SkillConfig, SyntheticGeneratorConfig
    from nil.robots.spec import RobotSpec

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2
DEFAULT_FPS = 25.0


class SyntheticGenerator:
    """Renders a nil.teachers teacher through nil.sim.make_sim; labelled synthetic in every output."""

    name = "synthetic"
    synthetic = True

    def __init__(self, cfg: SkillConfig, spec: RobotSpec | None = None) -> None:
        from nil.config import SyntheticGeneratorConfig

        if not isinstance(cfg.generator, SyntheticGeneratorConfig):
            raise ConfigError(
                f"generator.name is {cfg.generator.name!r}; the synthetic generator needs 'synthetic'"
            )
        self.cfg = cfg
        self.gen: SyntheticGeneratorConfig = cfg.generator
        g = self.gen
        TEACHERS.get(g.teacher)  # an unknown generator.teacher fails here, naming the registered ones
        if g.teacher == "policy":
            from nil.teachers.policy import checkpoint_path

            checkpoint_path(g)
        self._spec = spec
        self._teacher: Teacher | None = None

    @property
    def spec(self) -> RobotSpec:
        """The robot (from the skill config unless given)."""
        if self._spec is None:
            from nil.robots import robot_from_config

            self._spec = robot_from_config(self.cfg)
        return self._spec

    def controller(self) -> Teacher:
        """The teacher `generator.teacher` names, built for this robot (once)."""
        if self._teacher is None:
            g = self.gen
            self._teacher = make_teacher(g.teacher, self.spec, self.spec.load_model(), g)
        return self._teacher

    def _fps_k(self, fps: float | None) -> tuple[int, float]:
        hz = float(self.spec.control_hz)
        target = float(fps or DEFAULT_FPS)
        k = max(1, int(round(hz / target)))
        return k, hz / k

    def cache_params(self) -> dict[str, Any]:
        """Teacher kind and parameters, robot spec and model file, length, background, simulator."""
        g = self.gen
        spec = self.spec
        return {
            "teacher": g.teacher,
            "seconds": g.seconds,
            "background": g.teacher_background,
            "robot_spec": spec.to_dict(),
            "mjcf_sha256": sha256_file(spec.mjcf_path),
            "sim_backend": "mujoco",
            "generator_version": GENERATOR_VERSION,
            **self.controller().cache_params(),
        }

    def generate(
        self,
        frame0: np.ndarray,
        prompt: str,
        *,
        num_frames: int | None = None,
        fps: float | None = None,
        seed: int = 0,
    ) -> GeneratorResult:
        """Simulate and render the teacher; the prompt is not used (recorded only)."""
        import torch
        from rich.progress import track

        from nil.config import SimConfig
        from nil.sim import make_sim

        spec = self.spec
        g = self.gen
        k, fps_out = self._fps_k(fps)
        hz = float(spec.control_hz)
        n_steps = (int(num_frames) - 1) * k if num_frames else int(math.ceil(g.seconds * hz / k)) * k
        if n_steps < 1:
            raise ConfigError(f"generator.seconds={g.seconds} gives no control steps at {hz:g} Hz")
        teacher = self.controller()
        sim = make_sim(
            spec,
            SimConfig(backend="mujoco", device="cpu", num_envs=1, num_workers=0, reset_noise=0.0),
            num_envs=1,
            horizon=n_steps,
            seed=seed,
        )
        try:
            b = sim.reset()
            H, W = sim.image_hw
            nq, nv = b.qpos.shape[1], b.qvel.shape[1]
            rgb = np.empty((n_steps + 1, H, W, 3), np.uint8)
            mask = np.empty((n_steps + 1, H, W), bool)
            qpos = np.empty((n_steps + 1, nq), np.float32)
            qvel = np.empty((n_steps + 1, nv), np.float32)
            actions = np.zeros((n_steps + 1, sim.action_dim), np.float32)
            slips: list[float] = []
            fell_at = None

            def record(t: int, batch: Any) -> None:
                rgb[t] = batch.rgb[0].numpy()
                mask[t] = batch.mask[0].numpy()
                qpos[t] = batch.qpos[0].numpy()
                qvel[t] = batch.qvel[0].numpy()
                contact = batch.foot_contact[0].numpy()
                if contact.any():
                    slips.extend(np.linalg.norm(batch.foot_vel_xy[0].numpy()[contact], axis=-1).tolist())

            record(0, b)
            label = f"synthetic teacher ({g.teacher}, {spec.name})"
            for t in track(range(1, n_steps + 1), description=label, transient=True):
                a = teacher.action(
                    (t - 1) / hz,
                    b.qpos[0].double().numpy(),
                    b.qvel[0].double().numpy(),
                    b if teacher.needs_obs else None,
                )
                b = sim.step(torch.as_tensor(a, dtype=torch.float32)[None])
                actions[t] = b.action[0].numpy()
                record(t, b)
                if bool(b.terminated[0]) and fell_at is None:
                    fell_at = t
                    if bool(b.nonfinite[0]):
                        raise GeneratorError(
                            f"the {g.teacher} teacher's physics blew up at step {t} on {spec.name}; "
                            "lower generator.gait_amplitude or generator.gait_hz"
                        )
        finally:
            sim.close()
        root_pos = qpos[:, :3].astype(np.float32)
        if g.teacher_background == "flat":
            bg = np.asarray(self.cfg.camera.background, np.uint8)
            keep = mask.copy()
            if spec.scene:  # scene objects stay in the video (nil.scene); only the emitted frames are needed
                from nil.scene.render import object_masks

                keep[::k] |= object_masks(spec.load_model(), spec, qpos[::k].astype(np.float64))
            rgb = np.where(keep[..., None], rgb, bg).astype(np.uint8)
        progress = float(root_pos[-1, 0] - root_pos[0, 0])
        e0_diff = (
            float(np.abs(rgb[0][mask[0]].astype(np.int16) - frame0[mask[0]].astype(np.int16)).mean())
            if frame0.shape == rgb[0].shape and mask[0].any()
            else None
        )
        params = teacher.to_dict()
        info: dict[str, Any] = {
            "label": "synthetic teacher (benchmark instrument / offline default, not a video model)",
            "teacher": g.teacher,
            "robot": spec.name,
            "control_hz": hz,
            "subsample": k,
            "fps": fps_out,
            "control_steps": n_steps,
            "root_x_progress_m": round(progress, 4),
            "mean_speed_mps": round(progress / (n_steps / hz), 4),
            # horizontal speed of loaded feet as the simulator reports it (SimBatch.foot_vel_xy)
            "foot_slip_mps": round(float(np.mean(slips)), 4) if slips else None,
            "fell_at_step": fell_at,
            "frame0_masked_mad": None if e0_diff is None else round(e0_diff, 3),
            "teacher_params": params,
            "prompt_used": False,
            "background": g.teacher_background,
        }
        if fell_at is not None:
            log.warning("the synthetic teacher fell at step %d of %d on %s", fell_at, n_steps, spec.name)
            info["warning"] = (
                f"the synthetic teacher fell at step {fell_at} of {n_steps}; lower "
                "generator.gait_amplitude or generator.gait_hz"
            )
        ground_truth: dict[str, np.ndarray] = {
            "qpos": qpos,
            "qvel": qvel,
            "root_pos": root_pos,
            "root_x": root_pos[:, 0].copy(),
            "action": actions,
            "masks": mask,
            "t": np.arange(n_steps + 1, dtype=np.int64),
            "fps": np.array(hz, np.float64),
            "video_fps": np.array(fps_out, np.float64),
            "subsample": np.array(k, np.int64),
            "params": np.array(json.dumps(params)),
            "robot": np.array(spec.name),
            "teacher": np.array(g.teacher),
        }
        return GeneratorResult(Video(np.ascontiguousarray(rgb[::k]), fps_out), info, ground_truth)


@GENERATORS.register("synthetic")
def _make_synthetic(cfg: SkillConfig) -> SyntheticGenerator:
    return SyntheticGenerator(cfg)
