"""Sweep results: one row per skill in sweep.csv, and index.html (a sortable table linking every report)."""

from __future__ import annotations

import csv
import html
import io
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from nil.io import atomic_write_text

STATUSES = ("done", "cached", "failed", "pending")


@dataclass
class SkillResult:
    """One skill's outcome (status: done, cached = finished on an earlier run, failed, pending)."""

    name: str
    directory: Path
    variant: str | None = None
    axes: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"
    attempts: int = 0
    error: str = ""
    wall_s: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def report(self) -> Path | None:
        """eval/report.html when the skill wrote one."""
        p = self.directory / "eval" / "report.html"
        return p if p.exists() else None


# Left out of the table (they stay in each skill's eval/metrics.json and sweep_status.json): provenance,
# per-stage bookkeeping, text, and the baselines' own rows (gain_over_random is the comparison to read).
HIDDEN_METRICS = frozenset(
    {
        "stages",
        "stage_seconds",
        "cache_key",
        "created",
        "git_revision",
        "report",
        "notes",
        "per_frame_iou",
        "per_frame_iou_mean",
        "prompt",
        "skill",
        "robot",
        "generator",
        "synthetic",
        "wall_s",
        "control_hz",
        "baselines",
        "sd.random",  # the spread of the trained row (sd.trained.*) is the one to read
        "sd.zero",
        "sd.teacher",
        "per_episode",
        "policy.checkpoint",
        "policy.algo",
    }
)


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metrics as one level of dotted keys; only scalars survive (lists and arrays are dropped)."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if key in HIDDEN_METRICS:
            continue
        if isinstance(v, dict):
            out.update(flatten_metrics(v, key + "."))
        elif isinstance(v, bool) or v is None or isinstance(v, str):
            out[key] = v
        elif isinstance(v, int | float):
            out[key] = v
        elif hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # numpy / torch scalars
            out[key] = v.item()
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.6g}"
    return str(v)


def _columns(results: list[SkillResult], axis_keys: list[str]) -> tuple[list[str], list[str]]:
    metric_keys: list[str] = []
    seen: set[str] = set()
    for r in results:
        for k in flatten_metrics(r.metrics):
            if k not in seen:
                seen.add(k)
                metric_keys.append(k)
    head = ["name"]
    if any(r.variant is not None for r in results):
        head.append("variant")
    head += list(axis_keys) + ["status", "attempts", "wall_s", "error"]
    return head, metric_keys


def _row(r: SkillResult, head: list[str], metric_keys: list[str], base: Path) -> dict[str, str]:
    flat = flatten_metrics(r.metrics)
    row: dict[str, str] = {}
    for h in head:
        if h == "name":
            row[h] = r.name
        elif h == "variant":
            row[h] = r.variant or ""
        elif h in ("status", "attempts", "error"):
            row[h] = _fmt(getattr(r, h))
        elif h == "wall_s":
            row[h] = "" if r.wall_s is None else f"{r.wall_s:.1f}"
        else:
            row[h] = _fmt(r.axes.get(h))
    for k in metric_keys:
        row[k] = _fmt(flat.get(k))
    rep = r.report
    row["report"] = os.path.relpath(rep, base) if rep is not None else ""
    row["directory"] = os.path.relpath(r.directory, base)
    return row


def write_csv(results: list[SkillResult], out: Path, axis_keys: list[str]) -> Path:
    """Write out/sweep.csv: name, variant, axes, status, attempts, wall_s, error, metrics, report, folder."""
    out = Path(out)
    head, metric_keys = _columns(results, axis_keys)
    fields = head + metric_keys + ["report", "directory"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in results:
        w.writerow(_row(r, head, metric_keys, out))
    return atomic_write_text(out / "sweep.csv", buf.getvalue())


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;white-space:nowrap}
th{background:#f0f0f0;cursor:pointer;user-select:none;position:sticky;top:0}
th.asc::after{content:" \\25B2"} th.desc::after{content:" \\25BC"}
tr:nth-child(even) td{background:#fafafa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.done{color:#176b2c;font-weight:600} .cached{color:#3b6ea8;font-weight:600}
.failed{color:#b3261e;font-weight:600} .pending{color:#888}
td.err{max-width:40em;overflow:hidden;text-overflow:ellipsis;white-space:normal;font-size:12px}
"""

# Click a header to sort by it (again to reverse); numbers sort numerically, empty cells last.
_SCRIPT = """
document.querySelectorAll('th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var tbody = th.closest('table').tBodies[0];
    var asc = !th.classList.contains('asc');
    th.parentNode.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
    th.classList.add(asc ? 'asc' : 'desc');
    var rows = Array.from(tbody.rows);
    rows.sort(function(a, b){
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      if (x === '' && y === '') return 0; if (x === '') return 1; if (y === '') return -1;
      var nx = Number(x), ny = Number(y), c;
      if (!isNaN(nx) && !isNaN(ny)) c = nx - ny; else c = x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function(r){tbody.appendChild(r);});
  });
});
"""


def _is_num(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return s != ""


def write_index(results: list[SkillResult], out: Path, axis_keys: list[str], title: str = "sweep") -> Path:
    """Write out/index.html: each skill's status and metrics, linked to its report; sortable, no CDN."""
    out = Path(out)
    head, metric_keys = _columns(results, axis_keys)
    cols = head + metric_keys
    e = html.escape
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>NIL sweep: {e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>NIL sweep: {e(title)}</h1>",
        f"<p>{len(results)} skills ({e(summary)}) · updated {datetime.now().strftime('%Y-%m-%d %H:%M:%S')} · "
        '<a href="sweep.csv">sweep.csv</a> · click a column header to sort</p>',
        '<table id="results"><thead><tr>'
        + "".join(f"<th>{e(c)}</th>" for c in cols)
        + "</tr></thead><tbody>",
    ]
    for r in results:
        row = _row(r, head, metric_keys, out)
        cells = []
        for c in cols:
            v = row[c]
            cls = []
            if c == "name":
                target = row["report"] or row["directory"] + "/"
                inner = f'<a href="{e(target, quote=True)}">{e(v)}</a>'
            else:
                inner = e(v)
            if c == "status":
                cls.append(v)
            elif c == "error":
                cls.append("err")
            elif _is_num(v):
                cls.append("num")
            cls_attr = f' class="{" ".join(cls)}"' if cls else ""
            title_attr = f' title="{e(v, quote=True)}"' if c == "error" and v else ""
            cells.append(f'<td{cls_attr}{title_attr} data-v="{e(v, quote=True)}">{inner}</td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines += ["</tbody></table>", f"<script>{_SCRIPT}</script>", "</body></html>", ""]
    return atomic_write_text(out / "index.html", "\n".join(lines))


def write_results(results: list[SkillResult], out: Path, axis_keys: list[str], title: str = "sweep") -> None:
    """Write sweep.csv and index.html."""
    write_csv(results, out, axis_keys)
    write_index(results, out, axis_keys, title)
