"""CPU MuJoCo backend: the SimBatch contract, workers vs in-process parity, falls, resets, failures."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest
import torch

from nil.config import CameraConfig, SimConfig
from nil.errors import NilError, SimulationError
from nil.robots import get_robot
from nil.sim import make_sim
from nil.sim.base import BatchedSim
from nil.sim.mujoco_envs import EnvGroup, layout_size, map_buffers, model_dims
from nil.sim.task import LOAD_FRACTION

CAM = CameraConfig(width=48, height=48)


@pytest.fixture(scope="module")
def ant():
    return get_robot("ant", camera=CAM)


def _actions(n: int, a: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, a, generator=g) * 2 - 1 for _ in range(steps)]


def _group(spec, n: int = 1, **kw) -> tuple[EnvGroup, dict[str, np.ndarray]]:
    model = spec.load_model()
    dims = model_dims(spec, model, n)
    bufs = map_buffers(bytearray(layout_size(dims)[0]), dims)
    return EnvGroup(spec, bufs, 0, n, model=model, **kw), bufs


def test_batch_contract_in_process(ant) -> None:
    sim = make_sim(ant, SimConfig(num_workers=0), num_envs=3, horizon=4, seed=0)
    try:
        assert isinstance(sim, BatchedSim)
        m = ant.load_model()
        assert sim.obs_dim == m.nq - 2 + m.nv + 1 and sim.action_dim == m.nu == 8
        assert sim.image_hw == (48, 48) and sim.device == torch.device("cpu")
        b = sim.reset()
        assert b.obs.shape == (3, sim.obs_dim) and b.obs.dtype == torch.float32
        assert b.rgb.shape == (3, 48, 48, 3) and b.rgb.dtype == torch.uint8
        assert b.mask.shape == (3, 48, 48) and b.mask.dtype == torch.bool
        assert b.qpos.shape == (3, m.nq) and b.joint_vel.shape == (3, m.nv - 6)
        assert b.foot_contact.shape == (3, 4) and b.foot_vel_xy.shape == (3, 4, 2)
        assert b.t.tolist() == [0, 0, 0] and not b.terminated.any() and not b.truncated.any()
        assert torch.equal(b.obs[:, : m.nq - 2], b.qpos[:, 2:])
        assert torch.equal(b.obs[:, m.nq - 2 : -1], b.qvel)
        assert (b.action == 0).all() and (b.prev_action == 0).all()
        assert (b.torso_up_z > 0.99).all()
        assert b.mask.float().mean() > 0.01
        a1 = torch.full((3, 8), 0.5)
        b = sim.step(a1)
        # ant motors: gear 150, ctrl = action -> joint torque 75 (before any limit)
        torch.testing.assert_close(b.torque, torch.full((3, 8), 75.0))
        b = sim.step(torch.full((3, 8), 5.0))  # clipped to 1
        assert (b.action == 1).all() and (b.prev_action == 0.5).all()
        b = sim.step(torch.zeros(3, 8))
        assert b.t.tolist() == [3, 3, 3] and not b.truncated.any()
        assert b.obs[:, -1].tolist() == pytest.approx([0.75] * 3)  # phase = t / horizon
        b = sim.step(torch.zeros(3, 8))
        assert b.truncated.all() and b.obs[:, -1].tolist() == pytest.approx([1.0] * 3)
    finally:
        sim.close()
        sim.close()  # twice is fine
    with pytest.raises(SimulationError, match="closed"):
        sim.step(torch.zeros(3, 8))


def test_bad_actions_raise(ant) -> None:
    sim = make_sim(ant, SimConfig(num_workers=0), num_envs=2)
    try:
        sim.reset()
        with pytest.raises(SimulationError, match="shape"):
            sim.step(torch.zeros(2, 3))
        with pytest.raises(SimulationError, match="NaN"):
            sim.step(torch.full((2, 8), float("nan")))
    finally:
        sim.close()


def test_workers_match_in_process_and_partial_reset(ant) -> None:
    acts = _actions(4, 8, 6)
    out = {}
    for nw in (0, 2):
        sim = make_sim(ant, SimConfig(num_workers=nw, reset_noise=0.05), num_envs=4, seed=7)
        try:
            sim.reset()
            for a in acts:
                b = sim.step(a)
            before = b.clone()
            r = sim.reset(torch.tensor([1, 3]))
            out[nw] = (before, r.clone())
        finally:
            sim.close()
    (b0, r0), (b2, r2) = out[0], out[2]
    torch.testing.assert_close(b0.obs, b2.obs, rtol=0, atol=0)
    assert torch.equal(b0.mask, b2.mask) and torch.equal(b0.rgb, b2.rgb)
    torch.testing.assert_close(r0.obs, r2.obs, rtol=0, atol=0)
    # envs 0 and 2 untouched by the reset, 1 and 3 back at t=0 with zeroed actions
    for k in (0, 2):
        assert torch.equal(r0.obs[k], b0.obs[k]) and torch.equal(r0.mask[k], b0.mask[k]) and r0.t[k] == 6
    for k in (1, 3):
        assert r0.t[k] == 0 and (r0.action[k] == 0).all() and not torch.equal(r0.qpos[k], b0.qpos[k])
    assert not torch.equal(r0.qpos[1], r0.qpos[3])  # per-env noise streams


def test_reset_noise_is_seeded(ant) -> None:
    sims = [make_sim(ant, SimConfig(num_workers=0, reset_noise=0.1), num_envs=2, seed=s) for s in (3, 3, 4)]
    try:
        q = [s.reset().qpos.clone() for s in sims]
    finally:
        for s in sims:
            s.close()
    assert torch.equal(q[0], q[1]) and not torch.equal(q[0], q[2])
    assert (q[0][:, 7:] - q[2][:, 7:]).abs().max() <= 0.2 + 1e-6


def test_pushed_over_robot_terminates(ant) -> None:
    group, bufs = _group(ant, reset_noise=0.0)
    group.reset()
    assert not bufs["terminated"][0]
    d = group.datas[0]
    # tip the torso 100 degrees about x: its up axis points below the horizon
    ang = math.radians(100)
    d.qpos[3:7] = [math.cos(ang / 2), math.sin(ang / 2), 0, 0]
    bufs["action_in"][:] = 0
    group.step()
    assert bufs["terminated"][0] and not bufs["nonfinite"][0]
    assert bufs["torso_up_z"][0] < math.cos(math.radians(ant.max_tilt_deg))
    group.reset()
    d.qpos[2] = 0.05  # root below the fall height
    group.step()
    assert bufs["terminated"][0]
    group.close()


def test_nonfinite_state_terminates_and_reset_restores(ant) -> None:
    group, bufs = _group(ant, reset_noise=0.0)
    group.reset()
    group.datas[0].qvel[7] = np.nan
    group.step()
    assert bufs["nonfinite"][0] and bufs["terminated"][0]
    assert np.isfinite(bufs["obs"][0]).all()  # never hand NaN to the learner
    group.reset()
    assert not bufs["nonfinite"][0] and not bufs["terminated"][0]
    group.close()


def test_feet_touch_the_floor_after_settling(ant) -> None:
    sim = make_sim(ant, SimConfig(num_workers=0, reset_noise=0.0), num_envs=1)
    try:
        sim.reset()
        for _ in range(30):
            b = sim.step(torch.zeros(1, 8))
        assert b.foot_contact.all()
        assert b.foot_vel_xy.abs().max() < 0.05  # standing still: no slip
        weight = sim._group.rules.load_threshold / LOAD_FRACTION
        assert abs(float(b.foot_force.sum()) - weight) < 0.05 * weight  # the feet carry the robot
        assert not b.terminated.any()
    finally:
        sim.close()


def test_same_state_renders_identically(ant) -> None:
    group, bufs = _group(ant, reset_noise=0.0)
    group.reset()
    rgb1, mask1 = bufs["rgb"][0].copy(), bufs["mask"][0].copy()
    rgb2, mask2 = group.renderer.render(group.datas[0])
    iou = (mask1 & mask2).sum() / (mask1 | mask2).sum()
    assert iou == 1.0 and np.array_equal(rgb1, rgb2)
    # a second GL context in the same process must not disturb the first (it used to turn it black)
    from nil.sim.render import RobotRenderer

    with RobotRenderer(group.model, ant) as other:
        rgb3, mask3 = other.render(group.datas[0])
    rgb4, mask4 = group.renderer.render(group.datas[0])
    assert np.array_equal(rgb3, rgb1) and np.array_equal(rgb4, rgb1) and np.array_equal(mask4, mask1)
    group.close()


def test_mask_is_exactly_the_robot_geoms(ant) -> None:
    """Hiding the robot's geoms (alpha 0) must empty the mask; the floor never counts."""
    spec = ant
    model = spec.load_model()
    from nil.sim.render import RobotRenderer

    d = mujoco.MjData(model)
    d.qpos[:] = spec.initial_qpos(model)
    mujoco.mj_forward(model, d)
    with RobotRenderer(model, spec) as r:
        _, mask = r.render(d)
        assert mask.any()
        model.geom_rgba[spec.robot_geom_mask(model), 3] = 0.0
        _, mask_hidden = r.render(d)
    assert not mask_hidden.any()


