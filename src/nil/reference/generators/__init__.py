"""Stage-1 video generators: a diffusers image-to-video model, an imported file, or a synthetic teacher."""

from nil.reference.generators.base import GENERATORS, GeneratorResult, VideoGenerator, make_generator

__all__ = ["GENERATORS", "GeneratorResult", "VideoGenerator", "make_generator"]
