"""SAM2 video segmentation through transformers (Sam2VideoModel), prompted with e0's exact mask.

Loading: by Hugging Face model id (default ``facebook/sam2.1-hiera-large``) or by a local folder
saved with ``save_pretrained``; both go through ``Sam2VideoModel.from_pretrained``. Frames are
pre-processed by ``Sam2VideoProcessor`` when it can be built; transformers' SAM2 processors need a
working torchvision, so where torchvision is missing or broken (a CUDA build beside CPU torch),
``LiteSam2Processor`` does the same arithmetic in plain torch (bilinear resize to the model's square
input, 1/255 rescale, ImageNet normalisation; masks: bilinear back to the frame size, logits > 0).

Prompt and chunks: frame 0 gets the exact simulator mask m0 as a mask prompt. SAM2 returns a mask
prompt on its conditioning frame as the output (``_use_mask_as_output``), so frame 0's output is m0
up to the round trip through the model's square mask resolution (IoU ~0.98-1.0 with m0; the quality
check records it). Long videos are cut into chunks of ``chunk_size`` frames, each a fresh
inference session whose frame 0 is the last frame of the previous chunk, prompted with that
frame's predicted mask, so memory stays bounded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from nil.compat import hide_broken_torchvision
from nil.errors import SegmentationError
from nil.reference.segment.base import SEGMENTERS, ProgressFn, check_first_mask
from nil.reference.video import Video

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_OBJ_ID = 1


def resolve_device(device: str) -> str:
    """'auto' -> cuda when available, else cpu; anything else is passed through (validated by torch)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SegmentationError(
            f"segmenter.device is {device!r} but no CUDA GPU is visible; use 'cpu' or 'auto'"
        )
    return device


