"""Robots: presets compile and render offline, inference from any MJCF, and bad inputs raise RobotError."""

from __future__ import annotations

import textwrap
from pathlib import Path

import mujoco
import numpy as np
import pytest

from nil.config import CameraConfig, RobotConfig, SkillConfig
from nil.errors import RobotError
from nil.reference.frame import render_frame0
from nil.robots import get_robot, list_presets, robot_from_config

SMALL = CameraConfig(width=64, height=64)

_LEGGED_BODY = """
    <body pos="0 0 0.6">
      <freejoint/>
      <geom type="box" size="0.3 0.1 0.05" rgba="0.8 0.3 0.2 1"/>
      <body pos="0.25 0 -0.05">
        <joint type="hinge" axis="0 1 0" range="-60 60"/>
        <geom type="capsule" fromto="0 0 0 0 0 -0.4" size="0.03"/>
      </body>
      <body pos="-0.25 0 -0.05">
        <joint type="hinge" axis="0 1 0" range="-60 60"/>
        <geom type="capsule" fromto="0 0 0 0 0 -0.4" size="0.03"/>
      </body>
      <body pos="0 0 0.05">
        <joint type="hinge" axis="0 1 0" range="-60 60"/>
        <geom type="capsule" fromto="0 0 0 0 0 0.3" size="0.03"/>
      </body>
    </body>
"""


def _write(tmp_path: Path, body: str, actuators: str = "", name: str = "bot.xml") -> Path:
    xml = f"""<mujoco model="walker"><worldbody>{body}</worldbody><actuator>{actuators}</actuator></mujoco>"""
    p = tmp_path / name
    p.write_text(textwrap.dedent(xml))
    return p


_ACTUATORS = '<motor joint="{}" gear="10" ctrlrange="-1 1"/>'


def _legged_xml(tmp_path: Path) -> Path:
    xml = _write(tmp_path, _LEGGED_BODY)
    model = mujoco.MjModel.from_xml_path(str(xml))
    names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) for j in range(model.njnt)]
    assert all(n is None for n in names)  # unnamed on purpose: inference must cope
    acts = "".join(f'<motor joint="j{i}" gear="10" ctrlrange="-1 1"/>' for i in range(3))
    body = _LEGGED_BODY
    for i in range(3):
        body = body.replace('<joint type="hinge"', f'<joint name="j{i}" type="hinge_"', 1)
    body = body.replace('type="hinge_"', 'type="hinge"')
    return _write(tmp_path, body, acts)


def test_list_presets_has_the_zero_download_default_first() -> None:
    names = list_presets()
    assert names[0] == "ant"
    assert {"unitree_h1", "unitree_g1", "pal_talos", "unitree_a1", "unitree_go2"} <= set(names)


@pytest.mark.parametrize(
    "name", ["ant", "unitree_h1", "unitree_g1", "pal_talos", "unitree_a1", "unitree_go2"]
)
def test_preset_compiles_and_renders_with_a_sane_mask(name: str, request: pytest.FixtureRequest) -> None:
    if name != "ant":
        request.getfixturevalue("menagerie_root")
    spec = get_robot(name, camera=SMALL)
    model = spec.load_model()
    assert spec.action_dim(model) == model.nu > 0
    assert model.vis.quality.offsamples == 0
    assert spec.substeps(model) * model.opt.timestep == pytest.approx(1.0 / spec.control_hz)
    assert len(spec.feet_bodies) in (2, 4)
    f0 = render_frame0(spec)
    assert f0.rgb.shape == (64, 64, 3) and f0.rgb.dtype == np.uint8
    assert f0.mask.dtype == bool
    area = f0.mask.mean()
    assert 0.01 <= area <= 0.60, area  # robot pixels True, background False (not inverted)
    assert not f0.mask[0, 0] and not f0.mask[0, -1]  # top corners are sky/floor
    q0 = spec.initial_qpos(model)
    assert np.isfinite(q0).all() and q0[2] > spec.fall_height


