"""`nil report DIR`: one self-contained eval/report.html (every image, plot and video embedded as a data URI).

This module writes the HTML; the figures come from `nil.evaluation.plots`. The page carries a tiny script
that records, on <body> data attributes, whether every <video> and <img> loaded; the test (and a curious
user) can read them, and a failed video shows a visible note.
"""

from __future__ import annotations

import base64
import html
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from nil.errors import MissingStageError
from nil.evaluation.plots import (
    plot_per_frame_iou,
    plot_scalar_groups,
    plot_segmentation_quality,
    read_scalars,
)
from nil.io import atomic_write_text, sha256_json
from nil.paths import SkillPaths

# (label, better direction) for the metrics the evaluation writes, in table order (the headline figures
# first); unknown keys are shown as they are, after these.
METRIC_LABELS: dict[str, tuple[str, str]] = {
    "mean_iou": ("mean mask IoU vs reference (0 after a fall)", "up"),
    "moving_iou": ("mask IoU in the reference's moving region (the legs, not the static body)", "up"),
    "velocity_ratio": ("velocity ratio to the teacher, after its start-up ramp", "1"),
    "velocity_after_ramp": ("forward velocity after the teacher's start-up ramp [m/s]", "up"),
    "root_traj_error": ("root-trajectory error [m]", "down"),
    "falls": ("fall rate", "down"),
    "task_success": ("scene task success (fraction of episodes; nil.scene.success)", "up"),
    "task_success_rate": ("scene task: fraction of steps successful", "up"),
    "task_env_return": ("scene task reward, episode sum", "up"),
    "mean_iou_alive": ("mean mask IoU while alive", "up"),
    "video_similarity": ("mean S_V (clip similarity)", "up"),
    "nil_return": ("NIL reward, episode sum", "up"),
    "reg_total": ("regulariser total (weighted, <= 0)", "up"),
    "task_reward": ("walking task reward, episode sum ('env. reward')", "up"),
    "forward_distance": ("forward distance [m]", "up"),
    "mean_velocity": ("mean forward velocity [m/s]", "up"),
    "joint_rmse_dtw": ("joint-angle RMSE after DTW [rad]", "down"),
    "episode_length": ("episode length [steps]", "up"),
}

_STYLE = """
body{font-family:system-ui,-apple-system,sans-serif;margin:1.5em auto;max-width:1150px;color:#222;
  padding:0 1em}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:14px;margin:.5em 0}
th,td{border:1px solid #ccc;padding:4px 9px;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
td.better{background:#e5f5e8;font-weight:600}
.badge{display:inline-block;padding:3px 9px;border-radius:4px;font-weight:600;font-size:13px}
.synthetic{background:#fff3cd;border:1px solid #e0b000;color:#6b4e00}
.warn{background:#fdecea;border:1px solid #e0a0a0;color:#8a1c13;padding:.5em .8em;border-radius:4px;
  margin:.3em 0}
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
        f'<video class="{cls}" controls loop muted playsinline preload="auto" '
        f'title="{html.escape(title, quote=True)}" '
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


# Column headings of the baseline rows of metrics.json.
BASELINE_LABELS = {
    "random": "random actions (baseline)",
    "zero": "standing still (baseline)",
    "teacher": "teacher replay (ground truth)",
}


def metrics_table(metrics: dict[str, Any]) -> str:
    """HTML table: one row per metric (mean ± sd over episodes), columns trained | worst episode | baselines.

    The trained policy's cell is marked where it beats the random-action baseline.
    """
    from nil.evaluation.metrics import worst

    trained = metrics.get("trained") or {}
    baselines = metrics.get("baselines") or {}
    sd = metrics.get("sd") or {}
    per_ep = (metrics.get("per_episode") or {}).get("trained") or {}
    cols = [("trained", "trained policy", trained)] + [
        (k, BASELINE_LABELS.get(k, f"{k} (baseline)"), v) for k, v in baselines.items()
    ]
    keys = [k for k in METRIC_LABELS if any(k in c for _, _, c in cols)]
    keys += sorted(
        {
            k
            for _, _, c in cols
            for k, v in c.items()
            if k not in keys and isinstance(v, (int, float)) and not k.startswith("_")
        }
    )
    heads = [cols[0][1], "worst episode"] + [label for _, label, _ in cols[1:]]
    head = "<tr><th>metric</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in heads) + "</tr>"
    rows = []
    ref = baselines.get("random") or baselines.get("zero") or {}
    for k in keys:
        label, direction = METRIC_LABELS.get(k, (k, ""))
        cells = []
        for i, (name, _, c) in enumerate(cols):
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
            spread = (sd.get(name) or {}).get(k) if v is not None else None
            if isinstance(v, float) and isinstance(spread, float) and spread > 0:
                text = f"{v:.3g} ± {spread:.2g}"
            else:
                text = _fmt(v)
            cells.append(f'<td class="{cls}">{text}</td>')
            if i == 0:
                w = worst(per_ep[k], k) if per_ep.get(k) else None
                cells.append(f'<td class="num">{_fmt(w)}</td>')
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
    quality = seg.get("quality")
    q: dict[str, Any] = quality if isinstance(quality, dict) else {}
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
            '<p><span class="badge synthetic">SYNTHETIC TEACHER REFERENCE</span> The reference video was '
            "rendered in the simulator from a scripted teacher motion (a gait controller), not produced by a "
            "video model. It is the offline default and a benchmark instrument with known ground truth: the "
            "scores against the "
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
                (
                    "model",
                    None if synthetic else (meta.get("model_id") or getattr(cfg.generator, "model_id", None)),
                ),
                ("segmenter", (seg or {}).get("segmenter") or (seg or {}).get("name") or cfg.segmenter.name),
                (
                    "reward",
                    f"ζ={cfg.reward.zeta}·S_V[{'on' if cfg.reward.use_video else 'off'}] + "
                    f"β={cfg.reward.beta}·S_M[{'on' if cfg.reward.beta else 'off'}] + "
                    f"η={cfg.reward.eta}·P[{'on' if cfg.reward.eta else 'off'}]",
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
        (paths.reference / "calibration.png", "camera fit: video's robot (green), fitted render (magenta)"),
    ):
        if p.exists():
            media.append(
                f"<figure>{_img_tag(p.read_bytes(), 'image/png', cap)}"
                f"<figcaption>{e(cap)}</figcaption></figure>"
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
                f"{rnd.get('mean_velocity', float('nan')):.3f} m/s"
                + (
                    f"; velocity ratio to the teacher {tr['velocity_ratio']:.2f} vs "
                    f"{rnd.get('velocity_ratio', float('nan')):.2f}"
                    if "velocity_ratio" in tr
                    else ""
                )
                + ".</p>"
            )
        for w in metrics.get("warnings") or []:
            out.append(f'<div class="warn">⚠ {e(str(w))}</div>')
        pol = metrics.get("policy") or {}
        out.append(
            f"<p>{_fmt(metrics.get('episodes'))} deterministic episode(s) of {_fmt(metrics.get('horizon'))} "
            f"steps at {_fmt(metrics.get('control_hz'))} Hz; policy from "
            f"<code>{e(str(pol.get('checkpoint', '?')))}</code> (step {_fmt(pol.get('step'))}); "
            "each cell is the mean ± sd over episodes. "
            + (
                f"Velocities are measured after the teacher's {metrics['ramp_steps']}-step start-up ramp. "
                if metrics.get("ramp_steps")
                else ""
            )
            + "Green: the trained policy beats the random-action baseline.</p>"
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
