"""What a Ray worker runs for a sweep: one reference generation or one skill's pipeline.

The task functions are named as "module:function" strings resolved inside the worker (tests may pass a
callable instead), and the task's stdout/stderr go to the skill's sweep.log.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nil.config import load_config
from nil.errors import NilError
from nil.paths import SkillPaths
from nil.scale.references import link_stage1

DEFAULT_TASK = "nil.evaluation.pipeline:run_skill"
DEFAULT_REFERENCE = "nil.reference.bundle:generate_reference"
LOG_FILE = "sweep.log"


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


def _run_task(
    kind: str, fn: Callable[..., Any] | str | None, directory: str, steps: int | None, link_from: str | None
) -> dict[str, Any]:
    """What a Ray worker runs: a reference generation or one skill's pipeline, printing to its sweep.log."""
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
