"""Reward terms and NILReward on hand-made SimBatches (no model weights; the encoder is a tiny stand-in)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nil.config import RewardConfig
from nil.errors import ConfigError, EncoderError, SegmentationError, SimulationError
from nil.reward import NILReward, iou, task_reward
from nil.reward import terms as T
from nil.sim.base import SimBatch

H = W = 16


def make_batch(
    n: int = 3, t: int | list[int] = 5, seed: int = 0, rest: bool = False, a_dim: int = 4
) -> SimBatch:
    """A SimBatch with random state (or a robot at rest: zero torques/velocities/action change, upright)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    mask = torch.zeros(n, H, W, dtype=torch.bool)
    for i in range(n):
        mask[i, 2 + i : 10 + i, 3:11] = True
    tt = torch.as_tensor(t if isinstance(t, list) else [t] * n, dtype=torch.long)
    act = torch.rand(n, a_dim, generator=g) * 2 - 1
    return SimBatch(
        obs=r(n, 10),
        rgb=torch.randint(0, 256, (n, H, W, 3), generator=g, dtype=torch.uint8),
        mask=mask,
        terminated=torch.zeros(n, dtype=torch.bool),
        truncated=torch.zeros(n, dtype=torch.bool),
        t=tt,
        qpos=r(n, 9),
        qvel=r(n, 8),
        joint_vel=torch.zeros(n, 2) if rest else r(n, 2),
        torque=torch.zeros(n, a_dim) if rest else r(n, a_dim) * 20,
        action=act,
        prev_action=act.clone() if rest else torch.rand(n, a_dim, generator=g) * 2 - 1,
        foot_contact=torch.ones(n, 2, dtype=torch.bool),
        foot_vel_xy=torch.zeros(n, 2, 2) if rest else r(n, 2, 2),
        torso_up_z=torch.ones(n) if rest else torch.rand(n, generator=g) * 0.5 + 0.5,
        root_pos=r(n, 3),
        root_lin_vel=r(n, 3),
        nonfinite=torch.zeros(n, dtype=torch.bool),
    )


def ref_masks(t_len: int = 12) -> torch.Tensor:
    m = torch.zeros(t_len, H, W, dtype=torch.bool)
    for t in range(t_len):
        m[t, 4:12, t % 5 : t % 5 + 8] = True
    return m


class MeanPoolEncoder:
    """A deterministic stand-in VideoEncoder: per-frame channel means through a fixed random projection."""

    id = "meanpool"

    def __init__(self, clip_len: int = 3, clip_stride: int = 2, dim: int = 8) -> None:
        self.clip_len, self.clip_stride, self.background_fill = clip_len, clip_stride, (0, 0, 0)
        self.proj = torch.randn(clip_len * 3, dim, generator=torch.Generator().manual_seed(1))
        self.calls: list[int] = []

    def embed(self, clips: torch.Tensor) -> torch.Tensor:
        self.calls.append(clips.shape[0])
        feats = clips.float().mean(dim=(2, 3)).flatten(1) / 255.0  # [B, L*3]
        return feats @ self.proj.to(clips.device)


def test_iou_known_shapes():
    a = torch.zeros(4, 8, 8, dtype=torch.bool)
    b = torch.zeros(4, 8, 8, dtype=torch.bool)
    a[0, :4] = True
    b[0, :4] = True  # identical
    a[1, :4] = True
    b[1, 4:] = True  # disjoint
    a[2, :4] = True
    b[2, 2:6] = True  # half overlap: 16 / 48
    out = iou(a, b, empty=1.0)  # env 3: both empty
    assert out.tolist() == pytest.approx([1.0, 0.0, 1 / 3, 1.0])
    assert iou(a[3:], b[3:], empty=0.0).item() == 0.0
    one_empty = iou(a[:1], torch.zeros(1, 8, 8, dtype=torch.bool))
    assert one_empty.item() == 0.0


def test_mask_frames_fills_background():
    rgb = torch.full((1, 2, 2, 3), 200, dtype=torch.uint8)
    m = torch.tensor([[[True, False], [False, True]]])
    out = T.mask_frames(rgb, m, (1, 2, 3))
    assert out[0, 0, 0].tolist() == [200, 200, 200] and out[0, 0, 1].tolist() == [1, 2, 3]


