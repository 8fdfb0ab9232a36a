"""The basic commands: robots, robots show, frame, init, doctor; user errors exit 2 with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nil.cli import main


def test_robots_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["robots", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert names[0] == "ant" and "unitree_h1" in names
    ant = rows[0]
    assert (
        ant["available"] and ant["path"].endswith("ant.xml") and ant["description"] == "four-legged ant robot"
    )


def test_robots_show(capsys: pytest.CaptureFixture[str], menagerie_root: Path) -> None:
    assert main(["robots", "show", "unitree_h1", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["root_body"] == "pelvis" and info["action_dim"] == 19 and info["obs_dim"] == 50
    assert info["substeps"] == 5 and info["description"] == "Unitree H1 humanoid robot"
    assert main(["robots", "show", "unitree_h1"]) == 0
    assert "pelvis" in capsys.readouterr().out


def test_frame_writes_two_pngs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f0"
    assert main(["frame", "--robot", "ant", "--out", str(out), "--width", "48", "--height", "48"]) == 0
    assert (out / "frame0.png").is_file() and (out / "frame0_mask.png").is_file()
    assert "frame0.png" in capsys.readouterr().out


def test_init_writes_skill_yaml(tmp_path: Path) -> None:
    d = tmp_path / "walk"
    assert (
        main(["init", str(d), "--robot", "ant", "--skill", "walking forward", "--set", "rl.total_steps=500"])
        == 0
    )
    data = yaml.safe_load((d / "skill.yaml").read_text())
    assert data["robot"]["name"] == "ant" and data["skill"] == "walking forward"
    assert data["rl"]["total_steps"] == 500
    assert main(["init", str(d), "--robot", "ant"]) == 2  # exists without --force


def test_user_error_is_one_line_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "nil", "frame", "--robot", "no_such_robot", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown robot 'no_such_robot'")
    assert "Traceback" not in proc.stderr


def test_frame_bad_size_is_a_user_error(tmp_path: Path) -> None:
    assert main(["frame", "--robot", "ant", "--out", str(tmp_path), "--width", "4"]) == 2


def test_doctor_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import nil.doctor

    # importing Warp takes ~10 s here; its status has its own tests (warp backend)
    monkeypatch.setattr(
        nil.doctor, "warp_info", lambda: {"available": False, "error": "skipped in this test"}
    )
    assert main(["doctor", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["gl"]["MUJOCO_GL"] and rep["gl"]["ok"]
    assert rep["torch"]["device"] in ("cpu", "cuda")
    assert any(r["name"] == "ant" and r["available"] for r in rep["robots"])
    assert {m["role"] for m in rep["models"]} == {"generator", "segmenter", "encoder"}
    assert "available" in rep["warp"]
