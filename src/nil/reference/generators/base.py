"""The VideoGenerator interface and the registry that picks one by `generator.name` in skill.yaml."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from nil.errors import ConfigError

if TYPE_CHECKING:
    from nil.config import SkillConfig
    from nil.reference.video import Video


@runtime_checkable
class VideoGenerator(Protocol):
    """Turns e0 and a prompt into a reference video (stage 1 of NIL).

    Besides `generate`, every generator states what its output depends on (`cache_params`, folded
    into the bundle's cache key) and what it did (`info`, filled by `generate`, copied into
    reference/meta.json). A generator that knows the ground-truth motion (the synthetic teacher)
    also sets `teacher` to a dict of arrays, written to reference/teacher.npz.
    """

    name: str
    synthetic: bool
    info: dict[str, Any]
    teacher: dict[str, np.ndarray] | None

    def cache_params(self) -> dict[str, Any]:
        """Everything besides e0/prompt/seed/frames/fps that changes the output (model id, file hash, ...)."""
        ...

    def generate(
        self, frame0: np.ndarray, prompt: str, *, num_frames: int | None, fps: float | None, seed: int
    ) -> Video:
        """A video whose frame 0 is ~frame0 ([H,W,3] uint8), ~num_frames long at fps (None: the generator's
        own default; a file keeps its own length and rate)."""
        ...


# A factory builds a generator from the whole skill config (generators need the robot, camera, sim ...).
GeneratorFactory = Callable[["SkillConfig"], VideoGenerator]
_REGISTRY: dict[str, GeneratorFactory] = {}


def register_generator(name: str) -> Callable[[GeneratorFactory], GeneratorFactory]:
    """Decorator: make a factory available as `generator.name: NAME`."""

    def deco(factory: GeneratorFactory) -> GeneratorFactory:
        _REGISTRY[name] = factory
        return factory

    return deco


# Built-in generators, imported on first use: diffusers/torch and mujoco are heavy, each needs one.
_BUILTIN = {
    "diffusers": "nil.reference.generators.diffusers_i2v",
    "file": "nil.reference.generators.file",
    "synthetic": "nil.reference.generators.synthetic",
}


def list_generators() -> list[str]:
    """Names usable as `generator.name`."""
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def make_generator(cfg: SkillConfig) -> VideoGenerator:
    """The generator `cfg.generator.name` names, configured from the skill config."""
    import importlib

    name = cfg.generator.name
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _REGISTRY:
        raise ConfigError(f"generator.name: unknown generator {name!r}; choose one of {list_generators()}")
    return _REGISTRY[name](cfg)
