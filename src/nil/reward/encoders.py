"""Video encoders for S_V: TimeSformer (the paper's K400 model) and VideoMAE behind one VideoEncoder seam.

An encoder maps already-masked uint8 clips [B,T,H,W,3] to embeddings [B,D]. Resize and normalisation run
in torch on the encoder's device, so a GPU batch never goes through numpy. Encoders are chosen by
`encoder.name` through the `ENCODERS` registry (a plugin registers its own the same way). TimeSformer's
attention runs through torch's scaled_dot_product_attention (`encoder.attention: sdpa`, the same maths as
the eager einsum, fused kernels on CUDA); on CUDA the default dtype is bf16. See docs/reward.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from nil.compat import hide_broken_torchvision
from nil.config import EncoderConfig
from nil.errors import EncoderError, SegmentationError
from nil.registry import Registry

if TYPE_CHECKING:
    from nil.paths import SkillPaths

log = logging.getLogger(__name__)

KINETICS_MEAN = (0.45, 0.45, 0.45)  # TimeSformer's Kinetics configs (facebookresearch/TimeSformer)
KINETICS_STD = (0.225, 0.225, 0.225)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # VideoMAE's Kinetics checkpoints
IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class VideoEncoder(Protocol):
    """Embeds masked uint8 clips [B,T,H,W,3] (T = clip_len) into float embeddings [B,D]."""

    id: str
    clip_len: int

    def embed(self, clips: torch.Tensor) -> torch.Tensor:
        """[B,T,H,W,3] uint8 (already masked) -> [B,D] float32 on the clips' device."""
        ...


EncoderFactory = Callable[[EncoderConfig], VideoEncoder]
# encoder.name -> factory(EncoderConfig) -> VideoEncoder; the built-ins register below.
ENCODERS: Registry[EncoderFactory] = Registry("encoder.name")


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on CUDA, float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def _is_local_path(model_id: str) -> bool:
    p = Path(model_id).expanduser()
    return p.is_absolute() or model_id.startswith((".", "~")) or p.exists()


def encoder_id(cfg: EncoderConfig) -> str:
    """Filename-safe id of the embedding space: family, model, revision, resolution, clip, stride, fill."""
    model = cfg.model_id
    if _is_local_path(model):
        p = Path(model).expanduser().resolve()
        model = f"{p.name}-{hashlib.sha256(str(p).encode()).hexdigest()[:8]}"
    rev = f"@{cfg.revision}" if cfg.revision else ""
    fill = "_".join(str(int(c)) for c in cfg.background_fill)
    raw = f"{cfg.name}-{model}{rev}-r{cfg.resolution}-T{cfg.clip_len}-s{cfg.clip_stride}-fill{fill}"
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", raw).strip("._")


def _missing_weights_error(cfg: EncoderConfig, err: Exception) -> EncoderError:
    return EncoderError(
        f"cannot load video encoder {cfg.model_id!r} "
        f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
        "download it once with internet, or set encoder.model_id to a local folder holding the model "
        "(save_pretrained), or turn the video term off with reward.use_video=false"
    )


def _read_norm(cfg: EncoderConfig, default_mean: tuple, default_std: tuple) -> tuple[tuple, tuple, str]:
    """image_mean/std from the checkpoint's preprocessor_config.json when present, else the family default."""
    text = None
    try:
        if _is_local_path(cfg.model_id):
            local = Path(cfg.model_id).expanduser() / "preprocessor_config.json"
            text = local.read_text() if local.exists() else None
        else:
            from transformers.utils import cached_file

            f = cached_file(
                cfg.model_id,
                "preprocessor_config.json",
                revision=cfg.revision,
                local_files_only=cfg.local_files_only,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
            text = Path(f).read_text() if f else None
    except Exception as e:  # noqa: BLE001 - normalisation falls back to the documented default
        log.debug("no preprocessor config for %s: %s", cfg.model_id, e)
    if text:
        try:
            d = json.loads(text)
            mean, std = d.get("image_mean"), d.get("image_std")
            if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3:
                return tuple(float(x) for x in mean), tuple(float(x) for x in std), "preprocessor_config.json"
        except (json.JSONDecodeError, TypeError, ValueError):
            pass
    return default_mean, default_std, "default"


class SDPASelfAttention(nn.Module):
    """TimeSformer's self-attention through F.scaled_dot_product_attention (same weights, same maths)."""

    def __init__(self, eager: Any) -> None:
        super().__init__()
        self.qkv: nn.Module = eager.qkv
        self.num_heads = int(eager.num_heads)
        self.scale = float(eager.scale)
        self.dropout = float(getattr(eager.attn_drop, "p", 0.0))

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor]:
        if output_attentions:
            raise EncoderError("SDPA attention cannot return attention maps; set encoder.attention=eager")
        b, n, c = hidden_states.shape
        qkv = (
            self.qkv(hidden_states)
            .reshape(b, n, 3, self.num_heads, c // self.num_heads)
            .permute(2, 0, 3, 1, 4)
        )
        p = self.dropout if self.training else 0.0
        ctx = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], dropout_p=p, scale=self.scale)
        return (ctx.transpose(1, 2).reshape(b, n, c),)


