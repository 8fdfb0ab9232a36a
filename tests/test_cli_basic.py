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


def test_init_writes_every_value_the_run_uses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "paper"
    assert main(["init", str(d), "--robot", "ant", "--preset", "paper", "--set", "rl.total_steps=500"]) == 0
    data = yaml.safe_load((d / "skill.yaml").read_text())
    rl = data["rl"]
    assert (rl["algo"], rl["replay_ratio"], rl["batch_size"], rl["total_steps"]) == ("bro", 10.0, 128, 500)
    # BRO's own defaults and the ant's 8-dim action space, written out instead of null
    assert (rl["pessimism"], rl["weight_decay"], rl["target_entropy"], rl["kl_target"]) == (
        0.0,
        1e-4,
        -4.0,
        0.05,
    )
    assert data["camera"]["distance"] > 0 and data["robot"]["feet_bodies"] and data["robot"]["kp"] == 100.0
    assert data["derived"]["sources"] == {
        "generator.name": "synthetic",
        "rl.algo": "bro",
        "robot.name": "ant",
    }
    assert main(["init", str(tmp_path / "x"), "--preset", "fast"]) == 2
    assert "--preset must be one of cpu, gpu, paper, demo" in capsys.readouterr().err


def test_init_names_the_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path / "a"), "--set", "rl.kl_target=0.1"]) == 2  # a BRO option on SAC
    assert "rl.kl_target: unknown key" in capsys.readouterr().err
    assert main(["init", str(tmp_path / "b"), "--generator", "sora"]) == 2
    assert (
        "generator.name: unknown name 'sora'; registered: diffusers, file, synthetic"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
