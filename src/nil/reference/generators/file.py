"""`file` generator: import a user's video (anything ffmpeg reads) as the reference."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nil.errors import ConfigError, VideoError
from nil.io import sha256_file
from nil.reference.generators.base import GENERATORS, GeneratorResult
from nil.reference.video import Video, frame_times, read_video, to_constant_rate

if TYPE_CHECKING:
    from nil.config import SkillConfig

log = logging.getLogger(__name__)

# Mean absolute difference (0-255) between the video's first frame and e0, both resized to 64x64,
# above which the imitation's assumption "frame 0 ~ e0" is probably broken.
FIRST_FRAME_WARN_MAD = 40.0


def resize_to(frames: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize [T,H,W,3] (or [H,W,3]) uint8 frames to (H, W) with area/linear interpolation."""
    import cv2

    single = frames.ndim == 3
    fr = frames[None] if single else frames
    h, w = hw
    if fr.shape[1:3] == (h, w):
        return frames
    interp = cv2.INTER_AREA if fr.shape[1] * fr.shape[2] > h * w else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in fr])
    return out[0] if single else out


def first_frame_distance(frame: np.ndarray, frame0: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute difference (0-255) between two frames at 64x64; inside `mask` (e0's robot) when given."""
    a = resize_to(frame, (64, 64)).astype(np.float32)
    b = resize_to(frame0, (64, 64)).astype(np.float32)
    d = np.abs(a - b).mean(axis=-1)
    if mask is not None and mask.any():
        m = resize_to(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, -1), (64, 64))[..., 0] > 127
        if m.any():
            return float(d[m].mean())
    return float(d.mean())


class FileGenerator:
    """Reads a video file; resizes it to e0's size; warns when its first frame is far from e0."""

    name = "file"
    synthetic = False

    def __init__(self, path: str | Path | None) -> None:
        if not path:
            raise ConfigError(
                "generator.path is not set: generator.name=file needs a video path "
                "(`nil init DIR --generator file --video PATH`)"
            )
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise VideoError(f"generator.path: video file not found: {self.path}")
        self.first_mask: np.ndarray | None = None  # e0's robot mask, set by the bundle when known
        self._sha: str | None = None

    def cache_params(self) -> dict[str, Any]:
        """The file's path and content hash."""
        if self._sha is None:
            self._sha = sha256_file(self.path)
        return {"path": str(self.path.resolve()), "file_sha256": self._sha}

    def generate(
        self, frame0: np.ndarray, prompt: str, *, num_frames: int | None, fps: float | None, seed: int
    ) -> GeneratorResult:
        """The file's frames (all of them, at the file's own fps; num_frames/fps/seed do not apply)."""
        from nil.reference.framing import conform

        video = read_video(self.path)
        src_hw, src_fps = video.hw, video.fps
        times = frame_times(self.path)
        variable = False
        if times is not None:
            frames, rate, variable = to_constant_rate(video.frames, times)
        if variable:
            video = Video(frames, rate)
        frames, framing = conform(video.frames, frame0.shape[:2])
        mad = first_frame_distance(frames[0], frame0, self.first_mask)
        far = mad > FIRST_FRAME_WARN_MAD
        info: dict[str, Any] = {
            "path": str(self.path.resolve()),
            "file_sha256": self.cache_params()["file_sha256"],
            "source_size": list(src_hw),
            "source_fps": src_fps,
            "source_variable_rate": variable,
            "fps": video.fps,
            "framing": framing.as_dict(),
            "first_frame_mad": round(mad, 2),
            "first_frame_far_from_e0": far,
        }
        if far:
            msg = (
                f"the first frame of {self.path} differs from e0 (mean abs diff {mad:.1f} > "
                f"{FIRST_FRAME_WARN_MAD:g}); NIL assumes frame 0 ~ e0: generate the video from frame0.png, "
                "or check the robot/camera"
            )
            log.warning(msg)
            info["warning"] = msg
        return GeneratorResult(Video(np.ascontiguousarray(frames), video.fps), info)


@GENERATORS.register("file")
def _make_file(cfg: SkillConfig) -> FileGenerator:
    from nil.config import FileGeneratorConfig

    return FileGenerator(cfg.generator.as_variant(FileGeneratorConfig).path)
