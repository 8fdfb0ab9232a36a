"""Video encoders through the real loading path: tiny random models saved with save_pretrained, loaded by
path."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from nil.compat import hide_broken_torchvision
from nil.config import EncoderConfig, RewardConfig
from nil.errors import EncoderError
from nil.paths import SkillPaths
from nil.reward import NILReward, load_encoder, reference_embeddings
from nil.reward.encoders import clip_indices, encoder_id
from nil.reward.terms import mask_frames
from nil.sim.base import SimBatch

hide_broken_torchvision()
transformers = pytest.importorskip("transformers")

RES, CLIP, HID, LABELS = 32, 4, 24, 7


@pytest.fixture(scope="module")
def tsf_dir(tmp_path_factory):
    """A tiny random TimesformerForVideoClassification checkpoint (as the K400 hub model is) + its model."""
    cfg = transformers.TimesformerConfig(
        image_size=RES,
        patch_size=8,
        num_frames=CLIP,
        hidden_size=HID,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        num_labels=LABELS,
    )
    torch.manual_seed(0)
    model = transformers.TimesformerForVideoClassification(cfg).eval()
    d = tmp_path_factory.mktemp("tsf")
    model.save_pretrained(d)
    return d, model


def _cfg(d, **kw) -> EncoderConfig:
    return EncoderConfig(model_id=str(d), clip_len=CLIP, resolution=RES, device="cpu", **kw)


def test_timesformer_embedding_is_cls_after_layernorm_not_logits(tsf_dir):
    d, model = tsf_dir
    enc = load_encoder(_cfg(d, batch_size=2))
    clips = torch.randint(
        0, 256, (3, CLIP, RES, RES, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    z = enc.embed(clips)  # 3 clips in chunks of 2
    assert z.shape == (3, HID) and z.dtype == torch.float32  # hidden size, not num_labels
    x = (clips.permute(0, 1, 4, 2, 3).float() / 255.0 - 0.45) / 0.225  # Kinetics normalisation
    with torch.no_grad():
        hidden = model.timesformer(pixel_values=x).last_hidden_state
        by_hand = model.timesformer.layernorm.weight.shape  # the final layernorm exists and is applied inside
    assert by_hand == (HID,)
    assert torch.allclose(z, hidden[:, 0], atol=1e-5)
    assert enc.norm_source == "default" and enc.id == encoder_id(_cfg(d, batch_size=2))
    # the same clip twice -> cosine 1; different clips -> < 1
    cos = torch.nn.functional.cosine_similarity(enc.embed(clips[:1]), z[:1]).item()
    assert cos == pytest.approx(1.0, abs=1e-6)
    assert torch.nn.functional.cosine_similarity(z[:1], z[1:2]).item() < 0.9999


def test_resize_and_preprocessor_config_are_used(tsf_dir, tmp_path):
    d, model = tsf_dir
    import shutil

    d2 = tmp_path / "tsf_norm"
    shutil.copytree(d, d2)
    (d2 / "preprocessor_config.json").write_text(
        '{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}'
    )
    enc = load_encoder(_cfg(d2))
    assert enc.norm_source == "preprocessor_config.json"
    clips = torch.randint(0, 256, (1, CLIP, RES, RES, 3), dtype=torch.uint8)
    x = (clips.permute(0, 1, 4, 2, 3).float() / 255.0 - 0.5) / 0.5
    with torch.no_grad():
        want = model.timesformer(pixel_values=x).last_hidden_state[:, 0]
    assert torch.allclose(enc.embed(clips), want, atol=1e-5)
    # a 2x larger, non-square frame is resized on the shorter side and centre-cropped to the model size
    big = torch.randint(0, 256, (1, CLIP, 2 * RES, 3 * RES, 3), dtype=torch.uint8)
    assert enc.embed(big).shape == (1, HID)


def test_missing_weights_raise_encoder_error(tsf_dir, tmp_path):
    with pytest.raises(EncoderError, match="use_video=false"):
        load_encoder(_cfg(tmp_path / "nope"))
    with pytest.raises(EncoderError, match="use_video=false"):
        load_encoder(
            EncoderConfig(model_id="facebook/not-a-cached-model-xyz", local_files_only=True, device="cpu")
        )
    # a checkpoint of another family must not load as a half-random backbone
    with pytest.raises(EncoderError, match="encoder.name"):
        load_encoder(_cfg(tsf_dir[0], name="videomae"))


def test_videomae_mean_pool(tmp_path):
    cfg = transformers.VideoMAEConfig(
        image_size=RES,
        patch_size=8,
        num_frames=CLIP,
        tubelet_size=2,
        hidden_size=HID,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        use_mean_pooling=True,
    )
    torch.manual_seed(0)
    model = transformers.VideoMAEModel(cfg).eval()
    model.save_pretrained(tmp_path)
    enc = load_encoder(_cfg(tmp_path, name="videomae"))
    clips = torch.randint(0, 256, (2, CLIP, RES, RES, 3), dtype=torch.uint8)
    z = enc.embed(clips)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)
    with torch.no_grad():
        want = model(
            pixel_values=(clips.permute(0, 1, 4, 2, 3).float() / 255.0 - mean) / std
        ).last_hidden_state
    assert z.shape == (2, HID) and torch.allclose(z, want.mean(1), atol=1e-5)
    assert enc.id.startswith("videomae-")
    with pytest.raises(EncoderError, match="clip_len=4"):
        load_encoder(
            EncoderConfig(model_id=str(tmp_path), name="videomae", clip_len=8, resolution=RES, device="cpu")
        )


def test_clip_indices():
    idx = clip_indices(6, 3, 2)
    assert idx[0].tolist() == [0, 0, 0] and idx[3].tolist() == [0, 1, 3] and idx[5].tolist() == [1, 3, 5]


def _fake_bundle(monkeypatch, root, frames: np.ndarray, masks: np.ndarray) -> SkillPaths:
    """Reference files on disk (for the cache hashes) + loaders returning them (real modules patched)."""
    from nil.reference.video import Video

    paths = SkillPaths(root)
    paths.reference.mkdir(parents=True)
    paths.retimed.write_bytes(frames.tobytes())
    np.savez_compressed(paths.masks, masks=masks)
    for name, fn_name, fn in (
        ("nil.reference.bundle", "load_reference", lambda p: Video(frames, 100.0)),
        ("nil.reference.segment", "load_masks", lambda p: masks),
    ):
        try:
            mod = __import__(name, fromlist=[fn_name])
        except ImportError:
            mod = types.ModuleType(name)
            monkeypatch.setitem(sys.modules, name, mod)
        monkeypatch.setattr(mod, fn_name, fn, raising=False)
    return paths


def _batch(rgb: torch.Tensor, mask: torch.Tensor, t: int) -> SimBatch:
    n = rgb.shape[0]
    z = torch.zeros(n, 2)
    return SimBatch(
        obs=z,
        rgb=rgb,
        mask=mask,
        terminated=torch.zeros(n, dtype=torch.bool),
        truncated=torch.zeros(n, dtype=torch.bool),
        t=torch.full((n,), t),
        qpos=z,
        qvel=z,
        joint_vel=z,
        torque=z,
        action=z,
        prev_action=z,
        foot_contact=torch.zeros(n, 1, dtype=torch.bool),
        foot_vel_xy=torch.zeros(n, 1, 2),
        torso_up_z=torch.ones(n),
        root_pos=torch.zeros(n, 3),
        root_lin_vel=torch.zeros(n, 3),
        nonfinite=torch.zeros(n, dtype=torch.bool),
    )


def test_reference_embeddings_cache_and_self_similarity(tsf_dir, tmp_path, monkeypatch):
    """Agent frames equal to the reference -> S_V = 1 (cosine) at every t, IoU = 1; the cache is reused."""
    g = np.random.default_rng(0)
    n_ref = 7
    frames = g.integers(0, 256, (n_ref, RES, RES, 3), dtype=np.uint8)
    masks = np.zeros((n_ref, RES, RES), dtype=bool)
    for t in range(n_ref):
        masks[t, 4 + t : 20 + t, 6:26] = True
    paths = _fake_bundle(monkeypatch, tmp_path / "skill", frames, masks)
    ecfg = _cfg(tsf_dir[0], clip_stride=2, batch_size=3)
    enc = load_encoder(ecfg)
    emb = reference_embeddings(paths, ecfg, enc)
    assert emb.shape == (n_ref, HID)
    cache = paths.embeddings / f"{enc.id}.pt"
    assert cache.exists()
    # cache hit: the encoder is not called again
    calls = []
    orig = enc.embed
    enc.embed = lambda c: (calls.append(1), orig(c))[1]
    assert torch.equal(reference_embeddings(paths, ecfg, enc), emb) and calls == []
    # the reference embedding at t is the masked clip ending at t (frame 0 repeated early)
    m = mask_frames(torch.from_numpy(frames), torch.from_numpy(masks), (0, 0, 0))
    assert torch.allclose(emb[5], orig(m[[0, 1, 3, 5]][None])[0], atol=1e-5)
    # new masks -> a new key -> recomputed
    masks2 = masks.copy()
    masks2[:, 0, 0] = True
    np.savez_compressed(paths.masks, masks=masks2)
    monkeypatch.setattr(sys.modules["nil.reference.segment"], "load_masks", lambda p: masks2)
    reference_embeddings(paths, ecfg, enc)
    assert calls
    np.savez_compressed(paths.masks, masks=masks)
    monkeypatch.setattr(sys.modules["nil.reference.segment"], "load_masks", lambda p: masks)
    emb = reference_embeddings(paths, ecfg, enc)

    enc.embed = orig
    reward = NILReward(
        RewardConfig(),
        ref_masks=torch.from_numpy(masks),
        num_envs=2,
        action_dim=2,
        device="cpu",
        encoder=enc,
        ref_embeddings=emb,
    )
    rgb, msk = torch.from_numpy(frames), torch.from_numpy(masks)
    for t in range(n_ref):
        out = reward(_batch(rgb[t].expand(2, -1, -1, -1).clone(), msk[t].expand(2, -1, -1).clone(), t))
        assert torch.allclose(out.terms["raw/video"], torch.ones(2), atol=1e-5), t
        assert torch.equal(out.terms["raw/iou"], torch.ones(2))
        assert torch.allclose(out.total, 2 * torch.ones(2), atol=1e-5)  # regularisers 0 at rest, upright
    # pixels outside the mask do not matter (masked before encoding)
    reward.reset()
    for t in range(n_ref):
        noisy = rgb[t].clone()
        noisy[~msk[t]] = 255 - noisy[~msk[t]]
        out = reward(_batch(noisy[None].expand(2, -1, -1, -1).clone(), msk[t].expand(2, -1, -1).clone(), t))
        assert torch.allclose(out.terms["raw/video"], torch.ones(2), atol=1e-5), t


def test_sdpa_attention_matches_eager(tsf_dir):
    """The SDPA swap changes the kernels, not the maths: embeddings match eager attention to tolerance."""
    from nil.reward.encoders import SDPASelfAttention

    d, _ = tsf_dir
    sdpa, eager = load_encoder(_cfg(d)), load_encoder(_cfg(d, attention="eager"))
    n_sdpa = sum(isinstance(m, SDPASelfAttention) for m in sdpa.model.modules())
    assert n_sdpa == 2 * 2  # temporal + spatial attention in each of the 2 layers
    assert not any(isinstance(m, SDPASelfAttention) for m in eager.model.modules())
    clips = torch.randint(
        0, 256, (5, CLIP, RES, RES, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    a, b = sdpa.embed(clips), eager.embed(clips)
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()
    assert (a[0] - a[1]).abs().max() > 1e-3  # different clips, different embeddings (not a constant)


def test_sdpa_attention_bf16_close_to_float32(tsf_dir):
    """bf16 (the CUDA default) keeps the embedding direction: cosine to the float32 embedding ~1."""
    d, _ = tsf_dir
    f32, bf16 = load_encoder(_cfg(d)), load_encoder(_cfg(d, dtype="bfloat16"))
    clips = torch.randint(
        0, 256, (3, CLIP, RES, RES, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    z16 = bf16.embed(clips)
    assert z16.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    cos = torch.nn.functional.cosine_similarity(z16, f32.embed(clips))
    assert (cos > 0.99).all(), cos


def test_timesformer_clip_len_and_resolution_must_match_the_model(tsf_dir):
    d, _ = tsf_dir
    with pytest.raises(EncoderError, match=rf"encoder.clip_len=8 .*set encoder.clip_len={CLIP}$"):
        load_encoder(EncoderConfig(model_id=str(d), clip_len=8, resolution=RES, device="cpu"))
    with pytest.raises(EncoderError, match=rf"encoder.resolution=64 .*set encoder.resolution={RES}$"):
        load_encoder(EncoderConfig(model_id=str(d), clip_len=CLIP, resolution=64, device="cpu"))


def test_encoders_registry_picks_by_name_and_takes_plugins(tsf_dir):
    from nil.reward.encoders import ENCODERS, TimesformerEncoder, VideoMAEEncoder

    assert {"timesformer", "videomae"} <= set(ENCODERS.names())
    assert ENCODERS.get("timesformer") is TimesformerEncoder and ENCODERS.get("videomae") is VideoMAEEncoder
    built = []

    class Plugin(TimesformerEncoder):
        def __init__(self, cfg):
            built.append(cfg.model_id)
            super().__init__(cfg)

    ENCODERS.register("timesformer")(Plugin)  # a user's plugin replaces the built-in under its name
    try:
        enc = load_encoder(_cfg(tsf_dir[0]))
        assert isinstance(enc, Plugin) and built == [str(tsf_dir[0])]
    finally:
        ENCODERS.register("timesformer")(TimesformerEncoder)
    assert type(load_encoder(_cfg(tsf_dir[0]))) is TimesformerEncoder