def test_torque_mode_turns_position_servos_into_motors(menagerie_root: Path) -> None:
    spec = get_robot("unitree_g1")  # menagerie g1 ships position actuators
    model = spec.load_model()
    assert (model.actuator_biastype == mujoco.mjtBias.mjBIAS_NONE).all()
    lim = spec.torque_limits(model)
    jnt = model.actuator_trnid[:, 0]
    np.testing.assert_allclose(lim, np.abs(model.jnt_actfrcrange[jnt]).max(axis=1))
    off, scale = spec.ctrl_affine(model)
    np.testing.assert_allclose(off + scale * 1.0, lim)  # action +1 = +limit torque (gear 1)


def test_pd_mode_targets_the_initial_pose() -> None:
    spec = get_robot("ant", RobotConfig(control_mode="pd", kp=80.0, kd=3.0))
    model = spec.load_model()
    assert spec.action_scale == 0.5  # the pd default
    off, scale = spec.ctrl_affine(model)
    q0 = spec.initial_qpos(model)
    np.testing.assert_allclose(off, q0[model.jnt_qposadr[model.actuator_trnid[:, 0]]])
    np.testing.assert_allclose(model.actuator_gainprm[:, 0], 80.0)
    np.testing.assert_allclose(model.actuator_biasprm[:, 1:3], [[-80.0, -3.0]] * model.nu)
    np.testing.assert_allclose(model.actuator_forcerange[:, 1], 150.0)  # ant: gear 150 x ctrl 1


def test_any_mjcf_infers_root_feet_floor_and_camera(tmp_path: Path) -> None:
    xml = _legged_xml(tmp_path)
    spec = get_robot(str(xml), camera=SMALL)
    model = spec.load_model()
    assert spec.name == "bot" and spec.description == "walker robot"
    assert spec.root_body == spec.torso_body
    assert len(spec.feet_bodies) == 2  # the two legs, not the mast pointing up
    feet = spec.feet_ids(model)
    assert all(model.body_parentid[f] == spec.root_id(model) for f in feet)
    planes = model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE
    assert planes.any()  # a floor was added
    q0 = spec.initial_qpos(model)
    # the robot was lowered onto the floor: leg tips (0.6 - 0.05 - 0.4 - 0.03 = 0.12 above) now touch it
    assert q0[2] == pytest.approx(0.6 - 0.12 + 0.002, abs=1e-3)
    assert spec.fall_height == pytest.approx(0.5 * q0[2])
    assert spec.camera.distance > 0
    f0 = render_frame0(spec)
    assert 0.01 <= f0.mask.mean() <= 0.6


def test_overrides_from_config_win(tmp_path: Path) -> None:
    cfg = SkillConfig(
        robot=RobotConfig(name="ant", description="tiny ant", fall_height=0.11, control_hz=50),
        camera=CameraConfig(width=80, height=48, distance=2.5, azimuth=0.0),
    )
    spec = robot_from_config(cfg)
    assert spec.description == "tiny ant" and spec.fall_height == 0.11
    assert (spec.camera.width, spec.camera.height, spec.camera.distance, spec.camera.azimuth) == (
        80,
        48,
        2.5,
        0.0,
    )
    assert spec.substeps(spec.load_model()) == 2  # ant timestep 0.01 s at 50 Hz


def test_unknown_robot_names_the_presets() -> None:
    with pytest.raises(RobotError, match="unknown robot 'robodog'.*unitree_h1"):
        get_robot("robodog")


def test_unreadable_mjcf(tmp_path: Path) -> None:
    with pytest.raises(RobotError, match="cannot read MJCF"):
        get_robot(str(tmp_path / "missing.xml"))


def test_invalid_xml_reports_the_parser_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<mujoco><worldbody><body><geom type='sphere' size='x'/></body></worldbody>")
    with pytest.raises(RobotError, match="cannot load MJCF"):
        get_robot(str(bad))


def test_model_without_floating_root(tmp_path: Path) -> None:
    xml = (
        _write(
            tmp_path,
            '<body><joint type="hinge"/><geom size="0.1"/></body>',
            '<motor joint="" gear="1"/>'.replace('joint=""', 'joint="h"'),
        )
        .read_text()
        .replace('type="hinge"', 'name="h" type="hinge"')
    )
    p = tmp_path / "fixed.xml"
    p.write_text(xml)
    with pytest.raises(RobotError, match="no floating root"):
        get_robot(str(p))


