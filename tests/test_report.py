"""The HTML report: self-contained, and it renders in headless Chromium with every medium loaded."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from nil.config import SkillConfig, save_config
from nil.evaluation.plots import read_scalars
from nil.evaluation.report import report_is_current, write_report
from nil.evaluation.video import compose_side_by_side, write_side_by_side
from nil.io import atomic_write_json
from nil.paths import SkillPaths
from nil.reference.video import Video, write_video

CHROMIUM = (
    shutil.which("chromium")
    or shutil.which("chromium-browser")
    or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
)


def _disc_frames(t: int, h: int, w: int, phase: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:h, :w]
    frames = np.full((t, h, w, 3), 255, np.uint8)
    masks = np.zeros((t, h, w), bool)
    for k in range(t):
        cx = w / 2 + 0.25 * w * np.sin(2 * np.pi * k / t + phase)
        m = (xx - cx) ** 2 + (yy - h / 2) ** 2 < (0.2 * h) ** 2
        masks[k] = m
        frames[k][m] = (90, 60, 200)
    return frames, masks


def make_bundle(root: Path) -> SkillPaths:
    """A skill folder with every file the report reads, made by hand (no simulator needed)."""
    from torch.utils.tensorboard import SummaryWriter

    paths = SkillPaths(root)
    save_config(SkillConfig(), root)
    t, h, w = 24, 48, 64
    ref, ref_m = _disc_frames(t, h, w)
    agent, agent_m = _disc_frames(t, h, w, phase=0.4)
    cv2.imwrite(str(paths.frame0), ref[0][..., ::-1])
    cv2.imwrite(str(paths.frame0_mask), ref_m[0].astype(np.uint8) * 255)
    write_video(paths.video, Video(ref, 20.0))
    write_video(paths.retimed, Video(ref, 20.0))
    atomic_write_json(
        paths.meta,
        {
            "generator": "synthetic",
            "prompt": "The ant agent is walking, camera follows the agent.",
            "seed": 0,
            "fps": 20.0,
            "num_frames": t,
        },
    )
    atomic_write_json(
        paths.segment_meta,
        {
            "segmenter": "flow",
            "quality": {
                "frame0_iou": 0.99,
                "area_ratio": [1.0] * 7 + [1.4] * (t - 7),
                "consecutive_iou": [0.95] * (t - 1),
                "warnings": ["frame 7: mask area jumped by 40%"],
                "passed": True,
            },
        },
    )
    sbs = compose_side_by_side(ref, agent, ref_m, agent_m)
    write_side_by_side(paths.side_by_side, sbs, 20.0)
    atomic_write_json(
        paths.metrics,
        {
            "episodes": 3,
            "horizon": t - 1,
            "ramp_steps": 6,
            "control_hz": 20.0,
            "policy": {"checkpoint": "ckpt_1.pt", "step": 100},
            "trained": {"mean_iou": 0.71, "mean_velocity": 0.5, "joint_rmse_dtw": 0.2, "falls": 0.0},
            "baselines": {
                "random": {"mean_iou": 0.42, "mean_velocity": 0.01, "joint_rmse_dtw": 0.6, "falls": 0.0},
                "teacher": {"mean_iou": 0.95, "mean_velocity": 0.55, "joint_rmse_dtw": 0.0},
            },
            "sd": {"trained": {"mean_iou": 0.05, "falls": 0.0}, "random": {"mean_iou": 0.125}},
            "per_episode": {"trained": {"mean_iou": [0.66, 0.71, 0.76]}},
            "warnings": ["the reference's teacher does not move forward (0.010 m/s)"],
            "per_frame_iou": {"trained": [0.7] * t, "random": [0.4] * t},
        },
    )
    wr = SummaryWriter(str(paths.train / "tb"))
    for s in range(0, 200, 10):
        wr.add_scalar("reward/raw/iou", 0.3 + s / 400, s)
        wr.add_scalar("reward/weighted/reg", -0.1 + s / 4000, s)
        wr.add_scalar("episode/return", s / 10, s)
        wr.add_scalar("loss/critic", 1.0 / (1 + s), s)
    wr.close()
    return paths


def render_in_chromium(html_path: Path, tmp: Path) -> dict[str, str]:
    """Open the page headless and return the data-* attributes its script set on <body>."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--mute-audio",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        html_path.resolve().as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r"<body([^>]*)>", res.stdout)
    assert m, "chromium returned no <body>"
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', m.group(1)))


def test_scalars_read_from_event_files(tmp_path):
    paths = make_bundle(tmp_path / "skill")
    sc = read_scalars(paths.train / "tb")
    assert set(sc) >= {"reward/raw/iou", "episode/return", "loss/critic"}
    steps, vals = sc["reward/raw/iou"]
    assert steps.tolist() == list(range(0, 200, 10))
    assert vals[0] == pytest.approx(0.3) and vals[-1] == pytest.approx(0.3 + 190 / 400)


def test_report_is_self_contained(tmp_path):
    paths = make_bundle(tmp_path / "skill")
    out = write_report(paths)
    text = out.read_text()
    assert "SYNTHETIC TEACHER REFERENCE" in text
    assert text.count("<video") == 2 and text.count("data:video/mp4;base64,") == 2
    assert "frame 7: mask area jumped by 40%" in text
    assert "trained policy" in text and "random actions (baseline)" in text
    # mean ± sd over episodes, the worst episode, the teacher's row, and eval's warnings
    assert "0.71 ± 0.05" in text and "0.42 ± 0.12" in text and ">0.66<" in text and "worst episode" in text
    assert "teacher replay (ground truth)" in text and "6-step start-up ramp" in text
    assert "does not move forward" in text
    # nothing is fetched from outside the file
    assert not re.search(r'(src|href)="(?!data:)[^"#]', text)
    assert report_is_current(paths)
    paths.metrics.write_text(paths.metrics.read_text())  # rewritten with the same content: still current
    assert report_is_current(paths)
    m = json.loads(paths.metrics.read_text())
    m["trained"]["mean_iou"] = 0.8
    atomic_write_json(paths.metrics, m)  # new numbers: the report is stale
    assert not report_is_current(paths)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (`apt-get install -y chromium`)")
def test_report_renders_in_chromium(tmp_path):
    paths = make_bundle(tmp_path / "skill")
    out = write_report(paths)
    n_img = out.read_text().count("<img")
    attrs = render_in_chromium(out, tmp_path)
    assert attrs.get("media") == "ok", attrs
    assert attrs["videos"] == attrs["videos-loaded"] == "2"
    assert int(attrs["images"]) == n_img >= 4 and attrs["images-loaded"] == attrs["images"]
    assert attrs["errors"] == ""
    # the checker can fail: a broken video is reported as an error
    text = out.read_text()
    broken = re.sub(
        r"data:video/mp4;base64,[A-Za-z0-9+/=]{200}", "data:video/mp4;base64,AAAAAAAA", text, count=1
    )
    bad = tmp_path / "broken.html"
    bad.write_text(broken)
    attrs = render_in_chromium(bad, tmp_path)
    assert attrs.get("media") == "error" and "video0" in attrs["errors"], attrs


def test_metrics_file_round_trip(tmp_path):
    paths = make_bundle(tmp_path / "skill")
    m = json.loads(paths.metrics.read_text())
    assert m["trained"]["mean_iou"] > m["baselines"]["random"]["mean_iou"]