def use_sdpa_attention(model: nn.Module) -> int:
    """Replace every eager TimesformerSelfAttention in `model` by SDPASelfAttention; returns how many."""
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child).__name__ == "TimesformerSelfAttention"
    ]
    for parent, name, child in targets:
        setattr(parent, name, SDPASelfAttention(child))
    return len(targets)


class _HFVideoEncoder:
    """Shared resize/normalise/chunking for transformers video backbones."""

    family = ""
    model_cls_name = ""
    default_mean: tuple = KINETICS_MEAN
    default_std: tuple = KINETICS_STD

    def __init__(self, cfg: EncoderConfig) -> None:
        self.cfg = cfg
        self.clip_len = cfg.clip_len
        self.clip_stride = cfg.clip_stride
        self.resolution = cfg.resolution
        self.background_fill = tuple(int(c) for c in cfg.background_fill)
        self.batch_size = cfg.batch_size
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.attention = str(getattr(cfg, "attention", "sdpa"))
        self.id = encoder_id(cfg)
        self.model: Any = self._load()
        self._check_config(self.model.config)
        self.model.eval().requires_grad_(False).to(device=self.device, dtype=self.dtype)
        mean, std, self.norm_source = _read_norm(cfg, self.default_mean, self.default_std)
        self._mean = torch.tensor(mean, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)
        self.dim = int(self.model.config.hidden_size)

    def _load(self) -> Any:
        hide_broken_torchvision()
        import transformers

        cls = getattr(transformers, self.model_cls_name)
        cfg = self.cfg
        if _is_local_path(cfg.model_id) and not Path(cfg.model_id).expanduser().is_dir():
            raise EncoderError(
                f"video encoder folder {cfg.model_id!r} does not exist; point encoder.model_id at a folder "
                "written by save_pretrained, or turn the video term off with reward.use_video=false"
            )
        try:
            model, info = cls.from_pretrained(
                str(Path(cfg.model_id).expanduser()) if _is_local_path(cfg.model_id) else cfg.model_id,
                revision=cfg.revision,
                local_files_only=cfg.local_files_only,
                output_loading_info=True,
                **self._load_kwargs(),
            )
        except (OSError, ValueError) as e:
            raise _missing_weights_error(cfg, e) from None
        # Loading a checkpoint of another architecture leaves the backbone random: never silently.
        missing = [k for k in info.get("missing_keys", []) if "num_batches_tracked" not in k]
        if missing:
            raise EncoderError(
                f"{cfg.model_id!r} is not a {self.model_cls_name} checkpoint "
                f"({len(missing)} weights missing, e.g. "
                f"{missing[0]!r}); set encoder.name to the checkpoint's family (timesformer|videomae)"
            )
        return model

    def _load_kwargs(self) -> dict[str, Any]:
        return {}

    def _check_config(self, mcfg: Any) -> None:
        pass

    def _preprocess(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 [B,T,H,W,3] -> normalised [B,T,3,R,R] on the device (short-side resize, centre crop)."""
        b, t, h, w, _ = clips.shape
        x = (
            clips.to(self.device, non_blocking=True).reshape(b * t, h, w, 3).permute(0, 3, 1, 2).float()
            / 255.0
        )
        r = self.resolution
        if (h, w) != (r, r):
            s = r / min(h, w)
            nh, nw = max(r, round(h * s)), max(r, round(w * s))
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
            top, left = (nh - r) // 2, (nw - r) // 2
            x = x[:, :, top : top + r, left : left + r]
        x = (x - self._mean) / self._std
        return x.reshape(b, t, 3, r, r).to(self.dtype)

    def _forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def embed(self, clips: torch.Tensor) -> torch.Tensor:
        """[B,T,H,W,3] uint8 (already masked) -> [B,D] float32 on the clips' device, in batch_size chunks."""
        if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != torch.uint8:
            raise EncoderError(f"clips must be uint8 [B,T,H,W,3], got {tuple(clips.shape)} {clips.dtype}")
        if clips.shape[1] != self.clip_len:
            raise EncoderError(
                f"clips have {clips.shape[1]} frames but encoder {self.id} expects {self.clip_len}"
            )
        out = []
        for i in range(0, clips.shape[0], self.batch_size):
            out.append(self._forward(self._preprocess(clips[i : i + self.batch_size])).float())
        z = torch.cat(out) if out else torch.zeros(0, self.dim, device=self.device)
        return z.to(clips.device)


class TimesformerEncoder(_HFVideoEncoder):
    """TimeSformer (transformers TimesformerModel); embedding = CLS of the last hidden state (layernormed)."""

    family = "timesformer"
    model_cls_name = "TimesformerModel"
    default_mean = KINETICS_MEAN
    default_std = KINETICS_STD

    def _check_config(self, mcfg: Any) -> None:
        # Divided space-time attention splits the token sequence by the model's num_frames and image_size
        # (not the input's): another clip length scrambles tokens silently, another size crashes.
        if int(mcfg.num_frames) != self.clip_len:
            raise EncoderError(
                f"encoder.clip_len={self.clip_len} but TimeSformer {self.cfg.model_id!r} takes exactly "
                f"{mcfg.num_frames} frames per clip; set encoder.clip_len={mcfg.num_frames}"
            )
        if int(mcfg.image_size) != self.resolution:
            raise EncoderError(
                f"encoder.resolution={self.resolution} but TimeSformer {self.cfg.model_id!r} takes "
                f"{mcfg.image_size}x{mcfg.image_size} frames; set encoder.resolution={mcfg.image_size}"
            )
        if self.attention == "sdpa":
            n = use_sdpa_attention(self.model)
            if n == 0:
                log.warning("TimeSformer %s: no attention module to switch to SDPA", self.cfg.model_id)

    def _forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).last_hidden_state[:, 0]


