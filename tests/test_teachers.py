"""Teachers (nil.teachers): the registry, gaits that walk without sliding (measured at the contact point),
and the keyframe teacher's poses, timing and named bad input."""

from __future__ import annotations

import numpy as np
import pytest

from nil.config import parse_config
from nil.errors import ConfigError
from nil.robots import get_robot, robot_from_config
from nil.teachers import TEACHERS, make_teacher
from nil.teachers.keyframes import KeyframeTeacher
from nil.teachers.measure import contact_slip, measure_teacher, rollout_states


def test_registry_lists_builtins_and_names_the_setting():
    assert {"balance", "cpg", "keyframes", "policy"} <= set(TEACHERS.names())
    with pytest.raises(ConfigError, match=r"generator\.teacher: unknown name 'dance'.*cpg"):
        TEACHERS.get("dance")


def _spec(robot: str, **robot_cfg):
    return robot_from_config(parse_config({"robot": {"name": robot, **robot_cfg}}))


@pytest.mark.parametrize("mode,hz", [("pd", 25.0), ("torque", 100.0)])
def test_a1_teacher_walks_without_sliding(menagerie_root, mode, hz):
    # issue 13: the A1 reference shuffled (0.21 m/s, 0.55 m/s slip); the teacher must walk >= 0.5 m/s
    # with contact-point slip < 0.2 m/s, in the pd setting the CPU demo uses and in torque mode
    spec = _spec("unitree_a1", control_mode=mode, control_hz=hz)
    model = spec.load_model()
    m = measure_teacher(spec, make_teacher("cpg", spec, model, parse_config({}).generator), 3.0, model=model)
    assert m.fell_at_s is None and m.min_up_z > 0.9
    assert m.speed_x >= 0.5, m
    assert m.slip < 0.2, m
    assert m.drift_y < 0.1 * m.speed_x
    assert 0.3 < m.stance_fraction < 0.95  # feet do leave the ground


@pytest.mark.parametrize("mode,hz", [("pd", 25.0), ("torque", 100.0)])
def test_h1_biped_teacher_walks_without_falling(menagerie_root, mode, hz):
    # an open-loop CPG falls within 0.9 s on H1 (it falls even standing still); the biped walker's
    # balance feedback keeps it walking forward
    spec = _spec("unitree_h1", control_mode=mode, control_hz=hz)
    model = spec.load_model()
    walker = make_teacher("cpg", spec, model, parse_config({}).generator)
    assert type(walker).__name__ == "BipedWalker"
    assert [leg.name for leg in walker.legs] == ["left_ankle_link", "right_ankle_link"]
    assert all(leg.hip_fwd == -1.0 and leg.knee_bend == 1.0 for leg in walker.legs)  # H1's pitch axes are +y
    m = measure_teacher(spec, walker, 4.0, model=model)
    assert m.fell_at_s is None and m.min_up_z > 0.9 and m.min_height > spec.fall_height
    assert m.speed_x > 0.2, m
    assert m.slip < 0.2, m
    assert m.drift_y < 0.5 * m.speed_x


def test_pd_cpg_keeps_targets_inside_the_action_range(menagerie_root):
    spec = _spec("unitree_a1", control_mode="pd", control_hz=25.0)
    model = spec.load_model()
    cpg = make_teacher("cpg", spec, model, parse_config({}).generator)
    lo, hi = cpg.pd.target_range()
    q = np.stack([cpg.targets(t) for t in np.linspace(0, 2, 101)])
    assert (q >= lo - 1e-9).all() and (q <= hi + 1e-9).all()  # never clipped: the agent can express it


def test_contact_slip_is_the_contact_point_velocity():
    """A box sliding at 0.7 m/s reads 0.7; spinning in place (the COM still) it reads the corners' speed."""
    import mujoco

    from nil.robots.spec import RobotSpec

    xml = """<mujoco><option timestep="0.002"/><worldbody><geom type="plane" size="5 5 .1"/>
      <body name="box" pos="0 0 0.1"><freejoint/>
        <geom name="foot" type="box" size=".1 .1 .1" mass="1"/></body>
      </worldbody></mujoco>"""
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    spec = RobotSpec("box", "box", "", root_body="box", torso_body="box", feet_bodies=["box"])
    feet, robot = spec.foot_geom_index(model), spec.robot_geom_mask(model)
    data.qpos[2] = 0.0999
    data.qvel[0] = 0.7
    mujoco.mj_forward(model, data)
    loaded, slip = contact_slip(model, data, feet, robot, load_n=1.0)
    assert loaded.tolist() == [True] and slip[0] == pytest.approx(0.7, abs=1e-6)
    data.qvel[:] = 0.0
    data.qvel[5] = 2.0  # spin about z: the COM is still, the contact corners move at 2 rad/s x their radius
    mujoco.mj_forward(model, data)
    loaded, slip = contact_slip(model, data, feet, robot, load_n=1.0)
    assert loaded[0] and slip[0] > 0.1
    data.qpos[2] = 0.5  # in the air: no load, no slip counted
    mujoco.mj_forward(model, data)
    loaded, _ = contact_slip(model, data, feet, robot, load_n=1.0)
    assert not loaded.any()


def _ant_keyframes(keyframes, times=None, seconds=2.0, **robot_cfg):
    spec = get_robot("ant")
    if robot_cfg:
        spec = robot_from_config(parse_config({"robot": {"name": "ant", **robot_cfg}}))
    model = spec.load_model()
    return spec, model, KeyframeTeacher(spec, model, keyframes, times, seconds)


