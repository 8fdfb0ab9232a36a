"""Scenes (nil.scene): objects placed relative to the robot, in the model and e0 but not in the robot mask;
named bad input; success measures on known states; the whole-body task presets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nil.config import parse_config
from nil.errors import ConfigError
from nil.robots import robot_from_config
from nil.scene import object_geom_mask
from nil.scene.success import score_episode, task_metrics

BOX = '<body pos="0.9 0.6 0"><geom type="box" size=".1 .1 .1" pos="0 0 .1" rgba="1 0 0 1"/></body>'


def _spec(robot: str, objects: list[dict], task: str = "none", **extra):
    data = {
        "robot": {"name": robot},
        "camera": {"width": 64, "height": 64},
        "scene": {"objects": objects, "task": task},
    }
    return robot_from_config(parse_config({**data, **extra}))


def test_no_objects_is_the_plain_model():
    plain = _spec("ant", [])
    assert plain.scene == ""
    assert not object_geom_mask(plain.load_model()).any()


def test_objects_in_model_and_e0_but_not_in_the_robot_mask():
    from nil.reference.frame import render_frame0

    plain, boxed = _spec("ant", []), _spec("ant", [{"kind": "mjcf", "mjcf": BOX}])
    m0, m1 = plain.load_model(), boxed.load_model()
    objs = object_geom_mask(m1)
    assert objs.sum() == 1 and m1.ngeom == m0.ngeom + 1
    assert not (boxed.robot_geom_mask(m1) & objs).any()
    assert boxed.robot_geom_mask(m1).sum() == plain.robot_geom_mask(m0).sum()
    f0, f1 = render_frame0(plain), render_frame0(boxed)
    assert np.array_equal(f0.mask, f1.mask)  # the box is beside the robot: same robot mask
    red = (f1.rgb[..., 0] > 150) & (f1.rgb[..., 1] < 60) & (f1.rgb[..., 2] < 60)
    assert red.sum() > 5 and not (red & f1.mask).any()  # e0 shows the object; the mask excludes it
    red_nobg = (f1.rgb_nobg[..., 0] > 150) & (f1.rgb_nobg[..., 1] < 60) & (f1.rgb_nobg[..., 2] < 60)
    assert red_nobg.sum() == red.sum()  # frame0.png (background flattened) keeps the object
    import mujoco

    from nil.scene.render import render_object_mask

    data = mujoco.MjData(m1)
    data.qpos[:] = f1.qpos
    mujoco.mj_forward(m1, data)
    obj_mask = render_object_mask(m1, boxed, data)
    assert obj_mask[red].all() and not (obj_mask & f1.mask).any()


def test_chair_behind_and_bar_above_the_robot(menagerie_root):
    spec = _spec("unitree_h1", [{"kind": "chair"}, {"kind": "bar"}])
    scene = json.loads(spec.scene)
    chair, bar = scene["objects"]
    robot = scene["robot"]
    assert chair["pos"][0] < robot["back"]  # behind the heels, the robot faces +x
    assert 0.35 < chair["height"] < 0.6  # a seat at knee height for a 1.7 m humanoid
    assert robot["height"] < bar["height"] < 1.3 * robot["height"]  # reach height, overhead
    model = spec.load_model()
    assert model.nq == 26  # static objects add no state


def test_board_adds_a_hinge_and_lifts_the_robot_onto_it(menagerie_root):
    plain = _spec("unitree_h1", [])
    spec = _spec("unitree_h1", [{"kind": "board"}])
    m0, m1 = plain.load_model(), spec.load_model()
    assert m1.nq == m0.nq + 1 and m1.nv == m0.nv + 1  # the deck's tilt, after the robot's coordinates
    lift = json.loads(spec.scene)["robot_lift"]
    q0, q1 = plain.initial_qpos(m0), spec.initial_qpos(m1)
    assert q1[2] == pytest.approx(q0[2] + lift) and np.allclose(q1[3 : m0.nq], q0[3:])


def test_bad_scenes_name_the_setting(menagerie_root):
    with pytest.raises(ConfigError, match=r"scene\.objects\[0\]\.pos: the chair intersects unitree_h1"):
        _spec("unitree_h1", [{"kind": "chair", "pos": [0.0, 0.0, 0.0]}])
    with pytest.raises(
        ConfigError, match=r"scene\.objects\[1\]\.height: a bar at 3\.50 m is out of unitree_h1's reach"
    ):
        _spec("unitree_h1", [{"kind": "board"}, {"kind": "bar", "height": 3.5}])
    with pytest.raises(ConfigError, match=r"scene\.objects\[0\]\.pos: the bar is 2\.00 m from the robot"):
        _spec("unitree_h1", [{"kind": "bar", "pos": [2.0, 0.0, 0.0]}])
    with pytest.raises(ConfigError, match=r"scene\.objects\[0\]\.mjcf: not a valid MJCF snippet"):
        _spec("ant", [{"kind": "mjcf", "mjcf": "<body><geom type='nope'/></body>"}])
    with pytest.raises(ConfigError, match=r"scene\.objects\[0\]\.mjcf: kind mjcf needs"):
        _spec("ant", [{"kind": "mjcf"}])
    with pytest.raises(ConfigError, match=r"scene\.objects\.0\.kind"):
        parse_config({"scene": {"objects": [{"kind": "table"}]}})


def _standing(spec, n: int = 20) -> np.ndarray:
    model = spec.load_model()
    return np.tile(spec.initial_qpos(model), (n, 1))


def test_sitting_success_on_known_states(menagerie_root):
    from nil.teachers import make_teacher
    from nil.teachers.measure import rollout_states

    sit = [0, 0, -1.5, 1.6, -0.3, 0, 0, -1.5, 1.6, -0.3, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    cfg = parse_config(
        {
            "robot": {"name": "unitree_h1"},
            "camera": {"width": 64, "height": 64},
            "scene": {"objects": [{"kind": "chair"}], "task": "sitting"},
            "generator": {"teacher": "keyframes", "keyframes": ["home", sit], "keyframe_times": [0.2, 1.5]},
        }
    )
    spec = robot_from_config(cfg)
    standing = score_episode(spec, _standing(spec))
    assert not standing.success and standing.measures["seat_contact"] == 0.0
    assert standing.measures["pelvis_height_m"] > 0.9
    model = spec.load_model()
    q = rollout_states(spec, make_teacher("keyframes", spec, model, cfg.generator), 3.0, model=model)
    sat = score_episode(spec, q)
    assert sat.success and sat.measures["seat_contact"] > 0.5
    assert sat.measures["pelvis_height_final_m"] < 0.75 * 0.98
    assert sat.task_return > standing.task_return * len(q) / 20
    flat = task_metrics(spec, q)
    assert flat["task_success"] == 1.0 and "task_seat_contact" in flat
    # the same states cut short by the fall rule are no success (the measures stay what they were)
    fell = task_metrics(spec, q, fell=True)
    assert fell["task_success"] == 0.0 and fell["task_seat_contact"] == flat["task_seat_contact"]


def test_balancing_and_hanging_measures_on_known_states(menagerie_root):
    board = _spec("unitree_h1", [{"kind": "board"}], task="balancing")
    q = _standing(board)
    level = score_episode(board, q)
    assert level.success and level.measures["time_upright"] == 1.0 and level.measures["board_tilt_rad"] == 0.0
    tilted = q.copy()
    tilted[:, -1] = 0.4  # the deck's hinge is the last coordinate
    assert not score_episode(board, tilted).success
    bar = _spec("unitree_h1", [{"kind": "bar"}], task="hanging")
    q = _standing(bar)
    stand = score_episode(bar, q)
    assert (
        not stand.success
        and stand.measures["feet_off_ground"] == 0.0
        and stand.measures["hands_on_bar"] == 0.0
    )
    lifted = q.copy()
    lifted[:, 2] += 0.3
    assert score_episode(bar, lifted).measures["feet_off_ground"] == 1.0
    assert task_metrics(_spec("unitree_h1", [{"kind": "bar"}]), q) == {}  # no task, no measures
    with pytest.raises(ConfigError, match=r"scene\.task 'sitting' needs a chair"):
        score_episode(bar, q, "sitting")


def test_task_presets_pick_the_scene_and_name_the_object(menagerie_root):
    from nil.skill import build_config

    sit = build_config(robot="unitree_h1", skill="sitting on a chair")
    assert [o.kind for o in sit.scene.objects] == ["chair"] and sit.scene.task == "sitting"
    assert sit.generator.teacher == "keyframes" and sit.generator.keyframes[0] == "home"
    assert len(sit.generator.keyframes[1]) == 19
    assert "chair" in sit.prompt("Unitree H1 humanoid robot")
    # the arm that sat most often (pd 1.2, tilt_coef 5) and the best in-training eval's policy
    assert (sit.robot.control_mode, sit.robot.action_scale, sit.reward.tilt_coef) == ("pd", 1.2, 5.0)
    assert sit.rl.keep_best is True
    g1_sit = build_config(robot="unitree_g1", skill="sitting on a chair")
    assert g1_sit.robot.action_scale == pytest.approx(1.6)  # its seat pose lies 1.6 rad from the stand
    paper = build_config(robot="unitree_h1", skill="sitting on a chair", preset="paper")
    assert paper.rl.keep_best is False and paper.scene.task == "sitting"  # the paper's learner wins
    assert build_config(robot="unitree_h1", skill="hanging from a bar").rl.keep_best is False
    chair = sit.scene.objects[0]  # skill.yaml records the sizes and the place the run uses
    assert (
        chair.pos is not None
        and chair.pos[0] < -0.3
        and chair.height == pytest.approx(0.27 * 1.733, abs=0.01)
    )
    assert robot_from_config(sit).scene == robot_from_config(sit.model_copy(deep=True)).scene
    hang = build_config(robot="unitree_g1", skill="hanging")
    assert hang.scene.task == "hanging" and "horizontal bar" in hang.prompt("G1")
    assert len(hang.generator.keyframes[1]) == 29
    assert hang.robot.initial_pose == hang.generator.keyframes[0]  # starts in the reach pose
    assert hang.robot.control_mode == "pd" and hang.robot.action_scale == pytest.approx(1.8)
    demo = build_config(robot="unitree_h1", skill="sitting on a chair", preset="demo")
    assert demo.rl.gait_clock is False and demo.reward.speed_weight == 0.0  # no gait; the cue did not help
    walk = build_config(robot="unitree_h1", skill="walking")
    assert walk.scene.objects == [] and walk.generator.teacher == "cpg"
    assert build_config(robot="unitree_h1", skill="walking", preset="demo").rl.gait_clock is True
    assert walk.generator.gait_hz == 2.0  # the biped walker's frequency, not the quadruped CPG's


def test_synthetic_reference_with_a_scene_keeps_the_object_on_a_flat_background():
    from nil.reference.generators.synthetic import SyntheticGenerator

    cfg = parse_config(
        {
            "camera": {"width": 64, "height": 64},
            "generator": {"seconds": 0.2, "teacher_background": "flat"},
            "scene": {"objects": [{"kind": "mjcf", "mjcf": BOX}]},
        }
    )
    result = SyntheticGenerator(cfg).generate(np.zeros((64, 64, 3), np.uint8), "walking", seed=0)
    frames = result.video.frames
    red = (frames[..., 0] > 150) & (frames[..., 1] < 60) & (frames[..., 2] < 60)
    assert red.any(axis=(1, 2)).all()  # every emitted frame shows the box
    assert not (
        red & result.teacher["masks"][:: result.info["subsample"]]
    ).any()  # the robot mask excludes it
    assert result.teacher["qpos"].shape[1] == 15  # a static object adds no state


def test_h1_balance_teacher_stays_on_the_rocking_board(menagerie_root):
    from nil.skill import build_config
    from nil.teachers import make_teacher
    from nil.teachers.measure import rollout_states

    cfg = build_config(
        robot="unitree_h1", skill="balancing on a board", overrides=["camera.width=32", "camera.height=32"]
    )
    assert cfg.scene.task == "balancing" and cfg.generator.teacher == "balance"
    spec = robot_from_config(cfg)
    model = spec.load_model()
    q = rollout_states(spec, make_teacher("balance", spec, model, cfg.generator), 4.0, model=model)
    score = score_episode(spec, q)
    assert score.success and score.measures["time_upright"] == 1.0
    assert 0.01 < score.measures["board_tilt_rad"] < 0.15  # the deck does rock; the robot rides it
    held = make_teacher("keyframes", spec, model, cfg.generator.model_copy(update={"keyframes": ["home"]}))
    assert not score_episode(spec, rollout_states(spec, held, 4.0, model=model)).success  # a held pose falls


def test_warp_backend_rebuild_keeps_the_objects():
    """The warp backend recompiles the MJCF (to add its camera): the scene objects must come back too."""
    import dataclasses

    from nil.sim.warp_backend.model import tracking_model

    spec = _spec("ant", [{"kind": "mjcf", "mjcf": BOX}, {"kind": "board", "pos": [1.5, 0.0, 0.0]}])
    model = tracking_model(spec)
    exact = dataclasses.replace(spec, simplify_meshes=False).load_model()
    assert model.nq == exact.nq == 16 and model.ngeom == exact.ngeom
    assert np.allclose(model.geom_pos, exact.geom_pos) and np.allclose(model.key_qpos, exact.key_qpos)
    assert object_geom_mask(model).sum() == object_geom_mask(exact).sum() == 3


def test_teacher_replay_row_carries_the_scene_task_measures(menagerie_root):
    """The eval's teacher row scores the replayed teacher with the same task measures as a policy's row."""
    from nil.evaluation.teacher import replay, teacher_row

    board = _spec("unitree_h1", [{"kind": "board"}], task="balancing")
    model = board.load_model()
    level = _standing(board, 8)
    tilted = level.copy()
    tilted[:, -1] = 0.4  # the deck's hinge is the last coordinate: the board tips over
    rows = {}
    for name, q in (("level", level), ("tilted", tilted)):
        ref_masks, _ = replay(board, model, q)
        m, per_step = teacher_row(board, model, {"qpos": q}, ref_masks, 0.02, 0.5, ramp=0)
        assert per_step.min() == pytest.approx(1.0)  # the replay against its own masks
        assert {k: v for k, v in m.items() if k.startswith("task_") and k != "task_reward"} == task_metrics(
            board, q
        )
        rows[name] = m
    assert rows["level"]["task_success"] == 1.0 and rows["level"]["task_time_upright"] == 1.0
    assert rows["tilted"]["task_success"] == 0.0 and rows["tilted"]["task_board_tilt_rad"] > 0.3
    plain = _spec("unitree_h1", [])  # no scene task: no task measures in the row
    q = _standing(plain, 4)
    m, _ = teacher_row(
        plain, plain.load_model(), {"qpos": q}, replay(plain, plain.load_model(), q)[0], 0.02, 0.5, 0
    )
    assert not [k for k in m if k.startswith("task_") and k != "task_reward"]


def _hand_tip(spec, model, data, body: str) -> np.ndarray:
    import mujoco

    from nil.scene.grip import hand_tip_world

    return hand_tip_world(model, data, mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body))


def test_a_hand_near_a_gripped_bar_takes_hold_and_carries_the_robot(menagerie_root):
    """scene.objects[i].grip (beyond the paper): a bar through the H1's hands at its initial pose. A grip
    switches on only once its hand is within GRIP_RADIUS, then holds the hand on the bar while the unpowered
    robot slumps (with the bar out of reach the hands drop with it); a reset lets go; the hanging measure
    counts a held hand as on the bar."""
    import mujoco

    from nil.scene.grip import GRIP_HOLD, GRIP_RADIUS, GripTable

    plain = _spec("unitree_h1", [])
    m0 = plain.load_model()
    d0 = mujoco.MjData(m0)
    d0.qpos[:] = plain.initial_qpos(m0)
    mujoco.mj_kinematics(m0, d0)
    tip = _hand_tip(plain, m0, d0, "left_elbow_link")
    bar = {"kind": "bar", "height": float(tip[2]), "pos": [float(tip[0]), 0.0, 0.0]}

    def run(grip: list[str], far: bool = False) -> tuple[np.ndarray, GripTable, mujoco.MjData, object]:
        obj = dict(bar, grip=grip, height=bar["height"] + (0.2 if far else 0.0))
        spec = _spec("unitree_h1", [obj], task="hanging")
        model = spec.load_model()
        grips = GripTable.of(model)
        d = mujoco.MjData(model)
        d.qpos[:] = spec.initial_qpos(model)
        mujoco.mj_forward(model, d)
        start = _hand_tip(spec, model, d, "left_elbow_link")
        grips.update(d)
        drops = []
        for _ in range(100):  # 1 s, ctrl 0: the robot falls unless something holds it
            mujoco.mj_step(model, d, nstep=spec.substeps(model))
            grips.update(d)
            drops.append(start[2] - _hand_tip(spec, model, d, "left_elbow_link")[2])
        return np.asarray(drops), grips, d, spec

    hands = ["left_elbow_link", "right_elbow_link"]
    free, grips_far, d_far, _ = run(hands, far=True)  # the bar 0.2 m above the hands: out of reach
    assert grips_far.distances(d_far).min() > GRIP_RADIUS and not d_far.eq_active[grips_far.eq].any()
    assert free.max() > 0.3  # measured: the unheld hands fall with the robot
    held, grips, d, spec = run(hands)
    assert len(grips) == 2 and d.eq_active[grips.eq].all()
    assert abs(held).max() < GRIP_HOLD and grips.distances(d).max() < GRIP_HOLD
    mujoco.mj_resetData(spec.load_model(), d)
    assert not d.eq_active.any()  # a reset lets go
    q = np.tile(spec.initial_qpos(spec.load_model()), (5, 1))
    assert score_episode(spec, q).measures["hands_on_bar"] == 1.0  # at the initial pose the hand is on it


def test_grip_bad_input_names_the_setting(menagerie_root):
    with pytest.raises(ConfigError, match=r"scene\.objects\[0\]\.grip: only a bar"):
        _spec("unitree_h1", [{"kind": "chair", "grip": ["left_elbow_link"]}])
    with pytest.raises(ConfigError, match=r"scene\.objects\[0\]\.grip: .*no body 'paw'"):
        _spec("unitree_h1", [{"kind": "bar", "grip": ["paw"]}])
    pytest.importorskip("mujoco_warp")
    from nil.config import SimConfig
    from nil.sim.warp_backend import WarpSim

    spec = _spec("unitree_h1", [{"kind": "bar", "grip": ["left_elbow_link"]}])
    with pytest.raises(ConfigError, match=r"grip.*sim\.backend: mujoco"):
        WarpSim(spec, SimConfig(backend="warp", device="cpu", num_envs=1), horizon=5, seed=0)


@pytest.mark.parametrize("robot", ["unitree_h1", "unitree_g1"])
def test_hanging_preset_starts_on_the_bar_and_its_teacher_hangs(menagerie_root, robot):
    """The hanging preset: the initial pose puts both hand tips on the gripped bar, and the keyframe
    teacher (reach -> legs tucked, pd mode) hangs in the agent's physics: both hands held for the whole
    2-s reference and the feet off the floor once the tuck is done (measured: H1 0.77, G1 0.72 of the
    steps). From the home pose it did not: the H1 tipped backward before its hands reached the bar."""
    import mujoco

    from nil.scene.grip import GRIP_RADIUS, GripTable
    from nil.skill import build_config
    from nil.teachers.base import make_teacher
    from nil.teachers.measure import rollout_states

    cfg = build_config(robot=robot, skill="hanging from a bar")
    spec = robot_from_config(cfg)
    model = spec.load_model()
    data = mujoco.MjData(model)
    data.qpos[:] = spec.initial_qpos(model)
    mujoco.mj_kinematics(model, data)
    assert GripTable.of(model).distances(data).max() < GRIP_RADIUS / 4
    teacher = make_teacher("keyframes", spec, model, cfg.generator)
    score = score_episode(spec, rollout_states(spec, teacher, cfg.generator.seconds, model=model))
    assert score.success
    assert score.measures["hands_on_bar"] == 1.0 and score.measures["feet_off_ground"] > 0.6
