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


# ---------------------------------------------------------------- any source rate, through the file generator
def _import(tmp_path, video: Video, hw=(48, 64)):
    from nil.reference.generators.file import FileGenerator
    from nil.reference.video import write_video

    path = write_video(tmp_path / f"in-{video.fps:g}.mp4", video, quality=10)
    return FileGenerator(path).generate(np.zeros((*hw, 3), np.uint8), "p", num_frames=None, fps=None, seed=0)


def _square_x(frame: np.ndarray) -> float:
    """Left edge of the moving square (its red channel is 255)."""
    cols = np.flatnonzero((frame[12:32, :, 0] > 230).mean(axis=0) > 0.8)
    return float(cols.min())


@pytest.mark.parametrize("fps", [24.0, 25.0, 30.0, 60.0])
def test_file_at_any_common_rate_is_retimed_on_its_own_clock(tmp_path, fps):
    """A video at 24/25/30/60 fps keeps its real-time motion at the control rate (and records its rate)."""
    src = _square_video(10, fps, step=4)
    res = _import(tmp_path, src)
    assert res.info["source_fps"] == pytest.approx(fps) and res.info["source_variable_rate"] is False
    out = retime(res.video, 100.0, "nearest")
    assert out.num_frames == retimed_length(10, fps, 100.0)
    for i in range(0, out.num_frames, 7):  # nearest frame: the square sits where the source had it
        j = min(int(np.floor(i * fps / 100.0 + 0.5)), 9)
        assert abs(_square_x(out.frames[i]) - (8 + 4 * j)) <= 1, (i, j)


def _write_vfr(path, frames: np.ndarray, times: list[float]) -> None:
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        st.codec_context.time_base = Fraction(1, 1000)
        st.options = {"crf": "10"}
        for f, t in zip(frames, times, strict=True):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts, vf.time_base = int(round(t * 1000)), Fraction(1, 1000)
            for pkt in st.encode(vf):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)


def test_variable_rate_file_is_resampled_on_its_timestamps(tmp_path):
    from nil.reference.generators.file import FileGenerator
    from nil.reference.video import frame_times

    # 30 fps with frames 3, 4, 8 dropped: the square is where time says, not where the index says
    keep = [k for k in range(14) if k not in (3, 4, 8)]
    src = _square_video(14, 30.0, step=2)  # even positions: yuv420 chroma keeps the edge sharp
    path = tmp_path / "vfr.mp4"
    _write_vfr(path, src.frames[keep], [k / 30.0 for k in keep])
    t = frame_times(path)
    assert t is not None and len(t) == len(keep) and t[-1] == pytest.approx(13 / 30.0, abs=2e-3)
    res = FileGenerator(path).generate(
        np.zeros((48, 64, 3), np.uint8), "p", num_frames=None, fps=None, seed=0
    )
    assert res.info["source_variable_rate"] is True and res.video.fps == pytest.approx(30.0, rel=0.02)
    assert res.video.num_frames == 14  # back on a 1/30 s grid: the gaps are filled by the nearest frame
    for k in keep:
        assert abs(_square_x(res.video.frames[k]) - (8 + 2 * k)) <= 1, k
    out = retime(res.video, 100.0, "flow")
    assert out.num_frames == retimed_length(14, res.video.fps, 100.0)
