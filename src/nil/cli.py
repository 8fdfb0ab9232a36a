"""The `nil` command. It only parses arguments and calls one function per command (see docs/architecture.md).

Each command's implementation lives in its layer and is imported lazily so that `nil --help` is fast.
User errors (NilError) are printed as one line without a traceback, with exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from nil.errors import NilError

app = typer.Typer(
    name="nil",
    help="NIL: learn robot motor skills from a generated video, with no motion data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
robots_app = typer.Typer(help="List and inspect robot presets.", invoke_without_command=True)
app.add_typer(robots_app, name="robots")

DirArg = Annotated[Path, typer.Argument(help="skill directory (holds skill.yaml)")]
ForceOpt = Annotated[bool, typer.Option("--force", help="redo this stage even when its cache is valid")]


@app.command()
def doctor(json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """What works here: GL backend, torch device, robots reachable, models found, warp backend."""
    from nil.doctor import run_doctor

    run_doctor(json_out=json_out)


@robots_app.callback()
def robots(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List the robot presets (`nil robots show NAME` for one)."""
    if ctx.invoked_subcommand is None:
        from nil.robots.describe import print_robot_list

        print_robot_list(json_out=json_out)


@robots_app.command("show")
def robots_show(
    name: Annotated[str, typer.Argument(help="preset name or MJCF path")],
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show one robot's spec: model, bodies, control, camera, sizes."""
    from nil.robots.describe import print_robot

    print_robot(name, json_out=json_out)


@app.command()
def frame(
    robot: Annotated[str, typer.Option("--robot", help="preset name or MJCF path")] = "ant",
    out: Annotated[Path, typer.Option("--out", help="output directory")] = Path("."),
    width: Annotated[int, typer.Option(help="image width")] = 224,
    height: Annotated[int, typer.Option(help="image height")] = 224,
) -> None:
    """Render e0: frame0.png (background removed) and frame0_mask.png."""
    from nil.reference.frame import frame_command

    frame_command(robot=robot, out=out, width=width, height=height)


@app.command()
def init(
    directory: DirArg,
    robot: Annotated[str, typer.Option("--robot", help="preset name or MJCF path")] = "ant",
    skill: Annotated[str, typer.Option("--skill", help="the skill in words, e.g. 'walking'")] = "walking",
    generator: Annotated[
        str, typer.Option("--generator", help="synthetic | file | diffusers (or a plugin's name)")
    ] = "synthetic",
    video: Annotated[Path | None, typer.Option("--video", help="video file, for --generator file")] = None,
    model: Annotated[str | None, typer.Option("--model", help="diffusers model id or local path")] = None,
    preset: Annotated[
        str,
        typer.Option(
            "--preset",
            help="cpu (SAC, no video term) | gpu (BRO, parallel envs) | paper (exactly the paper) | demo",
        ),
    ] = "cpu",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: section.key=value")] = None,
    force: ForceOpt = False,
) -> None:
    """Write DIR/skill.yaml for a robot and a skill."""
    from nil.skill import init_skill

    init_skill(
        directory,
        robot=robot,
        skill=skill,
        generator=generator,
        video=video,
        model=model,
        preset=preset,
        overrides=set_ or [],
        force=force,
    )


@app.command()
def generate(directory: DirArg, force: ForceOpt = False) -> None:
    """Stage 1: first frame, reference video, retiming (cached)."""
    from nil.reference.bundle import generate_command

    generate_command(directory, force=force)


@app.command()
def calibrate(
    directory: DirArg,
    force: Annotated[
        bool, typer.Option("--force", help="use the fit even when it fails the IoU gate")
    ] = False,
) -> None:
    """Fit the tracking camera to the reference video's frame 0; writes skill.yaml's camera."""
    from nil.reference.calibrate import calibrate_command

    calibrate_command(directory, force=force)


@app.command()
def segment(directory: DirArg, force: ForceOpt = False) -> None:
    """Reference masks for every retimed frame (cached)."""
    from nil.reference.segment import segment_command

    segment_command(directory, force=force)


@app.command()
def train(
    directory: DirArg,
    steps: Annotated[
        int | None, typer.Option("--steps", help="total env steps (overrides rl.total_steps)")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last good checkpoint")] = False,
    device: Annotated[str | None, typer.Option("--device", help="cpu | cuda | cuda:N")] = None,
) -> None:
    """Stage 2: reinforcement learning against the reference."""
    from nil.rl.trainer import train_command

    train_command(directory, steps=steps, resume=resume, device=device)


@app.command("eval")
def eval_(
    directory: DirArg,
    episodes: Annotated[
        int, typer.Option("--episodes", help="deterministic rollouts per policy (>= 5 for a figure)")
    ] = 5,
) -> None:
    """Evaluate the trained policy: eval/metrics.json and eval/side_by_side.mp4."""
    from nil.evaluation.evaluate import eval_command

    eval_command(directory, episodes=episodes)


@app.command()
def report(directory: DirArg) -> None:
    """Write a self-contained eval/report.html."""
    from nil.evaluation.report import report_command

    report_command(directory)


@app.command()
def run(
    directory: DirArg,
    steps: Annotated[int | None, typer.Option("--steps", help="total env steps")] = None,
    force: ForceOpt = False,
    episodes: Annotated[
        int, typer.Option("--episodes", help="evaluation rollouts per policy (>= 5 for a figure)")
    ] = 5,
) -> None:
    """Every stage in order, each skipped when its cache is valid; resumes a killed run."""
    from nil.evaluation.pipeline import run_command

    run_command(directory, steps=steps, force=force, episodes=episodes)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="workspace directory")] = Path("nil_demo"),
    steps: Annotated[int | None, typer.Option("--steps", help="env steps (default: the demo budget)")] = None,
) -> None:
    """The whole pipeline on the CPU default, no downloads: ends with a report."""
    from nil.evaluation.pipeline import demo_command

    demo_command(out, steps=steps)


@app.command()
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="sweep YAML file")],
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="sweep workspace")] = None,
    num_cpus: Annotated[
        int | None, typer.Option("--num-cpus", help="CPUs of the local Ray (default: all)")
    ] = None,
) -> None:
    """Many skills on Ray: robots x skills x seeds x reward ablations."""
    from nil.scale.sweep import sweep_command

    sweep_command(sweep_file, address=address, out=out, num_cpus=num_cpus)


@app.command()
def export(
    directory: DirArg,
    format_: Annotated[str, typer.Option("--format", help="onnx | torchscript")] = "onnx",
    out: Annotated[Path | None, typer.Option("--out", help="output folder (default: DIR/export)")] = None,
) -> None:
    """Write the trained policy (normaliser and action scaling folded in) + policy.json for deployment."""
    from nil.rl.export import export_command

    export_command(directory, format_, out)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, printing NilErrors as one line."""
    from nil.gl import ensure_offscreen_gl

    ensure_offscreen_gl()
    try:
        app(args=argv, standalone_mode=False)
    except NilError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        return 2
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.YELLOW, err=True)
        return 130
    except typer.Exit as e:
        return e.exit_code
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        if isinstance(e, click.exceptions.Abort):
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