def test_video_similarity_metrics():
    z = torch.randn(5, 16)
    assert torch.allclose(T.video_similarity(z, z), torch.ones(5), atol=1e-6)
    assert torch.allclose(T.video_similarity(z, -z), -torch.ones(5), atol=1e-6)
    assert torch.allclose(T.video_similarity(z, z, "neg_l2"), torch.zeros(5))
    assert torch.allclose(T.video_similarity(z, z + 3.0 / 4.0, "neg_l2"), torch.full((5,), -3.0), atol=1e-5)


def test_regularisers_nonpositive_and_zero_at_rest():
    cfg = RewardConfig(use_video=False)
    r = NILReward(cfg, ref_masks=ref_masks(), num_envs=3, action_dim=4, device="cpu")
    moving = r(make_batch(rest=False)).terms
    resting = r(make_batch(rest=True)).terms
    for k in ("reg_torque", "reg_action_rate", "reg_joint_vel", "reg_foot_slip", "reg_tilt", "reg"):
        assert (moving[f"raw/{k}"] < 0).all(), k
        assert torch.equal(resting[f"raw/{k}"], torch.zeros(3)), k
    # documented formulas, checked against hand computation
    b = make_batch()
    assert torch.allclose(moving["raw/reg_torque"], -cfg.torque_coef * (b.torque**2).sum(1))
    assert torch.allclose(moving["raw/reg_tilt"], -cfg.tilt_coef * (1 - b.torso_up_z))
    slip = -cfg.foot_slip_coef * b.foot_vel_xy.norm(dim=-1).sum(1)
    assert torch.allclose(moving["raw/reg_foot_slip"], slip)
    # foot slip only counts feet in contact
    b.foot_contact[:] = False
    assert torch.equal(r(b).terms["raw/reg_foot_slip"], torch.zeros(3))
    # tilt angle^2 form: 90 degrees -> (pi/2)^2
    assert T.reg_tilt(torch.zeros(1), 1.0, "angle_sq").item() == pytest.approx(
        -((math.pi / 2) ** 2), rel=1e-5
    )


def test_each_ablation_switch_removes_exactly_its_term():
    enc = MeanPoolEncoder()
    emb = torch.randn(12, 8)
    kw = dict(ref_masks=ref_masks(), num_envs=3, action_dim=4, device="cpu", encoder=enc, ref_embeddings=emb)
    batches = [make_batch(t=i, seed=i) for i in range(4)]

    def run(**over):
        r = NILReward(RewardConfig(**{"task_weight": 0.5, **over}), **kw)
        return [r(b) for b in batches][-1]

    full = run()
    w = full.terms
    assert torch.allclose(
        full.total, w["weighted/video"] + w["weighted/iou"] + w["weighted/reg"] + w["weighted/task"]
    )
    for switch, term in (({"use_video": False}, "video"), ({"beta": 0.0}, "iou"), ({"eta": 0.0}, "reg")):
        ablated = run(**switch)
        assert torch.allclose(full.total - ablated.total, w[f"weighted/{term}"], atol=1e-6), switch
        assert (w[f"weighted/{term}"].abs() > 0).all(), term  # the term was not trivially zero
        if term != "video":  # a zero weight still logs the raw term
            assert torch.equal(ablated.terms[f"raw/{term}"], w[f"raw/{term}"])
    only_iou = run(use_video=False, eta=0.0, task_weight=0.0)
    assert torch.allclose(only_iou.total, w["raw/iou"])
    assert "raw/video" not in run(use_video=False).terms
    weights = run(zeta=2.0, beta=3.0, eta=0.5)
    assert torch.allclose(weights.terms["weighted/video"], 2.0 * w["raw/video"])
    assert torch.allclose(weights.terms["weighted/iou"], 3.0 * w["raw/iou"])
    assert torch.allclose(weights.terms["weighted/reg"], 0.5 * w["raw/reg"])
    names = {
        f"{p}/{n}"
        for p in ("raw", "weighted")
        for n in (
            "video",
            "iou",
            "reg_torque",
            "reg_action_rate",
            "reg_joint_vel",
            "reg_foot_slip",
            "reg_tilt",
            "reg",
            "task",
        )
    }
    assert names == set(w)
    assert all(v.shape == (3,) for v in w.values())


