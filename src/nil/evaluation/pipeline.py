"""`nil run DIR` and `nil demo`: every stage in order, each skipped when its own cache is valid.

generate -> segment -> embeddings (only with the video term) -> train -> eval -> report. Each stage's
own cache decides (reference/meta.json cache key, segment.json, the embeddings file, checkpoints,
metrics.json cache key, the report's input fingerprint); this module only orders them, tells the user
which ran and which were skipped, and resumes training from checkpoints, so a killed run continues
where it stopped. When stage 1 or the masks are redone, existing checkpoints belong to the old
reference, so training starts over (the trainer moves the old run to train.prev/).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nil.config import SkillConfig, load_config, save_config
from nil.errors import ConfigError
from nil.paths import SkillPaths

DEMO_SKILL_DIR = "ant_walking"


def demo_config(overrides: list[str] | None = None) -> SkillConfig:
    """The skill config `nil demo` writes: the `demo` preset (nil.presets, which says why each value)."""
    from nil.skill import build_config

    return build_config(
        robot="ant", skill="walking", generator="synthetic", preset="demo", overrides=list(overrides or [])
    )


def _fingerprint(*files: Path) -> tuple:
    """Content hashes (not mtimes: a cached stage may rewrite an identical file)."""
    from nil.io import sha256_file

    out: list = []
    for p in files:
        if p.is_dir():
            out.append(tuple(sorted((q.name, sha256_file(q)) for q in p.iterdir() if q.is_file())))
        else:
            out.append(sha256_file(p) if p.exists() else None)
    return tuple(out)


def _trained_step(paths: SkillPaths) -> int | None:
    """Step of the newest good checkpoint (None when there is none)."""
    from nil.errors import CheckpointError
    from nil.rl.checkpoint import latest_good, list_checkpoints

    if not list_checkpoints(paths.checkpoints):
        return None
    try:
        _, manifest = latest_good(paths.checkpoints, names=["policy"], warn=None)
    except CheckpointError:
        return None
    step = manifest.get("step")
    return int(step) if step is not None else None


class _Stages:
    """Records and prints what each stage did."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.console = Console(quiet=quiet)
        self.log: dict[str, str] = {}
        self.times: dict[str, float] = {}

    def begin(self, name: str) -> float:
        self.console.rule(f"[bold]{name}")
        return time.perf_counter()

    def end(self, name: str, t0: float, status: str) -> None:
        self.log[name] = status
        self.times[name] = round(time.perf_counter() - t0, 2)
        colour = "green" if status.startswith("skipped") else "cyan"
        self.console.print(f"[{colour}]{name}: {status}[/{colour}] ({self.times[name]:.1f} s)")


