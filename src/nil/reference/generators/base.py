"""The VideoGenerator interface, its GeneratorResult, and the GENERATORS registry behind `generator.name`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from nil.registry import Registry

if TYPE_CHECKING:
    from nil.config import SkillConfig
    from nil.reference.video import Video


@dataclass
class GeneratorResult:
    """What a generator made: the video, what it did (copied into reference/meta.json) and, for a
    generator that knows the ground-truth motion (the synthetic teacher), arrays for teacher.npz."""

    video: Video
    info: dict[str, Any] = field(default_factory=dict)
    teacher: dict[str, np.ndarray] | None = None


@runtime_checkable
class VideoGenerator(Protocol):
    """Turns e0 and a prompt into a reference video (stage 1 of NIL).

    Besides `generate`, every generator states what its output depends on (`cache_params`, folded
    into the bundle's cache key). `generate` returns a GeneratorResult and sets no attributes.
    """

    name: str
    synthetic: bool

    def cache_params(self) -> dict[str, Any]:
        """Everything besides e0/prompt/seed/frames/fps that changes the output (model id, file hash, ...)."""
        ...

    def generate(
        self, frame0: np.ndarray, prompt: str, *, num_frames: int | None, fps: float | None, seed: int
    ) -> GeneratorResult:
        """A video whose frame 0 is ~frame0 ([H,W,3] uint8), ~num_frames long at fps (None: the generator's
        own default; a file keeps its own length and rate)."""
        ...


# A factory builds a generator from the whole skill config (generators need the robot, camera, sim ...).
GeneratorFactory = Callable[["SkillConfig"], VideoGenerator]

# Built-in generators are imported on first use: diffusers/torch and mujoco are heavy, each needs one.
GENERATORS: Registry[GeneratorFactory] = Registry(
    "generator.name",
    lazy={
        "diffusers": "nil.reference.generators.diffusers_i2v",
        "file": "nil.reference.generators.file",
        "synthetic": "nil.reference.generators.synthetic",
    },
)


def make_generator(cfg: SkillConfig) -> VideoGenerator:
    """The generator `cfg.generator.name` names, configured from the skill config."""
    return GENERATORS.get(cfg.generator.name)(cfg)
