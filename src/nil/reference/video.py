"""The Video dataclass and video file I/O shared by every stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nil.errors import VideoError

MAX_FPS = 1000.0


@dataclass
class Video:
    """Frames [T,H,W,3] uint8 at `fps` frames per second."""

    frames: np.ndarray
    fps: float

    def __post_init__(self) -> None:
        f = self.frames
        if not isinstance(f, np.ndarray) or f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
            shape = getattr(f, "shape", None)
            raise VideoError(
                f"video frames must be a [T,H,W,3] uint8 array, got {shape} {getattr(f, 'dtype', '')}"
            )
        if f.shape[0] == 0:
            raise VideoError("the video has no frames")
        if not np.isfinite(self.fps) or not (0 < self.fps <= MAX_FPS):
            raise VideoError(f"video fps must be in (0, {MAX_FPS:g}], got {self.fps}")

    @property
    def num_frames(self) -> int:
        """T."""
        return int(self.frames.shape[0])

    @property
    def hw(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.num_frames / self.fps


def read_video(path: str | Path) -> Video:
    """Read any video ffmpeg can decode into a Video; raise VideoError naming the file otherwise."""
    import imageio.v3 as iio

    p = Path(path)
    if not p.exists():
        raise VideoError(f"video file not found: {p}")
    try:
        meta = iio.immeta(p, plugin="pyav")
        frames = iio.imread(p, plugin="pyav", index=None)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file for the user
        raise VideoError(f"cannot read video {p}: {e}") from None
    frames = np.asarray(frames)
    if frames.ndim == 3:  # a single image
        frames = frames[None]
    if frames.size == 0:
        raise VideoError(f"video {p} has no frames")
    if frames.shape[-1] == 4:
        frames = frames[..., :3]
    fps = float(meta.get("fps") or 0.0)
    if not np.isfinite(fps) or fps <= 0:
        raise VideoError(f"video {p} reports no usable frame rate ({fps}); re-encode it with a fixed fps")
    # a file cut short keeps its header (duration, sample table), and the decoder pads the missing
    # frames; the packets that really hold data end early
    duration = float(meta.get("duration") or 0.0)
    times = frame_times(p)
    if (
        times is not None
        and np.isfinite(duration)
        and duration > 0
        and times[-1] + 2.0 / fps < 0.9 * duration
    ):
        raise VideoError(
            f"video {p} is truncated: its frames end at {times[-1]:.2f} s of the {duration:.2f} s its header "
            "promises; re-download or re-export it"
        )
    return Video(np.ascontiguousarray(frames.astype(np.uint8)), fps)


def frame_times(path: str | Path) -> np.ndarray | None:
    """Presentation times (s) of every frame of the first video stream, or None when the file has none."""
    import av

    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            tb = float(stream.time_base) if stream.time_base else None
            pts = [p.pts for p in c.demux(stream) if p.pts is not None and p.size > 0]
    except Exception:  # noqa: BLE001 - unreadable timing: the caller keeps the nominal rate
        return None
    if tb is None or len(pts) < 2:
        return None
    t = np.sort(np.asarray(pts, np.float64)) * tb
    return t - t[0]


def to_constant_rate(frames: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """(frames, fps, was_variable): frames at a constant rate (the median interval), nearest in time.

    A variable-rate file (phones, screen recorders) shows frame i at times[i], not at i / fps; left as
    it is, retiming would speed up and slow down its motion.
    """
    if len(times) != len(frames) or len(times) < 3:
        return frames, 0.0, False
    dt = np.diff(times)
    med = float(np.median(dt))
    if med <= 0:
        return frames, 0.0, False
    if float(np.max(np.abs(dt - med))) <= 0.1 * med:
        return frames, 1.0 / med, False
    n = int(round(times[-1] / med)) + 1
    grid = np.arange(n) * med
    idx = np.clip(np.searchsorted(times, grid), 1, len(times) - 1)
    idx -= (grid - times[idx - 1]) < (times[idx] - grid)
    return np.ascontiguousarray(frames[idx]), 1.0 / med, True


def write_video(path: str | Path, video: Video, *, quality: int = 8) -> Path:
    """Write an H.264 mp4 atomically (even sizes are padded, yuv420p for browsers)."""
    import imageio.v2 as iio2

    from nil.io import atomic_save

    frames = video.frames
    h, w = frames.shape[1:3]
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")

    def _write(tmp: Path) -> None:
        with iio2.get_writer(
            tmp,
            format="FFMPEG",
            mode="I",
            fps=video.fps,
            codec="libx264",
            quality=quality,
            pixelformat="yuv420p",
            macro_block_size=1,
            output_params=["-movflags", "+faststart"],
        ) as wr:
            for fr in frames:
                wr.append_data(fr)  # type: ignore[attr-defined]

    return atomic_save(Path(path), _write)