def test_batched_equals_per_env():
    enc = MeanPoolEncoder()
    emb = torch.randn(12, 8)
    cfg = RewardConfig(task_weight=1.0)
    kw = dict(ref_masks=ref_masks(), action_dim=4, device="cpu", encoder=enc, ref_embeddings=emb)
    batched = NILReward(cfg, num_envs=3, **kw)
    single = [NILReward(cfg, num_envs=1, **kw) for _ in range(3)]
    for step in range(7):  # env 1 resets at step 4 (t restarts at 0) so envs sit at different t
        ts = [step, step if step < 4 else step - 4, step + 20]  # env 2: beyond the reference (clamped)
        b = make_batch(t=ts, seed=step)
        out = batched(b)
        for i in range(3):
            o = single[i](b.index(slice(i, i + 1)))
            assert torch.allclose(out.total[i : i + 1], o.total, atol=1e-5)
            for k in out.terms:
                assert torch.allclose(out.terms[k][i : i + 1], o.terms[k], atol=1e-5), k


def test_reference_index_is_t_clamped():
    refm = ref_masks(6)
    r = NILReward(RewardConfig(use_video=False), ref_masks=refm, num_envs=2, action_dim=4, device="cpu")
    b = make_batch(n=2, t=[2, 99])
    b.mask = torch.stack([refm[2], refm[5]])
    assert r(b).terms["raw/iou"].tolist() == [1.0, 1.0]


def test_early_clip_repeat_first_pads_with_each_own_frame0():
    enc = MeanPoolEncoder(clip_len=3, clip_stride=2)  # clip spans 5 frames
    refm = ref_masks()
    r = NILReward(
        RewardConfig(),
        ref_masks=refm,
        num_envs=1,
        action_dim=4,
        device="cpu",
        encoder=enc,
        ref_embeddings=torch.randn(12, 8),
    )
    frames = [make_batch(n=1, t=i, seed=10 + i) for i in range(6)]
    masked = [T.mask_frames(f.rgb[0], f.mask[0], (0, 0, 0)) for f in frames]
    seen = []
    orig = enc.embed
    enc.embed = lambda c: (seen.append(c.clone()), orig(c))[1]
    outs = [r(f) for f in frames]
    assert all(o.video_valid.all() for o in outs)
    # t=0: all three clip frames are frame 0; t=3: frames (0, 1, 3); t=5: frames (1, 3, 5)
    for t, want in ((0, (0, 0, 0)), (1, (0, 0, 1)), (3, (0, 1, 3)), (4, (0, 2, 4)), (5, (1, 3, 5))):
        assert torch.equal(seen[t][0], torch.stack([masked[i] for i in want])), t
    # reset: the next batch is the new frame 0 of this env
    r.reset()
    r(make_batch(n=1, t=0, seed=99))
    new0 = T.mask_frames(
        make_batch(n=1, t=0, seed=99).rgb[0], make_batch(n=1, t=0, seed=99).mask[0], (0, 0, 0)
    )
    assert torch.equal(seen[-1][0], new0.expand(3, -1, -1, -1))


def test_early_clip_zero_mode_flags_until_full_clip():
    enc = MeanPoolEncoder(clip_len=3, clip_stride=2)
    r = NILReward(
        RewardConfig(early_clip="zero"),
        ref_masks=ref_masks(),
        num_envs=1,
        action_dim=4,
        device="cpu",
        encoder=enc,
        ref_embeddings=torch.randn(12, 8),
    )
    outs = [r(make_batch(n=1, t=i, seed=i)) for i in range(7)]
    valid = [bool(o.video_valid[0]) for o in outs]
    assert valid == [False] * 4 + [True] * 3
    assert all(o.terms["raw/video"].item() == 0.0 for o in outs[:4])
    assert all(o.terms["raw/video"].item() != 0.0 for o in outs[4:])
    assert enc.calls == [1, 1, 1]  # the encoder does not run before a full clip exists


def test_video_every_holds_value():
    enc = MeanPoolEncoder()
    r = NILReward(
        RewardConfig(video_every=3),
        ref_masks=ref_masks(),
        num_envs=2,
        action_dim=4,
        device="cpu",
        encoder=enc,
        ref_embeddings=torch.randn(12, 8),
    )
    vals = [r(make_batch(n=2, t=i, seed=i)).terms["raw/video"] for i in range(7)]
    assert enc.calls == [2, 2, 2]  # t = 0, 3, 6
    assert torch.equal(vals[0], vals[1]) and torch.equal(vals[1], vals[2])
    assert not torch.equal(vals[2], vals[3])


def test_use_video_without_encoder_raises():
    with pytest.raises(EncoderError, match="use_video=false"):
        NILReward(RewardConfig(), ref_masks=ref_masks(), num_envs=1, action_dim=4, device="cpu")
    with pytest.raises(EncoderError, match="do not match"):
        NILReward(
            RewardConfig(),
            ref_masks=ref_masks(12),
            num_envs=1,
            action_dim=4,
            device="cpu",
            encoder=MeanPoolEncoder(),
            ref_embeddings=torch.randn(5, 8),
        )


