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


# ------------------------------------------------------------------ defaults owned by the config
from nil.config import (  # noqa: E402
    GENERATOR_CONFIGS,
    BROConfig,
    DiffusersGeneratorConfig,
    FileGeneratorConfig,
    GeneratorConfig,
    RLConfig,
    SACConfig,
    config_to_dict,
)
from nil.presets import BEYOND_PAPER, PRESETS, get_preset  # noqa: E402
from nil.skill import build_config  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# keys that stay null in a resolved config because the run uses no value there (see nil/skill.py)
NULL_OK = {
    "robot.keyframe",  # none: the preset's pose
    "robot.initial_pose",  # none: the keyframe's pose (a task preset that starts elsewhere sets it)
    "generator.num_frames",  # synthetic teacher: the length is generator.seconds
    "generator.retime.rife_path",  # only for retime.method rife
    "generator.teacher_checkpoint",  # only for teacher policy
    "generator.keyframe_times",  # only for teacher keyframes
    "encoder.revision",  # the hub's default branch (the commit is recorded with the embeddings)
    "reward.nonfinite_reward",  # none: a non-finite reward raises
    "reward.speed_sigma_depth",  # none: S_R is isotropic (speed_sigma in every direction)
    "rl.gait_period_s",  # only with rl.gait_clock; estimated from the reference masks
    "sim.nconmax",  # Warp only, sized from the model's contacts
    "sim.njmax",
}


