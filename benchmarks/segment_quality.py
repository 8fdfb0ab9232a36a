"""Offline fallback segmenter ("flow") vs the simulator's exact masks on synthetic references.

For each robot: stage 1 with the synthetic teacher (rendered in MuJoCo, 25 fps, flow-retimed to the
control rate, H.264 mp4), then the flow segmenter on the retimed reference; IoU per frame against
teacher.npz's masks (the simulator's segmentation of every control step), and frames/s of the
segmenter alone on this CPU. Usage:

    python benchmarks/segment_quality.py --robots ant unitree_go2 unitree_h1 --size 224 --seconds 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if "MENAGERIE_ROOT" not in os.environ and _SHARED.is_dir():
    os.environ["MENAGERIE_ROOT"] = str(_SHARED)


def run(robot: str, size: int, seconds: float, root: Path) -> dict:
    """Generate a synthetic reference of `robot` and score the flow segmenter on it."""
    from nil.config import parse_config, save_config
    from nil.paths import SkillPaths
    from nil.reference.bundle import generate_reference, load_reference
    from nil.reference.segment import iou
    from nil.reference.segment.flow import FlowSegmenter

    cfg = parse_config(
        {
            "robot": {"name": robot},
            "camera": {"width": size, "height": size},
            "generator": {"name": "synthetic", "seconds": seconds},
            "segmenter": {"name": "flow"},
        }
    )
    paths = SkillPaths(root / robot)
    paths.root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, paths.root)
    generate_reference(paths, cfg)
    video = load_reference(paths)
    truth = np.load(paths.teacher)["masks"]
    t0 = time.perf_counter()
    masks = FlowSegmenter().segment(video, truth[0])
    wall = time.perf_counter() - t0
    ious = np.array([iou(a, b) for a, b in zip(masks[1:], truth[1:], strict=True)])  # frame 0 is the prompt
    return {
        "robot": robot,
        "frames": video.num_frames,
        "size": size,
        "mean_iou": float(ious.mean()),
        "min_iou": float(ious.min()),
        "fps": video.num_frames / wall,
        "robot_fraction": float(truth.mean()),
    }


def main() -> None:
    """Print a markdown table row per robot."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--robots", nargs="+", default=["ant", "unitree_go2", "unitree_h1"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    from nil.gl import ensure_offscreen_gl

    ensure_offscreen_gl()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(r, args.size, args.seconds, Path(tmp)) for r in args.robots]
    print("| robot | frames | size | robot px | mean IoU | min IoU | frames/s (CPU) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['robot']} | {r['frames']} | {r['size']}x{r['size']} | {r['robot_fraction']:.1%} | "
            f"{r['mean_iou']:.3f} | {r['min_iou']:.3f} | {r['fps']:.0f} |"
        )


if __name__ == "__main__":
    main()
