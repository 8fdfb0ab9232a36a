"""Shared stage 1: skills whose configs agree on what the reference depends on share one generated reference.

The grouping key hashes the config sections the reference bundle's cache key is computed from
(`nil.reference.bundle.CACHE_KEY_SECTIONS`), so the two cannot drift apart. A group's reference is
generated once in `<out>/_references/<robot>-<key>/`; every skill of the group then gets hard links
(copies across file systems) of its frame0 files and reference/ folder before its pipeline starts, and
the bundle's own cache (reference/meta.json) sees a valid reference and skips generation. Stages write
atomically (temp file + rename), so a stage that does rewrite a file replaces the link in that skill's
folder and never touches the shared copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from nil.config import SkillConfig, config_to_dict
from nil.io import sha256_json
from nil.paths import SkillPaths
from nil.reference.bundle import CACHE_KEY_SECTIONS

# The config sections stage 1 (first frame, video, retiming) depends on; everything else (segmenter,
# encoder, reward, rl, sim, the RL seed) is stage 2.
STAGE1_FIELDS = CACHE_KEY_SECTIONS
REFERENCES_DIR = "_references"


def stage1_key(cfg: SkillConfig) -> str:
    """Hash of the config parts that stage 1 depends on: equal keys share one reference."""
    d = config_to_dict(cfg)
    return sha256_json({k: d.get(k) for k in STAGE1_FIELDS})[:10]


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if os.path.samefile(src, dst):
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)


def stage1_files(ref_dir: Path) -> list[Path]:
    """The files of a generated reference, relative to its folder: frame0 files and all of reference/."""
    paths = SkillPaths(ref_dir)
    files = [p.relative_to(ref_dir) for p in (paths.frame0, paths.frame0_mask) if p.is_file()]
    if paths.reference.is_dir():
        files += sorted(
            p.relative_to(ref_dir)
            for p in paths.reference.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
    return files


def link_stage1(ref_dir: Path, skill_dir: Path) -> int:
    """Hard-link (or copy) a shared reference into a skill folder; returns the number of files placed."""
    files = stage1_files(ref_dir)
    meta = SkillPaths(ref_dir).meta.relative_to(ref_dir)
    # meta.json last: a reader never sees a meta that vouches for files not yet in place
    files = [f for f in files if f != meta] + ([meta] if meta in files else [])
    for rel in files:
        _link_or_copy(ref_dir / rel, skill_dir / rel)
    return len(files)
