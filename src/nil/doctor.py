"""`nil doctor`: what works on this machine (GL backend, torch device, robots, HF-cached models, warp)."""

from __future__ import annotations

import json
import os
import platform
from typing import Any


def gl_status() -> dict[str, Any]:
    """The offscreen GL backend in use and whether a MuJoCo render context can be made."""
    from nil.gl import ensure_offscreen_gl

    backend = ensure_offscreen_gl()
    out: dict[str, Any] = {"MUJOCO_GL": backend, "ok": False, "renderer": None, "error": None}
    try:
        import mujoco

        ctx = mujoco.GLContext(64, 64)
        ctx.make_current()
        try:
            from OpenGL import GL

            out["renderer"] = GL.glGetString(GL.GL_RENDERER).decode(errors="replace")
        except Exception:
            out["renderer"] = "unknown"
        ctx.free()
        out["ok"] = True
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def torch_status() -> dict[str, Any]:
    """torch version and the accelerator it sees."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "version": torch.__version__,
        "cuda_available": cuda,
        "device": "cuda" if cuda else "cpu",
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cpu_threads": torch.get_num_threads(),
    }


def robots_status() -> list[dict[str, Any]]:
    """Each preset: does it resolve here, and from where (never downloads)."""
    from nil.robots.describe import robot_list

    return [
        {k: r.get(k) for k in ("name", "available", "source", "path", "reason") if r.get(k) is not None}
        for r in robot_list()
    ]


def models_status() -> list[dict[str, Any]]:
    """The default model ids of the config, and whether each is in the local Hugging Face cache."""
    from nil.config import DiffusersGeneratorConfig, EncoderConfig, Sam2SegmenterConfig

    wanted = [
        ("generator", DiffusersGeneratorConfig().model_id, "model_index.json"),
        ("segmenter", Sam2SegmenterConfig().model_id, "config.json"),
        ("encoder", EncoderConfig().model_id, "config.json"),
    ]
    rows = []
    for role, repo, fname in wanted:
        row: dict[str, Any] = {"role": role, "model_id": repo, "found": False, "path": None}
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(repo, fname)
            if isinstance(hit, str):
                row.update(found=True, path=os.path.dirname(hit))
        except Exception as e:  # no huggingface_hub, unreadable cache
            row["error"] = str(e)
        rows.append(row)
    return rows


def warp_info() -> dict[str, Any]:
    """Status of the MuJoCo Warp backend (owned by nil.sim.warp_backend)."""
    # --- warp check: implemented by the GPU engineer in nil.sim.warp_backend.warp_status() ---
    try:
        from nil.sim.warp_backend import warp_status
    except ImportError as e:
        return {"available": False, "error": f"warp backend not installed ({e})"}
    try:
        return dict(warp_status())
    except Exception as e:
        return {"available": False, "error": f"{type(e).__name__}: {e}"}


def doctor_report() -> dict[str, Any]:
    """Everything `nil doctor` checks, as a dict."""
    import mujoco

    from nil import __version__

    return {
        "nil": __version__,
        "python": platform.python_version(),
        "mujoco": mujoco.__version__,
        "gl": gl_status(),
        "torch": torch_status(),
        "robots": robots_status(),
        "models": models_status(),
        "warp": warp_info(),
        "MENAGERIE_ROOT": os.environ.get("MENAGERIE_ROOT"),
    }


def run_doctor(json_out: bool = False) -> dict[str, Any]:
    """`nil doctor`: print what works here (a table, or JSON with --json)."""
    rep = doctor_report()
    if json_out:
        print(json.dumps(rep, indent=2, default=str))
        return rep
    from rich.console import Console
    from rich.table import Table

    def yes(ok: bool) -> str:
        return "[green]ok[/green]" if ok else "[red]no[/red]"

    t = Table(title=f"nil {rep['nil']} doctor (python {rep['python']}, mujoco {rep['mujoco']})")
    t.add_column("check")
    t.add_column("status")
    t.add_column("details")
    gl = rep["gl"]
    t.add_row(
        "OpenGL (offscreen)",
        yes(gl["ok"]),
        f"MUJOCO_GL={gl['MUJOCO_GL']} " + (gl["renderer"] or gl["error"] or ""),
    )
    th = rep["torch"]
    t.add_row(
        "torch",
        "ok",
        f"{th['version']}, device {th['device']}" + (f" ({', '.join(th['gpus'])})" if th["gpus"] else ""),
    )
    for r in rep["robots"]:
        t.add_row(f"robot {r['name']}", yes(r["available"]), r.get("source") or r.get("reason", ""))
    for m in rep["models"]:
        t.add_row(
            f"{m['role']} model",
            yes(m["found"]),
            m["model_id"] + ("" if m["found"] else " (not in the HF cache)"),
        )
    w = rep["warp"]
    t.add_row("warp backend", yes(bool(w.get("available"))), str(w.get("device") or w.get("error") or ""))
    Console().print(t)
    return rep