def test_keyframe_targets_interpolate_and_hold():
    sit = [0.0, 0.5, 0.0, -0.5, 0.0, -0.5, 0.0, 0.5]
    spec, model, kt = _ant_keyframes([sit], [1.0])
    q0 = kt.start
    assert np.allclose(kt.targets(0.0), q0)
    assert np.allclose(kt.targets(0.5), q0 + 0.5 * (np.asarray(sit) - q0))  # smoothstep midpoint
    assert np.allclose(kt.targets(1.0), sit) and np.allclose(kt.targets(5.0), sit)
    # default times: evenly over the first 60 % of the reference
    _, _, even = _ant_keyframes([sit, list(q0)], None, seconds=2.0)
    assert even.times.tolist() == pytest.approx([0.6, 1.2])


def _ant_pose() -> list[float]:
    """A pose inside the ant's joint ranges, in ACTUATOR order (which differs from qpos order on the ant)."""
    spec = get_robot("ant")
    model = spec.load_model()
    qadr = model.jnt_qposadr[model.actuator_trnid[:, 0]]
    start = spec.initial_qpos(model)[qadr]
    return [round(0.8 * v + (0.2 if v == 0 else 0.0), 3) for v in start]


def test_keyframe_teacher_reaches_the_pose_in_physics():
    sit = _ant_pose()
    spec, model, kt = _ant_keyframes([sit], [0.5], seconds=1.5)
    q = rollout_states(spec, kt, 1.5, model=model)
    err = np.abs(q[-1][kt.pd.qadr] - np.asarray(sit))
    assert err.max() < 0.15, err
    assert np.abs(q[0][kt.pd.qadr] - kt.start).max() < 1e-9


def test_keyframe_bad_input_names_the_setting(menagerie_root):
    with pytest.raises(
        ConfigError, match=r"generator\.keyframes\[1\]: 3 joint targets, but ant has 8 actuated"
    ):
        _ant_keyframes([[0.0] * 8, [0.1, 0.2, 0.3]])
    with pytest.raises(ConfigError, match=r"generator\.keyframes is empty"):
        _ant_keyframes([])
    with pytest.raises(ConfigError, match=r"generator\.keyframe_times has 1 values for 2"):
        _ant_keyframes([[0.0] * 8, [0.0] * 8], [1.0])
    with pytest.raises(ConfigError, match=r"strictly increasing"):
        _ant_keyframes([[0.0] * 8, [0.0] * 8], [1.0, 1.0])
    with pytest.raises(ConfigError, match=r"robot\.action_scale"):  # pd mode: beyond what an action can reach
        _ant_keyframes([[1.5] * 8], control_mode="pd")
    h1 = get_robot("unitree_h1")
    m = h1.load_model()
    with pytest.raises(
        ConfigError, match=r"generator\.keyframes\[0\]: unitree_h1 has no MJCF keyframe 'sit'.*home"
    ):
        KeyframeTeacher(h1, m, ["sit"], None, 2.0)
    kt = KeyframeTeacher(h1, m, ["home"], None, 2.0)  # an MJCF keyframe by name
    assert np.allclose(kt.poses[0], h1.initial_qpos(m)[kt.pd.qadr])


def test_synthetic_generator_runs_the_keyframe_teacher(tmp_path):
    from nil.paths import SkillPaths
    from nil.reference import bundle

    sit = _ant_pose()
    cfg = parse_config(
        {
            "camera": {"width": 48, "height": 48},
            "generator": {
                "teacher": "keyframes",
                "keyframes": [sit],
                "keyframe_times": [0.4],
                "seconds": 0.8,
            },
        }
    )
    paths = SkillPaths(tmp_path / "ant_pose")
    meta = bundle.generate_reference(paths, cfg)
    assert meta["generator_info"]["teacher"] == "keyframes"
    teacher = bundle.load_teacher(paths)
    assert str(teacher["teacher"]) == "keyframes" and teacher["qpos"].shape == (81, 15)
    model = get_robot("ant").load_model()
    qadr = model.jnt_qposadr[model.actuator_trnid[:, 0]]
    assert np.abs(teacher["qpos"][-1, qadr] - np.asarray(sit)).max() < 0.2
    # another pose: another reference
    cfg2 = cfg.model_copy(deep=True)
    cfg2.generator.keyframes = [[v * 0.9 for v in sit]]
    assert bundle.generate_reference(paths, cfg2)["cache_key"] != meta["cache_key"]


def test_policy_teacher_acts_on_the_sim_batch(tmp_path, monkeypatch):
    """The policy teacher gets the simulator's batch (its input layout is the policy's), and its actions
    are what the reference's ground truth records."""
    import torch

    import nil.rl
    from nil.reference.generators.synthetic import SyntheticGenerator

    seen = []

    class FixedPolicy:
        step = 7

        def act_batch(self, batch, deterministic=True):
            seen.append(tuple(batch.obs.shape))
            return torch.full((batch.obs.shape[0], 8), 0.25)

    monkeypatch.setattr(nil.rl, "load_policy", lambda paths, device="cpu": FixedPolicy())
    (tmp_path / "trained").mkdir()
    cfg = parse_config(
        {
            "camera": {"width": 32, "height": 32},
            "generator": {
                "teacher": "policy",
                "teacher_checkpoint": str(tmp_path / "trained"),
                "seconds": 0.2,
            },
        }
    )
    result = SyntheticGenerator(cfg).generate(np.zeros((32, 32, 3), np.uint8), "walking", seed=0)
    assert len(seen) == 20 and seen[0][0] == 1
    assert np.allclose(result.teacher["action"][1:], 0.25) and np.allclose(result.teacher["action"][0], 0.0)
    assert result.info["teacher_params"]["step"] == 7