def test_mask_size_mismatch_raises():
    r = NILReward(
        RewardConfig(use_video=False),
        ref_masks=torch.ones(4, 8, 8, dtype=torch.bool),
        num_envs=3,
        action_dim=4,
        device="cpu",
    )
    with pytest.raises(SegmentationError, match="same camera size"):
        r(make_batch())


def test_nonfinite_raises_never_zero():
    r = NILReward(
        RewardConfig(use_video=False), ref_masks=ref_masks(), num_envs=3, action_dim=4, device="cpu"
    )
    b = make_batch()
    b.joint_vel[1, 0] = float("nan")
    with pytest.raises(SimulationError, match=r"envs \[1\].*reg_joint_vel"):
        r(b)
    b.nonfinite[1] = True
    r2 = NILReward(
        RewardConfig(use_video=False, nonfinite_reward=-5.0),
        ref_masks=ref_masks(),
        num_envs=3,
        action_dim=4,
        device="cpu",
    )
    out = r2(b)
    assert out.total[1].item() == -5.0 and torch.isfinite(out.total).all()
    b.nonfinite[1] = False  # not flagged by the sim: still an error
    with pytest.raises(SimulationError):
        r2(b)


def test_task_reward_upright_and_speed():
    b = make_batch(n=4, rest=True)
    b.root_lin_vel = torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [0.5, 0, 0], [0.0, 0, 0]])
    b.torso_up_z = torch.tensor([1.0, 1.0, 1.0, -1.0])
    r = task_reward(b, target_speed=1.0)
    assert r.tolist() == pytest.approx([1.0, 1.0, (5 * 0.5 + 1) / 6, 0.0])
    assert ((r >= 0) & (r <= 1)).all()
    stand = task_reward(b, target_speed=0.0)
    assert stand[3].item() == 0.0 and stand[0].item() == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_follows_batch_device_cuda():
    enc = MeanPoolEncoder()
    r = NILReward(
        RewardConfig(),
        ref_masks=ref_masks(),
        num_envs=3,
        action_dim=4,
        device="cpu",
        encoder=enc,
        ref_embeddings=torch.randn(12, 8),
    )
    cpu = NILReward(
        RewardConfig(),
        ref_masks=ref_masks(),
        num_envs=3,
        action_dim=4,
        device="cpu",
        encoder=enc,
        ref_embeddings=r.ref_embeddings.clone(),
    )
    b = make_batch(t=0)
    out = r(b.to("cuda"))  # state follows the batch's device
    assert out.total.device.type == "cuda"
    assert torch.allclose(out.total.cpu(), cpu(b).total, atol=1e-4)


@pytest.mark.parametrize("shape", [(3, 7, 5), (2, 37, 41), (2, 224, 224), (1, 600, 601)])
def test_packed_iou_matches_definition(shape):
    g = torch.Generator().manual_seed(0)
    for p in (0.0, 0.02, 0.5, 1.0):
        a = torch.rand(shape, generator=g) < p
        b = torch.rand(shape, generator=g) < p
        inter = (a & b).flatten(1).sum(1).double()
        union = (a | b).flatten(1).sum(1).double()
        want = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).float()
        assert torch.allclose(iou(a, b), want), p


def test_partial_reset_batch_does_not_duplicate_frames():
    """Calling the reward on a partial reset's batch leaves the untouched envs' history alone."""
    enc = MeanPoolEncoder(clip_len=3, clip_stride=1)
    kw = dict(
        ref_masks=ref_masks(), action_dim=4, device="cpu", encoder=enc, ref_embeddings=torch.randn(12, 8)
    )
    a, ref = NILReward(RewardConfig(), num_envs=2, **kw), NILReward(RewardConfig(), num_envs=2, **kw)
    steps = [make_batch(n=2, t=i, seed=i) for i in range(4)]
    for b in steps[:3]:
        a(b), ref(b)
    # env 0 resets after t=2: the sim returns a batch where only env 0 changed (t=0); env 1 stays at t=2
    reset_batch = make_batch(n=2, t=[0, 2], seed=50)
    reset_batch.rgb[1], reset_batch.mask[1] = steps[2].rgb[1], steps[2].mask[1]
    a.reset(torch.tensor([0]))
    held = a(reset_batch).terms["raw/video"][1]
    assert held == ref(steps[2]).terms["raw/video"][1]  # env 1: same frame, same value
    nxt = make_batch(n=2, t=[1, 3], seed=3)
    nxt.rgb[1], nxt.mask[1] = steps[3].rgb[1], steps[3].mask[1]
    assert torch.allclose(a(nxt).terms["raw/video"][1], ref(steps[3]).terms["raw/video"][1])