def test_unknown_keyframe_lists_the_real_ones(menagerie_root: Path) -> None:
    with pytest.raises(RobotError, match="no keyframe 'crouch'.*home"):
        get_robot("unitree_h1", RobotConfig(keyframe="crouch"))


def test_initial_pose_sets_the_actuated_joints_and_keeps_the_feet_on_the_floor() -> None:
    """robot.initial_pose: the actuated joints start at the given angles (the root stays free and is put
    onto the floor: knees bent by 0.5 rad lower the torso), and a wrong length is a one-line error."""
    plain = get_robot("ant")
    model = plain.load_model()
    adr = model.jnt_qposadr[model.actuator_trnid[:, 0]]
    q0 = plain.initial_qpos(model)
    pose = q0[adr] + np.where(np.arange(model.nu) % 2 == 1, 0.5 * np.sign(q0[adr] + 1e-9), 0.0)
    bent = get_robot("ant", RobotConfig(initial_pose=pose.tolist()))
    q = bent.initial_qpos(bent.load_model())
    assert np.allclose(q[adr], pose) and not np.allclose(q[adr], q0[adr])
    data = mujoco.MjData(model)
    data.qpos[:] = q
    mujoco.mj_forward(model, data)
    floor = 0  # the ant's floor plane is geom 0
    gap = min(
        mujoco.mj_geomDistance(model, data, g, floor, 1.0, None)
        for g in range(model.ngeom)
        if g != floor and model.geom_bodyid[g] != 0
    )
    assert 0.0 <= gap < 0.005  # resting on the floor, not floating or sunk
    assert abs(q[2] - q0[2]) > 0.01  # the bent legs moved the torso
    with pytest.raises(RobotError, match=r"robot\.initial_pose has 3 values.*8 actuated joints"):
        get_robot("ant", RobotConfig(initial_pose=[0.0, 0.0, 0.0])).initial_qpos(model)


def test_unknown_body_override() -> None:
    with pytest.raises(RobotError, match="robot.feet_bodies"):
        get_robot("ant", RobotConfig(feet_bodies=["paw"]))


def test_menagerie_without_root_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MENAGERIE_ROOT", raising=False)
    import sys

    monkeypatch.setitem(sys.modules, "mujoco_menagerie", None)  # not installed
    with pytest.raises(RobotError, match="MENAGERIE_ROOT"):
        get_robot("unitree_go2")
    monkeypatch.setenv("MENAGERIE_ROOT", "/nonexistent/menagerie")
    with pytest.raises(RobotError, match="MENAGERIE_ROOT"):
        get_robot("unitree_go2")


def test_control_rate_must_divide_the_timestep() -> None:
    with pytest.raises(RobotError, match="control_hz"):
        get_robot("ant", RobotConfig(control_hz=30))


def test_simplified_meshes_keep_physics_and_look(menagerie_root: Path) -> None:
    cam = CameraConfig(width=224, height=224)  # thin limbs: at 64 px one edge pixel already costs 5% IoU
    exact = get_robot("unitree_h1", RobotConfig(simplify_meshes=False), camera=cam)
    fast = get_robot("unitree_h1", camera=cam)
    m0, m1 = exact.load_model(), fast.load_model()
    assert m1.nmeshface < m0.nmeshface / 3  # 286k -> ~43k triangles
    for field in ("body_mass", "body_inertia", "body_ipos", "dof_armature", "actuator_ctrlrange"):
        np.testing.assert_allclose(getattr(m1, field), getattr(m0, field), err_msg=field)
    prim = m0.geom_type != mujoco.mjtGeom.mjGEOM_MESH  # collision primitives are untouched
    np.testing.assert_allclose(m1.geom_size[prim], m0.geom_size[prim])
    np.testing.assert_allclose(m1.geom_pos[prim], m0.geom_pos[prim])
    a, b = render_frame0(exact), render_frame0(fast)
    iou = (a.mask & b.mask).sum() / (a.mask | b.mask).sum()
    assert iou > 0.95  # measured 0.98 at 224 px
