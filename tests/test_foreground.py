"""The frame-0 robot finder (issue 14) on known answers: the simulator's own floor kept, gradients, tiles.

Every clip goes through H.264 (as an imported video does) and is compared with the simulator's exact
mask of the same frame. The bars are stated, and the finder before this file scored below them
(frame-0 mask IoU at 120 px on the "scene" floor: ant 0.70, A1 0.66, Go2 0.36; it filled the checker
squares between the ant's legs).
"""

from __future__ import annotations

import numpy as np
import pytest

from nil.config import parse_config
from nil.errors import SegmentationError
from nil.reference import known_answer as ka
from nil.reference.calibrate import Camera
from nil.reference.foreground import classical_foreground, find_robot, keep_robot_components
from nil.reference.segment import iou
from nil.reference.video import Video, read_video, write_video
from test_calibrate import assert_within_stated_tolerances


def _spec(robot: str, side: int):
    from nil.robots import robot_from_config

    return robot_from_config(
        parse_config({"robot": {"name": robot}, "camera": {"width": side, "height": side}})
    )


def _frame0(tmp_path, robot: str, side: int, background: str) -> tuple[np.ndarray, np.ndarray]:
    """(H.264-decoded frame 0 of a perturbed-camera clip on `background`, its exact mask)."""
    spec = _spec(robot, side)
    rgb, masks = ka.render_clip(
        spec, ka.perturbed(Camera.of(spec.camera)), hw=(side, side), num_frames=2, fps=30.0
    )
    path = tmp_path / f"{robot}-{background}.mp4"
    write_video(path, Video(ka.restyle(rgb, masks, background), 30.0), quality=9)
    return read_video(path).frames[0], masks[0]


# measured (this machine, libx264 quality 9): ant 0.84, A1 0.77, Go2 0.99
@pytest.mark.parametrize(("robot", "min_iou"), [("ant", 0.8), ("unitree_a1", 0.74), ("unitree_go2", 0.9)])
def test_frame0_mask_on_the_simulators_checker_floor(tmp_path, robot, min_iou, request):
    if robot != "ant":
        request.getfixturevalue("menagerie_root")
    frame, truth = _frame0(tmp_path, robot, 120, "scene")
    fg = find_robot(frame)
    assert iou(fg.mask, truth) >= min_iou, iou(fg.mask, truth)
    assert fg.info["method"].startswith("border colour bands")  # a checker floor is texture
    assert not fg.mask[100:, 60:].any()  # the watermark stays out