class VideoMAEEncoder(_HFVideoEncoder):
    """VideoMAE (transformers VideoMAEModel); no CLS token: embedding = mean of the last hidden state."""

    family = "videomae"
    model_cls_name = "VideoMAEModel"
    default_mean = IMAGENET_MEAN
    default_std = IMAGENET_STD

    def _load_kwargs(self) -> dict[str, Any]:
        return {"attn_implementation": self.attention}  # transformers' own SDPA path for VideoMAE

    def _check_config(self, mcfg: Any) -> None:
        # Fixed sin-cos position table: frames and image size must match the checkpoint exactly.
        if mcfg.num_frames != self.clip_len or mcfg.image_size != self.resolution:
            raise EncoderError(
                f"VideoMAE {self.cfg.model_id!r} takes {mcfg.num_frames} frames at {mcfg.image_size}px; set "
                f"encoder.clip_len={mcfg.num_frames} and encoder.resolution={mcfg.image_size}"
            )

    def _forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).last_hidden_state.mean(dim=1)


ENCODERS.register("timesformer")(TimesformerEncoder)
ENCODERS.register("videomae")(VideoMAEEncoder)


def load_encoder(cfg: EncoderConfig) -> VideoEncoder:
    """The configured encoder (model id or local save_pretrained folder); EncoderError if it cannot load."""
    if cfg.name not in ENCODERS:
        raise EncoderError(f"encoder.name: unknown encoder {cfg.name!r}; registered: {ENCODERS.names()}")
    return ENCODERS.get(cfg.name)(cfg)