def _nulls(d: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _nulls(v, f"{prefix}{k}.")
        elif v is None:
            out.add(prefix + k)
    return out


def _flat(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "sources" and k != "fields":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


@pytest.mark.parametrize("preset", ["cpu", "demo"])
def test_init_resolves_every_default(tmp_path: Path, preset: str) -> None:
    cfg = build_config(robot="ant", skill="walking", preset=preset)
    data = config_to_dict(cfg)
    assert _nulls(data) <= NULL_OK, _nulls(data) - NULL_OK
    # the values the layers used to derive at run time, now in the file: the ant's 8 actuators, SAC
    # (the demo sets its target entropy itself: 0 per action, nil/presets.py says why)
    assert cfg.rl.target_entropy == {"cpu": -8.0, "demo": 0.0}[preset]
    assert cfg.rl.pessimism == 1.0 and cfg.rl.weight_decay == 0.0
    assert cfg.robot.feet_bodies and cfg.robot.kp == 100.0 and cfg.camera.distance and cfg.camera.distance > 0
    assert cfg.generator.fps == 25.0 and cfg.generator.gait_hz == 1.0 and cfg.rl.torch_threads == 1
    # skill.yaml round trip equals the resolved config, and resolving it again changes nothing
    save_config(cfg, tmp_path)
    back = load_config(tmp_path)
    assert back == cfg and config_to_dict(back) == data
    from nil.skill import resolve_defaults

    assert config_to_dict(resolve_defaults(back)) == data


def test_bro_gets_its_own_defaults() -> None:
    cfg = build_config(robot="ant", skill="walking", preset="cpu", overrides=["rl.algo=bro"])
    assert isinstance(cfg.rl, BROConfig)
    assert (cfg.rl.pessimism, cfg.rl.weight_decay, cfg.rl.target_entropy) == (0.0, 1e-4, -4.0)
    assert cfg.rl.kl_target == 0.05 and cfg.rl.batch_size == 256  # BRO's own option; the preset's batch
    # an older skill.yaml's null ("the algorithm's default") reads as the variant's value
    assert parse_config({"rl": {"algo": "bro", "pessimism": None}}).rl.pessimism == 0.0


def test_changed_robot_or_algo_rederives(tmp_path: Path) -> None:
    cfg = build_config(robot="ant", skill="walking", preset="demo")
    data = config_to_dict(cfg)
    data["robot"]["name"], data["rl"]["algo"] = "unitree_a1", "bro"  # a hand edit or a sweep axis
    moved = parse_config(data)
    assert isinstance(moved.rl, BROConfig) and moved.rl.pessimism == 0.0
    assert moved.robot.kp is None and moved.robot.feet_bodies is None and moved.camera.distance is None
    assert moved.robot.control_hz == 25.0 and moved.robot.control_mode == "pd"  # set by the preset: kept
    assert moved.camera.width == 80 and moved.rl.target_entropy == 0.0
    again = build_config(robot="unitree_a1", skill="walking", preset="demo", overrides=["rl.algo=bro"])
    assert again.rl.target_entropy == 0.0 and again.robot.feet_bodies != cfg.robot.feet_bodies
    # a derived target entropy (the cpu preset leaves it to the algorithm) is derived again
    cpu = config_to_dict(build_config(robot="ant", skill="walking", preset="cpu"))
    cpu["robot"]["name"], cpu["rl"]["algo"] = "unitree_a1", "bro"
    assert parse_config(cpu).rl.target_entropy is None
    bro_a1 = build_config(robot="unitree_a1", skill="walking", preset="cpu", overrides=["rl.algo=bro"])
    assert bro_a1.rl.target_entropy == -6.0  # -|A|/2 for the A1's 12 actuators


def test_sections_are_discriminated_unions() -> None:
    assert isinstance(RLConfig(algo="bro"), BROConfig) and isinstance(RLConfig(), SACConfig)
    g = GeneratorConfig(name="file", path="v.mp4")
    assert isinstance(g, FileGeneratorConfig) and g.path == "v.mp4"
    cfg = parse_config({"generator": {"name": "diffusers", "model_id": "/m", "steps": 4}})
    assert isinstance(cfg.generator, DiffusersGeneratorConfig) and cfg.generator.steps == 4
    with pytest.raises(ConfigError, match=r"generator\.seconds: unknown key"):
        parse_config({"generator": {"name": "file", "seconds": 2.0}})
    with pytest.raises(ConfigError, match=r"rl\.kl_target: unknown key .*only rl\.algo: bro takes it"):
        parse_config({"rl": {"algo": "sac", "kl_target": 0.1}})
    with pytest.raises(ConfigError, match=r"segmenter\.model_id: unknown key"):
        parse_config({"segmenter": {"name": "flow", "model_id": "x"}})
    # the variant survives the trips a sweep makes (pickled to Ray workers, deep copies)
    import pickle

    cfg = parse_config({"rl": {"algo": "bro", "kl_target": 0.2}, "segmenter": {"name": "background"}})
    back = pickle.loads(pickle.dumps(cfg))
    assert back == cfg and isinstance(back.rl, BROConfig) and back.rl.kl_target == 0.2
    # switching the generator by --set drops the old variant's options instead of failing on them
    cfg = apply_overrides(parse_config({"generator": {"seconds": 2.0}}), ["generator.name=file"])
    assert isinstance(cfg.generator, FileGeneratorConfig)


def test_plugin_generator_config_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        ConfigError, match=r"generator\.name: unknown name 'still'; registered: diffusers, file"
    ):
        parse_config({"generator": {"name": "still"}})
    with pytest.raises(ConfigError, match=r"sim\.backend: unknown name 'brax'; registered: mujoco, warp"):
        parse_config({"sim": {"backend": "brax"}})
    with pytest.raises(
        ConfigError, match=r"generator\.retime\.method: unknown name 'film'; registered: flow"
    ):
        parse_config({"generator": {"retime": {"method": "film"}}})
    monkeypatch.setattr(GENERATOR_CONFIGS, "_entries", dict(GENERATOR_CONFIGS._entries))

    @GENERATOR_CONFIGS.register("still")
    class StillConfig(GeneratorConfig):
        name: str = "still"
        hold_frames: int = 9

    cfg = parse_config({"generator": {"name": "still", "hold_frames": 3, "seed": 2}})
    assert isinstance(cfg.generator, StillConfig) and (cfg.generator.hold_frames, cfg.generator.seed) == (
        3,
        2,
    )
    assert config_to_dict(cfg)["generator"]["hold_frames"] == 3  # the variant's own field is saved
    assert parse_config(config_to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match=r"generator\.hold_frames"):
        parse_config({"generator": {"name": "still", "hold_frames": "many"}})


def test_presets_differ_exactly_where_intended() -> None:
    flat = {n: _flat(get_preset(n).config().model_dump(mode="json")) for n in PRESETS}
    assert set(PRESETS) == {"cpu", "gpu", "paper", "demo"}

    def diff(a: str, b: str) -> set[str]:
        return {k for k in flat[a] if flat[a][k] != flat[b][k]}

    assert diff("cpu", "gpu") >= {"rl.algo", "reward.use_video", "sim.backend", "segmenter.name"}
    assert diff("paper", "gpu") == {
        "camera.calibrate",  # beyond the paper: the gpu preset fits the camera to a generated video
        "encoder.batch_size",
        "rl.replay_ratio",
        "rl.batch_size",
        "sim.backend",
        "sim.device",
        "sim.num_envs",
        "sim.num_workers",
    }
    paper = flat["paper"]
    assert (paper["rl.algo"], paper["rl.replay_ratio"], paper["rl.batch_size"]) == ("bro", 10.0, 128)
    assert (paper["reward.zeta"], paper["reward.beta"], paper["reward.eta"], paper["reward.use_video"]) == (
        1.0,
        1.0,
        1.0,
        True,
    )
    # every beyond-paper switch is set by the paper preset, at its Field default (the paper's behaviour)
    values = get_preset("paper").values
    defaults = _flat(SkillConfig(rl=BROConfig()).model_dump(mode="json"))
    for sec, switches in BEYOND_PAPER.items():
        for key, val in switches.items():
            assert values[sec][key] == val == defaults[f"{sec}.{key}"], f"{sec}.{key}"
    assert diff("demo", "cpu") == {
        "camera.width",
        "camera.height",
        "robot.control_hz",
        "robot.control_mode",
        "generator.seconds",
        "segmenter.name",
        "reward.eta",
        "reward.torque_coef",
        "reward.speed_weight",  # the beyond-paper switches only the demo turns on (docs/benchmarks.md,
        "reward.iou_window",  # "Imitation ablation (ant)")
        "reward.speed_sigma",  # 0.5 m/s in the demo ("Does the reward prefer the teacher?")
        "rl.obs_prev_action",
        "rl.gait_clock",
        "rl.total_steps",
        "rl.warmup_steps",
        "rl.batch_size",
        "rl.actor_width",
        "rl.critic_width",
        "rl.gamma",
        "rl.actor_lr",  # 1e-3 with gamma 0.9 in the demo (docs/benchmarks.md, "A shorter discount ...")
        "rl.critic_lr",
        "rl.init_temperature",
        "rl.target_entropy",  # 0 per action in the demo ("Exploration: SAC's target entropy")
        "rl.eval_interval",
        "rl.video_interval",
        "rl.log_interval",
        "rl.device",
        "sim.num_workers",
    }  # (demo's flow segmenter has no SAM2 keys: diff looks at demo's keys)
    assert flat["demo"]["sim.num_workers"] == 1  # one worker process: the physics overlaps the learner
    with pytest.raises(ConfigError, match="cpu, gpu, paper, demo"):
        get_preset("fast")


def test_every_example_validates() -> None:
    from nil.scale.spec import load_sweep

    files = sorted(EXAMPLES.glob("*.yaml"))
    assert len(files) >= 7
    for f in files:
        data = yaml.safe_load(f.read_text())
        if "axes" in data or "variants" in data:
            load_sweep(f)
        else:
            load_config(f)


@pytest.mark.parametrize("robot", ["ant", "unitree_a1"])
def test_resolved_robot_values_build_the_same_robot(robot: str, menagerie_root: Path) -> None:
    from dataclasses import asdict

    from nil.robots import robot_from_config

    plain = build_config(robot=robot, skill="walking", preset="demo", resolve=False)
    resolved = build_config(robot=robot, skill="walking", preset="demo")
    assert plain.robot.kp is None and resolved.robot.kp is not None
    assert asdict(robot_from_config(resolved)) == asdict(robot_from_config(plain))  # behaviour unchanged


def test_diffusers_family_defaults_are_written(tmp_path: Path) -> None:
    cfg = build_config(
        robot="ant", skill="walking", generator="diffusers", overrides=["generator.family=ltx"]
    )
    assert (cfg.generator.num_frames, cfg.generator.fps, cfg.generator.guidance) == (121, 25.0, 3.0)
    folder = tmp_path / "wan_pipe"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "WanImageToVideoPipeline"}')
    cfg = build_config(robot="ant", skill="walking", generator="diffusers", model=str(folder))
    assert (cfg.generator.num_frames, cfg.generator.fps, cfg.generator.guidance) == (81, 16.0, 5.0)
    # a hub id with family auto: nothing is downloaded at init; the family is read at `nil generate`
    cfg = build_config(robot="ant", skill="walking", generator="diffusers", model="org/some-i2v")
    assert cfg.generator.num_frames is None and cfg.generator.fps is None
    # a user's value is kept, and not recorded as derived
    cfg = build_config(
        robot="ant",
        skill="walking",
        generator="diffusers",
        overrides=["generator.family=ltx", "generator.num_frames=33"],
    )
    assert cfg.generator.num_frames == 33 and "generator.num_frames" not in cfg.derived.fields


