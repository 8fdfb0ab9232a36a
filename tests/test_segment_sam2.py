"""SAM2 through transformers: a tiny random-weight Sam2VideoModel saved to disk, loaded by the user's path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nil.compat import hide_broken_torchvision
from nil.errors import SegmentationError
from nil.reference.segment import iou
from nil.reference.segment.sam2 import Sam2Segmenter, sam2_weights_available
from nil.reference.segment.stage import resolve_segmenter_name
from nil.reference.video import Video

S, D = 64, 128  # model input size; hidden size (memory channels stay 64, as transformers requires)


@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory) -> Path:
    """A ~1.3M-parameter SAM2 video model with random weights, saved with save_pretrained."""
    import torch

    hide_broken_torchvision()
    from transformers import Sam2VideoConfig, Sam2VideoModel

    cfg = Sam2VideoConfig(
        vision_config=dict(
            model_type="sam2_vision_model",
            backbone_config=dict(
                model_type="sam2_hiera_det_model",
                hidden_size=16,
                num_attention_heads=1,
                image_size=[S, S],
                blocks_per_stage=[1, 1, 2, 1],
                embed_dim_per_stage=[16, 32, 64, 128],
                num_attention_heads_per_stage=[1, 1, 1, 1],
                window_size_per_stage=[4, 4, 4, 4],
                global_attention_blocks=[3],
                window_positional_embedding_background_size=[2, 2],
            ),
            backbone_channel_list=[128, 64, 32, 16],
            backbone_feature_sizes=[[S // 4, S // 4], [S // 8, S // 8], [S // 16, S // 16]],
            fpn_hidden_size=D,
        ),
        prompt_encoder_config=dict(hidden_size=D, image_size=S, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=D, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=D),
        image_size=S,
        memory_attention_hidden_size=D,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[S // 16, S // 16],
        memory_encoder_hidden_size=D,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=D,
        memory_fuser_embed_dim=D,
        memory_fuser_intermediate_dim=64,
        num_maskmem=3,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam2") / "tiny-sam2"
    Sam2VideoModel(cfg).eval().save_pretrained(path)
    return path


def _video(T: int = 7, hw: tuple[int, int] = (48, 40)) -> tuple[Video, np.ndarray]:
    rng = np.random.default_rng(0)
    frames = (rng.random((T, *hw, 3)) * 255).astype(np.uint8)
    m0 = np.zeros(hw, bool)
    m0[10:30, 8:25] = True
    m0[30:40, 12:16] = True
    return Video(frames, 10.0), m0


def test_tiny_sam2_shapes_dtype_frames_and_prompt(tiny_sam2):
    video, m0 = _video()
    seg = Sam2Segmenter(str(tiny_sam2), device="cpu", chunk_size=64)
    out = seg.segment(video, m0)
    assert out.shape == (7, 48, 40) and out.dtype == bool
    # a mask prompt is SAM2's output on its conditioning frame, up to the round trip through the model's
    # square S x S mask grid: frame 0 is m0 up to boundary pixels
    assert iou(out[0], m0) >= 0.95
    assert seg.info()["model_id"] == str(tiny_sam2) and seg.info()["device"] == "cpu"


def test_tiny_sam2_chunks_cover_every_frame(tiny_sam2):
    video, m0 = _video(T=8)
    seen = []
    seg = Sam2Segmenter(str(tiny_sam2), device="cpu", chunk_size=3, progress=lambda d, t: seen.append((d, t)))
    out = seg.segment(video, m0)
    assert out.shape == (8, 48, 40) and out.dtype == bool
    assert iou(out[0], m0) >= 0.95
    assert [d for d, _ in seen] == [3, 5, 7, 8]  # chunks [0,3) [2,5) [4,7) [6,8): each repeats one frame


def test_sam2_rejects_bad_first_mask(tiny_sam2):
    video, m0 = _video()
    seg = Sam2Segmenter(str(tiny_sam2), device="cpu")
    with pytest.raises(SegmentationError, match=r"\(40, 48\).*\(48, 40\)"):
        seg.segment(video, m0.T)
    with pytest.raises(SegmentationError, match="empty"):
        seg.segment(video, np.zeros_like(m0))


def test_missing_weights_name_the_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = str(tmp_path / "no-such-sam2")
    with pytest.raises(SegmentationError, match="no-such-sam2"):
        Sam2Segmenter(missing, device="cpu").load()


def test_auto_picks_sam2_only_when_weights_are_local(tiny_sam2, tmp_path):
    assert sam2_weights_available(str(tiny_sam2))
    assert resolve_segmenter_name("auto", str(tiny_sam2)) == ("sam2", None)
    name, notice = resolve_segmenter_name("auto", str(tmp_path / "absent"))
    assert name == "flow" and "flow" in notice


def test_tiny_sam2_box_and_point_prompt_on_one_frame(tiny_sam2):
    """The auto-prompt path (find the robot in frame 0): a box + an interior point, no mask."""
    video, m0 = _video()
    seg = Sam2Segmenter(str(tiny_sam2), device="cpu")
    out = seg.segment_image(video.frames[0], box=(8, 10, 25, 40), point=(16, 20))
    assert out.shape == (48, 40) and out.dtype == bool  # random weights: the mask itself is arbitrary


def test_find_robot_keeps_the_classical_mask_when_sam2_disagrees(tiny_sam2):
    from nil.reference.foreground import find_robot

    frame = np.full((48, 40, 3), 200, np.uint8)
    frame[12:34, 10:26] = (180, 40, 30)
    seg = Sam2Segmenter(str(tiny_sam2), device="cpu")
    fg = find_robot(frame, sam2=seg)
    truth = np.zeros((48, 40), bool)
    truth[12:34, 10:26] = True
    assert "sam2_iou_with_coarse" in fg.info  # SAM2 ran on the auto-prompt
    if fg.info.get("sam2_rejected"):
        assert iou(fg.mask, truth) >= 0.9  # the classical foreground was kept


def test_calibration_prompts_sam2_when_its_weights_are_here(tiny_sam2):
    from nil.config import parse_config
    from nil.reference.calibrate import sam2_if_available

    cfg = parse_config({"segmenter": {"name": "auto", "model_id": str(tiny_sam2)}})
    assert isinstance(sam2_if_available(cfg), Sam2Segmenter)
    assert sam2_if_available(parse_config({"segmenter": {"name": "flow"}})) is None
