"""NILReward: R_t = zeta*S_V + beta*S_M + eta*P (+ speed_weight*S_R + position_weight*S_P + task_weight*task),
batched over N envs.

Every term is logged raw and weighted. State per env: a ring buffer of the last (clip_len-1)*stride+1
masked frames (only with the video term), the held S_V value for video_every > 1, and the root's start
(only with S_P). The terms beyond the paper (S_R, S_P, the IoU window) are off by default. See
docs/reward.md for every decision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from nil.config import RewardConfig
from nil.errors import ConfigError, EncoderError, SegmentationError, SimulationError
from nil.reference.motion import moving_region
from nil.reward import terms as T
from nil.reward.base import RewardOutput
from nil.reward.encoders import VideoEncoder
from nil.robots.spec import free_camera_basis
from nil.sim.base import SimBatch

if TYPE_CHECKING:
    from nil.config import SkillConfig
    from nil.paths import SkillPaths
    from nil.reward.visibility import UnseenJoints
    from nil.robots.spec import RobotSpec
    from nil.sim.base import BatchedSim

REG_TERMS = ("reg_torque", "reg_action_rate", "reg_joint_vel", "reg_foot_slip", "reg_tilt")
TERM_NAMES = ("video", "iou", "motion_iou", *REG_TERMS, "reg_unseen", "reg", "speed", "position", "task")

__all__ = ["NILReward", "REG_TERMS", "RewardOutput", "TERM_NAMES"]


class NILReward:
    """The NIL reward for N parallel envs (implements nil.reward.base.Reward).

    At every episode start call `reset(env_ids, batch)` with the batch sim.reset(env_ids) returned, then
    call the reward on every batch sim.step() returns. (Calling it on the reset batch instead, as older
    code did, still works: a batch at t == 0 starts a new history.) An env whose t did not change since
    the previous call (the untouched envs of a partial reset's batch) keeps its frame history and held S_V.
    """

    def __init__(
        self,
        cfg: RewardConfig,
        *,
        ref_masks: torch.Tensor,
        num_envs: int,
        action_dim: int,
        device: torch.device | str,
        encoder: VideoEncoder | None = None,
        ref_embeddings: torch.Tensor | None = None,
        ref_root_vel: torch.Tensor | None = None,
        dt: float = 0.01,
        unseen: UnseenJoints | None = None,
        camera_azimuth: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.num_envs = int(num_envs)
        self.action_dim = int(action_dim)
        self.dt = float(dt)  # control period; every coefficient is per control step at this rate
        self.device = torch.device(device)
        ref_masks = torch.as_tensor(ref_masks)
        if ref_masks.ndim != 3 or ref_masks.shape[0] == 0:
            raise SegmentationError(
                f"reference masks must be [T,H,W] with T >= 1, got {tuple(ref_masks.shape)}; "
                "re-run `nil segment`"
            )
        self.ref_masks = ref_masks.to(self.device).bool()
        self._ref_words = T.pack_masks(self.ref_masks)
        self._ref_counts = T.count_packed(self._ref_words)
        self.num_ref = int(self.ref_masks.shape[0])
        self.encoder = encoder
        self.ref_embeddings: torch.Tensor | None = None
        self._hist: torch.Tensor | None = None
        if cfg.use_video:
            self._init_video(encoder, ref_embeddings)
        self._held = torch.zeros(self.num_envs, device=self.device)
        self._held_ok = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        self.ref_root_vel: torch.Tensor | None = None
        self._depth_dir: tuple[float, float] | None = None
        if cfg.speed_sigma_depth is not None and cfg.speed_weight > 0:
            if camera_azimuth is None:
                raise ConfigError(
                    "reward.speed_sigma_depth needs the camera's azimuth (its line of sight on the ground); "
                    "build the reward with skill_reward, pass camera_azimuth=, or set "
                    "reward.speed_sigma_depth: null"
                )
            fwd, _, _ = free_camera_basis(float(camera_azimuth), 0.0)  # elevation 0: the ground line of sight
            self._depth_dir = (float(fwd[0]), float(fwd[1]))
        self.ref_root_disp: torch.Tensor | None = None
        self._start: torch.Tensor | None = None
        if cfg.speed_weight > 0 or cfg.position_weight > 0:
            self._init_speed(ref_root_vel)
        if cfg.position_weight > 0:
            self._init_position()
        self._unseen: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # qpos columns, rest, u^2
        if cfg.unseen_joint_coef > 0:
            if unseen is None:
                raise ConfigError(
                    "reward.unseen_joint_coef > 0 needs the robot's joints and camera (UnseenJoints, from "
                    "nil.reward.visibility.unseen_joints(spec)); build the reward with skill_reward, "
                    "or pass unseen="
                )
            self._unseen = (
                torch.as_tensor(unseen.qpos_adr, device=self.device),
                torch.as_tensor(unseen.rest, dtype=torch.float32, device=self.device),
                torch.as_tensor(unseen.unseen**2, dtype=torch.float32, device=self.device),
            )
        self._free_words: torch.Tensor | None = None
        if cfg.motion_iou_weight > 0:
            self._init_motion_region()

    # ------------------------------------------------------------------ setup
    def _init_video(self, encoder: VideoEncoder | None, ref_embeddings: torch.Tensor | None) -> None:
        if encoder is None or ref_embeddings is None:
            missing = "an encoder" if encoder is None else "reference embeddings"
            raise EncoderError(
                f"reward.use_video=true but NILReward got no {missing}; build them with "
                "load_encoder(cfg.encoder) and reference_embeddings(paths, cfg.encoder), "
                "or set reward.use_video=false"
            )
        emb = torch.as_tensor(ref_embeddings)
        if emb.ndim != 2 or emb.shape[0] != self.num_ref:
            raise EncoderError(
                f"reference embeddings {tuple(emb.shape)} do not match the {self.num_ref} reference masks; "
                "recompute them with reference_embeddings(paths, cfg.encoder, force=True)"
            )
        if not torch.isfinite(emb).all():
            raise EncoderError(
                "reference embeddings contain NaN/inf; recompute them with encoder.dtype=float32"
            )
        self.ref_embeddings = emb.to(self.device).float()
        self.clip_len = int(encoder.clip_len)
        self.clip_stride = int(getattr(encoder, "clip_stride", 1))
        self.background_fill = tuple(getattr(encoder, "background_fill", (0, 0, 0)))
        self.hist_len = (self.clip_len - 1) * self.clip_stride + 1
        h, w = self.ref_masks.shape[1:]
        self._hist = torch.zeros(self.num_envs, self.hist_len, h, w, 3, dtype=torch.uint8, device=self.device)
        self._ptr = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)  # slot of the next write
        self._count = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)  # frames since reset
        self._last_t = torch.full(
            (self.num_envs,), -1, dtype=torch.long, device=self.device
        )  # t of newest frame
        self._back = (self.clip_len - 1 - torch.arange(self.clip_len, device=self.device)) * self.clip_stride

    def _init_speed(self, ref_root_vel: torch.Tensor | None) -> None:
        switch = "reward.speed_weight" if self.cfg.speed_weight > 0 else "reward.position_weight"
        if ref_root_vel is None:
            raise ConfigError(
                f"{switch} > 0 but NILReward got no reference root velocity; estimate it with "
                f"nil.reference.motion.reference_root_velocity(paths, spec), or set {switch}: 0"
            )
        vel = torch.as_tensor(ref_root_vel).float()
        if vel.shape != (self.num_ref, 2) or not bool(torch.isfinite(vel).all()):
            raise ConfigError(
                f"the reference root velocity must be finite [{self.num_ref}, 2] (one per reference frame), "
                f"got {tuple(vel.shape)}; re-estimate it, or set {switch}: 0"
            )
        self.ref_root_vel = vel.to(self.device)

    def _init_position(self) -> None:
        # frame t's displacement: the velocities of frames 0..t-1, one control period each (checked on the
        # H1 sitting reference: within 2 cm of teacher.npz's root over a 0.52-m step back)
        vel = self.ref_root_vel
        assert vel is not None
        disp = torch.zeros_like(vel)
        disp[1:] = torch.cumsum(vel[:-1], 0) * self.dt
        self.ref_root_disp = disp
        self._start = torch.full((self.num_envs, 2), float("nan"), device=self.device)

    def _init_motion_region(self) -> None:
        """The pixels outside the reference's static core (S_D's region), packed; raises if nothing moves."""
        region = moving_region(self.ref_masks.cpu().numpy(), self.cfg.motion_core)
        free = torch.from_numpy(region).to(self.ref_masks.device)
        moving = int((self.ref_masks & free).any(0).sum())
        if moving < 4:
            raise ConfigError(
                f"reward.motion_iou_weight > 0 but the reference's robot has only {moving} moving pixels "
                f"(its mask covers the same pixels in {self.cfg.motion_core:.0%} of its frames): the robot "
                "does not move in the reference; set reward.motion_iou_weight: 0 or lower reward.motion_core"
            )
        self._free_words = T.pack_masks(free[None])
        self._moving_words = self._ref_words & self._free_words
        self._moving_counts = T.count_packed(self._moving_words)

    def _to(self, device: torch.device) -> None:
        """Follow the batch's device (state moves once, on the first batch from a new device)."""
        if device == self.device:
            return
        self.device = device
        self.ref_masks, self._ref_words = self.ref_masks.to(device), self._ref_words.to(device)
        self._ref_counts = self._ref_counts.to(device)
        if self._free_words is not None:
            self._free_words = self._free_words.to(device)
            self._moving_words, self._moving_counts = (
                self._moving_words.to(device),
                self._moving_counts.to(device),
            )
        if self._unseen is not None:
            self._unseen = tuple(x.to(device) for x in self._unseen)  # type: ignore[assignment]
        self._held, self._held_ok = self._held.to(device), self._held_ok.to(device)
        if self.ref_root_vel is not None:
            self.ref_root_vel = self.ref_root_vel.to(device)
        if self.ref_root_disp is not None and self._start is not None:
            self.ref_root_disp, self._start = self.ref_root_disp.to(device), self._start.to(device)
        if self._hist is not None:
            self.ref_embeddings = self.ref_embeddings.to(device)  # type: ignore[union-attr]
            self._hist, self._ptr, self._count = (
                self._hist.to(device),
                self._ptr.to(device),
                self._count.to(device),
            )
            self._last_t = self._last_t.to(device)
            self._back = self._back.to(device)

    # ------------------------------------------------------------------ episode bookkeeping
    def reset(self, env_ids: torch.Tensor | None = None, batch: SimBatch | None = None) -> None:
        """Start new episodes for env_ids (all when None): forget their history, prime it with `batch`.

        `batch` is what sim.reset(env_ids) returned: its frame of those envs becomes frame 0 of their
        clips (no reward is computed for it). Without a batch the next batch at t == 0 is frame 0.
        """
        if batch is not None:
            self._to(batch.mask.device)
        ids = slice(None) if env_ids is None else torch.as_tensor(env_ids, device=self.device).long()
        self._held_ok[ids] = False
        if self._start is not None:  # S_P measures from this batch, or from the next one without it
            if batch is None:
                self._start[ids] = float("nan")
            else:
                self._start[ids] = batch.root_pos[:, :2].to(self.device, torch.float32)[ids]
        if self._hist is not None:
            self._count[ids] = 0
            self._ptr[ids] = 0
            self._last_t[ids] = -1
            if batch is not None:
                self._check_batch(batch)
                # only the reset envs are new (last_t = -1); the others saw this t already
                self._push(T.mask_frames(batch.rgb, batch.mask, self.background_fill), batch.t)

    def _push(self, frames: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Append each env's frame unless its t was already seen (a partial reset's batch); -> new [N]."""
        t = t.long()
        new = (t != self._last_t) | (self._count == 0)
        # A new batch at t == 0 is a fresh episode even if reset() was not called for it.
        fresh = new & (t == 0)
        self._count = torch.where(fresh, torch.zeros_like(self._count), self._count)
        self._ptr = torch.where(fresh, torch.zeros_like(self._ptr), self._ptr)
        self._held_ok &= ~fresh
        ids = torch.nonzero(new).flatten()
        assert self._hist is not None  # only called with the video term on
        # flat index_copy_/index_select: torch's CPU advanced indexing is ~100x slower on these shapes
        flat = self._hist.view(-1, *self._hist.shape[2:])
        flat.index_copy_(0, ids * self.hist_len + self._ptr.index_select(0, ids), frames.index_select(0, ids))
        self._ptr = torch.where(new, (self._ptr + 1) % self.hist_len, self._ptr)
        self._count = torch.where(new, (self._count + 1).clamp_max(self.hist_len), self._count)
        self._last_t = t
        return new

    def _clips(self, env_ids: torch.Tensor) -> torch.Tensor:
        """[M,clip_len,H,W,3] clip ending at the newest frame; offsets before frame 0 repeat frame 0."""
        count = self._count[env_ids]
        back = torch.minimum(self._back.unsqueeze(0), (count - 1).clamp_min(0).unsqueeze(1))  # [M,L]
        newest = (self._ptr[env_ids] - 1) % self.hist_len
        slots = (newest.unsqueeze(1) - back) % self.hist_len
        assert self._hist is not None  # only called with the video term on
        flat = self._hist.view(-1, *self._hist.shape[2:])
        rows = (env_ids.unsqueeze(1) * self.hist_len + slots).flatten()
        return flat.index_select(0, rows).view(len(env_ids), self.clip_len, *self._hist.shape[2:])

    # ------------------------------------------------------------------ the reward
    def _video(self, batch: SimBatch, ref_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        new = self._push(T.mask_frames(batch.rgb, batch.mask, self.background_fill), batch.t)
        valid = (
            self._count >= self.hist_len
            if cfg.early_clip == "zero"
            else torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        )
        due = (new & ((batch.t % cfg.video_every) == 0)) | ~self._held_ok
        todo = torch.nonzero(due & valid).flatten()
        if todo.numel():
            z = self.encoder.embed(self._clips(todo))  # type: ignore[union-attr]
            zr = self.ref_embeddings.index_select(0, ref_idx[todo])  # type: ignore[union-attr]
            s = T.video_similarity(z.to(self.device), zr, cfg.video_metric)
            self._held[todo] = s.to(self._held.dtype)
            self._held_ok[todo] = True
        return torch.where(valid, self._held, torch.zeros_like(self._held)), valid

    def _check_batch(self, batch: SimBatch) -> None:
        n = batch.mask.shape[0]
        if n != self.num_envs:
            raise SimulationError(f"batch has {n} envs but NILReward was built for {self.num_envs}")
        if tuple(batch.mask.shape[1:]) != tuple(self.ref_masks.shape[1:]):
            raise SegmentationError(
                f"simulator masks are {tuple(batch.mask.shape[1:])} (H,W) but the reference masks are "
                f"{tuple(self.ref_masks.shape[1:])}; render and segment at the same camera size "
                "(camera.width/height), then re-run `nil segment DIR --force`"
            )

    def _iou(
        self,
        agent: torch.Tensor,
        ref_idx: torch.Tensor,
        words: torch.Tensor,
        counts: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(S_M, frame-exact IoU or None) of packed agent masks against the packed reference `words`.

        With iou_window w, S_M is the best IoU over frames t-w..t+w. S_D calls it with both sides cut to
        the moving region.
        """
        empty = self.cfg.iou_empty
        w = self.cfg.iou_window
        if w == 0:
            exact = T.iou_packed(
                agent, words.index_select(0, ref_idx), empty, counts.index_select(0, ref_idx)
            )
            return exact, None
        count_a = T.count_packed(agent)
        exact = T.iou_packed(
            agent, words.index_select(0, ref_idx), empty, counts.index_select(0, ref_idx), count_a
        )
        best = exact
        for k in (*range(-w, 0), *range(1, w + 1)):
            idx = (ref_idx + k).clamp(0, self.num_ref - 1)
            s = T.iou_packed(agent, words.index_select(0, idx), empty, counts.index_select(0, idx), count_a)
            best = torch.maximum(best, s)
        return best, exact

    def __call__(self, batch: SimBatch) -> RewardOutput:
        """Reward of every env for this batch; raises on size mismatches and non-finite values."""
        cfg = self.cfg
        self._to(batch.mask.device)
        self._check_batch(batch)
        ref_idx = batch.t.long().clamp(0, self.num_ref - 1)
        raw: dict[str, torch.Tensor] = {}
        weighted: dict[str, torch.Tensor] = {}
        valid = None

        if cfg.use_video:
            raw["video"], valid = self._video(batch, ref_idx)
            weighted["video"] = cfg.zeta * raw["video"]

        agent = T.pack_masks(batch.mask)
        raw["iou"], exact = self._iou(agent, ref_idx, self._ref_words, self._ref_counts)
        weighted["iou"] = cfg.beta * raw["iou"]
        if exact is not None:
            raw["iou_exact"] = exact  # the paper's frame-exact S_M, logged beside the windowed one
        if self._free_words is not None:
            moving = agent & self._free_words
            raw["motion_iou"], _ = self._iou(moving, ref_idx, self._moving_words, self._moving_counts)
            weighted["motion_iou"] = cfg.motion_iou_weight * raw["motion_iou"]

        raw["reg_torque"] = T.reg_torque(batch.torque, cfg.torque_coef)
        raw["reg_action_rate"] = T.reg_action_rate(batch.action, batch.prev_action, cfg.action_rate_coef)
        raw["reg_joint_vel"] = T.reg_joint_vel(batch.joint_vel, cfg.joint_vel_coef)
        raw["reg_foot_slip"] = T.reg_foot_slip(batch.foot_vel_xy, batch.foot_contact, cfg.foot_slip_coef)
        raw["reg_tilt"] = T.reg_tilt(batch.torso_up_z, cfg.tilt_coef, cfg.tilt_form)
        if cfg.roll_coef > 0:  # the free root's quaternion: every NIL robot is a floating base
            raw["reg_tilt"] = raw["reg_tilt"] + T.reg_roll(batch.qpos[:, 3:7], cfg.roll_coef)
        reg_keys: tuple[str, ...] = REG_TERMS
        if self._unseen is not None:
            raw["reg_unseen"] = T.reg_unseen(batch.qpos, *self._unseen, cfg.unseen_joint_coef)
            reg_keys = (*REG_TERMS, "reg_unseen")
        raw["reg"] = sum(raw[k] for k in reg_keys)  # type: ignore[assignment]
        for k in (*reg_keys, "reg"):
            weighted[k] = cfg.eta * raw[k]

        if self.ref_root_vel is not None:
            v_ref = self.ref_root_vel.index_select(0, ref_idx)
            raw["speed"] = T.planar_match(
                batch.root_lin_vel[:, :2], v_ref, cfg.speed_sigma, cfg.speed_sigma_depth, self._depth_dir
            )
            weighted["speed"] = cfg.speed_weight * raw["speed"]

        if self.ref_root_disp is not None and self._start is not None:
            pos = batch.root_pos[:, :2].to(self.device, torch.float32)
            self._start = torch.where(torch.isnan(self._start), pos, self._start)
            p_ref = self.ref_root_disp.index_select(0, ref_idx)
            raw["position"] = T.planar_match(pos - self._start, p_ref, cfg.position_sigma)
            weighted["position"] = cfg.position_weight * raw["position"]

        raw["task"] = T.task_reward(batch, cfg.target_speed)
        weighted["task"] = cfg.task_weight * raw["task"]

        total = weighted["iou"] + weighted["reg"] + weighted["task"]
        if cfg.use_video:
            total = total + weighted["video"]
        for k in ("motion_iou", "speed", "position"):
            if k in weighted:
                total = total + weighted[k]
        total = self._check_finite(total, raw, batch)
        out = {f"raw/{k}": v for k, v in raw.items()}
        out.update({f"weighted/{k}": v for k, v in weighted.items()})
        return RewardOutput(total=total, terms=out, video_valid=valid)

    def _check_finite(
        self, total: torch.Tensor, raw: dict[str, torch.Tensor], batch: SimBatch
    ) -> torch.Tensor:
        bad = ~torch.isfinite(total)
        if not bool(bad.any()):
            return total
        flagged = batch.nonfinite.to(bad.device).bool()
        if self.cfg.nonfinite_reward is not None and bool((bad <= flagged).all()):
            return torch.where(flagged, torch.full_like(total, self.cfg.nonfinite_reward), total)
        envs = torch.nonzero(bad).flatten().tolist()[:8]
        names = [k for k, v in raw.items() if not bool(torch.isfinite(v[bad]).all())]
        msg = f"non-finite reward in envs {envs} from term(s) {names}"
        if names == ["video"]:
            raise EncoderError(f"{msg}; the video encoder produced NaN/inf (try encoder.dtype=float32)")
        raise SimulationError(
            f"{msg}; the physics state is NaN/inf (lower the action scale or timestep), or set "
            "reward.nonfinite_reward to a penalty for envs the simulator flags as non-finite"
        )