def resolve_dtype(name: str, device: str):
    """'auto' -> bfloat16 on a GPU, float32 on the CPU."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def sam2_weights_available(model_id: str) -> bool:
    """True when the model is a local folder with config + weights, or is fully in the Hugging Face cache."""
    p = Path(model_id).expanduser()
    if p.is_dir():
        return (p / "config.json").is_file() and (any(p.glob("*.safetensors")) or any(p.glob("*.bin")))
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        cfg = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # noqa: BLE001 - not a valid repo id (e.g. a missing local path): not available
        return False
    if not isinstance(cfg, str):
        return False
    snap = Path(cfg).parent
    return any(snap.glob("*.safetensors")) or any(snap.glob("*.bin"))


class LiteSam2Processor:
    """The subset of Sam2VideoProcessor that mask-prompted propagation uses, in plain torch."""

    def __init__(
        self,
        size: int,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        rescale: float = 1 / 255,
    ) -> None:
        self.target_size = int(size)
        self.mean, self.std, self.rescale = tuple(mean), tuple(std), float(rescale)

    @classmethod
    def from_model_dir(cls, source: str, model_config: Any) -> LiteSam2Processor:
        """Size/mean/std from the saved processor config when there is one, else the model's image size."""
        size = int(getattr(model_config, "image_size", 1024))
        mean, std, rescale = IMAGENET_MEAN, IMAGENET_STD, 1 / 255
        for name in ("video_preprocessor_config.json", "preprocessor_config.json", "processor_config.json"):
            path = _find_file(source, name)
            if path is None:
                continue
            try:
                d = json.loads(Path(path).read_text())
            except (OSError, ValueError):
                continue
            d = d.get("video_processor", d)
            s = d.get("size") or {}
            size = (
                int(s.get("height", s.get("longest_edge", size)) or size) if isinstance(s, dict) else int(s)
            )
            mean = tuple(d.get("image_mean", mean))
            std = tuple(d.get("image_std", std))
            rescale = float(d.get("rescale_factor", rescale))
            break
        return cls(size, mean, std, rescale)

    def init_video_session(
        self,
        video: list[np.ndarray],
        inference_device: str = "cpu",
        video_storage_device: str | None = None,
        dtype: Any = None,
        **kwargs: Any,
    ):
        """Pre-process frames ([H,W,3] uint8 each) and open an inference session."""
        import torch
        import torch.nn.functional as F
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        storage = video_storage_device or inference_device
        frames = torch.from_numpy(np.stack(video)).permute(0, 3, 1, 2).float().to(inference_device)
        H, W = frames.shape[-2:]
        x = F.interpolate(
            frames,
            size=(self.target_size, self.target_size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        x = ((x * self.rescale - mean) / std).to(storage)
        return Sam2VideoInferenceSession(
            video=x,
            video_height=int(H),
            video_width=int(W),
            inference_device=inference_device,
            video_storage_device=storage,
            inference_state_device=inference_device,
            dtype=dtype or torch.float32,
            **kwargs,
        )

    def add_inputs_to_inference_session(
        self, inference_session: Any, frame_idx: int, obj_ids: int, input_masks: np.ndarray
    ) -> Any:
        """Mask prompt, resized to the model's square input like Sam2VideoProcessor does."""
        import torch
        import torch.nn.functional as F

        obj_idx = inference_session.obj_id_to_idx(obj_ids)
        m = (
            torch.as_tensor(np.asarray(input_masks, bool))
            .float()[None, None]
            .to(inference_session.inference_device)
        )
        if m.shape[-2:] != (self.target_size, self.target_size):
            m = F.interpolate(
                m,
                size=(self.target_size, self.target_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
            m = (m >= 0.5).float()
        inference_session.add_mask_inputs(obj_idx, frame_idx, m)
        inference_session.remove_point_inputs(obj_idx, frame_idx)
        inference_session.obj_with_new_inputs = [obj_ids]
        return inference_session

    def add_box_and_point(
        self,
        inference_session: Any,
        frame_idx: int,
        obj_ids: int,
        box: tuple[int, int, int, int],
        point: tuple[int, int],
        hw: tuple[int, int],
    ) -> Any:
        """A box (x0, y0, x1, y1) and a positive point (x, y) in frame pixels, scaled to the model input."""
        import torch

        H, W = hw
        sx, sy = self.target_size / W, self.target_size / H
        coords = [[box[0] * sx, box[1] * sy], [box[2] * sx, box[3] * sy], [point[0] * sx, point[1] * sy]]
        obj_idx = inference_session.obj_id_to_idx(obj_ids)
        dev = inference_session.inference_device
        inference_session.add_point_inputs(
            obj_idx,
            frame_idx,
            {
                "point_coords": torch.tensor(coords, dtype=torch.float32, device=dev)[None, None],
                "point_labels": torch.tensor([2, 3, 1], dtype=torch.int32, device=dev)[None, None],
            },
        )
        inference_session.remove_mask_inputs(obj_idx, frame_idx)
        inference_session.obj_with_new_inputs = [obj_ids]
        return inference_session

    def post_process_masks(
        self,
        masks: list[Any],
        original_sizes: list[tuple[int, int]],
        binarize: bool = True,
        mask_threshold: float = 0.0,
    ) -> list[Any]:
        """Low-resolution mask logits -> frame-size masks (bilinear, then > threshold)."""
        import torch.nn.functional as F

        out = []
        for m, hw in zip(masks, original_sizes, strict=True):
            m = F.interpolate(
                m.float(), size=(self.target_size, self.target_size), mode="bilinear", align_corners=False
            )
            m = F.interpolate(m, size=tuple(int(v) for v in hw), mode="bilinear", align_corners=False)
            out.append(m > mask_threshold if binarize else m)
        return out


def _find_file(source: str, name: str) -> str | None:
    p = Path(source).expanduser()
    if p.is_dir():
        return str(p / name) if (p / name).is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        f = try_to_load_from_cache(source, name)
    except Exception:  # noqa: BLE001 - not a repo id
        return None
    return f if isinstance(f, str) else None


class Sam2Segmenter:
    """SAM2 video predictor prompted with m0 on frame 0, propagated in chunks; CPU or GPU."""

    name = "sam2"

    def __init__(
        self,
        model_id: str = "facebook/sam2.1-hiera-large",
        *,
        device: str = "auto",
        dtype: str = "auto",
        chunk_size: int = 64,
        progress: ProgressFn | None = None,
    ) -> None:
        if chunk_size < 2:
            raise SegmentationError("segmenter.chunk_size must be at least 2 (each chunk repeats one frame)")
        self.model_id = str(model_id)
        self.device_name, self.dtype_name = device, dtype
        self.chunk_size = int(chunk_size)
        self.progress = progress
        self.model: Any = None
        self.processor: Any = None
        self.processor_kind = ""

    def load(self) -> None:
        """Load the model (and its processor) once; SegmentationError naming the model id if absent."""
        if self.model is not None:
            return
        hide_broken_torchvision()
        try:
            from transformers import Sam2VideoModel
        except ImportError as e:
            raise SegmentationError(
                f"transformers cannot load SAM2 ({e}); install transformers>=5, or use segmenter.name: flow"
            ) from None
        self.device = resolve_device(self.device_name)
        self.dtype = resolve_dtype(self.dtype_name, self.device)
        local = Path(self.model_id).expanduser().is_dir()
        try:
            model = Sam2VideoModel.from_pretrained(self.model_id, local_files_only=local or None)  # type: ignore[arg-type]
        except (OSError, ValueError) as e:
            raise SegmentationError(
                f"cannot load SAM2 weights {self.model_id!r} ({str(e).splitlines()[0][:200]}): download them "
                f"(`huggingface-cli download {self.model_id}`), set segmenter.model_id to a local folder, "
                "or use "
                "segmenter.name: flow (offline fallback)"
            ) from None
        self.model = model.to(device=self.device, dtype=self.dtype).eval()  # type: ignore[call-arg]
        self.processor, self.processor_kind = self._load_processor()

    def _load_processor(self) -> tuple[Any, str]:
        try:
            from transformers import Sam2VideoProcessor

            return Sam2VideoProcessor.from_pretrained(self.model_id), "Sam2VideoProcessor"
        except Exception as e:  # noqa: BLE001 - no torchvision, or no processor files saved with the model
            log.info("Sam2VideoProcessor unavailable for %s (%s); using LiteSam2Processor", self.model_id, e)
            return LiteSam2Processor.from_model_dir(self.model_id, self.model.config), "LiteSam2Processor"

    def info(self) -> dict[str, Any]:
        """What ran: model id, processor, device, dtype, chunk size."""
        return {
            "model_id": self.model_id,
            "processor": self.processor_kind,
            "device": getattr(self, "device", None),
            "dtype": str(getattr(self, "dtype", "")).replace("torch.", ""),
            "chunk_size": self.chunk_size,
        }

    def _run_chunk(
        self,
        frames: np.ndarray,
        prompt: np.ndarray | None,
        box_point: tuple[tuple[int, int, int, int], tuple[int, int]] | None = None,
    ) -> np.ndarray:
        import torch

        H, W = frames.shape[1:3]
        session = self.processor.init_video_session(
            video=list(frames),
            inference_device=self.device,
            video_storage_device=self.device,
            dtype=self.dtype,
        )
        if box_point is None:
            self.processor.add_inputs_to_inference_session(
                inference_session=session, frame_idx=0, obj_ids=_OBJ_ID, input_masks=prompt
            )
        elif isinstance(self.processor, LiteSam2Processor):
            self.processor.add_box_and_point(session, 0, _OBJ_ID, box_point[0], box_point[1], (H, W))
        else:
            box, point = box_point
            self.processor.add_inputs_to_inference_session(
                inference_session=session,
                frame_idx=0,
                obj_ids=_OBJ_ID,
                input_points=[[[list(point)]]],
                input_labels=[[[1]]],
                input_boxes=[[list(box)]],
            )
        out = np.zeros((len(frames), H, W), bool)
        seen = np.zeros(len(frames), bool)
        with torch.inference_mode():
            for o in self.model.propagate_in_video_iterator(session, start_frame_idx=0):
                m = self.processor.post_process_masks([o.pred_masks.float()], [[H, W]], binarize=True)[0]
                out[o.frame_idx] = m[0, 0].cpu().numpy().astype(bool)
                seen[o.frame_idx] = True
        if not seen.all():
            raise SegmentationError(
                f"SAM2 returned {int(seen.sum())} of {len(frames)} frames (report this as a bug)"
            )
        return out

    def segment_image(
        self, frame: np.ndarray, *, box: tuple[int, int, int, int], point: tuple[int, int]
    ) -> np.ndarray:
        """[H,W] bool: SAM2 on one frame prompted with a box (x0, y0, x1, y1) and a positive point (x, y)."""
        self.load()
        return self._run_chunk(np.asarray(frame)[None], None, (box, point))[0]

    def segment(self, video: Video, first_mask: np.ndarray) -> np.ndarray:
        """[T,H,W] bool masks; frame 0 prompted with first_mask, chunks chained by their last mask."""
        m0 = check_first_mask(video, first_mask)
        self.load()
        T, (H, W) = video.num_frames, video.hw
        out = np.zeros((T, H, W), bool)
        start, prompt = 0, m0
        while True:
            end = min(start + self.chunk_size, T)
            chunk = self._run_chunk(video.frames[start:end], prompt)
            out[start:end] = chunk if start == 0 else np.concatenate([out[start : start + 1], chunk[1:]])
            if self.progress is not None:
                self.progress(end, T)
            if end >= T:
                break
            start, prompt = end - 1, chunk[-1]
            if not prompt.any():
                raise SegmentationError(
                    f"SAM2 lost the robot by frame {start} (empty mask); try a larger "
                    "segmenter.chunk_size, a bigger SAM2 model, or segmenter.name: flow"
                )
        return out


@SEGMENTERS.register("sam2")
def _make_sam2(cfg: Any, progress: ProgressFn | None = None) -> Sam2Segmenter:
    s = cfg.segmenter
    return Sam2Segmenter(
        s.model_id, device=s.device, dtype=s.dtype, chunk_size=s.chunk_size, progress=progress
    )
