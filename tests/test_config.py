"""Skill config: unknown keys and bad values name the key; save/load round trip; overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nil.config import SkillConfig, apply_overrides, load_config, parse_config, save_config
from nil.errors import ConfigError


def test_defaults_and_prompt() -> None:
    cfg = SkillConfig()
    assert cfg.robot.name == "ant" and cfg.rl.total_steps > 0
    assert cfg.prompt("Unitree H1 humanoid robot") == (
        "The Unitree H1 humanoid robot agent is walking, camera follows the agent."
    )


def test_unknown_key_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"reward\.zetta: unknown key"):
        parse_config({"reward": {"zetta": 1.0}})
    with pytest.raises(ConfigError, match=r"robots: unknown key"):
        parse_config({"robots": {"name": "ant"}})


def test_bad_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"sim\.num_envs"):
        parse_config({"sim": {"num_envs": 0}})
    with pytest.raises(ConfigError, match=r"robot\.control_mode"):
        parse_config({"robot": {"control_mode": "velocity"}})
    with pytest.raises(ConfigError, match=r"skill"):
        parse_config({"skill": "   "})
    with pytest.raises(ConfigError, match=r"prompt_template"):
        parse_config({"prompt_template": "The {robot} does {dance}"})


def test_save_load_round_trip(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "robot": {"name": "unitree_h1", "kp": 120.0},
            "skill": "jumping",
            "camera": {"width": 96, "background": [0, 0, 0]},
            "sim": {"num_envs": 8},
        }
    )
    path = save_config(cfg, tmp_path)
    assert path == tmp_path / "skill.yaml"
    back = load_config(tmp_path)
    assert back == cfg
    data = yaml.safe_load(path.read_text())
    assert data["camera"]["background"] == [0, 0, 0] and data["robot"]["kp"] == 120.0


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nil init"):
        load_config(tmp_path / "nothing")
    (tmp_path / "skill.yaml").write_text("robot: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path)
    (tmp_path / "skill.yaml").write_text("robot:\n  nmae: ant\n")
    with pytest.raises(ConfigError, match=r"robot\.nmae"):
        load_config(tmp_path)


def test_overrides() -> None:
    cfg = apply_overrides(SkillConfig(), ["rl.total_steps=1000", "robot.name=unitree_go2", "camera.width=64"])
    assert (cfg.rl.total_steps, cfg.robot.name, cfg.camera.width) == (1000, "unitree_go2", 64)
    with pytest.raises(ConfigError, match="rl.total_steps"):
        apply_overrides(SkillConfig(), ["rl.total_steps=-5"])
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides(SkillConfig(), ["rl.total_steps"])
