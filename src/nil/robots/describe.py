"""`nil robots` and `nil robots show NAME`: the presets, and what one robot's spec contains."""

from __future__ import annotations

import json
from typing import Any

from nil.errors import NilError
from nil.robots.presets import PRESETS, get_robot, preset_path


def robot_list() -> list[dict[str, Any]]:
    """One row per preset: name, description, source kind, and where its MJCF resolves (never downloads)."""
    rows = []
    for name, p in PRESETS.items():
        row: dict[str, Any] = {"name": name, "description": p.description, "kind": p.kind}
        try:
            path, source = preset_path(name, download=False)
            row.update(available=True, path=str(path), source=source)
        except NilError as e:
            row.update(available=False, path=None, source=None, reason=str(e))
        rows.append(row)
    return rows


def robot_info(name: str) -> dict[str, Any]:
    """The resolved spec of a preset or MJCF path, plus model sizes."""
    import mujoco

    spec = get_robot(name)
    model = spec.load_model()
    robot_bodies = spec.robot_body_mask(model)
    info = spec.to_dict()
    info.update(
        nq=int(model.nq),
        nv=int(model.nv),
        nu=int(model.nu),
        action_dim=spec.action_dim(model),
        obs_dim=int(model.nq - 2 + model.nv + 1),
        substeps=spec.substeps(model),
        timestep=float(model.opt.timestep),
        mass=float(model.body_mass[robot_bodies].sum()),
        robot_geoms=int(spec.robot_geom_mask(model).sum()),
        torque_limits=[round(float(x), 3) for x in spec.torque_limits(model)],
        actuators=[
            mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_ACTUATOR, i) or f"actuator{i}"
            for i in range(model.nu)
        ],
        initial_root_height=float(spec.initial_qpos(model)[2]),
    )
    return info


def print_robot_list(json_out: bool = False) -> None:
    """Print the presets (table, or JSON with --json)."""
    rows = robot_list()
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="robot presets (`nil robots show NAME` for details; any MJCF path works too)")
    for col in ("name", "description", "available", "source"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            r["description"],
            "yes" if r["available"] else "no",
            r["source"] if r["available"] else r["reason"],
        )
    Console().print(table)


def print_robot(name: str, json_out: bool = False) -> None:
    """Print one robot's resolved spec and sizes."""
    info = robot_info(name)
    if json_out:
        print(json.dumps(info, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"robot {info['name']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in (
        "description",
        "mjcf_path",
        "source",
        "keyframe",
        "root_body",
        "torso_body",
        "feet_bodies",
        "control_mode",
        "action_scale",
        "kp",
        "kd",
        "control_hz",
        "substeps",
        "timestep",
        "fall_height",
        "max_tilt_deg",
        "nq",
        "nv",
        "nu",
        "action_dim",
        "obs_dim",
        "mass",
        "robot_geoms",
        "initial_root_height",
        "camera",
    ):
        val = info[key]
        if isinstance(val, float):
            val = f"{val:.4g}"
        elif isinstance(val, dict):
            val = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in val.items())
        table.add_row(key, str(val))
    Console().print(table)