# ------------------------------------------------------------------ the Reward protocol, the paper setting
# total per step of golden_scenario(), computed with the reward as it was before the Reward protocol and
# the beyond-paper terms were added (same inputs): the paper setting must keep giving these numbers.
GOLDEN_TOTALS = [
    [0.74456, 1.012898, -0.66825],
    [-0.494529, -0.413424, -0.779991],
    [0.084098, 0.443578, -0.088051],
    [-0.670347, -1.148689, -0.921354],
    [-1.060411, 0.536784, -0.352709],
    [-0.674321, -0.543794, -0.895109],
    [0.533276, -0.213926, -0.820087],
    [-0.459457, -0.436899, -0.842157],
]


def golden_scenario(protocol: bool, **over) -> list[list[float]]:
    """3 envs, 8 steps with video (clip 3, stride 2); env 1 resets after step 4 (a partial reset batch)."""
    enc = MeanPoolEncoder(clip_len=3, clip_stride=2)
    emb = torch.randn(12, 8, generator=torch.Generator().manual_seed(7))
    r = NILReward(
        RewardConfig(task_weight=0.5, **over),
        ref_masks=ref_masks(),
        num_envs=3,
        action_dim=4,
        device="cpu",
        encoder=enc,
        ref_embeddings=emb,
    )

    def reset(ids, batch):
        if protocol:
            r.reset(ids, batch)
        else:  # the pair every caller wrote before the protocol
            r.reset(ids)
            r(batch)

    reset(None, make_batch(t=0, seed=100))
    out = []
    for step in range(1, 9):
        ts = [step, step if step < 5 else step - 4, step + 10]
        o = r(make_batch(t=ts, seed=step))
        out.append(o.total.tolist())
        if step == 4:  # the sim's partial reset batch: only env 1 changed
            rb, same = make_batch(t=[4, 0, 14], seed=200), make_batch(t=ts, seed=step)
            for i in (0, 2):
                rb.rgb[i], rb.mask[i] = same.rgb[i], same.mask[i]
            reset(torch.tensor([1]), rb)
    return out


@pytest.mark.parametrize("protocol", [False, True])
def test_paper_setting_reproduces_the_previous_reward(protocol):
    got = golden_scenario(protocol)
    assert got == [pytest.approx(row, abs=2e-6) for row in GOLDEN_TOTALS]
    # the beyond-paper switches at their paper values change nothing
    assert golden_scenario(protocol, iou_window=0, speed_weight=0.0) == got


def test_nilreward_implements_the_reward_protocol():
    from nil.reward import Reward

    r = NILReward(
        RewardConfig(use_video=False), ref_masks=ref_masks(), num_envs=3, action_dim=4, device="cpu"
    )
    assert isinstance(r, Reward)


def test_reset_primes_only_the_given_envs():
    enc = MeanPoolEncoder(clip_len=3, clip_stride=1)
    kw = dict(
        ref_masks=ref_masks(), action_dim=4, device="cpu", encoder=enc, ref_embeddings=torch.randn(12, 8)
    )
    r = NILReward(RewardConfig(), num_envs=2, **kw)
    r.reset(None, make_batch(n=2, t=0, seed=1))
    assert enc.calls == []  # priming stores frame 0; the reset frame earns no reward
    assert r._count.tolist() == [1, 1]
    r(make_batch(n=2, t=1, seed=2))
    rb = make_batch(n=2, t=[0, 1], seed=3)
    r.reset(torch.tensor([0]), rb)
    assert r._count.tolist() == [1, 2]  # env 1 (t unchanged) kept its two frames


def speed_reward(weight: float = 1.0, sigma: float = 0.25, t_len: int = 12):
    vel = torch.zeros(t_len, 2)
    vel[:, 0] = 0.5  # the reference walks +x at 0.5 m/s
    cfg = RewardConfig(use_video=False, speed_weight=weight, speed_sigma=sigma)
    return NILReward(
        cfg, ref_masks=ref_masks(t_len), num_envs=4, action_dim=4, device="cpu", ref_root_vel=vel
    )