def run_skill(
    directory: str | Path,
    steps: int | None = None,
    force: bool = False,
    *,
    episodes: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run every stage of one skill folder in order, skipping each whose cache is valid; return metrics."""
    from nil.evaluation.evaluate import DEFAULT_EPISODES, evaluate, evaluation_is_current
    from nil.evaluation.report import report_is_current, write_report
    from nil.reference.bundle import generate_reference
    from nil.reference.segment import segment_reference

    paths = SkillPaths(Path(directory))
    cfg = load_config(paths.config)
    episodes = DEFAULT_EPISODES if episodes is None else episodes
    st = _Stages(quiet)
    t_all = time.perf_counter()

    # 1. reference video (frame, generate, retime)
    t0 = st.begin("generate")
    before = _fingerprint(paths.retimed)  # not teacher.npz: nothing that decides training reads it
    generate_reference(paths, cfg, force=force)
    upstream_changed = _fingerprint(paths.retimed) != before
    st.end("generate", t0, "ran" if upstream_changed else "skipped (cached)")

    # 2. reference masks
    t0 = st.begin("segment")
    before = _fingerprint(paths.masks)
    segment_reference(paths, cfg, force=force)
    seg_changed = _fingerprint(paths.masks) != before
    upstream_changed |= seg_changed
    st.end("segment", t0, "ran" if seg_changed else "skipped (cached)")

    # 3. reference embeddings (only the video term needs them)
    if cfg.reward.use_video:
        from nil.reward import reference_embeddings

        t0 = st.begin("embeddings")
        before = _fingerprint(paths.embeddings)
        reference_embeddings(paths, cfg.encoder)
        emb_changed = _fingerprint(paths.embeddings) != before
        upstream_changed |= emb_changed
        st.end("embeddings", t0, "ran" if emb_changed else "skipped (cached)")

    # 4. training (resumed from the last good checkpoint)
    from nil.rl import train

    t0 = st.begin("train")
    target = int(steps or cfg.rl.total_steps)
    have = _trained_step(paths)
    if have is not None and have >= target and not force and not upstream_changed:
        st.end("train", t0, f"skipped (checkpoint at step {have} >= {target})")
    else:
        resume = have is not None and not force and not upstream_changed
        if have is not None and not resume:
            why = "--force" if force else "the reference changed"
            st.console.print(
                f"[yellow]training starts over ({why}); the previous run goes to train.prev/[/yellow]"
            )
        summary = train(paths, cfg, steps=steps, resume=resume)
        if summary.get("interrupted"):
            # the trainer caught SIGINT/SIGTERM and saved a checkpoint: stop, do not evaluate a partial run
            st.end("train", t0, f"interrupted at step {summary.get('step')}")
            st.console.print(
                f"[yellow]training was interrupted at step {summary.get('step')}; run `nil run "
                f"{paths.root}` again to resume from its checkpoint[/yellow]"
            )
            raise KeyboardInterrupt
        st.end(
            "train",
            t0,
            f"ran ({'resumed at step ' + str(have) if resume else 'from scratch'} -> "
            f"step {summary.get('step')})",
        )

    # 5. evaluation
    t0 = st.begin("eval")
    if not force and evaluation_is_current(paths, episodes):
        import json

        metrics = json.loads(paths.metrics.read_text())
        st.end("eval", t0, "skipped (cached)")
    else:
        metrics = evaluate(paths, episodes, force=True, quiet=quiet)
        st.end("eval", t0, "ran")

    # 6. report
    t0 = st.begin("report")
    if not force and report_is_current(paths):
        st.end("report", t0, "skipped (cached)")
    else:
        write_report(paths)
        st.end("report", t0, "ran")

    total = time.perf_counter() - t_all
    st.console.print("stages: " + ", ".join(f"{k} {v}" for k, v in st.log.items()))
    st.console.print(f"done in {total:.0f} s; report: {paths.report}")
    result = {k: v for k, v in metrics.items() if k not in ("per_frame_iou", "per_frame_iou_mean", "notes")}
    result["stages"] = dict(st.log)
    result["stage_seconds"] = dict(st.times)
    result["report"] = str(paths.report)
    return result


def run_command(
    directory: Path, steps: int | None = None, force: bool = False, episodes: int | None = None
) -> dict[str, Any]:
    """CLI: `nil run DIR`."""
    paths = SkillPaths(Path(directory))
    if not paths.config.exists():
        raise ConfigError(
            f"no skill.yaml in {paths.root}; create one with `nil init {paths.root} --robot NAME "
            "--skill TEXT` (or try `nil demo`)"
        )
    from nil.evaluation.summary import print_summary

    out = run_skill(paths.root, steps=steps, force=force, episodes=episodes)
    print_summary(out)
    print(f"report: {paths.report}")
    return out


def demo_command(out: Path, steps: int | None = None) -> dict[str, Any]:
    """CLI: `nil demo [--out DIR]`: init the demo skill (or resume it if it exists) and run everything."""
    from rich.console import Console

    console = Console()
    paths = SkillPaths(Path(out) / DEMO_SKILL_DIR)
    if paths.config.exists():
        console.print(f"continuing the demo in {paths.root} (delete it to start over)")
    else:
        save_config(demo_config(), paths.root)
        console.print(f"wrote {paths.config}")
    console.print(
        "[bold]NIL demo[/bold]: Ant robot, synthetic teacher reference (a simulated gait rendered in "
        "MuJoCo, standing in for a video model), flow segmenter, reward = mask IoU + a speed cue from the "
        "video's floor + regularisers, SAC on the CPU. No downloads."
    )
    t0 = time.perf_counter()
    from nil.evaluation.summary import print_summary

    m = run_skill(paths.root, steps=steps)
    print_summary(m)
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    print(f"report: {paths.report}")
    return m
