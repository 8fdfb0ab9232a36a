"""`nil report DIR`: one self-contained eval/report.html (every image, plot and video embedded as a data URI).

The page carries a tiny script that records, on <body> data attributes, whether every <video> and <img>
loaded; the test (and a curious user) can read them, and a failed video shows a visible note.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from nil.errors import MissingStageError
from nil.io import atomic_write_text, sha256_json
from nil.paths import SkillPaths

# (label, better direction) for the metrics the evaluation writes; unknown keys are shown as they are.
METRIC_LABELS: dict[str, tuple[str, str]] = {
    "mean_iou": ("mean mask IoU vs reference (0 after a fall)", "up"),
    "mean_iou_alive": ("mean mask IoU while alive", "up"),
    "video_similarity": ("mean S_V (clip similarity)", "up"),
    "nil_return": ("NIL reward, episode sum", "up"),
    "reg_total": ("regulariser total (weighted, <= 0)", "up"),
    "task_reward": ("walking task reward, episode sum ('env. reward')", "up"),
    "forward_distance": ("forward distance [m]", "up"),
    "mean_velocity": ("mean forward velocity [m/s]", "up"),
    "velocity_ratio": ("velocity ratio to the teacher", "1"),
    "joint_rmse_dtw": ("joint-angle RMSE after DTW [rad]", "down"),
    "root_traj_error": ("root-trajectory error [m]", "down"),
    "falls": ("fall rate", "down"),
    "episode_length": ("episode length [steps]", "up"),
}

_STYLE = """
body{font-family:system-ui,-apple-system,sans-serif;margin:1.5em auto;max-width:1150px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:14px;margin:.5em 0}
th,td{border:1px solid #ccc;padding:4px 9px;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
td.better{background:#e5f5e8;font-weight:600}
.badge{display:inline-block;padding:3px 9px;border-radius:4px;font-weight:600;font-size:13px}
.synthetic{background:#fff3cd;border:1px solid #e0b000;color:#6b4e00}
.warn{background:#fdecea;border:1px solid #e0a0a0;color:#8a1c13;padding:.5em .8em;border-radius:4px;margin:.3em 0}
.ok{background:#e5f5e8;border:1px solid #9bd0a7;color:#1e5e2e;padding:.5em .8em;border-radius:4px}
.media{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
figure{margin:0} figcaption{font-size:13px;color:#555}
img.frame{image-rendering:pixelated;width:224px;border:1px solid #ccc}
video{max-width:100%;border:1px solid #ccc;background:#000}
video.ref{width:336px;image-rendering:pixelated}
img.plot{max-width:100%}
code,pre{background:#f6f6f6;font-size:12.5px} pre{padding:.6em;overflow-x:auto}
.mediaerr{color:#b3261e;font-weight:600}
"""

# Records load status of every <video>/<img> on <body>: data-media = pending | ok | error.
_SCRIPT = """
(function(){
  var errs = [];
  window.addEventListener('error', function(e){ errs.push('js:' + (e.message || 'error')); }, true);
  function status(){
    var vids = Array.prototype.slice.call(document.querySelectorAll('video'));
    var imgs = Array.prototype.slice.call(document.querySelectorAll('img'));
    var vok = 0, iok = 0, bad = [];
    vids.forEach(function(v, k){
      if (v.error) { bad.push('video' + k + ':code' + v.error.code); }
      else if (v.readyState >= 2 && v.videoWidth > 0) { vok++; }
    });
    imgs.forEach(function(im, k){
      if (im.complete && im.naturalWidth > 0) { iok++; }
      else if (im.complete) { bad.push('img' + k); }
    });
    var b = document.body;
    b.dataset.videos = vids.length; b.dataset.videosLoaded = vok;
    b.dataset.images = imgs.length; b.dataset.imagesLoaded = iok;
    b.dataset.errors = bad.concat(errs).join(' ');
    if (bad.length || errs.length) {
      b.dataset.media = 'error';
      vids.forEach(function(v){
        if (v.error && !v.dataset.noted) {
          v.dataset.noted = 1;
          var p = document.createElement('p'); p.className = 'mediaerr';
          p.textContent = 'This browser could not play this H.264 video (' + v.error.code + ').';
          v.parentNode.insertBefore(p, v.nextSibling);
        }
      });
      return;
    }
    if (vok === vids.length && iok === imgs.length) { b.dataset.media = 'ok'; return; }
    setTimeout(status, 50);
  }
  document.body.dataset.media = 'pending';
  status();
})();
"""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _img_tag(data: bytes, mime: str, alt: str, cls: str = "frame") -> str:
    return f'<img class="{cls}" alt="{html.escape(alt, quote=True)}" src="data:{mime};base64,{_b64(data)}">'


def _video_tag(data: bytes, title: str, cls: str = "") -> str:
    return (
        f'<video class="{cls}" controls loop muted playsinline preload="auto" title="{html.escape(title, quote=True)}" '
        f'src="data:video/mp4;base64,{_b64(data)}"></video>'
    )


def browser_mp4(path: Path) -> bytes:
    """The video as H.264/yuv420p mp4 bytes (re-encoded, so any file ffmpeg reads plays in a browser)."""
    from nil.reference.video import read_video, write_video

    video = read_video(path)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "v.mp4"
        write_video(out, video)
        return out.read_bytes()


# ---------------------------------------------------------------------------------------------- TensorBoard


def read_scalars(tb_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar tag of every TensorBoard event file under tb_dir -> (steps, values), last write per step wins."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb_dir = Path(tb_dir)
    if not tb_dir.exists():
        return {}
    merged: dict[str, dict[int, float]] = {}
    run_dirs = sorted({p.parent for p in tb_dir.rglob("events.out.tfevents.*")})
    for d in run_dirs:
        # no purging: a resumed run re-logs from its checkpoint step; the merge below keeps the last write
        acc = EventAccumulator(str(d), size_guidance={"scalars": 0}, purge_orphaned_data=False)
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            # events are in write order: a resumed run that re-logs a step overwrites the earlier value
            for ev in sorted(acc.Scalars(tag), key=lambda e: e.wall_time):
                merged.setdefault(tag, {})[int(ev.step)] = float(ev.value)
    out = {}
    for tag, d in merged.items():
        steps = np.array(sorted(d), dtype=np.int64)
        out[tag] = (steps, np.array([d[s] for s in steps], dtype=np.float64))
    return out


def _group_tags(tags: list[str]) -> list[tuple[str, list[str]]]:
    raw = [t for t in tags if "raw/" in t]
    weighted = [t for t in tags if "weighted/" in t]
    used = set(raw) | set(weighted)
    episode = [t for t in tags if t not in used and ("episode" in t or "return" in t or "eval" in t)]
    used |= set(episode)
    rewardish = [t for t in tags if t not in used and "reward" in t]
    used |= set(rewardish)
    other = [t for t in tags if t not in used]
    groups = [
        ("Reward terms (raw, per step)", raw),
        ("Reward terms (weighted, per step)", weighted + rewardish),
        ("Episodes and evaluation", episode),
        ("Learner", other),
    ]
    return [(name, sorted(ts)) for name, ts in groups if ts]


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    if len(y) < 3 * n or n <= 1:
        return y
    k = np.ones(n) / n
    pad = np.concatenate([np.full(n - 1, y[0]), y])
    return np.convolve(pad, k, mode="valid")


def plot_scalar_groups(
    scalars: dict[str, tuple[np.ndarray, np.ndarray]], max_per_figure: int = 16
) -> list[tuple[str, bytes]]:
    """PNG figures (title, bytes) of the scalar curves, one figure per group of tags."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    for title, tags in _group_tags(list(scalars)):
        tags = tags[:max_per_figure]
        cols = min(4, len(tags))
        rows = math.ceil(len(tags) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.4 * rows), squeeze=False)
        for ax, tag in zip(axes.flat, tags, strict=False):
            x, y = scalars[tag]
            ax.plot(x, y, color="#9ab", lw=0.8)
            if len(y) > 30:
                ax.plot(x, _smooth(y, max(2, len(y) // 30)), color="#1f5fa8", lw=1.4)
            ax.set_title(tag, fontsize=8.5)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(tags) :]:
            ax.axis("off")
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        figs.append((title, buf.getvalue()))
    return figs


def plot_per_frame_iou(per_frame: dict[str, list[float]]) -> bytes | None:
    """PNG of per-frame IoU vs the reference for the trained policy and the baselines."""
    if not per_frame:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2.8))
    for name, ys in per_frame.items():
        ax.plot(np.arange(len(ys)), ys, label=name, lw=1.3)
    ax.set_xlabel("control step t (reference frame)")
    ax.set_ylabel("mask IoU")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


# -------------------------------------------------------------------------------------------------- content


def _load_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.4g}"
    if v is None:
        return "–"
    return html.escape(str(v))


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in rows if v is not None)
    return f"<table>{body}</table>"


def _is_synthetic(meta: dict[str, Any] | None, cfg: Any) -> bool:
    if meta:
        g = meta.get("generator")
        name = g.get("name") if isinstance(g, dict) else g
        if name is not None:
            return str(name) == "synthetic" or bool(meta.get("synthetic"))
    return getattr(getattr(cfg, "generator", None), "name", None) == "synthetic"


def _flat_meta(
    meta: dict[str, Any], prefix: str = "", depth: int = 0, lists: bool = True
) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for k, v in meta.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth < 2:
            rows += _flat_meta(v, key + ".", depth + 1, lists)
        elif isinstance(v, list):
            if lists:
                rows.append((key, json.dumps(v)[:200]))
        else:
            rows.append((key, v if not isinstance(v, str) else v[:300]))
    return rows


def plot_segmentation_quality(q: dict[str, Any]) -> bytes | None:
    """PNG of the per-frame mask area (relative to m0) and consecutive-frame IoU of the reference masks."""
    area, consec = q.get("area_ratio"), q.get("consecutive_iou")
    if not isinstance(area, list) or not area:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 2.6))
    axes[0].plot(area, color="#1f5fa8")
    axes[0].axhline(1.0, color="#999", lw=0.8, ls="--")
    axes[0].set_title("mask area / m0 area", fontsize=9)
    if isinstance(consec, list) and consec:
        axes[1].plot(np.arange(1, len(consec) + 1), consec, color="#2e7d32")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_title("IoU with the previous frame", fontsize=9)
    for ax in axes:
        ax.set_xlabel("reference frame", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def metrics_table(metrics: dict[str, Any]) -> str:
    """HTML table: one row per metric, columns trained | each baseline; the better of trained/random marked."""
    trained = metrics.get("trained") or {}
    baselines = metrics.get("baselines") or {}
    cols = [("trained policy", trained)] + [
        (f"{k} (baseline)" if k != "teacher" else "teacher (ground truth)", v) for k, v in baselines.items()
    ]
    keys = [k for k in METRIC_LABELS if any(k in c for _, c in cols)]
    keys += sorted(
        {
            k
            for _, c in cols
            for k, v in c.items()
            if k not in keys and isinstance(v, (int, float)) and not k.startswith("_")
        }
    )
    head = "<tr><th>metric</th>" + "".join(f"<th>{html.escape(n)}</th>" for n, _ in cols) + "</tr>"
    rows = []
    ref = baselines.get("random") or baselines.get("zero") or {}
    for k in keys:
        label, direction = METRIC_LABELS.get(k, (k, ""))
        cells = []
        for i, (_, c) in enumerate(cols):
            v = c.get(k)
            cls = "num"
            if i == 0 and isinstance(v, (int, float)) and isinstance(ref.get(k), (int, float)):
                r = ref[k]
                better = (
                    (direction == "up" and v > r)
                    or (direction == "down" and v < r)
                    or (direction == "1" and abs(v - 1) < abs(r - 1))
                )
                if better:
                    cls += " better"
            cells.append(f'<td class="{cls}">{_fmt(v)}</td>')
        arrow = {"up": " ↑", "down": " ↓", "1": " (→1)"}.get(direction, "")
        rows.append(f"<tr><th>{html.escape(label)}{arrow}</th>" + "".join(cells) + "</tr>")
    return f'<table class="metrics">{head}{"".join(rows)}</table>'


def _segmentation_section(seg: dict[str, Any] | None) -> str:
    if seg is None:
        return '<div class="warn">No reference/segment.json: the reference masks were not checked.</div>'
    warnings: list[str] = []
    for key in ("warnings", "warning", "issues"):
        v = seg.get(key)
        if isinstance(v, list):
            warnings += [str(x) for x in v]
        elif isinstance(v, str) and v:
            warnings.append(v)
    q = seg.get("quality") if isinstance(seg.get("quality"), dict) else {}
    for key in ("warnings",):
        v = q.get(key)
        if isinstance(v, list):
            warnings += [str(x) for x in v]
    parts = []
    if warnings:
        parts += [f'<div class="warn">⚠ {html.escape(w)}</div>' for w in warnings]
    else:
        parts.append('<div class="ok">No segmentation-quality warnings.</div>')
    scalars = [(k, v) for k, v in _flat_meta(seg, lists=False) if "warning" not in k]
    parts.append(_kv_table(scalars[:40]))
    png = plot_segmentation_quality(q)
    if png:
        parts.append(f"<figure>{_img_tag(png, 'image/png', 'segmentation quality', 'plot')}</figure>")
    return "\n".join(parts)


def build_report(paths: SkillPaths) -> str:
    """The report's HTML text (self-contained)."""
    from nil.config import config_to_dict, load_config

    cfg = load_config(paths.config)
    metrics = _load_json(paths.metrics)
    meta = _load_json(paths.meta) or {}
    seg = _load_json(paths.segment_meta)
    e = html.escape
    synthetic = _is_synthetic(meta, cfg)
    prompt = (
        meta.get("prompt")
        or (metrics or {}).get("prompt")
        or cfg.prompt(cfg.robot.description or cfg.robot.name)
    )
    title = f"NIL report: {cfg.robot.name} — {cfg.skill}"
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">',
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>Skill folder <code>{e(str(paths.root.resolve()))}</code> · generated "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
    ]
    gen = meta.get("generator")
    gen_name = gen.get("name") if isinstance(gen, dict) else gen
    if synthetic:
        out.append(
            '<p><span class="badge synthetic">SYNTHETIC TEACHER REFERENCE</span> The reference video was rendered '
            "in the simulator from a scripted teacher motion (a gait controller), not produced by a video model. "
            "It is the offline default and a benchmark instrument with known ground truth: the scores against the "
            "teacher below measure how well NIL imitates from pixels, not the quality of a video model.</p>"
        )
    out += [
        "<h2>Skill</h2>",
        _kv_table(
            [
                ("robot", cfg.robot.name),
                ("skill", cfg.skill),
                ("prompt", prompt),
                ("generator", gen_name or cfg.generator.name),
                ("model", None if synthetic else (meta.get("model_id") or cfg.generator.model_id)),
                ("segmenter", (seg or {}).get("segmenter") or (seg or {}).get("name") or cfg.segmenter.name),
                (
                    "reward",
                    f"ζ={cfg.reward.zeta}·S_V[{'on' if cfg.reward.use_video else 'off'}] + "
                    f"β={cfg.reward.beta}·S_M[{'on' if cfg.reward.use_iou else 'off'}] + "
                    f"η={cfg.reward.eta}·P[{'on' if cfg.reward.use_reg else 'off'}]",
                ),
                (
                    "learner",
                    f"{cfg.rl.algo} ({cfg.rl.total_steps} env steps, replay ratio {cfg.rl.replay_ratio})",
                ),
                ("simulator", f"{cfg.sim.backend} on {cfg.sim.device}, {cfg.sim.num_envs} envs"),
            ]
        ),
    ]
    # e0 and its mask
    media = []
    for p, cap in (
        (paths.frame0, "e0 (first frame, background removed)"),
        (paths.frame0_mask, "m0 (exact mask)"),
    ):
        if p.exists():
            media.append(
                f"<figure>{_img_tag(p.read_bytes(), 'image/png', cap)}<figcaption>{e(cap)}</figcaption></figure>"
            )
    if media:
        out += ["<h2>First frame</h2>", f'<div class="media">{"".join(media)}</div>']
    # videos
    vids = []
    for p, cap in (
        (paths.video, "reference video (as generated)"),
        (
            paths.side_by_side,
            "evaluation: reference | agent | mask overlap (green both, red reference only, blue agent only)",
        ),
    ):
        if p.exists():
            cls = "ref" if p == paths.video else ""
            vids.append(
                f"<figure>{_video_tag(browser_mp4(p), cap, cls)}<figcaption>{e(cap)}</figcaption></figure>"
            )
    if vids:
        out += ["<h2>Videos</h2>", f'<div class="media">{"".join(vids)}</div>']
    # metrics
    out.append("<h2>Metrics</h2>")
    if metrics is None:
        out.append('<div class="warn">No eval/metrics.json yet: run <code>nil eval DIR</code>.</div>')
    else:
        tr = metrics.get("trained") or {}
        rnd = (metrics.get("baselines") or {}).get("random") or {}
        if "mean_iou" in tr and "mean_iou" in rnd:
            out.append(
                f"<p>Mean IoU {tr['mean_iou']:.3f} (trained) vs {rnd['mean_iou']:.3f} (random policy); "
                f"forward velocity {tr.get('mean_velocity', float('nan')):.3f} vs "
                f"{rnd.get('mean_velocity', float('nan')):.3f} m/s.</p>"
            )
        pol = metrics.get("policy") or {}
        out.append(
            f"<p>{_fmt(metrics.get('episodes'))} deterministic episode(s) of {_fmt(metrics.get('horizon'))} "
            f"steps at {_fmt(metrics.get('control_hz'))} Hz; policy from "
            f"<code>{e(str(pol.get('checkpoint', '?')))}</code> (step {_fmt(pol.get('step'))}). "
            "Green: the trained policy beats the random-action baseline.</p>"
        )
        out.append(metrics_table(metrics))
        png = plot_per_frame_iou(metrics.get("per_frame_iou") or {})
        if png:
            out.append(
                f"<figure>{_img_tag(png, 'image/png', 'per-frame IoU', 'plot')}"
                "<figcaption>Per-frame mask IoU against the reference (first episode).</figcaption></figure>"
            )
    # training curves
    out.append("<h2>Training curves (TensorBoard)</h2>")
    scalars = read_scalars(paths.train / "tb") or read_scalars(paths.train)
    if not scalars:
        out.append('<div class="warn">No TensorBoard scalars under train/: has training run?</div>')
    for name, png in plot_scalar_groups(scalars):
        out.append(f"<figure>{_img_tag(png, 'image/png', name, 'plot')}</figure>")
    # segmentation
    out += ["<h2>Reference segmentation quality</h2>", _segmentation_section(seg)]
    # provenance
    out.append("<h2>Provenance</h2>")
    if meta:
        if synthetic:
            out.append('<p><span class="badge synthetic">synthetic teacher</span></p>')
        out.append(_kv_table(_flat_meta(meta)))
    else:
        out.append('<div class="warn">No reference/meta.json.</div>')
    if metrics:
        out.append(
            _kv_table(
                [
                    ("evaluation git revision", metrics.get("git_revision")),
                    ("evaluated at", metrics.get("created")),
                ]
            )
        )
    out.append(
        "<details><summary>skill.yaml (resolved)</summary><pre>"
        + e(json.dumps(config_to_dict(cfg), indent=1))
        + "</pre></details>"
    )
    out += [f"<script>{_SCRIPT}</script>", "</body></html>", ""]
    return "\n".join(out)


def report_inputs_key(paths: SkillPaths) -> str:
    """Content fingerprint of everything the report shows (for `nil run`'s cache)."""
    from nil.io import sha256_file

    files = [
        paths.config,
        paths.metrics,
        paths.meta,
        paths.segment_meta,
        paths.frame0,
        paths.frame0_mask,
        paths.video,
        paths.side_by_side,
    ]
    tb = sorted(paths.train.rglob("events.out.tfevents.*")) if paths.train.exists() else []
    fp = [(str(p.relative_to(paths.root)), sha256_file(p)) for p in files + tb if p.exists()]
    return sha256_json(fp)


def write_report(paths: SkillPaths) -> Path:
    """Write eval/report.html (atomically) and return its path."""
    if not paths.config.exists():
        raise MissingStageError(f"no skill.yaml in {paths.root}; run `nil init {paths.root} ...` first")
    text = build_report(paths)
    atomic_write_text(paths.report, text)
    atomic_write_text(paths.eval / ".report_key", report_inputs_key(paths))
    return paths.report


def report_is_current(paths: SkillPaths) -> bool:
    """True when report.html exists and nothing it shows changed since it was written."""
    key_file = paths.eval / ".report_key"
    return (
        paths.report.exists()
        and key_file.exists()
        and key_file.read_text().strip() == report_inputs_key(paths)
    )


def report_command(directory: Path) -> Path:
    """CLI: write DIR/eval/report.html and print where it is."""
    paths = SkillPaths(Path(directory))
    out = write_report(paths)
    print(f"wrote {out}")
    return out