def test_checker_squares_between_the_legs_stay_out(tmp_path):
    """The failure this finder fixes: GrabCut smoothed over the high-contrast floor between thin legs."""
    import cv2

    frame, truth = _frame0(tmp_path, "ant", 120, "scene")
    mask = find_robot(frame).mask
    near = cv2.dilate(truth.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # one pixel of edge slack
    assert (mask & ~near).sum() <= 0.03 * mask.sum(), (mask & ~near).sum() / mask.sum()
    assert (mask & truth).sum() >= 0.85 * truth.sum()  # and the legs are there


@pytest.mark.parametrize(
    ("robot", "background", "min_iou"),
    [("ant", "gradient", 0.9), ("ant", "tiles", 0.9), ("unitree_go2", "gradient", 0.88)],
)
def test_frame0_mask_on_pasted_backgrounds(tmp_path, robot, background, min_iou, request):
    """Gradient and tiles keep working; the silver Go2 on a gradient was 0.80 at 120 px, now 0.93."""
    if robot != "ant":
        request.getfixturevalue("menagerie_root")
    frame, truth = _frame0(tmp_path, robot, 120, background)
    assert iou(find_robot(frame).mask, truth) >= min_iou


def test_fit_on_the_checker_floor_recovers_the_perturbed_camera(tmp_path):
    """The reported case (ant, perturbed camera, floor kept, 160 px): the fit reached IoU 0.67 and stopped."""
    from nil.reference.calibrate import calibrate_frame

    cfg = parse_config({"robot": {"name": "ant"}, "camera": {"width": 160, "height": 160}})
    spec = _spec("ant", 160)
    true = ka.perturbed(Camera.of(spec.camera))
    frame, _ = _frame0(tmp_path, "ant", 160, "scene")
    _, entry, _ = calibrate_frame(cfg, frame)  # raises below camera.calibrate_min_iou
    fit = Camera.from_dict(entry["camera_after"])
    assert entry["passed"] and entry["iou_after"] >= 0.8
    # the tolerances of test_calibrate.py's known-answer test; fovy trades with distance along the apparent
    # size: measured 11.5 deg off here, 14.8 with a 0.95-IoU mask on the gradient, 7.5 with the exact mask
    # at 120 px; bounded, not pinned
    assert_within_stated_tolerances(ka.fit_errors(fit, true, spec, 90.0), fovy_deg=15.0)


def test_a_watermark_is_never_the_robot():
    """At 80 px the watermark's text outweighs a distant robot; a caption alone is no robot."""
    frame = ka.stamp_watermark(ka.grey_gradient((80, 80))[None])[0]
    assert not classical_foreground(frame).mask.any()
    with pytest.raises(SegmentationError, match="no robot found"):
        find_robot(frame)
    m = np.zeros((80, 80), bool)
    m[72:78, 20:70] = True  # a wide caption at the bottom edge ...
    m[30:36, 30:38] = True  # ... and a smaller thing in the picture: that one is the robot
    kept = keep_robot_components(m)
    assert kept[30:36, 30:38].all() and not kept[72:].any()


# ---------------------------------------------------------- "fills the frame" told apart from "no robot"
def test_a_close_up_and_an_empty_frame_stop_with_different_reasons():
    """The old finder stopped both with one message ("no robot in view, or a robot that fills the frame")."""
    from nil.errors import NilError
    from nil.reference.calibrate import calibrate_frame

    cfg = parse_config({"robot": {"name": "ant"}, "camera": {"width": 96, "height": 96}})
    spec = _spec("ant", 96)
    cam = Camera.of(spec.camera)
    close = Camera(cam.distance * 0.25, cam.azimuth, cam.elevation, cam.fovy)  # legs cut by every edge
    rgb, masks = ka.render_clip(spec, close, hw=(96, 96), num_frames=1, fps=25.0)
    assert masks[0].mean() > 0.5
    with pytest.raises(NilError, match=r"fills the frame and runs off its edges; use a wider shot") as e:
        calibrate_frame(cfg, ka.restyle(rgb, masks, "gradient")[0])
    assert "\n" not in str(e.value) and "calibrate_min_iou" in str(e.value)
    for empty in (ka.grey_gradient((96, 96)), ka.tiled_floor((96, 96))):
        frame = ka.stamp_watermark(empty[None])[0]
        with pytest.raises(SegmentationError, match="no robot found.*camera.calibrate: false") as e:
            calibrate_frame(cfg, frame)
        assert "fills" not in str(e.value) and "\n" not in str(e.value)


def test_the_floors_motion_picks_the_side_a_symmetric_robot_is_filmed_from(tmp_path):
    """The ant looks the same every 90 deg, so frame 0 fits four azimuths equally well; the floor sliding
    under the tracking camera says which one has the robot walking the way it faces (+x)."""
    from nil.reference.calibrate import calibrate_frame

    side = 120
    cfg = parse_config({"robot": {"name": "ant"}, "camera": {"width": side, "height": side}})
    spec = _spec("ant", side)
    true = ka.perturbed(Camera.of(spec.camera))
    rgb, masks = ka.render_clip(spec, true, hw=(side, side), num_frames=40, fps=25.0)
    path = tmp_path / "ant-walk.mp4"
    write_video(path, Video(ka.restyle(rgb, masks, "scene"), 25.0), quality=9)
    video = read_video(path)
    _, entry, _ = calibrate_frame(cfg, video.frames[0], frames=video.frames, fps=video.fps)
    ties = [c for c in entry["candidates"] if "motion_score" in c]
    assert len(ties) >= 2  # frame 0 alone could not choose
    az = entry["camera_after"]["azimuth"]
    assert ka.azimuth_error(az, true.azimuth, 360.0) <= 10.0, az  # not modulo the ant's symmetry
    picked = next(c for c in entry["candidates"] if c.get("picked"))
    assert picked["motion_score"] == max(c["motion_score"] for c in ties) > 0.8


def test_a_floor_that_does_not_move_casts_no_vote_between_symmetric_fits():
    """A still textured background pasted behind the robot reads ~1e-4 m/s through any camera: its sign is
    noise, so every candidate scores 0 (below motion.STILL_SPEED) and the frame-0 fit decides alone."""
    from nil.reference.calibrate import forward_preference

    side = 96
    spec = _spec("ant", side)
    true = ka.perturbed(Camera.of(spec.camera))
    rgb, masks = ka.render_clip(spec, true, hw=(side, side), num_frames=40, fps=25.0)
    still = forward_preference(spec, ka.restyle(rgb, masks, "tiles"), masks[0], 25.0)
    moving = forward_preference(spec, ka.restyle(rgb, masks, "scene"), masks[0], 25.0)
    for turn in (0.0, 90.0, 180.0, 270.0):
        cam = Camera(true.distance, true.azimuth + turn, true.elevation, true.fovy, true.lookat_offset)
        assert still(cam) == 0.0, turn
    assert moving(true) > 0.8  # the same clip on the simulator's floor does vote, for the true side
