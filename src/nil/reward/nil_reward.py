"""NILReward: R_t = zeta*S_V + beta*S_M + eta*P (+ task_weight*task), batched over N envs, every term logged.

State per env: a ring buffer of the last (clip_len-1)*stride+1 masked frames (only with the video term),
and the held S_V value for video_every > 1. See docs/reward.md for every decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nil.config import RewardConfig
from nil.errors import EncoderError, SegmentationError, SimulationError
from nil.reward import terms as T
from nil.reward.encoders import VideoEncoder
from nil.sim.base import SimBatch

REG_TERMS = ("reg_torque", "reg_action_rate", "reg_joint_vel", "reg_foot_slip", "reg_tilt")
TERM_NAMES = ("video", "iou", *REG_TERMS, "reg", "task")


@dataclass
class RewardOutput:
    """total [N] and terms "raw/<name>" / "weighted/<name>" [N]; video_valid [N] bool says where S_V was defined."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    video_valid: torch.Tensor | None = None


class NILReward:
    """The NIL reward for N parallel envs; call it on every SimBatch, including the ones reset() returns.

    An env whose t did not change since the previous call (the untouched envs of a partial reset's batch)
    keeps its frame history and held S_V.
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
        dt: float = 0.01,
    ) -> None:
        self.cfg = cfg
        self.num_envs = int(num_envs)
        self.action_dim = int(action_dim)
        self.dt = float(dt)  # control period; every coefficient is per control step at this rate
        self.device = torch.device(device)
        ref_masks = torch.as_tensor(ref_masks)
        if ref_masks.ndim != 3 or ref_masks.shape[0] == 0:
            raise SegmentationError(
                f"reference masks must be [T,H,W] with T >= 1, got {tuple(ref_masks.shape)}; re-run `nil segment`"
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

    # ------------------------------------------------------------------ setup
    def _init_video(self, encoder: VideoEncoder | None, ref_embeddings: torch.Tensor | None) -> None:
        if encoder is None or ref_embeddings is None:
            missing = "an encoder" if encoder is None else "reference embeddings"
            raise EncoderError(
                f"reward.use_video=true but NILReward got no {missing}; build them with load_encoder(cfg.encoder) "
                "and reference_embeddings(paths, cfg.encoder), or set reward.use_video=false"
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

    def _to(self, device: torch.device) -> None:
        """Follow the batch's device (state moves once, on the first batch from a new device)."""
        if device == self.device:
            return
        self.device = device
        self.ref_masks, self._ref_words = self.ref_masks.to(device), self._ref_words.to(device)
        self._ref_counts = self._ref_counts.to(device)
        self._held, self._held_ok = self._held.to(device), self._held_ok.to(device)
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
    def reset(self, env_ids: torch.Tensor | None = None) -> None:
        """Forget the frame history (and held S_V) of env_ids (all when None); their next batch is frame 0."""
        ids = slice(None) if env_ids is None else torch.as_tensor(env_ids, device=self.device).long()
        self._held_ok[ids] = False
        if self._hist is not None:
            self._count[ids] = 0
            self._ptr[ids] = 0
            self._last_t[ids] = -1

    def _push(self, frames: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Append each env's frame unless this env's t was already seen (a partial reset's batch); -> new [N]."""
        t = t.long()
        new = (t != self._last_t) | (self._count == 0)
        # A new batch at t == 0 is a fresh episode even if reset() was not called for it.
        fresh = new & (t == 0)
        self._count = torch.where(fresh, torch.zeros_like(self._count), self._count)
        self._ptr = torch.where(fresh, torch.zeros_like(self._ptr), self._ptr)
        self._held_ok &= ~fresh
        ids = torch.nonzero(new).flatten()
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

    def __call__(self, batch: SimBatch) -> RewardOutput:
        """Reward of every env for this batch; raises on size mismatches and non-finite values."""
        cfg = self.cfg
        self._to(batch.mask.device)
        n = batch.mask.shape[0]
        if n != self.num_envs:
            raise SimulationError(f"batch has {n} envs but NILReward was built for {self.num_envs}")
        if tuple(batch.mask.shape[1:]) != tuple(self.ref_masks.shape[1:]):
            raise SegmentationError(
                f"simulator masks are {tuple(batch.mask.shape[1:])} (H,W) but the reference masks are "
                f"{tuple(self.ref_masks.shape[1:])}; render and segment at the same camera size "
                "(camera.width/height), then re-run `nil segment DIR --force`"
            )
        ref_idx = batch.t.long().clamp(0, self.num_ref - 1)
        raw: dict[str, torch.Tensor] = {}
        weighted: dict[str, torch.Tensor] = {}
        zeros = torch.zeros(n, device=self.device)
        valid = None

        if cfg.use_video:
            raw["video"], valid = self._video(batch, ref_idx)
            weighted["video"] = cfg.zeta * raw["video"]

        ref_words = self._ref_words.index_select(0, ref_idx)
        ref_counts = self._ref_counts.index_select(0, ref_idx)
        raw["iou"] = T.iou_packed(T.pack_masks(batch.mask), ref_words, cfg.iou_empty, ref_counts)
        weighted["iou"] = cfg.beta * raw["iou"] if cfg.use_iou else zeros

        raw["reg_torque"] = T.reg_torque(batch.torque, cfg.torque_coef)
        raw["reg_action_rate"] = T.reg_action_rate(batch.action, batch.prev_action, cfg.action_rate_coef)
        raw["reg_joint_vel"] = T.reg_joint_vel(batch.joint_vel, cfg.joint_vel_coef)
        raw["reg_foot_slip"] = T.reg_foot_slip(batch.foot_vel_xy, batch.foot_contact, cfg.foot_slip_coef)
        raw["reg_tilt"] = T.reg_tilt(batch.torso_up_z, cfg.tilt_coef, cfg.tilt_form)
        raw["reg"] = sum(raw[k] for k in REG_TERMS)  # type: ignore[assignment]
        eta = cfg.eta if cfg.use_reg else 0.0
        for k in (*REG_TERMS, "reg"):
            weighted[k] = eta * raw[k]

        raw["task"] = T.task_reward(batch, cfg.target_speed)
        weighted["task"] = cfg.task_weight * raw["task"]

        total = weighted["iou"] + weighted["reg"] + weighted["task"]
        if cfg.use_video:
            total = total + weighted["video"]
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
