"""The metrics table `nil eval`, `nil run` and `nil demo` print: mean ± sd over episodes, the worst episode,
the baselines, and eval's warnings."""

from __future__ import annotations

from typing import Any

from nil.evaluation.metrics import HEADLINE, MIN_EPISODES, worst

# Row order: the headline figures first.
SUMMARY_KEYS = (
    *HEADLINE,
    "task_success_rate",
    "task_env_return",
    "video_similarity",
    "mean_velocity",
    "forward_distance",
    "joint_rmse_dtw",
    "reg_total",
    "episode_length",
)
COLUMN_LABELS = {"zero": "standing", "teacher": "teacher replay"}


def print_summary(m: dict[str, Any]) -> None:
    """Print the metrics table (mean ± sd over episodes, worst episode, baselines) and eval's warnings."""
    from rich.console import Console
    from rich.table import Table

    cols = [("trained", m["trained"])] + list((m.get("baselines") or {}).items())
    sd = m.get("sd") or {}
    per_ep = (m.get("per_episode") or {}).get("trained") or {}
    title = f"{m['robot']} / {m['skill']}: {m['episodes']} episode(s), horizon {m['horizon']}"
    if m.get("ramp_steps"):
        title += f", velocities after the teacher's {m['ramp_steps']}-step start-up ramp"
    pol = m.get("policy") or {}
    if pol.get("checkpoint"):  # which policy: the last checkpoint's, or the best eval's (rl.keep_best)
        title += f"; policy {pol['checkpoint']}"
    table = Table(title=title)
    table.add_column("metric (mean ± sd)")
    for i, (name, _) in enumerate(cols):
        table.add_column(COLUMN_LABELS.get(name, name), justify="right")
        if i == 0:
            table.add_column("worst episode", justify="right")
    for k in SUMMARY_KEYS:
        if not any(k in c for _, c in cols):
            continue
        cells = []
        for i, (name, c) in enumerate(cols):
            s = (sd.get(name) or {}).get(k)
            cells.append("-" if k not in c else f"{c[k]:.3g}" + (f" ± {s:.2g}" if s else ""))
            if i == 0:
                cells.append(f"{worst(per_ep[k], k):.3g}" if per_ep.get(k) else "-")
        table.add_row(k, *cells)
    con = Console()
    if not con.is_terminal:
        con = Console(width=max(con.width, 132))  # a log file: no need to wrap at 80 columns
    con.print(table)
    for w in m.get("warnings") or []:
        con.print(f"[yellow]warning:[/yellow] {w}")
    if int(m.get("episodes") or 0) < MIN_EPISODES:
        con.print(f"note: {m['episodes']} episode(s) per policy; a reported figure uses >= {MIN_EPISODES}")
