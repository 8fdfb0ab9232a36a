"""`diffusers` generator: the paper's stage 1, an image-to-video diffusion model run through diffusers.

Loads CogVideoX-I2V (default THUDM/CogVideoX-5b-I2V), Wan 2.x I2V, LTX-Video or Stable Video
Diffusion by hub id or local folder (a `save_pretrained` pipeline). The family comes from
model_index.json's `_class_name` unless `generator.family` names it. e0 is letterboxed (padded with
the background colour) into the model's input size and the output is cropped back and resized to
the render size. A model trained with learned positional embeddings (CogVideoX-5b-I2V: 480x720, 49
frames) runs only at its trained size and length: unset values are pinned to them, other values are
refused. `generator.guidance` unset takes the family's default (CogVideoX 6, Wan 5, LTX 3, SVD 3).
A missing model, no network or no GPU for a multi-GB model fails fast with a
GeneratorError that names the model and the alternatives; nothing waits on the network silently.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from nil.compat import hide_broken_torchvision
from nil.errors import GeneratorError
from nil.io import sha256_json
from nil.reference.generators.base import GENERATORS, GeneratorResult
from nil.reference.video import Video

if TYPE_CHECKING:
    from nil.config import DiffusersGeneratorConfig, SkillConfig

log = logging.getLogger(__name__)

CPU_MAX_GB = 4.0  # weights above this on a CPU: refuse unless the user asked for the CPU explicitly


@dataclass(frozen=True)
class Family:
    """What differs between image-to-video model families."""

    name: str
    pipeline: str  # diffusers class used to load and run it
    fps: float  # the rate the model was trained to produce
    num_frames: int
    frame_step: int  # valid lengths are frame_step * k + 1
    multiple: int  # height and width must be multiples of this
    area: int  # default input pixel count (height x width) when the family has no fixed size
    guidance: float  # default guidance scale (SVD: the max of its frame-wise ramp)
    uses_prompt: bool = True


FAMILIES: dict[str, Family] = {
    # guidance: the model cards' / diffusers examples' values; higher saturates LTX and SVD frames
    "cogvideox": Family("cogvideox", "CogVideoXImageToVideoPipeline", 8.0, 49, 4, 16, 480 * 720, 6.0),
    "wan": Family("wan", "WanImageToVideoPipeline", 16.0, 81, 4, 16, 480 * 832, 5.0),
    "ltx": Family("ltx", "LTXImageToVideoPipeline", 25.0, 121, 8, 32, 512 * 704, 3.0),
    "svd": Family("svd", "StableVideoDiffusionPipeline", 7.0, 25, 1, 64, 576 * 1024, 3.0, uses_prompt=False),
}
_CLASS_HINTS = (("CogVideoX", "cogvideox"), ("Wan", "wan"), ("LTX", "ltx"), ("StableVideoDiffusion", "svd"))
_OPTIONS = (
    "a local pipeline folder (generator.model_id: /path/to/folder saved with save_pretrained), "
    "`--generator file --video PATH`, or `--generator synthetic` (offline default)"
)


def family_from_class(class_name: str) -> str | None:
    """'CogVideoXImageToVideoPipeline' -> 'cogvideox' (None when unknown)."""
    for hint, fam in _CLASS_HINTS:
        if class_name.startswith(hint):
            return fam
    return None


def snap_frames(n: int, step: int) -> int:
    """The smallest valid length step*k+1 that is >= n."""
    return n if step <= 1 else int(math.ceil((n - 1) / step)) * step + 1


@dataclass(frozen=True)
class FixedGeometry:
    """The only input size and length a model runs at (learned positional embeddings)."""

    height: int
    width: int
    num_frames: int


def component_config(source: str | Path, component: str) -> dict[str, Any]:
    """<pipeline folder>/<component>/config.json as a dict ({} when absent or unreadable)."""
    f = Path(source) / component / "config.json"
    try:
        data = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def cogvideox_trained_geometry(source: str | Path) -> tuple[FixedGeometry | None, bool]:
    """(trained height/width/frames from the transformer and VAE configs, whether they are fixed).

    Fixed when the transformer uses learned positional embeddings (CogVideoX-5b-I2V): diffusers refuses
    another size, and another length silently replaces the learned table by a sin-cos one.
    """
    tc, vc = component_config(source, "transformer"), component_config(source, "vae")
    if not tc or "sample_height" not in tc or "sample_width" not in tc:
        return None, False
    s = 2 ** (len(vc.get("block_out_channels", (0, 0, 0, 0))) - 1)  # diffusers' vae_scale_factor_spatial
    geo = FixedGeometry(
        int(tc["sample_height"]) * s, int(tc["sample_width"]) * s, int(tc.get("sample_frames", 49))
    )
    return geo, bool(tc.get("use_learned_positional_embeddings", False))


def fit_size(aspect: float, area: int, multiple: int) -> tuple[int, int]:
    """(height, width) with width/height ~ aspect, ~area pixels, both multiples of `multiple`."""
    h = math.sqrt(area / aspect)
    w = h * aspect
    return (
        max(multiple, int(round(h / multiple)) * multiple),
        max(multiple, int(round(w / multiple)) * multiple),
    )


def letterbox(img: np.ndarray, hw: tuple[int, int], fill: tuple[int, int, int]) -> tuple[np.ndarray, tuple]:
    """Resize `img` to fit in hw keeping its aspect, pad with `fill`; returns (image, (top, left, h, w))."""
    import cv2

    H, W = hw
    h0, w0 = img.shape[:2]
    s = min(H / h0, W / w0)
    h, w = max(1, int(round(h0 * s))), max(1, int(round(w0 * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    small = cv2.resize(img, (w, h), interpolation=interp)
    out = np.empty((H, W, 3), dtype=np.uint8)
    out[:] = np.asarray(fill, dtype=np.uint8)
    top, left = (H - h) // 2, (W - w) // 2
    out[top : top + h, left : left + w] = small
    return out, (top, left, h, w)


def unletterbox(frames: np.ndarray, box: tuple, out_hw: tuple[int, int]) -> np.ndarray:
    """Crop the letterbox `box` out of [T,H',W',3] frames (scaled if the model changed the size), resize."""
    import cv2

    top, left, h, w = box
    return np.stack(
        [
            cv2.resize(
                f[top : top + h, left : left + w], (out_hw[1], out_hw[0]), interpolation=cv2.INTER_AREA
            )
            for f in frames
        ]
    )


def _dir_size_gb(path: Path) -> float:
    exts = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.suffix in exts) / 1e9


def _local_fingerprint(path: Path) -> str:
    """Content id of a local pipeline folder: its config files' text + each weight file's name and size
    (hashing multi-GB weights on every run would cost minutes)."""
    items: dict[str, Any] = {}
    for p in sorted(path.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(path))
        if p.suffix in (".json", ".txt", ".model", ".yaml"):
            items[rel] = p.read_text(errors="replace")
        else:
            items[rel] = p.stat().st_size
    return sha256_json(items)


def check_pipeline_dir(path: Path) -> dict[str, Any]:
    """Read model_index.json of a local pipeline folder and check that every component folder exists."""
    index = path / "model_index.json"
    if not index.is_file():
        raise GeneratorError(
            f"generator.model_id: {path} has no model_index.json, so it is not a diffusers "
            f"pipeline folder (save one with pipe.save_pretrained(DIR)); or use {_OPTIONS}"
        )
    try:
        data = json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise GeneratorError(f"generator.model_id: {index} is not valid JSON ({e})") from None
    missing = [
        k
        for k, v in data.items()
        if not k.startswith("_") and isinstance(v, list) and v[0] is not None and not (path / k).is_dir()
    ]
    if missing:
        raise GeneratorError(
            f"generator.model_id: {path} lacks the component folders {missing} that "
            "model_index.json lists; copy the whole pipeline folder"
        )
    return data


@dataclass
class ResolvedModel:
    """Where the weights are and what they are."""

    source: str  # local folder passed to from_pretrained
    model_id: str
    revision: str  # hub commit, or 'local:<fingerprint>'
    index: dict[str, Any]
    size_gb: float


def resolve_model(
    model_id: str, revision: str | None = None, *, device_is_cpu: bool = False, allow_big_on_cpu: bool = False
) -> ResolvedModel:
    """Find the pipeline: a local folder, the HF cache, or the hub (only when online); fail fast otherwise."""
    p = Path(model_id).expanduser()
    looks_local = p.is_absolute() or model_id.startswith((".", "~")) or p.exists()
    if looks_local:
        if not p.is_dir():
            raise GeneratorError(f"generator.model_id: no such model folder {p}; use {_OPTIONS}")
        index = check_pipeline_dir(p)
        return ResolvedModel(
            str(p.resolve()), model_id, "local:" + _local_fingerprint(p)[:16], index, _dir_size_gb(p)
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - diffusers depends on it
        raise GeneratorError("huggingface_hub is missing; `pip install huggingface_hub`") from None
    try:  # the cache first: works offline, no network round trip
        local = Path(snapshot_download(model_id, revision=revision, local_files_only=True))
        index = check_pipeline_dir(local)
        return ResolvedModel(str(local), model_id, local.name, index, _dir_size_gb(local))
    except GeneratorError:
        raise
    except Exception:  # noqa: BLE001 - not cached: try the hub below
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline:
        raise GeneratorError(
            f"model {model_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"download it on a machine with internet, or use {_OPTIONS}"
        )
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(model_id, revision=revision, timeout=15, files_metadata=True)
    except Exception as e:  # noqa: BLE001 - no network, unknown repo, gated repo ...
        raise GeneratorError(
            f"cannot reach model {model_id!r} on the Hugging Face hub "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); use {_OPTIONS}"
        ) from None
    size_gb = (
        sum((s.size or 0) for s in (info.siblings or []) if s.rfilename.endswith((".safetensors", ".bin")))
        / 1e9
    )
    if device_is_cpu and size_gb > CPU_MAX_GB and not allow_big_on_cpu:
        raise _too_big_for_cpu(model_id, size_gb)
    try:
        local = Path(
            snapshot_download(
                model_id,
                revision=revision,
                ignore_patterns=["*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf"]
                if _has_safetensors(info)
                else None,
            )
        )
    except Exception as e:  # noqa: BLE001
        raise GeneratorError(
            f"downloading {model_id!r} failed ({type(e).__name__}: {e}); use {_OPTIONS}"
        ) from None
    index = check_pipeline_dir(local)
    return ResolvedModel(str(local), model_id, info.sha or local.name, index, _dir_size_gb(local))


def _has_safetensors(info: Any) -> bool:
    return any(s.rfilename.endswith(".safetensors") for s in (info.siblings or []))


def _too_big_for_cpu(model_id: str, size_gb: float) -> GeneratorError:
    return GeneratorError(
        f"model {model_id!r} has {size_gb:.1f} GB of weights and no GPU is available: it would "
        "take hours on the CPU. Run on a GPU (generator.device: cuda), set generator.device: cpu "
        f"to force it, or use {_OPTIONS}"
    )


def _torch_dtype(name: str, family: str, device: str):
    import torch

    if name == "auto":
        if device.startswith("cuda"):
            return torch.float16 if family == "svd" else torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


class DiffusersI2VGenerator:
    """An image-to-video diffusion pipeline (loaded lazily on the first `generate`)."""

    name = "diffusers"
    synthetic = False

    def __init__(
        self, cfg: DiffusersGeneratorConfig, background: tuple[int, int, int] = (255, 255, 255)
    ) -> None:
        self.cfg = cfg
        self.background = (int(background[0]), int(background[1]), int(background[2]))
        self._resolved: ResolvedModel | None = None
        self._pipe = None
        self._family: Family | None = None

    # -- resolution ---------------------------------------------------------------------------------
    def _device(self) -> str:
        import torch

        dev = self.cfg.device
        if dev == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise GeneratorError(
                f"generator.device is {dev!r} but torch sees no CUDA GPU; set generator.device: "
                f"auto/cpu, or use {_OPTIONS}"
            )
        return dev

    def resolve(self) -> ResolvedModel:
        """Locate the model (no weights loaded)."""
        if self._resolved is None:
            device = self._device()
            self._resolved = resolve_model(
                self.cfg.model_id,
                self.cfg.revision,
                device_is_cpu=device == "cpu",
                allow_big_on_cpu=self.cfg.device == "cpu",
            )
        return self._resolved

    def family(self) -> Family:
        """The model family (from generator.family, else model_index.json's _class_name)."""
        if self._family is None:
            if self.cfg.family != "auto":
                self._family = FAMILIES[self.cfg.family]
            else:
                cls = str(self.resolve().index.get("_class_name", ""))
                fam = family_from_class(cls)
                if fam is None:
                    raise GeneratorError(
                        f"generator.model_id: {self.cfg.model_id} is a {cls or 'unknown'} pipeline; "
                        f"supported families: {sorted(FAMILIES)} (set generator.family to force one)"
                    )
                self._family = FAMILIES[fam]
        return self._family

    def guidance(self) -> float:
        """generator.guidance, or the family's default when unset."""
        g = self.cfg.guidance
        return float(self.family().guidance if g is None else g)

    def fixed_geometry(self) -> FixedGeometry | None:
        """The one size and length this model runs at, when it has one (else None)."""
        if self.family().name != "cogvideox":
            return None
        geo, fixed = cogvideox_trained_geometry(self.resolve().source)
        return geo if fixed else None

    def cache_params(self) -> dict[str, Any]:
        """Model id, revision (hub commit or local fingerprint), family and every sampling option."""
        r = self.resolve()
        c = self.cfg
        return {
            "model_id": c.model_id,
            "revision": r.revision,
            "family": self.family().name,
            "steps": c.steps,
            "guidance": self.guidance(),
            "negative_prompt": c.negative_prompt,
            "dtype": c.dtype,
            "height": c.height,
            "width": c.width,
        }

    # -- loading ------------------------------------------------------------------------------------
    def _load(self):
        if self._pipe is not None:
            return self._pipe
        r = self.resolve()
        fam = self.family()
        device = self._device()
        if device == "cpu" and r.size_gb > CPU_MAX_GB:
            if self.cfg.device != "cpu":
                raise _too_big_for_cpu(self.cfg.model_id, r.size_gb)
            log.warning(
                "running %s (%.1f GB) on the CPU: expect hours per video", self.cfg.model_id, r.size_gb
            )
        hide_broken_torchvision()
        try:
            import diffusers

            cls = getattr(diffusers, fam.pipeline)
        except Exception as e:  # noqa: BLE001
            raise GeneratorError(
                f"diffusers cannot provide {fam.pipeline} ({e}); `pip install -U diffusers`"
            ) from None
        dtype = _torch_dtype(self.cfg.dtype, fam.name, device)
        try:
            with warnings.catch_warnings():  # newer diffusers renamed torch_dtype; older ones need it
                warnings.filterwarnings("ignore", message=".*torch_dtype.*")
                pipe = cls.from_pretrained(r.source, torch_dtype=dtype, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - wrong files, wrong family, missing package ...
            raise GeneratorError(
                f"loading {self.cfg.model_id} as {fam.pipeline} failed ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:300]}); check generator.family and that the folder "
                f"holds a complete pipeline, or use {_OPTIONS}"
            ) from None
        if self.cfg.cpu_offload and device.startswith("cuda"):
            pipe.enable_model_cpu_offload(device=device)
        else:
            if self.cfg.cpu_offload:
                log.warning("generator.cpu_offload needs a CUDA device; ignored on %s", device)
            pipe.to(device)
        if self.cfg.vae_tiling and hasattr(pipe, "vae") and hasattr(pipe.vae, "enable_tiling"):
            pipe.vae.enable_tiling()
        pipe.set_progress_bar_config(disable=True)  # a rich bar is shown instead
        self._pipe, self._device_name, self._dtype = pipe, device, dtype
        return pipe

    def input_size(self, render_hw: tuple[int, int]) -> tuple[int, int]:
        """(height, width) the model runs at; GeneratorError when it cannot run at the size asked for."""
        fam = self.family()
        c = self.cfg
        fixed = self.fixed_geometry()
        if fixed is not None:
            if (c.height or c.width) and (c.height, c.width) != (fixed.height, fixed.width):
                raise GeneratorError(
                    f"generator.height/width {c.height}x{c.width}: {c.model_id} runs only at "
                    f"{fixed.height}x{fixed.width} (learned positional embeddings); unset generator.height "
                    f"and generator.width, or set them to {fixed.height} and {fixed.width}"
                )
            return fixed.height, fixed.width
        if c.height and c.width:
            m = fam.multiple
            return max(m, c.height // m * m), max(m, c.width // m * m)
        if fam.name == "cogvideox":  # CogVideoX is trained at one size, stated in its transformer config
            geo, _ = cogvideox_trained_geometry(self.resolve().source)
            if geo is not None:
                return geo.height, geo.width
        return fit_size(render_hw[1] / render_hw[0], fam.area, fam.multiple)

    def num_frames(self, requested: int | None) -> int:
        """The length the model makes for `requested` frames (None: the family's native length)."""
        fam = self.family()
        fixed = self.fixed_geometry()
        if fixed is not None:
            if requested is not None and int(requested) != fixed.num_frames:
                raise GeneratorError(
                    f"generator.num_frames={requested}: {self.cfg.model_id} makes exactly {fixed.num_frames} "
                    f"frames (learned positional embeddings); unset generator.num_frames or set it to "
                    f"{fixed.num_frames} (retiming brings the video to the control rate)"
                )
            return fixed.num_frames
        return snap_frames(int(requested or fam.num_frames), fam.frame_step)

    # -- generation ---------------------------------------------------------------------------------
    def generate(
        self,
        frame0: np.ndarray,
        prompt: str,
        *,
        num_frames: int | None = None,
        fps: float | None = None,
        seed: int = 0,
    ) -> GeneratorResult:
        """Run the pipeline on e0 (letterboxed to the model size); frames come back at e0's size."""
        import torch
        from PIL import Image

        fam = self.family()
        render_hw = frame0.shape[:2]
        H, W = self.input_size(render_hw)  # size and length are checked before any weights load
        n_req = int(num_frames or fam.num_frames)
        n = self.num_frames(num_frames)
        guidance = self.guidance()
        pipe = self._load()
        fps = float(fps or fam.fps)
        img, box = letterbox(frame0, (H, W), self.background)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        kwargs: dict[str, Any] = dict(
            image=Image.fromarray(img),
            height=H,
            width=W,
            num_frames=n,
            num_inference_steps=self.cfg.steps,
            generator=gen,
            output_type="np",
        )
        if fam.uses_prompt:
            kwargs.update(prompt=prompt, guidance_scale=guidance)
            if self.cfg.negative_prompt:
                kwargs["negative_prompt"] = self.cfg.negative_prompt
        else:  # SVD is image-only; guidance ramps from 1 to generator.guidance over the frames
            kwargs.update(max_guidance_scale=max(1.0, guidance), fps=int(round(fps)))
        if fam.name == "ltx":
            kwargs["frame_rate"] = int(round(fps))
        out = self._run(pipe, kwargs)
        frames = self._to_uint8(out)
        if frames.shape[1:3] != (H, W):  # a pipeline that changed the size: scale the box with it
            sy, sx = frames.shape[1] / H, frames.shape[2] / W
            t, lft, h, w = box
            box = (int(t * sy), int(lft * sx), max(1, int(h * sy)), max(1, int(w * sx)))
        frames = unletterbox(frames, box, render_hw)
        info = {
            "model_id": self.cfg.model_id,
            "revision": self._resolved.revision if self._resolved else None,
            "family": fam.name,
            "pipeline": type(pipe).__name__,
            "device": self._device_name,
            "dtype": str(self._dtype).replace("torch.", ""),
            "steps": self.cfg.steps,
            "guidance": guidance,
            "guidance_source": "family default" if self.cfg.guidance is None else "generator.guidance",
            "negative_prompt": self.cfg.negative_prompt,
            "model_input_size": [H, W],
            "letterbox": list(box),
            "num_frames_requested": n_req,
            "num_frames_model": int(frames.shape[0]),
            "prompt_used": fam.uses_prompt,
            "cpu_offload": self.cfg.cpu_offload,
            "vae_tiling": self.cfg.vae_tiling,
            "weights_gb": round(self._resolved.size_gb, 3) if self._resolved else None,
            "fixed_geometry": self.fixed_geometry() is not None,
        }
        return GeneratorResult(Video(np.ascontiguousarray(frames), fps), info)

    def _run(self, pipe, kwargs: dict[str, Any]):
        import torch
        from rich.progress import Progress

        steps = kwargs["num_inference_steps"]
        with Progress(transient=True) as prog:
            task = prog.add_task(f"{type(pipe).__name__}: denoising", total=steps)

            def _cb(_pipe, _i, _t, cb_kwargs):
                prog.advance(task)
                return cb_kwargs

            try:
                with torch.inference_mode():
                    return pipe(**kwargs, callback_on_step_end=_cb)
            except torch.OutOfMemoryError:
                raise GeneratorError(
                    f"out of GPU memory running {self.cfg.model_id}; set generator.cpu_offload: "
                    "true and generator.vae_tiling: true, lower generator.num_frames, or use a "
                    "smaller model"
                ) from None

    @staticmethod
    def _to_uint8(out: Any) -> np.ndarray:
        frames = out.frames if hasattr(out, "frames") else out[0]
        if isinstance(frames, (list, tuple)):
            frames = frames[0]
        if hasattr(frames, "detach"):
            frames = frames.detach().float().cpu().numpy()
        frames = np.asarray(frames if not isinstance(frames, list) else [np.asarray(f) for f in frames])
        if frames.ndim == 5:
            frames = frames[0]
        if frames.ndim != 4:
            raise GeneratorError(f"the pipeline returned frames of shape {frames.shape}; expected [T,H,W,3]")
        if frames.shape[-1] != 3 and frames.shape[1] == 3:
            frames = frames.transpose(0, 2, 3, 1)
        if frames.dtype != np.uint8:
            frames = np.clip(np.nan_to_num(frames.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return frames


@GENERATORS.register("diffusers")
def _make_diffusers(cfg: SkillConfig) -> DiffusersI2VGenerator:
    return DiffusersI2VGenerator(
        cast("DiffusersGeneratorConfig", cfg.generator), background=cfg.camera.background
    )
