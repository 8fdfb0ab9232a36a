"""Which joints the tracking camera cannot see (nil.reward.visibility) and the penalty that pins them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nil.config import RewardConfig
from nil.errors import ConfigError
from nil.reward import NILReward
from nil.reward.visibility import unseen_joints
from nil.robots.spec import CameraSpec, RobotSpec, free_camera_basis
from test_reward import H, W, make_batch

# a body on a free joint with one leg hanging straight down from two hinges: "swing" turns about y (the
# leg sweeps forward/back, in the image plane of a camera looking along +y), "splay" about x (the leg
# swings towards the lens), and a wheel spinning about its own centre
LEG_XML = """<mujoco>
  <worldbody>
    <body name="torso" pos="0 0 1">
      <freejoint/>
      <geom type="box" size="0.2 0.1 0.05" mass="1"/>
      <body name="hip">
        <joint name="splay" type="hinge" axis="1 0 0"/>
        <inertial pos="0 0 0" mass="0.01" diaginertia="1e-4 1e-4 1e-4"/>
        <body name="thigh">
          <joint name="swing" type="hinge" axis="0 1 0"/>
          <geom type="capsule" fromto="0 0 0 0 0 -0.5" size="0.03" mass="0.2"/>
          <geom type="sphere" pos="0 0 -0.5" size="0.04" mass="0.1"/>
        </body>
      </body>
      <body name="wheel" pos="0.2 0 0">
        <joint name="spin" type="hinge" axis="0 1 0"/>
        <geom type="cylinder" fromto="0 -0.02 0 0 0.02 0" size="0.05" mass="0.1"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <motor joint="splay"/>
    <motor joint="swing"/>
    <motor joint="spin"/>
  </actuator>
</mujoco>"""


def leg_spec(tmp_path, elevation: float = 0.0) -> RobotSpec:
    path = tmp_path / "leg.xml"
    path.write_text(LEG_XML)
    return RobotSpec(
        name="leg",
        description="one leg",
        mjcf_path=str(path),
        root_body="torso",
        torso_body="torso",
        feet_bodies=["thigh"],
        camera=CameraSpec(width=16, height=16, azimuth=90.0, elevation=elevation),
    )


def test_a_side_camera_sees_the_swing_and_not_the_splay(tmp_path):
    u = unseen_joints(leg_spec(tmp_path))
    got = dict(zip(u.names, u.unseen.tolist(), strict=True))
    assert got["swing"] == pytest.approx(0.0, abs=1e-9)  # the foot moves along x, across the image
    assert got["splay"] == pytest.approx(1.0, abs=1e-9)  # the foot moves along y, straight at the lens
    assert got["spin"] == pytest.approx(0.0, abs=1e-9)  # its geom sits on the axis: nothing moves
    # from 30 deg above, a vertical-plane swing of a leg hanging down moves the foot horizontally: still seen
    # from the side, and the splay's motion (along y) is cos(30 deg) along the ray
    above = unseen_joints(leg_spec(tmp_path, elevation=-30.0))
    up = dict(zip(above.names, above.unseen.tolist(), strict=True))
    assert up["swing"] == pytest.approx(0.0, abs=1e-9)
    assert up["splay"] == pytest.approx(np.cos(np.radians(30)), abs=1e-6)
    np.testing.assert_allclose(free_camera_basis(90.0, 0.0)[0], [0, 1, 0], atol=1e-12)


def test_unseen_joint_penalty_charges_the_splay_and_leaves_the_swing_free(tmp_path):
    spec = leg_spec(tmp_path)
    u = unseen_joints(spec)
    nq = spec.load_model().nq
    q = torch.zeros(3, nq)
    q[:, 3] = 1.0  # identity quaternion
    q[1, u.qpos_adr[u.names.index("swing")]] = 0.4
    q[2, u.qpos_adr[u.names.index("splay")]] = 0.4
    b = make_batch(n=3, t=1)
    b.qpos = q
    masks = torch.zeros(4, H, W, dtype=torch.bool)
    masks[:, 2:6, 2:10] = True
    b.mask = masks[:3].clone()
    kw = dict(ref_masks=masks, num_envs=3, action_dim=b.action.shape[1], device="cpu")
    paper = NILReward(RewardConfig(use_video=False, eta=0.5), **kw)(b)
    on = NILReward(RewardConfig(use_video=False, eta=0.5, unseen_joint_coef=2.0), **kw, unseen=u)(b)
    assert "raw/reg_unseen" not in paper.terms
    assert on.terms["raw/reg_unseen"].tolist() == pytest.approx([0.0, 0.0, -2.0 * 0.16], abs=1e-6)
    assert torch.allclose(on.total - paper.total, 0.5 * on.terms["raw/reg_unseen"])
    with pytest.raises(ConfigError, match="reward.unseen_joint_coef"):
        NILReward(RewardConfig(use_video=False, unseen_joint_coef=1.0), **kw)