def test_speed_term_signs_and_values():
    r = speed_reward()
    b = make_batch(n=4, rest=True)
    b.root_lin_vel = torch.tensor([[0.5, 0.0, 0.3], [0.0, 0.0, 0.0], [-0.5, 0.0, 0.0], [0.5, 0.25, 0.0]])
    out = r(b)
    s = out.terms["raw/speed"]
    # matching the reference (vertical velocity ignored) > sideways error > standing > walking backwards
    assert s[0].item() == pytest.approx(1.0)
    assert s[3].item() == pytest.approx(math.exp(-1.0), rel=1e-5)
    assert s[1].item() == pytest.approx(math.exp(-4.0), rel=1e-5)
    assert s[2].item() == pytest.approx(math.exp(-16.0), rel=1e-4)
    assert torch.allclose(out.terms["weighted/speed"], s)
    base = NILReward(
        RewardConfig(use_video=False), ref_masks=ref_masks(), num_envs=4, action_dim=4, device="cpu"
    )
    plain = base(b)
    assert "raw/speed" not in plain.terms  # off by default: the paper's reward
    assert torch.allclose(out.total - plain.total, s)
    assert torch.allclose(speed_reward(weight=2.0)(b).terms["weighted/speed"], 2.0 * s)


def test_speed_sigma_depth_widens_the_term_along_the_line_of_sight_only():
    """reward.speed_sigma_depth: the camera at azimuth 90 looks along +y, so an error in v_y is scored with
    sigma_depth and one in v_x with speed_sigma; null keeps the isotropic term; no azimuth is an error."""
    vel = torch.zeros(12, 2)
    vel[:, 0] = 0.5
    kw = dict(ref_masks=ref_masks(), num_envs=3, action_dim=4, device="cpu", ref_root_vel=vel)
    cfg = RewardConfig(use_video=False, speed_weight=1.0, speed_sigma=0.25, speed_sigma_depth=0.5)
    r = NILReward(cfg, camera_azimuth=90.0, **kw)
    b = make_batch(n=3, rest=True)
    # errors of 0.25 m/s across the view (x), along it (y), and both
    b.root_lin_vel = torch.tensor([[0.75, 0.0, 0.0], [0.5, 0.25, 0.0], [0.25, -0.25, 0.0]])
    s = r(b).terms["raw/speed"]
    assert s.tolist() == pytest.approx([math.exp(-1.0), math.exp(-0.25), math.exp(-1.25)], rel=1e-5)
    # a camera turned to azimuth 0 looks along +x: the roles swap
    s0 = NILReward(cfg, camera_azimuth=0.0, **kw)(b).terms["raw/speed"]
    assert s0.tolist() == pytest.approx([math.exp(-0.25), math.exp(-1.0), math.exp(-1.25)], rel=1e-5)
    iso = NILReward(cfg.model_copy(update={"speed_sigma_depth": None}), camera_azimuth=90.0, **kw)
    want = [math.exp(-1.0), math.exp(-1.0), math.exp(-2.0)]
    assert iso(b).terms["raw/speed"].tolist() == pytest.approx(want, rel=1e-5)
    with pytest.raises(ConfigError, match="speed_sigma_depth"):
        NILReward(cfg, **kw)


def test_speed_term_follows_the_reference_frame():
    vel = torch.zeros(12, 2)
    vel[6:, 0] = 1.0  # the reference stands for 6 frames, then walks
    r = NILReward(
        RewardConfig(use_video=False, speed_weight=1.0),
        ref_masks=ref_masks(),
        num_envs=2,
        action_dim=4,
        device="cpu",
        ref_root_vel=vel,
    )
    b = make_batch(n=2, t=[2, 8], rest=True)
    b.root_lin_vel = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert r(b).terms["raw/speed"].tolist() == pytest.approx([1.0, 1.0])
    b.root_lin_vel = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert (r(b).terms["raw/speed"] < 0.01).all()


