"""Stage-1 video generators: a diffusers image-to-video model, an imported file, or a synthetic teacher."""

from nil.reference.generators.base import (
    VideoGenerator,
    list_generators,
    make_generator,
    register_generator,
)

__all__ = ["VideoGenerator", "list_generators", "make_generator", "register_generator"]
