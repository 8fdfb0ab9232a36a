"""Retiming to the control rate: frame counts, exact endpoints, interpolation quality, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from nil.errors import ConfigError, VideoError
from nil.reference.retime import FlowInterpolator, RifeInterpolator, retime, retimed_length
from nil.reference.video import Video


def _square_video(n: int, fps: float, step: int = 4, hw: tuple[int, int] = (48, 64)) -> Video:
    """A textured square moving right by `step` px per frame on a gradient background."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(n):
        f = np.stack([(xx * 3) % 256, (yy * 5) % 256, np.full_like(xx, 40)], -1).astype(np.uint8)
        x0 = 8 + i * step
        patch = ((xx[12:32, x0 : x0 + 16] - x0) * 16 % 256).astype(np.uint8)
        f[12:32, x0 : x0 + 16, 0] = 255
        f[12:32, x0 : x0 + 16, 1] = patch
        frames.append(f)
    return Video(np.stack(frames), fps)


def test_24_to_100_frame_count_and_exact_endpoints():
    v = _square_video(9, 24.0)
    out = retime(v, 100.0, "flow")
    assert out.num_frames == round(8 * 100 / 24) + 1 == 34
    assert out.fps == 100.0
    assert np.array_equal(out.frames[0], v.frames[0])
    assert np.array_equal(out.frames[-1], v.frames[-1])
    assert out.frames.dtype == np.uint8 and out.hw == v.hw


def test_integer_ratio_keeps_every_source_frame():
    v = _square_video(6, 25.0)
    out = retime(v, 100.0, "flow")
    assert out.num_frames == 21 == retimed_length(6, 25.0, 100.0)
    for j in range(6):
        assert np.array_equal(out.frames[4 * j], v.frames[j])


def test_flow_midpoint_beats_blending_and_nearest():
    """Halfway between two frames the flow interpolator puts the square halfway (rendered truth)."""
    v = _square_video(2, 10.0, step=6)
    truth = _square_video(3, 20.0, step=3).frames[1]
    interp = FlowInterpolator()
    interp.prepare(v.frames[0], v.frames[1])
    mid = interp.at(0.5).astype(np.float32)
    blend = (v.frames[0].astype(np.float32) + v.frames[1]) / 2
    err_flow = np.abs(mid - truth).mean()
    err_blend = np.abs(blend - truth).mean()
    err_near = np.abs(v.frames[0].astype(np.float32) - truth).mean()
    assert err_flow < 0.6 * err_blend
    assert err_flow < 0.6 * err_near


def test_nearest_repeats_source_frames():
    v = _square_video(5, 25.0)
    out = retime(v, 100.0, "nearest")
    assert out.num_frames == 17
    srcs = {v.frames[j].tobytes() for j in range(5)}
    assert all(f.tobytes() in srcs for f in out.frames)
    assert np.array_equal(out.frames[1], v.frames[0]) and np.array_equal(out.frames[3], v.frames[1])


def test_downsampling():
    v = _square_video(41, 200.0, step=1)
    out = retime(v, 100.0, "flow")
    assert out.num_frames == 21
    assert np.array_equal(out.frames[5], v.frames[10])


@pytest.mark.parametrize("target", [0.0, -5.0, float("nan"), 5000.0])
def test_bad_target_fps(target):
    with pytest.raises(VideoError, match="fps"):
        retime(_square_video(9, 24.0), target)


def test_absurd_upsample_ratio():
    with pytest.raises(VideoError, match="upsample"):
        retime(_square_video(9, 1.0), 100.0)


def test_too_short_for_one_clip():
    v = _square_video(3, 100.0)  # 3 frames at the control rate stay 3 frames
    with pytest.raises(VideoError, match="at least 8"):
        retime(v, 100.0)
    with pytest.raises(VideoError, match="at least 2"):
        retime(Video(v.frames[:1], 24.0), 100.0)


def test_video_rejects_zero_fps():
    with pytest.raises(VideoError):
        Video(np.zeros((4, 8, 8, 3), np.uint8), 0.0)


def test_rife_missing_path_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="rife_path"):
        retime(_square_video(9, 24.0), 100.0, "rife", rife_path=None)
    with pytest.raises(ConfigError, match="holds none of"):
        RifeInterpolator(tmp_path)
    bad = tmp_path / "rife.pt"
    bad.write_bytes(b"not torchscript")
    with pytest.raises(ConfigError, match="cannot load"):
        RifeInterpolator(tmp_path)


def test_rife_hook_runs_a_local_torchscript_model(tmp_path):
    """The hook's calling convention, with a scripted stand-in (linear blend) for RIFE's IFNet."""
    import torch

    class Blend(torch.nn.Module):
        def forward(self, img0: torch.Tensor, img1: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            return img0 * (1 - timestep) + img1 * timestep

    torch.jit.script(Blend()).save(str(tmp_path / "rife.pt"))
    v = _square_video(9, 25.0)
    out = retime(v, 100.0, "rife", rife_path=str(tmp_path))
    assert out.num_frames == 33
    expect = v.frames[0].astype(np.float32) * 0.75 + v.frames[1] * 0.25
    assert np.abs(out.frames[1].astype(np.float32) - expect).max() <= 1.0
    assert np.array_equal(out.frames[0], v.frames[0])