def test_position_term_measures_the_displacement_from_each_envs_own_start():
    """S_P (beyond the paper): the reference walks +x at 0.5 m/s, so at frame 8 (dt 0.1 s) it is 0.4 m from
    its start. Each env is scored on its displacement from the root position of its own reset batch; a
    partial reset moves only that env's start; off (weight 0) leaves the total unchanged."""
    vel = torch.zeros(12, 2)
    vel[:, 0] = 0.5
    cfg = RewardConfig(use_video=False, position_weight=2.0, position_sigma=0.2)
    kw = dict(ref_masks=ref_masks(), num_envs=3, action_dim=4, device="cpu", ref_root_vel=vel, dt=0.1)
    r = NILReward(cfg, **kw)
    start = make_batch(n=3, t=0, rest=True)
    start.root_pos = torch.tensor([[1.0, 2.0, 0.5], [-3.0, 0.0, 0.5], [0.0, 0.0, 0.5]])
    r.reset(None, start)
    b = make_batch(n=3, t=8, rest=True)
    # env 0 at +0.4 m (on the reference), env 1 still at its start, env 2 0.4 m backwards
    b.root_pos = torch.tensor([[1.4, 2.0, 0.5], [-3.0, 0.0, 0.5], [-0.4, 0.0, 0.5]])
    s = r(b).terms["raw/position"]
    assert s.tolist() == pytest.approx([1.0, math.exp(-4.0), math.exp(-16.0)], rel=1e-4)
    assert torch.allclose(r(b).terms["weighted/position"], 2.0 * s)
    moved = make_batch(n=3, t=0, rest=True)
    moved.root_pos = torch.tensor([[0.0, 0.0, 0.5], [-3.4, 0.0, 0.5], [0.0, 0.0, 0.5]])
    r.reset(torch.tensor([1]), moved)  # env 1 starts again 0.4 m further back: now it is on the reference
    assert r(b).terms["raw/position"].tolist() == pytest.approx([1.0, 1.0, math.exp(-16.0)], rel=1e-4)
    plain = NILReward(RewardConfig(use_video=False), **kw)
    plain.reset(None, start)
    assert "raw/position" not in plain(b).terms
    assert torch.allclose(r(b).total - plain(b).total, 2.0 * r(b).terms["raw/position"], atol=1e-5)
    with pytest.raises(ConfigError, match=r"reward\.position_weight"):
        NILReward(cfg, ref_masks=ref_masks(), num_envs=1, action_dim=4, device="cpu")


def test_speed_term_without_a_reference_velocity_names_the_switch():
    from nil.errors import ConfigError

    cfg = RewardConfig(use_video=False, speed_weight=1.0)
    with pytest.raises(ConfigError, match=r"reward\.speed_weight"):
        NILReward(cfg, ref_masks=ref_masks(), num_envs=1, action_dim=4, device="cpu")
    with pytest.raises(ConfigError, match=r"reward\.speed_weight"):
        NILReward(
            cfg, ref_masks=ref_masks(), num_envs=1, action_dim=4, device="cpu", ref_root_vel=torch.zeros(5, 2)
        )
    bad = torch.zeros(12, 2)
    bad[3, 0] = float("nan")
    with pytest.raises(ConfigError, match="finite"):
        NILReward(cfg, ref_masks=ref_masks(), num_envs=1, action_dim=4, device="cpu", ref_root_vel=bad)


def test_iou_window_takes_the_best_nearby_reference_frame():
    refm = torch.zeros(12, H, W, dtype=torch.bool)
    for k in range(12):
        refm[k, 4:12, k : k + 4] = True  # a box sliding right by one pixel per frame
    n = 5
    t = torch.full((n,), 6, dtype=torch.long)
    b = make_batch(n=n, t=6)
    b.mask = torch.stack([refm[6 + k] for k in (-3, -2, 0, 2, 3)])  # agent behind / ahead of the reference
    kw = dict(ref_masks=refm, num_envs=n, action_dim=4, device="cpu")
    exact = NILReward(RewardConfig(use_video=False), **kw)(b)
    win = NILReward(
        RewardConfig(use_video=False, iou_window=2), ref_masks=refm, num_envs=n, action_dim=4, device="cpu"
    )(b)
    assert exact.terms["raw/iou"].tolist() == pytest.approx(iou(b.mask, refm[t]).tolist())
    assert "raw/iou_exact" not in exact.terms
    assert win.terms["raw/iou_exact"].tolist() == exact.terms["raw/iou"].tolist()
    one_off = iou(refm[:1], refm[1:2]).item()  # 3 frames behind/ahead: the window's edge is 1 frame away
    assert one_off == pytest.approx(3 / 5)
    assert win.terms["raw/iou"].tolist() == pytest.approx([one_off, 1.0, 1.0, 1.0, one_off])
    assert exact.terms["raw/iou"].tolist() == pytest.approx([1 / 7, 2 / 6, 1.0, 2 / 6, 1 / 7])
    assert (win.terms["raw/iou"] >= exact.terms["raw/iou"]).all()
    assert torch.allclose(win.total - exact.total, win.terms["raw/iou"] - exact.terms["raw/iou"])