def clip_indices(
    num_frames: int, clip_len: int, stride: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """[num_frames, clip_len] indices of the causal clip ending at each t: t-(L-1-k)*s, clamped at frame 0."""
    t = torch.arange(num_frames, device=device).unsqueeze(1)
    back = (clip_len - 1 - torch.arange(clip_len, device=device)) * stride
    return (t - back).clamp_min(0)


def reference_embeddings(
    paths: SkillPaths, cfg: EncoderConfig, encoder: VideoEncoder | None = None, *, force: bool = False
) -> torch.Tensor:
    """Embeddings [T,D] (float32, CPU) of the masked reference clip ending at every retimed frame t.

    Cached in reference/embeddings/<encoder-id>.pt, keyed by the hashes of the retimed video and the masks.
    Early clips (t < (L-1)*stride) repeat reference frame 0 (the reward's "zero" mode ignores them).
    """
    from rich.progress import Progress

    from nil.io import atomic_save, sha256_file
    from nil.reference.bundle import load_reference
    from nil.reference.segment import load_masks

    enc_id = encoder.id if encoder is not None else encoder_id(cfg)
    out_path = paths.embeddings / f"{enc_id}.pt"
    if not paths.retimed.exists() or not paths.masks.exists():
        from nil.errors import MissingStageError

        raise MissingStageError(
            f"reference embeddings need {paths.retimed.name} and {paths.masks.name} in {paths.reference}; "
            f"run `nil generate {paths.root}` and `nil segment {paths.root}` first"
        )
    key = {
        "video_sha256": sha256_file(paths.retimed),
        "masks_sha256": sha256_file(paths.masks),
        "encoder_id": enc_id,
    }
    if out_path.exists() and not force:
        try:
            cached = torch.load(out_path, map_location="cpu", weights_only=True)
            if all(cached.get(k) == v for k, v in key.items()):
                return cached["embeddings"]
        except Exception as e:  # noqa: BLE001 - a corrupt cache is recomputed
            log.warning("ignoring unreadable embedding cache %s: %s", out_path, e)

    if encoder is None:
        encoder = load_encoder(cfg)
    video = load_reference(paths)
    masks = torch.as_tensor(load_masks(paths))
    frames = torch.from_numpy(video.frames)
    if masks.shape[0] != frames.shape[0]:
        raise SegmentationError(
            f"{masks.shape[0]} reference masks for {frames.shape[0]} retimed frames; "
            f"re-run `nil segment {paths.root} --force`"
        )
    if tuple(masks.shape[1:]) != tuple(frames.shape[1:3]):  # masks live at the render size, video may not
        masks = (
            F.interpolate(masks[:, None].float(), size=tuple(frames.shape[1:3]), mode="nearest")[:, 0] > 0.5
        )
    from nil.reward.terms import mask_frames

    fill = cast("tuple[int, int, int]", tuple(getattr(encoder, "background_fill", cfg.background_fill)))
    stride = getattr(encoder, "clip_stride", cfg.clip_stride)
    masked = mask_frames(frames, masks.bool(), fill)
    idx = clip_indices(masked.shape[0], encoder.clip_len, stride)
    bs = max(1, cfg.batch_size)
    chunks = []
    with Progress(transient=True) as progress:
        task = progress.add_task(f"encoding reference ({enc_id})", total=masked.shape[0])
        for i in range(0, masked.shape[0], bs):
            chunks.append(encoder.embed(masked[idx[i : i + bs]]).float().cpu())
            progress.advance(task, len(chunks[-1]))
    emb = torch.cat(chunks)
    if not torch.isfinite(emb).all():
        raise EncoderError(
            f"encoder {enc_id} produced non-finite reference embeddings; try encoder.dtype=float32"
        )
    payload = {
        **key,
        "embeddings": emb,
        "clip_len": encoder.clip_len,
        "clip_stride": stride,
        "num_frames": int(emb.shape[0]),
    }
    atomic_save(out_path, lambda p: torch.save(payload, p))
    return emb
