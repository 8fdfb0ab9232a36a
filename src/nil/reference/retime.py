"""Bring a reference video to the control rate, so that retimed frame t is the target of control step t.

The paper interpolates its 24-30 fps videos 4x with RIFE to reach 100 Hz. Here the default is
optical-flow interpolation (OpenCV DIS flow, both neighbours warped to the intermediate time and
blended), `nearest` repeats/drops frames, and `rife` runs a learned interpolator from a local file.

Timing: output frame i shows source time i / target_fps. With T source frames the output has
round((T - 1) * target / src) + 1 frames; output frame 0 is source frame 0 (bit-exact) and the last
output frame is the last source frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from nil.errors import ConfigError, VideoError
from nil.reference.video import MAX_FPS, Video
from nil.registry import Registry

MIN_RETIMED_FRAMES = 8  # one encoder clip (TimeSformer takes 8 frames)
MAX_UPSAMPLE = 50.0  # beyond this, interpolation invents the motion rather than smoothing it
_EXACT_EPS = 1e-6


class Interpolator(Protocol):
    """Makes the frame at fraction `alpha` in (0, 1) between two frames."""

    name: str

    def prepare(self, f0: np.ndarray, f1: np.ndarray) -> None:
        """Called once per source pair before any `at` on it (e.g. to compute flows)."""
        ...

    def at(self, alpha: float) -> np.ndarray:
        """[H,W,3] uint8 frame at time alpha between the prepared pair."""
        ...


class FlowInterpolator:
    """Bidirectional dense optical flow (OpenCV DIS), both neighbours warped halfway and blended."""

    name = "flow"

    def __init__(self) -> None:
        import cv2

        self._cv2 = cv2
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)  # type: ignore[attr-defined]
        self._f0: np.ndarray | None = None
        self._f1: np.ndarray | None = None
        self._grid: tuple[np.ndarray, np.ndarray] | None = None

    def prepare(self, f0: np.ndarray, f1: np.ndarray) -> None:
        """Compute the forward and backward flow of the pair."""
        cv2 = self._cv2
        g0 = cv2.cvtColor(f0, cv2.COLOR_RGB2GRAY)
        g1 = cv2.cvtColor(f1, cv2.COLOR_RGB2GRAY)
        self._f0, self._f1 = f0, f1
        self._flow01 = self._dis.calc(g0, g1, None)
        self._flow10 = self._dis.calc(g1, g0, None)
        h, w = g0.shape
        if self._grid is None or self._grid[0].shape != (h, w):
            xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            self._grid = (xs, ys)

    def at(self, alpha: float) -> np.ndarray:
        """Backward-warp f0 by -alpha*F01 and f1 by -(1-alpha)*F10 (flow at x approximates flow at the
        intermediate position: good for the small motions between consecutive video frames), blend."""
        cv2 = self._cv2
        xs, ys = self._grid  # type: ignore[misc]
        a = float(alpha)
        w0 = cv2.remap(
            self._f0,
            xs - a * self._flow01[..., 0],
            ys - a * self._flow01[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        w1 = cv2.remap(
            self._f1,
            xs - (1 - a) * self._flow10[..., 0],
            ys - (1 - a) * self._flow10[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        out = (1 - a) * w0.astype(np.float32) + a * w1.astype(np.float32)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


class RifeInterpolator:
    """A learned interpolator (RIFE) loaded from a local file; never downloads.

    `path` is a file, or a directory holding one of `rife.pt`, `rife.ts`, `rife.pt2`, `flownet.pt`:
    a TorchScript (or torch.export `.pt2`) module called as `model(img0, img1, timestep) -> img` with
    img* [1,3,H,W] float in [0,1] and timestep [1,1,H,W] (the `inference(img0, img1, timestep)`
    convention of Practical-RIFE's IFNet; export it with torch.jit.script/trace or torch.export.save).
    H and W are padded to multiples of 32 as RIFE needs.
    """

    name = "rife"
    CANDIDATES = ("rife.pt", "rife.ts", "rife.pt2", "flownet.pt")

    def __init__(self, path: str | Path | None, device: str = "cpu") -> None:
        import torch

        if not path:
            raise ConfigError(
                "generator.retime.rife_path is not set; point it at a local RIFE TorchScript "
                "file (rife.pt), or use generator.retime.method: flow"
            )
        p = Path(path).expanduser()
        if p.is_dir():
            found = [p / c for c in self.CANDIDATES if (p / c).is_file()]
            if not found:
                raise ConfigError(
                    f"generator.retime.rife_path: {p} holds none of {list(self.CANDIDATES)}; "
                    "export RIFE to TorchScript there, or use generator.retime.method: flow"
                )
            p = found[0]
        if not p.is_file():
            raise ConfigError(
                f"generator.retime.rife_path: {p} does not exist; give a local RIFE TorchScript "
                "file, or use generator.retime.method: flow"
            )
        try:
            if p.suffix == ".pt2":
                self.model = torch.export.load(str(p)).module().to(device)
            else:
                self.model = torch.jit.load(str(p), map_location=device).eval()
        except Exception as e:  # noqa: BLE001 - any load failure means unusable weights
            raise ConfigError(
                f"generator.retime.rife_path: cannot load {p} as TorchScript or torch.export "
                f"({str(e).splitlines()[0][:200]}); export the RIFE model with torch.jit.script/trace "
                "or torch.export.save"
            ) from None
        self.path = p
        self._torch = torch
        self._device = device

    def _to_tensor(self, f: np.ndarray):
        torch = self._torch
        t = torch.from_numpy(f).to(self._device).permute(2, 0, 1)[None].float() / 255.0
        h, w = f.shape[:2]
        ph, pw = (-h) % 32, (-w) % 32
        return torch.nn.functional.pad(t, (0, pw, 0, ph), mode="replicate")

    def prepare(self, f0: np.ndarray, f1: np.ndarray) -> None:
        """Move the pair to the device."""
        self._hw = f0.shape[:2]
        self._t0, self._t1 = self._to_tensor(f0), self._to_tensor(f1)

    def at(self, alpha: float) -> np.ndarray:
        """Run the model at timestep alpha."""
        torch = self._torch
        with torch.no_grad():
            ts = torch.full_like(self._t0[:, :1], float(alpha))
            out = self.model(self._t0, self._t1, ts)
        h, w = self._hw
        img = out[0, :, :h, :w].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        return (img * 255.0 + 0.5).astype(np.uint8)


# A factory builds an interpolator from rife_path (None for the methods that need no file).
InterpolatorFactory = Callable[..., "Interpolator | None"]
INTERPOLATORS: Registry[InterpolatorFactory] = Registry("generator.retime.method")


@INTERPOLATORS.register("flow")
def _make_flow(rife_path: str | None = None) -> Interpolator:
    return FlowInterpolator()


@INTERPOLATORS.register("nearest")
def _make_nearest(rife_path: str | None = None) -> None:
    return None  # retime() repeats/drops frames itself


@INTERPOLATORS.register("rife")
def _make_rife(rife_path: str | None = None) -> Interpolator:
    return RifeInterpolator(rife_path)


def make_interpolator(method: str, rife_path: str | None = None) -> Interpolator | None:
    """The interpolator for `generator.retime.method` (None for nearest-frame), from INTERPOLATORS."""
    return INTERPOLATORS.get(method)(rife_path)


def retimed_length(num_frames: int, src_fps: float, target_fps: float) -> int:
    """round((T - 1) * target / src) + 1."""
    return int(round((num_frames - 1) * target_fps / src_fps)) + 1


def _check_fps(fps: float, what: str) -> None:
    if not isinstance(fps, (int, float)) or not math.isfinite(fps) or not (0 < fps <= MAX_FPS):
        raise VideoError(f"{what} must be in (0, {MAX_FPS:g}] frames per second, got {fps}")


def retime(
    video: Video,
    target_fps: float,
    method: str = "flow",
    *,
    rife_path: str | None = None,
    interpolator: Interpolator | None = None,
    progress: bool = False,
) -> Video:
    """Resample `video` to `target_fps` (see the module docstring for the timing rule)."""
    _check_fps(video.fps, "the video's fps")
    _check_fps(target_fps, "the control rate (target fps)")
    t_src = video.num_frames
    if t_src < 2:
        raise VideoError(f"the reference video has {t_src} frame; at least 2 are needed to retime it")
    if target_fps / video.fps > MAX_UPSAMPLE:
        raise VideoError(
            f"retiming {video.fps:g} fps to {target_fps:g} fps is a {target_fps / video.fps:.0f}x "
            f"upsample (max {MAX_UPSAMPLE:g}x); check the video's fps or generator.fps"
        )
    n_out = retimed_length(t_src, video.fps, target_fps)
    if n_out < MIN_RETIMED_FRAMES:
        raise VideoError(
            f"the reference has {n_out} frames after retiming to {target_fps:g} fps "
            f"({t_src} frames at {video.fps:g} fps); at least {MIN_RETIMED_FRAMES} (one encoder "
            "clip) are needed: make the video longer"
        )
    interp = interpolator if interpolator is not None else make_interpolator(method, rife_path)
    src = video.frames
    out = np.empty((n_out, *src.shape[1:]), dtype=np.uint8)
    ratio = video.fps / target_fps
    prepared = -1
    rng: Iterable[int] = range(n_out)
    if progress:
        from rich.progress import track

        rng = track(
            rng, description=f"retiming to {target_fps:g} fps ({interp.name if interp else 'nearest'})"
        )
    for i in rng:
        pos = min(i * ratio, t_src - 1.0)
        if i == n_out - 1:
            pos = t_src - 1.0  # the last output frame is the last source frame (rounding of n_out)
        j = int(math.floor(pos))
        a = pos - j
        if a < _EXACT_EPS or j >= t_src - 1:
            out[i] = src[min(j, t_src - 1)]
        elif 1 - a < _EXACT_EPS:
            out[i] = src[j + 1]
        elif interp is None:
            out[i] = src[j + 1] if a >= 0.5 else src[j]
        else:
            if prepared != j:
                interp.prepare(src[j], src[j + 1])
                prepared = j
            out[i] = interp.at(a)
    return Video(out, float(target_fps))