def test_motion_iou_scores_the_moving_part_apart_from_the_static_body():
    """reward.motion_iou_weight: S_D is the IoU outside the reference's static core. A body that never
    moves plus a leg that swings: standing still earns most of S_M but none of S_D; the right leg earns
    both."""
    T_ = 10
    refm = torch.zeros(T_, H, W, dtype=torch.bool)
    refm[:, 2:8, 2:12] = True  # the body: in every frame (the core)
    for k in range(T_):
        col = 2 + k % 5 * 2
        refm[k, 8:14, col : col + 2] = True  # a leg swinging under it, 12 px, never in 90 % of the frames
    b = make_batch(n=3, t=4)
    standing = refm[0].clone()  # the leg held where it was at frame 0
    right = refm[4].clone()
    no_leg = refm[4].clone()
    no_leg[8:] = False
    b.mask = torch.stack([standing, right, no_leg])
    kw = dict(ref_masks=refm, num_envs=3, action_dim=4, device="cpu")
    paper = NILReward(RewardConfig(use_video=False), **kw)(b)
    got = NILReward(RewardConfig(use_video=False, motion_iou_weight=0.5), **kw)(b)
    assert "raw/motion_iou" not in paper.terms
    assert paper.terms["raw/iou"].tolist() == pytest.approx([60 / 84, 1.0, 60 / 72])
    assert got.terms["raw/motion_iou"].tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert torch.allclose(got.total - paper.total, 0.5 * got.terms["raw/motion_iou"])
    # a reference in which nothing moves has no moving region: an error naming the switch, not a zero
    still = refm[:1].repeat(T_, 1, 1)
    with pytest.raises(ConfigError, match="reward.motion_iou_weight"):
        NILReward(RewardConfig(use_video=False, motion_iou_weight=1.0), **{**kw, "ref_masks": still})


def test_removed_switches_still_load_as_zero_weights():
    assert RewardConfig(use_iou=False).beta == 0.0 and RewardConfig(use_reg=False).eta == 0.0
    cfg = RewardConfig(use_iou=True, use_reg=True, beta=0.5)
    assert (cfg.beta, cfg.eta) == (0.5, 1.0)
    assert "use_iou" not in cfg.model_dump() and "use_reg" not in cfg.model_dump()


def test_roll_penalty_sees_a_sideways_lean_and_not_a_forward_one():
    """reward.roll_coef: a pure roll pays 1 - cos(roll) (as one_minus_up would), a pure pitch and any
    heading pay nothing; off (0) the reward is the paper's."""

    import mujoco

    def quat(axis: tuple[float, float, float], angle: float) -> np.ndarray:
        q = np.zeros(4)
        mujoco.mju_axisAngle2Quat(q, np.asarray(axis, np.float64), angle)
        return q

    def t(q: np.ndarray) -> torch.Tensor:
        return torch.tensor(q[None], dtype=torch.float32)

    roll, pitch, yaw = quat((1, 0, 0), 0.4), quat((0, 1, 0), 0.4), quat((0, 0, 1), 1.3)
    assert T.reg_roll(t(roll), 2.0).item() == pytest.approx(-2.0 * (1 - math.cos(0.4)), rel=1e-5)
    assert T.reg_roll(t(pitch), 2.0).item() == pytest.approx(0.0, abs=1e-7)
    assert T.reg_roll(t(yaw), 2.0).item() == pytest.approx(0.0, abs=1e-7)
    # roll about the heading after a turn: the same lean, the same penalty
    turned = np.zeros(4)
    mujoco.mju_mulQuat(turned, yaw, roll)
    assert T.reg_roll(t(turned), 2.0).item() == pytest.approx(T.reg_roll(t(roll), 2.0).item(), rel=1e-5)

    b = make_batch()
    b.qpos[:, 3:7] = t(roll)
    off, on = (
        NILReward(
            RewardConfig(use_video=False, roll_coef=c),
            ref_masks=ref_masks(),
            num_envs=3,
            action_dim=4,
            device="cpu",
        )
        for c in (0.0, 2.0)
    )
    gap = on(b).terms["raw/reg_tilt"] - off(b).terms["raw/reg_tilt"]
    assert torch.allclose(gap, torch.full((3,), -2.0 * (1 - math.cos(0.4))), atol=1e-5)
