"""Expanding a sweep into skills: the variants x axes product, each with a validated config and folder.

Every config is validated before anything launches, so a misspelt key fails the whole sweep up front,
naming the key and the variant. Each skill also gets its stage-1 key (`nil.scale.references`), which
decides which skills share one generated reference.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nil.config import SkillConfig, config_to_dict, parse_config, read_yaml_mapping
from nil.errors import ConfigError, NilError
from nil.io import sha256_json
from nil.scale.references import REFERENCES_DIR, stage1_key
from nil.scale.spec import SweepSpec, Variant
from nil.skill import resolve_defaults


@dataclass
class SweepSkill:
    """One expanded skill of a sweep: its name, overrides, validated config and folders."""

    name: str
    variant: str | None
    axes: dict[str, Any]
    config: SkillConfig
    directory: Path
    stage1_key: str
    reference_dir: Path

    @property
    def config_hash(self) -> str:
        """What a finished run is checked against (with the step budget, see `_done_hash`)."""
        return sha256_json(config_to_dict(self.config))


def _apply(data: dict[str, Any], overrides: dict[str, Any], where: str) -> None:
    """Set dotted keys / merge nested sections of `overrides` into `data` (in place)."""
    for key, value in overrides.items():
        parts = str(key).split(".")
        node = data
        for i, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(
                    f"{where}: {key}: {'.'.join(parts[: i + 1])} is a value, not a config section"
                )
            node = nxt
        last = parts[-1]
        if isinstance(value, dict):
            sub = node.get(last)
            if sub is None:
                sub = node[last] = {}
            elif not isinstance(sub, dict):
                raise ConfigError(f"{where}: {key} is a value, not a config section")
            _apply(sub, value, where)
        else:
            node[last] = copy.deepcopy(value)


def _flat_keys(overrides: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in overrides.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _flat_keys(v, key + ".")
        else:
            out.add(key)
    return out


def _short_hash(obj: Any, n: int = 6) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _slug(value: Any, limit: int = 40) -> str:
    """A file-name-safe, readable form of an axis value (long values keep a hash so they stay distinct)."""
    if isinstance(value, bool):
        s = "true" if value else "false"
    elif isinstance(value, dict):
        s = "-".join(_slug(v, limit) for v in value.values())
    elif isinstance(value, list | tuple):
        s = "-".join(_slug(v, limit) for v in value)
    else:
        s = str(value)
    s = re.sub(r"[^A-Za-z0-9.+-]+", "_", s).strip("_") or "x"
    if len(s) > limit:
        s = f"{s[: limit - 7]}-{_short_hash(value)}"
    return s


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Readable names for axis keys: the last part ('robot.name' -> 'robot'), the full key when ambiguous."""

    def short(k: str) -> str:
        parts = k.split(".")
        return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]

    shorts = {k: short(k) for k in keys}
    counts: dict[str, int] = {}
    for s in shorts.values():
        counts[s] = counts.get(s, 0) + 1
    return {k: (s if counts[s] == 1 else k.replace(".", "_")) for k, s in shorts.items()}


def _load_base(spec: SweepSpec, sweep_dir: Path, source: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if spec.preset is not None:
        from nil.presets import get_preset

        data = get_preset(spec.preset).overrides()
    if isinstance(spec.base, str):
        p = Path(spec.base).expanduser()
        p = p if p.is_absolute() else sweep_dir / p
        if p.is_dir():
            p = p / "skill.yaml"
        if not p.is_file():
            raise ConfigError(
                f"{source}: base: no skill config at {p}; give a skill.yaml path or an inline mapping"
            )
        try:
            loaded = read_yaml_mapping(p, "config sections") or {}
        except ConfigError as e:
            raise ConfigError(f"{source}: base: {e}") from None
        _apply(data, loaded, f"{source} base")
    else:
        _apply(data, spec.base, f"{source} base")
    _apply(data, spec.overrides, f"{source} set")
    parse_config(copy.deepcopy(data), f"{source} (base)")  # a bad base is reported as the base, not per skill
    return data


def expand_sweep(
    spec: SweepSpec, out: Path, *, sweep_dir: Path = Path("."), source: str = "sweep"
) -> list[SweepSkill]:
    """Every skill of the sweep (variants x axes), each config validated; raises ConfigError up front."""
    base = _load_base(spec, sweep_dir, source)
    axis_keys = list(spec.axes)
    shorts = _short_keys(axis_keys)
    for v in spec.variants:
        clash = sorted(_flat_keys(v.overrides) & set(axis_keys))
        if clash:
            raise ConfigError(
                f"{source}: variant {v.name} sets {', '.join(clash)}, which is also an axis; "
                "vary it in one place only"
            )
    variants: list[Variant | None] = list(spec.variants) or [None]
    combos = list(itertools.product(*(spec.axes[k] for k in axis_keys)))
    skills: list[SweepSkill] = []
    for variant in variants:
        for combo in combos:
            axes = dict(zip(axis_keys, combo, strict=True))
            parts = [variant.name] if variant is not None else []
            parts += [f"{shorts[k]}-{_slug(val)}" for k, val in axes.items()]
            name = "__".join(parts) or _slug(spec.name or "base")
            where = (
                f"{source} (variant {variant.name}, skill {name})" if variant else f"{source} (skill {name})"
            )
            data = copy.deepcopy(base)
            if variant is not None:
                _apply(data, variant.overrides, where)
            _apply(data, axes, where)
            # as `nil init` writes it: every robot- and algorithm-derived default filled in, so each
            # skill's skill.yaml is the whole truth of its run
            cfg = parse_config(data, where)
            try:
                cfg = resolve_defaults(cfg)
            except NilError as e:  # e.g. an axis names a robot that cannot be loaded
                raise ConfigError(f"{where}: {e}") from None
            key = stage1_key(cfg)
            ref_dir = out / REFERENCES_DIR / f"{_slug(Path(cfg.robot.name).stem, 24)}-{key}"
            skills.append(
                SweepSkill(name, variant.name if variant else None, axes, cfg, out / name, key, ref_dir)
            )
    seen: dict[str, int] = {}
    for s in skills:  # values that slug alike (e.g. "a b" and "a_b") still get distinct, stable folders
        seen[s.name] = seen.get(s.name, 0) + 1
    for s in skills:
        if seen[s.name] > 1:
            s.name = f"{s.name}__{_short_hash(config_to_dict(s.config))}"
            s.directory = out / s.name
    return skills
