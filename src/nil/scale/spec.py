"""The sweep file: its schema (pydantic models) and how it is read and validated.

A sweep file names a base skill config and the things to vary. Its axes (dotted config keys -> lists of
values) and its named variants (override dicts) expand, as a product, into one skill each
(`nil.scale.expand`). Unknown keys and bad values fail with a ConfigError naming the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from nil.config import StrictModel, format_validation_error, read_yaml_mapping
from nil.errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class Resources(StrictModel):
    """What one Ray task asks the scheduler for."""

    num_cpus: float = Field(default=1.0, gt=0)
    num_gpus: float = Field(default=0.0, ge=0)


class Variant(StrictModel):
    """A named set of config overrides (dotted keys or nested sections), e.g. an ablation arm."""

    name: str
    overrides: dict[str, Any] = Field(default_factory=dict, alias="set")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(
                f"variant name {v!r} must be letters, digits, '_', '.', '+', '-' (not starting with '_')"
            )
        return v


class RayOptions(StrictModel):
    """How to reach Ray: a local Ray with num_cpus CPUs (default: all), or a cluster at address."""

    address: str | None = None
    num_cpus: int | None = Field(default=None, ge=1)
    num_gpus: int | None = Field(default=None, ge=0)


class SweepSpec(StrictModel):
    """A sweep file (YAML). A relative `base` is relative to the sweep file, `out` to the working folder."""

    name: str | None = None
    # `nil init --preset` values under the base
    preset: Literal["cpu", "gpu", "paper", "demo"] | None = None
    base: str | dict[str, Any] = Field(
        default_factory=dict
    )  # path to a skill.yaml (or its folder), or a mapping
    overrides: dict[str, Any] = Field(
        default_factory=dict, alias="set"
    )  # applied to every skill, on the base
    axes: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)  # key -> values
    variants: list[Variant] = Field(default_factory=list)  # product with the axes
    steps: int | None = Field(default=None, ge=1)  # env steps per skill (overrides rl.total_steps)
    resources: Resources = Resources()
    reference_resources: Resources | None = None  # stage-1 tasks; default: `resources`
    max_retries: int = Field(default=1, ge=0)
    share_references: bool = True
    out: str | None = None
    ray: RayOptions = RayOptions()

    @field_validator("axes")
    @classmethod
    def _axes_ok(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key in v:
            if not key or any(not p for p in key.split(".")):
                raise ValueError(f"axis {key!r} must be a dotted config key such as reward.zeta")
        return v

    @model_validator(mode="after")
    def _variants_unique(self) -> SweepSpec:
        names = [v.name for v in self.variants]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"variant names must be unique, repeated: {', '.join(dup)}")
        return self


def parse_sweep(data: dict[str, Any] | None, source: str = "") -> SweepSpec:
    """Validate a mapping into a SweepSpec; a ConfigError names the offending key."""
    try:
        return SweepSpec.model_validate(data or {})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, "sweep file")) from None


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep YAML file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no sweep file at {p}; see examples/sweep_demo.yaml for one")
    return parse_sweep(read_yaml_mapping(p, "sweep sections (base, axes, variants, ...)"), str(p))