def test_config_imports_no_heavier_layer() -> None:
    import subprocess
    import sys

    light = ("nil.config", "nil.presets", "nil.errors", "nil.registry")
    code = (
        "import sys, nil.config, nil.presets; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mujoco', 'numpy', 'diffusers')"
        f" or (m.startswith('nil.') and m not in {light!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_as_variant_narrows_or_names_the_key() -> None:
    from nil.config import Sam2SegmenterConfig, SyntheticGeneratorConfig

    cfg = parse_config({"segmenter": {"name": "auto"}})
    assert cfg.segmenter.as_variant(Sam2SegmenterConfig).chunk_size == 64  # auto carries SAM2's options
    assert cfg.generator.as_variant(SyntheticGeneratorConfig).seconds == 4.0
    with pytest.raises(ConfigError, match=r"segmenter\.name is 'flow', but this needs .*: auto \| sam2"):
        parse_config({"segmenter": {"name": "flow"}}).segmenter.as_variant(Sam2SegmenterConfig)


def test_gpu_init_writes_the_robot_and_model_values(menagerie_root: Path) -> None:
    cfg = build_config(robot="unitree_h1", skill="walking", preset="gpu", generator="diffusers")
    assert cfg.robot.keyframe == "home" and cfg.robot.root_body == "pelvis"  # from the H1 preset
    assert cfg.rl.target_entropy == -9.5 and cfg.rl.pessimism == 0.0  # BRO: -|A|/2 for 19 actuators
    g = cfg.generator
    assert isinstance(g, DiffusersGeneratorConfig) and g.model_id == "THUDM/CogVideoX-5b-I2V"
    assert (g.num_frames, g.fps, g.guidance) == (49, 8.0, 6.0)  # CogVideoX's native length, rate, guidance
    nulls = _nulls(config_to_dict(cfg)) - NULL_OK
    assert nulls == {"generator.revision", "generator.height", "generator.width", "generator.negative_prompt"}


def test_fixed_camera_refuses_the_floor_flow_speed_cue() -> None:
    """The speed cue reads the root's motion from a camera that rides on it; a fixed camera has no such
    floor flow, so the pair is a one-line error naming both settings, not a cue that silently reads 0."""
    cfg = parse_config({"camera": {"track": "fixed"}, "reward": {"speed_weight": 0.0}})
    assert cfg.camera.track == "fixed"
    with pytest.raises(ConfigError, match=r"reward\.speed_weight.*camera\.track"):
        parse_config({"camera": {"track": "fixed"}, "reward": {"speed_weight": 1.0}})
    with pytest.raises(ConfigError, match=r"reward\.position_weight.*camera\.track"):
        parse_config({"camera": {"track": "fixed"}, "reward": {"position_weight": 1.0}})
    with pytest.raises(ConfigError, match=r"camera\.track"):
        parse_config({"camera": {"track": "follow"}})