def test_dead_worker_raises_instead_of_hanging(ant) -> None:
    sim = make_sim(ant, SimConfig(num_workers=2), num_envs=2)
    try:
        sim.reset()
        sim._procs[1].kill()
        sim._procs[1].wait()
        with pytest.raises(SimulationError, match="worker 1"):
            sim.step(torch.zeros(2, 8))
    finally:
        sim.close()
    assert all(p.poll() is not None for p in sim._procs)


def test_worker_start_failure_is_reported(ant, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUJOCO_GL", "no_such_gl")  # only the worker processes see this
    with pytest.raises(SimulationError, match="start failed: worker 0"):
        make_sim(ant, SimConfig(num_workers=1), num_envs=1)


def test_unknown_backend_message(ant) -> None:
    cfg = SimConfig()
    object.__setattr__(cfg, "backend", "bullet")
    with pytest.raises(NilError, match="sim.backend"):
        make_sim(ant, cfg)


def test_humanoid_sizes_match_the_model(menagerie_root) -> None:
    spec = get_robot("unitree_h1", camera=CAM)
    sim = make_sim(spec, SimConfig(num_workers=0), num_envs=1)
    try:
        b = sim.reset()
        assert sim.obs_dim == 26 - 2 + 25 + 1 and sim.action_dim == 19
        assert b.foot_contact.shape == (1, 2) and b.torque.shape == (1, 19)
        b = sim.step(torch.zeros(1, 19))
        assert b.foot_contact.all()  # standing on both feet at the keyframe
    finally:
        sim.close()


def test_seed_changes_reset_noise_in_workers(ant) -> None:
    sim = make_sim(ant, SimConfig(num_workers=1, reset_noise=0.1), num_envs=2, seed=3)
    ref = make_sim(ant, SimConfig(num_workers=0, reset_noise=0.1), num_envs=2, seed=5)
    try:
        q3 = sim.reset().qpos.clone()
        sim.seed(5)  # a resumed run reseeds: new noise, the same as a fresh sim with that seed
        q5 = sim.reset().qpos.clone()
        assert not torch.equal(q3, q5)
        assert torch.equal(q5, ref.reset().qpos)
    finally:
        sim.close()
        ref.close()


def test_set_render_false_zero_rgb_same_mask(ant) -> None:
    sim = make_sim(ant, SimConfig(num_workers=0, reset_noise=0.0), num_envs=2)
    try:
        on = sim.reset().clone()
        assert on.rgb.any()
        sim.set_render(False)
        off = sim.reset().clone()
        b = sim.step(torch.zeros(2, 8))
        assert not off.rgb.any() and not b.rgb.any() and b.mask.any()
        assert torch.equal(off.mask, on.mask)
        sim.set_render(True)
        assert torch.equal(sim.reset().rgb, on.rgb)
    finally:
        sim.close()


def test_step_async_runs_in_the_worker_and_equals_step(ant) -> None:
    acts = _actions(2, 8, 4, seed=3)
    ref = make_sim(ant, SimConfig(num_workers=0, reset_noise=0.05), num_envs=2, seed=1)
    sim = make_sim(ant, SimConfig(num_workers=1, reset_noise=0.05), num_envs=2, seed=1)
    try:
        ref.reset()
        sim.reset()
        for a in acts:
            r = ref.step(a)
            sim.step_async(a)
            # step_async returned without waiting: the worker still owes its reply, t has not moved
            assert sim._pool.busy and (sim._batch.t == r.t - 1).all()
            with pytest.raises(SimulationError, match="step_wait"):
                sim.reset()
            b = sim.step_wait()
            for name in ("obs", "mask", "rgb", "foot_force", "foot_vel_xy", "t"):
                assert torch.equal(getattr(b, name), getattr(r, name)), name
        with pytest.raises(SimulationError, match="step_async"):
            sim.step_wait()
    finally:
        sim.close()
        ref.close()


BALL_XML = """<mujoco>
  <option timestep="0.002"/>
  <worldbody>
    <geom name="floor" type="plane" size="5 5 0.1"/>
    <body name="ball" pos="0 0 0.1">
      <freejoint/>
      <geom type="sphere" size="0.1" mass="1"/>
      <body name="marker">
        <joint name="spin" type="hinge" axis="0 0 1"/>
        <geom type="sphere" size="0.01" mass="0.001" contype="0" conaffinity="0"/>
      </body>
    </body>
  </worldbody>
  <actuator><motor joint="spin" ctrlrange="-1 1"/></actuator>
</mujoco>"""


def test_slip_is_measured_at_the_contact_point(tmp_path) -> None:
    """A ball rolling without slipping: its centre moves at 1 m/s, the point on the floor stands still."""
    from nil.robots.spec import CameraSpec, RobotSpec

    path = tmp_path / "ball.xml"
    path.write_text(BALL_XML)
    spec = RobotSpec(
        name="ball",
        description="a rolling ball",
        mjcf_path=str(path),
        root_body="ball",
        torso_body="ball",
        feet_bodies=["ball"],
        control_hz=100.0,
        fall_height=0.0,
        max_tilt_deg=180.0,
        camera=CameraSpec(width=16, height=16),
    )
    group, bufs = _group(spec, reset_noise=0.0, render=False)
    group.reset()
    d = group.datas[0]
    r = 0.1
    d.qvel[:6] = [1.0, 0, 0, 0, 1.0 / r, 0]  # v = omega x r: rolling along +x
    mujoco.mj_forward(group.model, d)
    bufs["action_in"][:] = 0
    for _ in range(20):  # past the 2 mm drop of the reset pose
        group.step()
    assert bufs["foot_contact"][0, 0]
    np.testing.assert_allclose(bufs["foot_force"][0, 0], 9.81 * 1.001, rtol=0.1)  # carries the weight
    assert bufs["qvel"][0, 0] > 0.9  # the body's centre still rolls on at ~1 m/s ...
    assert np.abs(bufs["foot_vel_xy"][0, 0]).max() < 0.05  # ... but the contact point does not slide
    group.close()


def test_foot_without_load_is_not_in_contact(ant) -> None:
    """A contact that carries no force is not a foot contact: with a 10 cm floor margin, feet 5 cm up and
    moving away have contacts (inside the margin) that the solver leaves unloaded; in the air neither."""
    model = ant.load_model()
    floor = np.flatnonzero((model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE) & (model.geom_bodyid == 0))
    model.geom_margin[floor] = 0.1
    dims = model_dims(ant, model, 1)
    bufs = map_buffers(bytearray(layout_size(dims)[0]), dims)
    group = EnvGroup(ant, bufs, 0, 1, model=model, reset_noise=0.0, render=False)
    d = group.datas[0]
    for lift, vz, any_contacts in ((0.05, 3.0, True), (0.5, 0.0, False)):
        group.reset()
        d.qpos[2] += lift
        d.qvel[2] = vz
        mujoco.mj_forward(model, d)
        group._write(np.arange(1), np.zeros(1, bool))
        assert (d.ncon > 0) == any_contacts
        assert not bufs["foot_contact"][0].any() and (bufs["foot_force"][0] == 0).all()
    group.close()


def test_fixed_camera_shows_the_root_moving_and_a_tracking_one_does_not(ant) -> None:
    """camera.track: fixed (beyond the paper) looks at the root's initial position: a root moved 0.4 m
    along +x (the image's right at azimuth 90) moves the mask right; the tracking camera's mask does not
    move at all (the translation blindness the fixed camera is for)."""
    import dataclasses

    from nil.sim.render import RobotRenderer, camera_anchor

    def masks(track: str) -> tuple[np.ndarray, np.ndarray]:
        cam = dataclasses.replace(ant.camera, width=64, height=64, track=track)
        spec = dataclasses.replace(ant, camera=cam)
        model = spec.load_model()
        d = mujoco.MjData(model)
        d.qpos[:] = spec.initial_qpos(model)
        mujoco.mj_forward(model, d)
        with RobotRenderer(model, spec) as r:
            _, before = r.render(d)
            d.qpos[0] += 0.4
            mujoco.mj_forward(model, d)
            _, after = r.render(d)
        return before, after

    def centre_x(m: np.ndarray) -> float:
        return float(np.nonzero(m)[1].mean())

    still, moved = masks("root")
    assert still.sum() >= 30 and np.array_equal(still, moved)
    fixed_before, fixed_after = masks("fixed")
    assert np.array_equal(fixed_before, still)  # at the initial pose both cameras see the same
    assert centre_x(fixed_after) - centre_x(fixed_before) > 3.0  # measured +7.5 px at 64 px
    model = ant.load_model()
    assert camera_anchor(ant, model) is None
    fixed = dataclasses.replace(ant, camera=dataclasses.replace(ant.camera, track="fixed"))
    anchor = camera_anchor(fixed, model)
    assert anchor is not None and np.allclose(anchor, fixed.initial_qpos(model)[:3])
