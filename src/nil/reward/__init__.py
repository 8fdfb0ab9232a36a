"""Stage 2 reward: video-clip similarity S_V, mask IoU S_M, regularisers P, and the optional task term."""

from nil.reward.base import Reward, RewardOutput
from nil.reward.encoders import (
    TimesformerEncoder,
    VideoEncoder,
    VideoMAEEncoder,
    encoder_id,
    load_encoder,
    reference_embeddings,
)
from nil.reward.nil_reward import REG_TERMS, TERM_NAMES, NILReward
from nil.reward.terms import iou, mask_frames, task_reward, video_similarity

__all__ = [
    "NILReward",
    "REG_TERMS",
    "Reward",
    "RewardOutput",
    "TERM_NAMES",
    "TimesformerEncoder",
    "VideoEncoder",
    "VideoMAEEncoder",
    "encoder_id",
    "iou",
    "load_encoder",
    "mask_frames",
    "reference_embeddings",
    "task_reward",
    "video_similarity",
]
