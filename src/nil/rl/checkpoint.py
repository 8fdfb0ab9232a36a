"""Checkpoints that resume: one folder per checkpoint, written atomically, verified by a manifest.

Layout: train/checkpoints/step_000000012345/{agent.pt, replay.pt, policy.pt, manifest.json}.
A checkpoint is written into a hidden temp folder and renamed into place only when complete, so a
killed process leaves either the whole checkpoint or none. manifest.json (written last) records the
sha256 and size of every file; a checkpoint whose manifest is missing or whose files do not match
it is reported and skipped in favour of the previous one. The newest `keep` checkpoints are kept.

Files named in `newest_only` (the trainer passes the replay buffer, by far the largest file) live in
the newest checkpoint only: older ones drop them and their manifest entries once a newer one is
complete, so the disk holds one replay buffer, not `keep` of them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from nil.errors import CheckpointError
from nil.io import atomic_write_json, sha256_file
from nil.paths import SkillPaths

PREFIX = "step_"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def _step_of(p: Path) -> int | None:
    if not p.is_dir() or not p.name.startswith(PREFIX):
        return None
    try:
        return int(p.name[len(PREFIX) :])
    except ValueError:
        return None


def list_checkpoints(root: str | Path) -> list[Path]:
    """Checkpoint folders under `root`, newest (highest step) first; not verified."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(s, p) for p in root.iterdir() if (s := _step_of(p)) is not None]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(
    root: str | Path,
    step: int,
    files: dict[str, object],
    meta: dict | None = None,
    keep: int = 3,
    newest_only: tuple[str, ...] = (),
) -> Path:
    """Write {name: object} with torch.save as one checkpoint at `step`, atomically; prune to `keep`.

    Files named in `newest_only` are then removed from every older checkpoint (see the module docstring).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:012d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        entries = {}
        for name, obj in files.items():
            fp = tmp / f"{name}.pt"
            with open(fp, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            entries[fp.name] = {"sha256": sha256_file(fp), "bytes": fp.stat().st_size}
        manifest = {"format": FORMAT_VERSION, "step": int(step), "files": entries, **(meta or {})}
        atomic_write_json(tmp / MANIFEST, manifest)
        if final.exists():  # a re-save at the same step (e.g. a signal right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _prune(root, keep, newest_only)
    return final


def _strip(ckpt: Path, names: tuple[str, ...]) -> None:
    """Drop files from an older checkpoint; its manifest is rewritten first (never lists a missing file)."""
    import json

    try:
        manifest = json.loads((ckpt / MANIFEST).read_text())
    except (OSError, ValueError):
        return  # partial or corrupt: latest_good skips it anyway
    gone = [f"{n}.pt" for n in names if f"{n}.pt" in manifest.get("files", {})]
    if not gone:
        return
    for fname in gone:
        del manifest["files"][fname]
    manifest["stripped"] = sorted(set(manifest.get("stripped", [])) | set(gone))
    atomic_write_json(ckpt / MANIFEST, manifest)
    for fname in gone:
        (ckpt / fname).unlink(missing_ok=True)


def _prune(root: Path, keep: int, newest_only: tuple[str, ...] = ()) -> None:
    found = list_checkpoints(root)
    for old in found[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    if newest_only:
        for old in found[1:keep]:
            _strip(old, newest_only)
    for stale in root.glob(f".{PREFIX}*.tmp-*"):  # left by a killed writer
        try:
            pid = int(stale.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid != os.getpid():
            shutil.rmtree(stale, ignore_errors=True)


def verify_checkpoint(path: str | Path, names: list[str] | None = None) -> dict:
    """The manifest of a complete, uncorrupted checkpoint; CheckpointError saying what is wrong otherwise.

    `names` limits the hash check to those files (e.g. ["policy"]); all files by default.
    """
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.exists():
        raise CheckpointError(f"checkpoint {path} has no {MANIFEST} (partial write)")
    import json

    try:
        manifest = json.loads(mpath.read_text())
        entries = manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: unreadable manifest ({e})") from None
    wanted = entries.keys() if names is None else [f"{n}.pt" for n in names]
    for fname in wanted:
        fp = path / fname
        if fname not in entries:
            raise CheckpointError(f"checkpoint {path}: {fname} is not in its manifest")
        if not fp.exists():
            raise CheckpointError(f"checkpoint {path}: {fname} is missing")
        if fp.stat().st_size != entries[fname]["bytes"] or sha256_file(fp) != entries[fname]["sha256"]:
            raise CheckpointError(f"checkpoint {path}: {fname} does not match its checksum (corrupt)")
    return manifest


def latest_good(
    root: str | Path, names: list[str] | None = None, warn: Callable[[str], None] | None = print
) -> tuple[Path, dict]:
    """The newest checkpoint that verifies, reporting every newer corrupt one; CheckpointError if none."""
    candidates = list_checkpoints(root)
    if not candidates:
        raise CheckpointError(f"no checkpoint in {root}; train first with `nil train DIR` (without --resume)")
    problems = []
    for path in candidates:
        try:
            return path, verify_checkpoint(path, names)
        except CheckpointError as e:
            problems.append(str(e))
            if warn is not None:
                warn(f"warning: skipping {e}")
    raise CheckpointError(
        f"every checkpoint in {root} is unusable: "
        + "; ".join(problems)
        + "; delete them and train again without --resume"
    )


def load_file(ckpt: Path, name: str, device: torch.device | str = "cpu") -> dict:
    """torch.load one file of a verified checkpoint."""
    try:
        return torch.load(ckpt / f"{name}.pt", map_location=device, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(f"checkpoint {ckpt}: cannot load {name}.pt ({e})") from None


def keeps_best(paths: SkillPaths) -> bool:
    """Whether the skill's config asks for the best in-training policy (rl.keep_best); False without one."""
    from nil.config import load_config

    if not paths.config.exists():  # a bare train/ folder (e.g. a policy teacher's checkpoint)
        return False
    return bool(load_config(paths.config).rl.keep_best)


def policy_checkpoint(paths: SkillPaths, warn: Callable[[str], None] | None = print) -> tuple[Path, dict]:
    """The checkpoint whose policy evaluation and export use, with its manifest.

    The best in-training evaluation's (train/best/) when rl.keep_best is set and one was written, else
    the latest good checkpoint. A best that does not verify is reported and the latest used instead.
    """
    if keeps_best(paths) and list_checkpoints(paths.best):
        try:
            return latest_good(paths.best, names=["policy"], warn=warn)
        except CheckpointError as e:
            if warn is not None:
                warn(f"warning: {e}; using the latest checkpoint instead of the best")
    return latest_good(paths.checkpoints, names=["policy"], warn=warn)


def load_policy(paths: SkillPaths | str | Path, device: torch.device | str = "cpu"):
    """The policy a skill's evaluation and export use (policy_checkpoint), with its observation normaliser."""
    from nil.rl.agents import Policy

    if not isinstance(paths, SkillPaths):
        paths = SkillPaths(Path(paths))
    try:
        ckpt, manifest = policy_checkpoint(paths)
    except CheckpointError as e:
        raise CheckpointError(
            f"{e} (no trained policy for {paths.root}; run `nil train {paths.root}` first)"
        ) from None
    state = load_file(ckpt, "policy", "cpu")
    state["step"] = manifest.get("step")
    return Policy(state, device)
