"""`nil sweep SWEEP.yaml`: many skills on Ray (robots x skills x seeds x reward ablations), with a results page.

A sweep file names a base skill config and the things to vary. Its axes (dotted config keys -> lists of
values) and its named variants (override dicts) expand, as a product, into one skill folder each under the
sweep workspace, each with its own validated skill.yaml. Every config is validated before anything
launches, so a misspelt key fails the whole sweep up front, naming the key and the variant.

Each skill is one Ray task that calls the pipeline (`nil.evaluation.pipeline.run_skill`: generate ->
segment -> train -> eval -> report, each stage cached, training resumed from checkpoints). Ray does the
scheduling; NIL only submits, retries and records.

Stage 1 is shared. Skills whose configs agree on everything the reference depends on (`STAGE1_FIELDS`:
robot, skill text, prompt template, camera, generator incl. its seed and retiming) form one group. The
group's reference is generated once, as its own Ray task, in `<out>/_references/<robot>-<key>/`; then every
skill of the group gets hard links (copies across file systems) of its frame0 files and reference/ folder
before its pipeline starts. The reference bundle's own cache (reference/meta.json) then sees a valid
reference and skips generation. Stages write atomically (temp file + rename), so a stage that does rewrite
a file replaces the link in that skill's folder and never touches the shared copy.

Failures stay isolated: a task that raises (or whose worker dies) is resubmitted up to `max_retries` times,
then the skill is marked failed with its error (type + message; the traceback is in <skill>/sweep.log)
and the sweep goes on. A finished skill leaves <skill>/sweep_status.json with the hash of its config and
step budget; re-running the sweep skips those and reruns the rest (whose pipelines resume from their
caches and checkpoints).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import itertools
import json
import logging
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nil.config import (
    SkillConfig,
    config_to_dict,
    format_validation_error,
    load_config,
    parse_config,
    read_yaml_mapping,
    save_config,
)
from nil.errors import ConfigError, NilError
from nil.io import atomic_write_json, atomic_write_text, sha256_json
from nil.paths import SkillPaths
from nil.scale.results import SkillResult, write_results

# Module-level indirection: what a skill task and a reference task run, as "module:function" strings that
# are resolved inside the Ray worker (tests may pass a callable instead).
DEFAULT_TASK = "nil.evaluation.pipeline:run_skill"
DEFAULT_REFERENCE = "nil.reference.bundle:generate_reference"

# The config sections/keys stage 1 (first frame, video, retiming) depends on. Skills that agree on these
# share one generated reference. Everything else (segmenter, encoder, reward, rl, sim, the RL seed) is stage 2.
STAGE1_FIELDS = ("robot", "skill", "prompt_template", "camera", "generator")

STATUS_FILE = "sweep_status.json"
LOG_FILE = "sweep.log"
REFERENCES_DIR = "_references"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


# --------------------------------------------------------------------------------------------- sweep file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Resources(_Strict):
    """What one Ray task asks the scheduler for."""

    num_cpus: float = Field(default=1.0, gt=0)
    num_gpus: float = Field(default=0.0, ge=0)


class Variant(_Strict):
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


class RayOptions(_Strict):
    """How to reach Ray: a local Ray with num_cpus CPUs (default: all), or a cluster at address."""

    address: str | None = None
    num_cpus: int | None = Field(default=None, ge=1)
    num_gpus: int | None = Field(default=None, ge=0)


class SweepSpec(_Strict):
    """A sweep file (YAML). Relative `base` paths are relative to the sweep file; `out` to the working directory."""

    name: str | None = None
    preset: Literal["cpu", "gpu"] | None = None  # `nil init --preset` defaults under the base
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


# --------------------------------------------------------------------------------------------- expansion


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


def stage1_key(cfg: SkillConfig) -> str:
    """Hash of the config parts that stage 1 depends on: equal keys share one reference."""
    d = config_to_dict(cfg)
    return sha256_json({k: d[k] for k in STAGE1_FIELDS})[:10]


def _load_base(spec: SweepSpec, sweep_dir: Path, source: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if spec.preset is not None:
        from nil.skill import PRESETS

        data = copy.deepcopy(PRESETS[spec.preset])
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
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: base {p} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: base {p} must hold a mapping of config sections")
        _apply(data, loaded, f"{source} base")
    else:
        _apply(data, spec.base, f"{source} base")
    _apply(data, spec.overrides, f"{source} set")
    parse_config(copy.deepcopy(data), f"{source} (base)")  # a bad base is reported as the base, not per skill
    return data


def expand_sweep(
    spec: SweepSpec, out: Path, *, sweep_dir: Path = Path("."), source: str = "sweep"
) -> list[SweepSkill]:
    """Every skill of the sweep (variants x axes product), each config validated; raises ConfigError up front."""
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
            cfg = parse_config(data, where)
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


# --------------------------------------------------------------------------------------------- worker side


def _resolve(fn: Callable[..., Any] | str | None, default: str) -> Callable[..., Any]:
    spec = default if fn is None else fn
    if callable(spec):
        return spec
    module, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise NilError(
            f"sweep task {spec!r} cannot be imported ({e}); is nil installed on every Ray node?"
        ) from e


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (fd level, so subprocesses too) to `path` while the task runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with open(path, "ab", buffering=0) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _jsonable(obj: Any) -> Any:
    def default(o: Any) -> Any:
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    return json.loads(json.dumps(obj, default=default)) if obj is not None else {}


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


def _run_task(
    kind: str, fn: Callable[..., Any] | str | None, directory: str, steps: int | None, link_from: str | None
) -> dict[str, Any]:
    """What a Ray worker runs: a reference generation or one skill's pipeline, output going to its sweep.log."""
    from nil.gl import ensure_offscreen_gl

    ensure_offscreen_gl()
    d = Path(directory)
    t0 = time.time()
    with _output_to(d / LOG_FILE):
        print(
            f"=== {kind} task on {os.uname().nodename} pid {os.getpid()} at {time.strftime('%F %T')}",
            flush=True,
        )
        try:
            if kind == "reference":
                result = _resolve(fn, DEFAULT_REFERENCE)(SkillPaths(d), load_config(d))
            else:
                if link_from is not None:
                    n = link_stage1(Path(link_from), d)
                    print(f"linked {n} stage-1 files from {link_from}", flush=True)
                result = _resolve(fn, DEFAULT_TASK)(d, steps=steps, force=False)
        except BaseException:
            traceback.print_exc()
            raise
        wall = time.time() - t0
        print(f"=== {kind} task finished in {wall:.1f} s", flush=True)
    return {"result": _jsonable(result), "wall_s": wall}