def skill_reward(
    paths: SkillPaths, cfg: SkillConfig, spec: RobotSpec, ref_masks: np.ndarray
) -> Callable[[BatchedSim], NILReward]:
    """Load what a skill's reward reads once (encoder + reference embeddings, the root-motion cue); the
    returned function builds the NILReward of one simulator (training, its eval envs, `nil eval`)."""
    from nil.reward.encoders import load_encoder, reference_embeddings

    encoder = emb = None
    if cfg.reward.use_video:
        encoder = load_encoder(cfg.encoder)
        emb = reference_embeddings(paths, cfg.encoder, encoder)
    ref_vel = None
    # the root-motion cues come from the reference video's floor, never from teacher.npz
    if cfg.reward.speed_weight > 0 or cfg.reward.position_weight > 0:
        from nil.reference.motion import reference_root_velocity

        ref_vel = torch.from_numpy(reference_root_velocity(paths, spec, ref_masks))
    masks = torch.as_tensor(np.asarray(ref_masks, dtype=bool))
    dt = 1.0 / float(spec.control_hz)
    unseen = None
    if cfg.reward.unseen_joint_coef > 0:  # the MJCF and the camera only
        from nil.reward.visibility import unseen_joints

        unseen = unseen_joints(spec)

    def build(sim: BatchedSim) -> NILReward:
        return NILReward(
            cfg.reward,
            ref_masks=masks,
            num_envs=sim.num_envs,
            action_dim=sim.action_dim,
            device=sim.device,
            encoder=encoder,
            ref_embeddings=emb,
            ref_root_vel=ref_vel,
            dt=dt,
            unseen=unseen,
            camera_azimuth=float(spec.camera.azimuth),
        )

    return build
