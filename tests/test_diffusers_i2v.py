"""The diffusers image-to-video backend through its real loading path, with tiny random-weight pipelines.

Each pipeline (CogVideoX-I2V, LTX-Video I2V) is built from small configs with a tiny T5 text encoder and
a ByT5 tokenizer (no vocabulary download), saved with save_pretrained, and then given to the backend
as `generator.model_id: <folder>`, exactly as a user's downloaded model would be.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nil.compat import hide_broken_torchvision
from nil.config import DiffusersGeneratorConfig, parse_config
from nil.errors import GeneratorError
from nil.paths import SkillPaths
from nil.reference import bundle
from nil.reference.generators import GENERATORS, GeneratorResult
from nil.reference.generators import diffusers_i2v as d
from nil.reference.generators.diffusers_i2v import DiffusersI2VGenerator

GeneratorConfig = DiffusersGeneratorConfig  # the diffusers section of generator: (name: diffusers)

H, W = 56, 72  # the render size; the models run at 64x96 (letterboxed)


def _text_parts():
    import torch
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=384, d_model=16, d_kv=8, num_heads=2, d_ff=32, num_layers=1, num_decoder_layers=0
    )
    return ByT5Tokenizer(), T5EncoderModel(cfg)


def build_tiny_cogvideox(path: Path, *, learned_positional_embeddings: bool = False) -> Path:
    """CogVideoX-I2V: 4-channel VAE (8x spatial, 4x temporal), a one-layer transformer trained at 64x96.

    With learned positional embeddings (as CogVideoX-5b-I2V) the model is fixed at 64x96 and 9 frames."""
    import torch
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXTransformer3DModel,
    )

    tok, te = _text_parts()
    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        sample_height=64,
        sample_width=96,
    )
    tr = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=8,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=16,
        num_layers=1,
        sample_width=12,
        sample_height=8,
        sample_frames=9,
        patch_size=2,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=learned_positional_embeddings,
    )
    CogVideoXImageToVideoPipeline(
        tokenizer=tok, text_encoder=te, vae=vae, transformer=tr, scheduler=CogVideoXDDIMScheduler()
    ).save_pretrained(path)
    return path


def build_tiny_ltx(path: Path) -> Path:
    """LTX-Video I2V with an 8-channel VAE (4x spatial, 4x temporal) and a one-layer transformer."""
    import torch
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXImageToVideoPipeline,
        LTXVideoTransformer3DModel,
    )

    tok, te = _text_parts()
    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8,) * 4,
        decoder_block_out_channels=(8,) * 4,
        layers_per_block=(1,) * 5,
        decoder_layers_per_block=(1,) * 5,
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4,
        upsample_factor=(1,) * 4,
        patch_size=1,
        patch_size_t=1,
    )
    tr = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=1,
        caption_channels=16,
    )
    LTXImageToVideoPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=te, tokenizer=tok, transformer=tr
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    hide_broken_torchvision()
    root = tmp_path_factory.mktemp("models")
    return {
        "cogvideox": build_tiny_cogvideox(root / "tiny-cogvideox"),
        "ltx": build_tiny_ltx(root / "tiny-ltx"),
    }


def _frame0() -> tuple[np.ndarray, np.ndarray]:
    f = np.full((H, W, 3), 255, np.uint8)
    f[18:40, 25:50] = (180, 60, 30)
    return f, np.any(f < 250, axis=-1)


@pytest.fixture
def skill_dir(tmp_path, monkeypatch):
    f0, mask = _frame0()
    spec = SimpleNamespace(name="fakebot", description="four-legged fakebot", control_hz=100.0)
    monkeypatch.setattr(bundle, "_robot_spec", lambda cfg: spec)
    monkeypatch.setattr(
        bundle,
        "_write_frame0",
        lambda paths, spec, bg: SimpleNamespace(rgb=f0, rgb_nobg=f0, mask=mask, qpos=None),
    )
    return SkillPaths(tmp_path / "skill")


@pytest.mark.parametrize(
    "family,extra,fps", [("cogvideox", {}, 8.0), ("ltx", {"height": 64, "width": 96}, 25.0)]
)
def test_tiny_pipeline_through_bundle(tiny_models, skill_dir, family, extra, fps):
    path = tiny_models[family]
    cfg = parse_config(
        {
            "generator": {
                "name": "diffusers",
                "model_id": str(path),
                "steps": 2,
                "num_frames": 9,
                "seed": 3,
                **extra,
            }
        }
    )
    meta = bundle.generate_reference(skill_dir, cfg)
    info = meta["generator_info"]
    assert info["family"] == family  # detected from model_index.json's _class_name
    assert info["model_input_size"] == [64, 96]
    assert info["dtype"] == "float32" and info["device"] == "cpu"
    assert meta["model_id"] == str(path) and meta["revision"].startswith("local:")
    assert meta["num_frames"] == 9 and meta["fps"] == fps  # the family's native rate
    assert meta["retimed_num_frames"] == round(8 * 100 / fps) + 1
    on_disk = json.loads(skill_dir.meta.read_text())
    assert (
        on_disk["generator"] == "diffusers"
        and on_disk["cache_params"]["generator_params"]["family"] == family
    )
    ref = bundle.load_reference(skill_dir)
    assert ref.frames.dtype == np.uint8 and ref.hw == (H, W)  # brought back to the render size
    assert ref.num_frames == meta["retimed_num_frames"]


def test_generate_snaps_length_and_crops_back(tiny_models):
    f0, _ = _frame0()
    cfg = GeneratorConfig(name="diffusers", model_id=str(tiny_models["ltx"]), steps=1, height=64, width=96)
    g = DiffusersI2VGenerator(cfg)
    res = g.generate(f0, "an ant walking", num_frames=6, fps=None, seed=1)
    assert isinstance(res, GeneratorResult) and res.teacher is None
    v1 = res.video
    assert v1.num_frames == 9  # LTX lengths are 8k+1: 6 is rounded up
    assert v1.frames.shape == (9, H, W, 3) and v1.frames.dtype == np.uint8
    # 56x72 fits 64x96 as 64x82 with 7 px of padding left and right; the padding is cropped away again
    assert res.info["num_frames_requested"] == 6 and res.info["letterbox"] == [0, 7, 64, 82]
    assert res.info["guidance"] == 3.0 and res.info["guidance_source"] == "family default"  # LTX ~3


def test_cache_key_tracks_model_content(tiny_models, tmp_path):
    import shutil

    copy = Path(shutil.copytree(tiny_models["ltx"], tmp_path / "copy"))
    g = DiffusersI2VGenerator(GeneratorConfig(name="diffusers", model_id=str(copy)))
    r1 = g.cache_params()["revision"]
    cfg_file = copy / "scheduler" / "scheduler_config.json"
    data = json.loads(cfg_file.read_text())
    data["shift"] = 2.0
    cfg_file.write_text(json.dumps(data))
    g2 = DiffusersI2VGenerator(GeneratorConfig(name="diffusers", model_id=str(copy)))
    assert g2.cache_params()["revision"] != r1


def test_letterbox_roundtrip():
    img = np.random.default_rng(0).integers(0, 255, (50, 100, 3), dtype=np.uint8)
    boxed, box = d.letterbox(img, (96, 96), (255, 255, 255))
    assert boxed.shape == (96, 96, 3) and box == (24, 0, 48, 96)
    assert (boxed[:24] == 255).all() and (boxed[-24:] == 255).all()
    back = d.unletterbox(boxed[None], box, (50, 100))[0]
    assert back.shape == (50, 100, 3)
    assert np.abs(back.astype(int) - img.astype(int)).mean() < 40  # blurred by the down/up-scale only


def test_size_and_length_rules():
    assert d.snap_frames(49, 4) == 49 and d.snap_frames(50, 4) == 53 and d.snap_frames(10, 8) == 17
    assert d.snap_frames(14, 1) == 14
    h, w = d.fit_size(1.0, 480 * 832, 16)
    assert h == w and h % 16 == 0 and abs(h * w - 480 * 832) / (480 * 832) < 0.05
    assert d.family_from_class("WanImageToVideoPipeline") == "wan"
    assert d.family_from_class("StableVideoDiffusionPipeline") == "svd"
    assert d.family_from_class("HunyuanVideoPipeline") is None


def test_folder_without_model_index(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(GeneratorError, match="model_index.json"):
        DiffusersI2VGenerator(GeneratorConfig(name="diffusers", model_id=str(tmp_path))).cache_params()


def test_folder_missing_component(tmp_path):
    (tmp_path / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "CogVideoXImageToVideoPipeline",
                "transformer": ["diffusers", "CogVideoXTransformer3DModel"],
                "vae": ["diffusers", "AutoencoderKLCogVideoX"],
            }
        )
    )
    (tmp_path / "vae").mkdir()
    with pytest.raises(GeneratorError, match=r"\['transformer'\]"):
        DiffusersI2VGenerator(GeneratorConfig(name="diffusers", model_id=str(tmp_path))).cache_params()


def test_nonexistent_local_path(tmp_path):
    with pytest.raises(GeneratorError, match="no such model folder"):
        DiffusersI2VGenerator(
            GeneratorConfig(name="diffusers", model_id=str(tmp_path / "nope"))
        ).cache_params()


def test_unsupported_family(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "HunyuanVideoPipeline"}))
    with pytest.raises(GeneratorError, match="supported families"):
        DiffusersI2VGenerator(GeneratorConfig(name="diffusers", model_id=str(tmp_path))).family()


def test_hub_id_offline_fails_fast_naming_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GeneratorError, match=r"THUDM/CogVideoX-5b-I2V.*--generator synthetic"):
        DiffusersI2VGenerator(GeneratorConfig(name="diffusers")).cache_params()


def test_hub_unreachable_names_model_and_options(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(self, *a, **k):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", no_network)
    with pytest.raises(
        GeneratorError, match=r"cannot reach model 'some-org/some-i2v'.*local pipeline folder"
    ):
        DiffusersI2VGenerator(GeneratorConfig(name="diffusers", model_id="some-org/some-i2v")).cache_params()


def test_big_model_without_gpu_is_refused(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "CogVideoXImageToVideoPipeline",
                "transformer": ["diffusers", "CogVideoXTransformer3DModel"],
            }
        )
    )
    (tmp_path / "transformer").mkdir()
    with open(tmp_path / "transformer" / "diffusion_pytorch_model.safetensors", "wb") as f:
        f.truncate(6 * 10**9)  # sparse: 6 GB on paper, nothing on disk
    g = DiffusersI2VGenerator(GeneratorConfig(name="diffusers", model_id=str(tmp_path)))
    with pytest.raises(GeneratorError, match="no GPU"):
        g.generate(np.zeros((H, W, 3), np.uint8), "x", num_frames=9, fps=None, seed=0)
    with pytest.raises(GeneratorError, match="no CUDA GPU"):
        DiffusersI2VGenerator(
            GeneratorConfig(name="diffusers", model_id=str(tmp_path), device="cuda")
        ).resolve()


@pytest.fixture(scope="module")
def fixed_cogvideox(tmp_path_factory):
    hide_broken_torchvision()
    path = tmp_path_factory.mktemp("fixed") / "tiny-cogvideox-5b-i2v-like"
    return build_tiny_cogvideox(path, learned_positional_embeddings=True)


def test_learned_positional_embeddings_pin_size_and_length(fixed_cogvideox, monkeypatch):
    """Unset size/length pin to the trained 64x96 x 9 frames; other values fail before any weights load."""
    f0, _ = _frame0()
    g = DiffusersI2VGenerator(GeneratorConfig(name="diffusers", model_id=str(fixed_cogvideox), steps=1))
    assert g.fixed_geometry() == d.FixedGeometry(64, 96, 9)
    res = g.generate(f0, "an ant walking", num_frames=None, fps=None, seed=0)
    assert res.video.num_frames == 9 and res.video.frames.shape == (9, H, W, 3)
    assert res.info["model_input_size"] == [64, 96] and res.info["fixed_geometry"] is True
    assert res.info["guidance"] == 6.0  # CogVideoX's default
    assert (
        g.generate(f0, "x", num_frames=9, fps=None, seed=0).video.num_frames == 9
    )  # the trained value is fine

    def no_load(self):
        raise AssertionError("weights loaded before the size/length check")

    monkeypatch.setattr(DiffusersI2VGenerator, "_load", no_load)
    g2 = DiffusersI2VGenerator(GeneratorConfig(name="diffusers", model_id=str(fixed_cogvideox), steps=1))
    with pytest.raises(GeneratorError, match=r"generator.num_frames=13: .* makes exactly 9 frames.*unset"):
        g2.generate(f0, "x", num_frames=13, fps=None, seed=0)
    g3 = DiffusersI2VGenerator(
        GeneratorConfig(name="diffusers", model_id=str(fixed_cogvideox), height=32, width=48)
    )
    with pytest.raises(GeneratorError, match=r"32x48: .* runs only at 64x96"):
        g3.generate(f0, "x", num_frames=None, fps=None, seed=0)


def test_rotary_cogvideox_is_not_pinned(tiny_models):
    g = DiffusersI2VGenerator(GeneratorConfig(name="diffusers", model_id=str(tiny_models["cogvideox"])))
    assert g.fixed_geometry() is None and g.num_frames(13) == 13 and g.num_frames(None) == 49


def test_family_guidance_defaults_and_override(tiny_models):
    assert d.FAMILIES["cogvideox"].guidance == 6.0 and d.FAMILIES["wan"].guidance == 5.0
    assert d.FAMILIES["ltx"].guidance == 3.0 and d.FAMILIES["svd"].guidance <= 3.0
    for fam, want in (("ltx", 3.0), ("cogvideox", 6.0)):
        g = DiffusersI2VGenerator(GeneratorConfig(name="diffusers", model_id=str(tiny_models[fam])))
        assert g.guidance() == want and g.cache_params()["guidance"] == want
    g = DiffusersI2VGenerator(
        GeneratorConfig(name="diffusers", model_id=str(tiny_models["ltx"]), guidance=4.5)
    )
    assert g.guidance() == 4.5 and g.cache_params()["guidance"] == 4.5


def test_registered_in_generators():
    cfg = parse_config({"generator": {"name": "diffusers", "model_id": "/nowhere"}})
    g = GENERATORS.get("diffusers")(cfg)
    assert isinstance(g, DiffusersI2VGenerator) and g.cfg.model_id == "/nowhere"
