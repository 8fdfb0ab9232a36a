"""Reference segmentation: robot masks of every retimed reference frame, prompted by e0's exact mask.

Segmenters: "sam2" (transformers Sam2VideoModel), "flow" (offline optical-flow propagation with
colour refinement), "background" (static-camera background difference); "auto" picks SAM2 when its
weights are on this machine, else flow. See stage.py for the on-disk outputs and the cache.
"""

from nil.reference.segment.base import Segmenter, iou, resize_masks
from nil.reference.segment.stage import (
    load_masks,
    make_segmenter,
    read_first_mask,
    resolve_segmenter_name,
    segment_command,
    segment_reference,
)

__all__ = [
    "Segmenter",
    "iou",
    "load_masks",
    "make_segmenter",
    "read_first_mask",
    "resize_masks",
    "resolve_segmenter_name",
    "segment_command",
    "segment_reference",
]
