"""`nil sweep SWEEP.yaml`: many skills on Ray (robots x skills x seeds x reward ablations) + a results page.

This module is the driver: it expands the sweep file (`nil.scale.spec`, `nil.scale.expand`), submits one
Ray task per shared reference and per skill (`nil.scale.worker`; stage-1 sharing in
`nil.scale.references`), retries, records each skill's status and keeps sweep.csv / index.html current
(`nil.scale.results`). Each skill's task calls the pipeline (`nil.evaluation.pipeline.run_skill`:
generate -> segment -> train -> eval -> report, each stage cached, training resumed from checkpoints).
Ray does the scheduling; NIL only submits, retries and records.

Failures stay isolated: a task that raises (or whose worker dies) is resubmitted up to `max_retries` times,
then the skill is marked failed with its error (type + message; the traceback is in <skill>/sweep.log)
and the sweep goes on. A finished skill leaves <skill>/sweep_status.json with the hash of its config and
step budget; re-running the sweep skips those and reruns the rest (whose pipelines resume from their
caches and checkpoints).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nil.config import config_to_dict, save_config
from nil.errors import ConfigError, NilError
from nil.io import atomic_write_json, atomic_write_text, sha256_json
from nil.paths import SkillPaths
from nil.scale.expand import SweepSkill, expand_sweep
from nil.scale.results import SkillResult, write_results
from nil.scale.spec import Resources, SweepSpec, load_sweep
from nil.scale.worker import DEFAULT_REFERENCE, DEFAULT_TASK, LOG_FILE, _run_task

STATUS_FILE = "sweep_status.json"


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
                        f"[sweep] {job.kind} {job.key} attempt {job.attempt} failed "
                        f"({_error_text(error)}); retrying"
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
    """`nil sweep`: run a sweep file on Ray, say where the results went; exits non-zero if a skill failed."""
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