# --------------------------------------------------------------------------------------------- driver side


def _done_hash(skill: SweepSkill, steps: int | None) -> str:
    return sha256_json({"config": config_to_dict(skill.config), "steps": steps})


def _read_status(skill: SweepSkill) -> dict[str, Any] | None:
    p = skill.directory / STATUS_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _error_text(exc: BaseException) -> str:
    """'Type: first line of message' of the exception a task raised (unwrapping Ray's wrapper)."""
    cause = getattr(exc, "cause", None)
    e = cause if isinstance(cause, BaseException) else exc
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}".strip().rstrip(":")


def _start_ray(address: str | None, num_cpus: int | None, num_gpus: int | None) -> bool:
    """Connect to (or start) Ray quietly; returns whether this call started it (and must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if address:
        # the workers of a cluster do not inherit this shell: pass what picks GL and finds the robots
        env = {
            k: os.environ[k] for k in ("MUJOCO_GL", "MENAGERIE_ROOT", "PYOPENGL_PLATFORM") if k in os.environ
        }
        ray.init(address=address, runtime_env={"env_vars": env} if env else None, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus, **kwargs)
    return True


def _check_fits(res: Resources, what: str) -> None:
    import ray

    total = ray.cluster_resources()
    for key, want in (("CPU", res.num_cpus), ("GPU", res.num_gpus)):
        have = float(total.get(key, 0))
        if want > have:
            raise ConfigError(
                f"{what} asks each task for {want:g} {key}s but the Ray cluster has {have:g}; "
                "lower it in the sweep file, or give Ray more (--num-cpus, --address)"
            )


@dataclass
class _Job:
    kind: Literal["reference", "skill"]
    key: str  # stage-1 key or skill name
    attempt: int = 1


@dataclass
class SweepRun:
    """What `run_sweep` did: the results in expansion order and where it wrote them."""

    out: Path
    results: list[SkillResult]
    references: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage-1 key -> status of its task

    @property
    def failed(self) -> list[SkillResult]:
        """The skills that failed after their retries."""
        return [r for r in self.results if r.status == "failed"]


def run_sweep(
    sweep: SweepSpec | str | Path,
    out: str | Path | None = None,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    task: Callable[..., Any] | str | None = None,
    reference_task: Callable[..., Any] | str | None = None,
    progress: bool = True,
) -> SweepRun:
    """Expand, validate and run a sweep on Ray; writes <out>/sweep.csv and <out>/index.html.

    `task(directory, steps=, force=)` runs one skill (default: the pipeline's run_skill);
    `reference_task(paths, cfg)` generates one shared reference (default: the bundle's generate_reference).
    An already-initialised Ray (e.g. a test's) is used as is and left running.
    """
    if isinstance(sweep, SweepSpec):
        spec, sweep_dir, source = sweep, Path("."), "sweep"
    else:
        spec, sweep_dir, source = load_sweep(sweep), Path(sweep).resolve().parent, str(sweep)
    if out is None:
        out = spec.out or Path("sweeps") / (
            spec.name or (Path(sweep).stem if not isinstance(sweep, SweepSpec) else "sweep")
        )
    out = Path(out).resolve()
    title = spec.name or out.name
    # resolved here, in the driver, so that a patched DEFAULT_TASK reaches the workers
    task = DEFAULT_TASK if task is None else task
    reference_task = DEFAULT_REFERENCE if reference_task is None else reference_task
    skills = expand_sweep(spec, out, sweep_dir=sweep_dir, source=source)
    axis_keys = list(spec.axes)

    # Everything is validated: now write the folders, and see what earlier runs finished.
    out.mkdir(parents=True, exist_ok=True)
    if not isinstance(sweep, SweepSpec):
        atomic_write_text(out / "sweep.yaml", Path(sweep).read_text())
    results: dict[str, SkillResult] = {}
    pending: list[SweepSkill] = []
    for s in skills:
        r = SkillResult(name=s.name, directory=s.directory, variant=s.variant, axes=s.axes)
        results[s.name] = r
        prev = _read_status(s)
        if prev and prev.get("status") == "done" and prev.get("hash") == _done_hash(s, spec.steps):
            r.status, r.metrics, r.wall_s = "cached", prev.get("metrics") or {}, prev.get("wall_s")
        else:
            if prev and prev.get("hash") not in (None, _done_hash(s, spec.steps)):
                print(f"[sweep] {s.name}: its config changed since the last run; running it again")
            save_config(s.config, SkillPaths(s.directory).config)
            pending.append(s)
    ordered = [results[s.name] for s in skills]
    write_results(ordered, out, axis_keys, title)
    n_cached = len(skills) - len(pending)
    print(
        f"[sweep] {title}: {len(skills)} skills ({n_cached} finished earlier, {len(pending)} to run) -> {out}"
    )
    run = SweepRun(out=out, results=ordered)
    if not pending:
        return run

    groups: dict[str, list[SweepSkill]] = {}
    for s in pending:
        groups.setdefault(s.stage1_key, []).append(s)
    by_name = {s.name: s for s in pending}
    ref_dirs = {k: g[0].reference_dir for k, g in groups.items()}

    started = _start_ray(address or spec.ray.address, num_cpus or spec.ray.num_cpus, spec.ray.num_gpus)
    try:
        import ray

        if not (address or spec.ray.address):
            _check_fits(spec.resources, "resources")
            if spec.share_references:
                _check_fits(spec.reference_resources or spec.resources, "reference_resources")
        remote = ray.remote(_run_task)
        res = spec.resources
        ref_res = spec.reference_resources or res
        # Ray's own retries are off (max_retries=0): the loop below counts attempts and keeps every error.
        skill_opts = dict(num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_retries=0)
        ref_opts = dict(num_cpus=ref_res.num_cpus, num_gpus=ref_res.num_gpus, max_retries=0)
        inflight: dict[Any, _Job] = {}

        def submit(job: _Job) -> None:
            if job.kind == "reference":
                ref = remote.options(**ref_opts, name=f"nil-reference-{job.key}").remote(
                    "reference", reference_task, str(ref_dirs[job.key]), None, None
                )
            else:
                s = by_name[job.key]
                link = str(s.reference_dir) if spec.share_references else None
                ref = remote.options(**skill_opts, name=f"nil-skill-{s.name}").remote(
                    "skill", task, str(s.directory), spec.steps, link
                )
                results[s.name].attempts = job.attempt
            inflight[ref] = job

        if spec.share_references:
            for key, group in groups.items():
                save_config(group[0].config, SkillPaths(ref_dirs[key]).config)
                submit(_Job("reference", key))
        else:
            for s in pending:
                submit(_Job("skill", s.name))

        with _progress(progress, len(pending), title) as bar:
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                job = inflight.pop(ready[0])
                try:
                    value = ray.get(ready[0])
                    error = None
                except Exception as e:  # the task raised, or its worker died
                    value, error = None, e
                if error is not None and job.attempt <= spec.max_retries:
                    print(
                        f"[sweep] {job.kind} {job.key} attempt {job.attempt} failed ({_error_text(error)}); retrying"
                    )
                    submit(_Job(job.kind, job.key, job.attempt + 1))
                    continue
                if job.kind == "reference":
                    run.references[job.key] = {
                        "dir": str(ref_dirs[job.key]),
                        "attempts": job.attempt,
                        "error": _error_text(error) if error else "",
                    }
                    if error is None:
                        for s in groups[job.key]:
                            submit(_Job("skill", s.name))
                    else:
                        for s in groups[job.key]:
                            r = results[s.name]
                            r.status = "failed"
                            r.error = f"reference ({ref_dirs[job.key].name}) failed: {_error_text(error)}"
                            _write_status(s, r, spec.steps)
                            bar(r)
                else:
                    s, r = by_name[job.key], results[job.key]
                    if error is None:
                        r.status, r.error = "done", ""
                        r.metrics, r.wall_s = value["result"] or {}, value["wall_s"]
                    else:
                        r.status, r.error = "failed", _error_text(error)
                    _write_status(s, r, spec.steps)
                    bar(r)
                write_results(ordered, out, axis_keys, title)
    finally:
        if started:
            import ray

            ray.shutdown()
        write_results(ordered, out, axis_keys, title)
    return run


def _write_status(s: SweepSkill, r: SkillResult, steps: int | None) -> None:
    atomic_write_json(
        s.directory / STATUS_FILE,
        {
            "status": r.status,
            "hash": _done_hash(s, steps),
            "steps": steps,
            "attempts": r.attempts,
            "error": r.error,
            "wall_s": r.wall_s,
            "metrics": r.metrics,
            "finished": time.strftime("%F %T"),
        },
    )


@contextlib.contextmanager
def _progress(enabled: bool, total: int, title: str) -> Iterator[Callable[[SkillResult], None]]:
    """A rich progress bar over the skills; yields a callback that records one finished skill."""
    if not enabled:
        yield lambda r: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    counts = {"done": 0, "failed": 0}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    ) as prog:
        tid = prog.add_task(f"sweep {title}", total=total, info="")

        def advance(r: SkillResult) -> None:
            counts["failed" if r.status == "failed" else "done"] += 1
            prog.console.print(f"  {r.name}: {r.status}" + (f" ({r.error})" if r.error else ""))
            prog.update(tid, advance=1, info=f"{counts['done']} done, {counts['failed']} failed")

        yield advance


def sweep_command(
    sweep_file: Path, address: str | None = None, out: Path | None = None, num_cpus: int | None = None
) -> SweepRun:
    """`nil sweep`: run a sweep file on Ray, print where the results went; exits non-zero if a skill failed."""
    run = run_sweep(sweep_file, out, address=address, num_cpus=num_cpus)
    from rich.console import Console

    con = Console()
    counts = {s: sum(r.status == s for r in run.results) for s in ("done", "cached", "failed")}
    con.print(f"sweep: {counts['done']} done, {counts['cached']} finished earlier, {counts['failed']} failed")
    con.print(f"results: {run.out / 'sweep.csv'}\nindex:   {run.out / 'index.html'}")
    if run.failed:
        names = ", ".join(r.name for r in run.failed[:5]) + (" ..." if len(run.failed) > 5 else "")
        raise NilError(
            f"{len(run.failed)} of {len(run.results)} skills failed ({names}); their errors are in "
            f"{run.out / 'sweep.csv'} and <skill>/{LOG_FILE}; run the same command again to retry them"
        )
    return run
