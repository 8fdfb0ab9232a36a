"""The skill config: pydantic models of everything a run needs, loaded from and saved to skill.yaml.

Each section is owned by one layer (named in its docstring). Unknown keys and bad values fail with a
ConfigError naming the key, e.g. ``reward.zeta: Input should be a valid number``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nil.errors import ConfigError

DEFAULT_PROMPT_TEMPLATE = "The {robot} agent is {skill}, camera follows the agent."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RobotConfig(_Strict):
    """Which robot (robots layer): a preset name or an MJCF path, plus overrides of the inferred/preset spec."""

    name: str = "ant"
    description: str | None = None  # b_j in the prompt; defaults to the preset's description
    keyframe: str | None = None
    root_body: str | None = None
    torso_body: str | None = None
    feet_bodies: list[str] | None = None
    control_mode: Literal["torque", "pd"] | None = None
    action_scale: float | None = Field(default=None, gt=0)
    kp: float | None = Field(default=None, gt=0)
    kd: float | None = Field(default=None, ge=0)
    control_hz: float | None = Field(default=None, gt=0, le=1000)
    fall_height: float | None = None  # root z below this terminates
    max_tilt_deg: float | None = Field(default=None, gt=0, le=180)
    simplify_meshes: bool | None = None  # decimate dense visual meshes for fast CPU rendering (default on)


class CameraConfig(_Strict):
    """Tracking camera ("camera follows the agent"); None fields take the robot preset's values."""

    width: int = Field(default=224, ge=16, le=2048)
    height: int = Field(default=224, ge=16, le=2048)
    distance: float | None = Field(default=None, gt=0)
    elevation: float | None = Field(default=None, ge=-90, le=90)
    azimuth: float | None = None
    fovy: float | None = Field(default=None, gt=1, lt=179)
    background: tuple[int, int, int] = (255, 255, 255)  # flat colour that replaces the background in e0


class RetimeConfig(_Strict):
    """Bringing the reference to the control rate (reference.retime)."""

    method: Literal["flow", "nearest", "rife"] = "flow"
    rife_path: str | None = None  # local directory with RIFE weights, for method=rife


class GeneratorConfig(_Strict):
    """Stage-1 video generator (reference.generators): synthetic teacher, imported file, or a diffusers I2V model."""

    name: Literal["synthetic", "file", "diffusers"] = "synthetic"
    # diffusers
    model_id: str = "THUDM/CogVideoX-5b-I2V"
    revision: str | None = None
    family: Literal["auto", "cogvideox", "wan", "ltx", "svd"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    device: str = "auto"
    cpu_offload: bool = False
    vae_tiling: bool = False
    steps: int = Field(default=50, ge=1, le=1000)
    guidance: float = Field(default=6.0, ge=0)
    # None: the model family's native length/rate (CogVideoX 49 @ 8 fps, Wan 81 @ 16, LTX 121 @ 25,
    # SVD 25 @ 7); for the synthetic teacher fps None = 25 (a video model's rate; retiming brings it to
    # the control rate) and the length comes from `seconds`.
    num_frames: int | None = Field(default=None, ge=2, le=2000)
    fps: float | None = Field(default=None, gt=0, le=240)
    height: int | None = Field(default=None, ge=16, le=4096)  # model input size; None: the family's default
    width: int | None = Field(default=None, ge=16, le=4096)
    negative_prompt: str | None = None
    seed: int = 0
    # file
    path: str | None = None
    # synthetic teacher
    teacher: Literal["cpg", "policy"] = "cpg"
    teacher_checkpoint: str | None = None
    seconds: float = Field(default=4.0, gt=0, le=120)
    gait_hz: float | None = Field(default=None, gt=0, le=10)  # None: the robot's tuned CPG frequency
    gait_amplitude: float = Field(default=1.0, gt=0, le=3)  # scales the CPG's joint amplitudes
    teacher_background: Literal["scene", "flat"] = "scene"  # flat: non-robot pixels -> camera.background
    retime: RetimeConfig = RetimeConfig()


class SegmenterConfig(_Strict):
    """Reference segmentation (reference.segment): SAM2, or the offline flow-propagation fallback."""

    name: Literal["auto", "sam2", "flow", "background"] = "auto"
    model_id: str = "facebook/sam2.1-hiera-large"
    device: str = "auto"
    chunk_size: int = Field(
        default=64, ge=2
    )  # SAM2 frames per inference session (chunks overlap by one frame)
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # SAM2; auto: bf16 on GPU, fp32 on CPU
    background_threshold: int = Field(default=30, ge=1, le=255)  # "background" mode: colour difference
    min_area_ratio: float = Field(default=0.2, gt=0)  # mask area / m0 area below this fails the quality check
    max_area_ratio: float = Field(default=5.0, gt=1)  # above: a warning
    max_frame_fraction: float = Field(default=0.9, gt=0, le=1)  # mask covering more of a frame fails
    min_consecutive_iou: float = Field(default=0.5, ge=0, le=1)  # below: a "jump" warning


class EncoderConfig(_Strict):
    """Video encoder for S_V (reward.encoders)."""

    name: Literal["timesformer", "videomae"] = "timesformer"
    model_id: str = "facebook/timesformer-base-finetuned-k400"
    clip_len: int = Field(default=8, ge=1)
    clip_stride: int = Field(default=1, ge=1)
    resolution: int = Field(default=224, ge=16)
    background_fill: tuple[int, int, int] = (0, 0, 0)
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_size: int = Field(default=64, ge=1)
    revision: str | None = None  # hub revision of model_id
    local_files_only: bool = False  # never touch the network (fail fast when the weights are not cached)


class RewardConfig(_Strict):
    """R_t = zeta*S_V + beta*S_M + eta*P (+ task) (reward layer). See docs/reward.md."""

    zeta: float = 1.0
    beta: float = 1.0
    eta: float = 1.0
    use_video: bool = True
    use_iou: bool = True
    use_reg: bool = True
    video_metric: Literal["cosine", "neg_l2"] = "cosine"
    video_every: int = Field(default=1, ge=1)
    early_clip: Literal["repeat_first", "zero"] = "repeat_first"
    torque_coef: float = Field(default=1e-5, ge=0)
    action_rate_coef: float = Field(default=0.01, ge=0)
    joint_vel_coef: float = Field(default=1e-3, ge=0)
    foot_slip_coef: float = Field(default=0.25, ge=0)
    tilt_coef: float = Field(default=1.0, ge=0)
    tilt_form: Literal["one_minus_up", "angle_sq"] = "one_minus_up"
    iou_empty: float = Field(default=1.0, ge=0, le=1)  # S_M when agent and reference masks are both empty
    nonfinite_reward: float | None = (
        None  # None: raise on a non-finite reward; a value: use it for sim-flagged envs
    )
    task_weight: float = Field(default=0.0, ge=0)
    target_speed: float = 1.0


class RLConfig(_Strict):
    """Learner and training loop (rl layer)."""

    algo: Literal["sac", "bro"] = "sac"
    total_steps: int = Field(default=30_000, ge=1)
    warmup_steps: int = Field(default=2_500, ge=0)
    batch_size: int = Field(default=256, ge=1)
    replay_ratio: float = Field(default=1.0, gt=0)  # gradient updates per env transition (over all envs)
    buffer_size: int = Field(default=1_000_000, ge=1)
    gamma: float = Field(default=0.99, gt=0, le=1)
    tau: float = Field(default=0.005, gt=0, le=1)
    actor_lr: float = Field(default=3e-4, gt=0)
    critic_lr: float = Field(default=3e-4, gt=0)
    alpha_lr: float = Field(default=3e-4, gt=0)
    init_temperature: float = Field(default=1.0, gt=0)
    target_entropy: float | None = None  # None: -|A| for SAC, -|A|/2 for BRO
    actor_width: int = Field(default=256, ge=1)
    actor_depth: int = Field(default=1, ge=1)
    critic_width: int = Field(default=256, ge=1)
    critic_depth: int = Field(default=2, ge=1)
    n_quantiles: int = Field(default=100, ge=1)
    reset_steps: list[int] = []
    obs_norm: bool = True
    eval_interval: int = Field(default=5_000, ge=1)
    eval_episodes: int = Field(default=2, ge=1)
    checkpoint_interval: int = Field(default=5_000, ge=1)
    keep_checkpoints: int = Field(default=3, ge=1)
    video_interval: int = Field(default=10_000, ge=1)
    device: str = "auto"
    # learner details (nil.rl.agents); None = the algorithm's own default
    pessimism: float | None = (
        None  # critics combined as mean - pessimism*|q1-q2|/2; None: 1 (SAC = min), 0 (BRO)
    )
    weight_decay: float | None = Field(default=None, ge=0)  # None: 0 for SAC (Adam), 1e-4 for BRO (AdamW)
    kl_target: float = Field(default=0.05, gt=0)  # BRO optimistic actor: per-dimension KL target
    std_multiplier: float = Field(default=0.75, gt=0)  # BRO optimistic actor std = conservative std * this
    init_optimism: float = Field(default=1.0, gt=0)
    init_kl_weight: float = Field(default=0.25, gt=0)
    adjustment_lr: float = Field(default=3e-5, gt=0)  # Adam lr of BRO's optimism / KL-weight duals
    log_interval: int = Field(default=1_000, ge=1)  # env steps between TensorBoard scalar writes
    torch_threads: int | None = Field(default=None, ge=1)  # CPU threads for torch (None: 1 for a CPU learner)


class SimConfig(_Strict):
    """Simulator backend (sim layer)."""

    backend: Literal["mujoco", "warp"] = "mujoco"
    device: str = "cpu"
    num_envs: int = Field(default=4, ge=1)
    num_workers: int = Field(default=2, ge=0)  # 0: in-process
    reset_noise: float = Field(default=0.02, ge=0)
    nconmax: int | None = None
    njmax: int | None = None
    cuda_graph: bool = True  # warp backend on CUDA: replay physics + render as one captured CUDA graph


class SkillConfig(_Strict):
    """A whole skill: what skill.yaml holds."""

    robot: RobotConfig = RobotConfig()
    skill: str = "walking"
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    seed: int = 0
    camera: CameraConfig = CameraConfig()
    generator: GeneratorConfig = GeneratorConfig()
    segmenter: SegmenterConfig = SegmenterConfig()
    encoder: EncoderConfig = EncoderConfig()
    reward: RewardConfig = RewardConfig()
    rl: RLConfig = RLConfig()
    sim: SimConfig = SimConfig()

    @field_validator("skill")
    @classmethod
    def _skill_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the skill text is empty; say what the robot should do, e.g. 'walking'")
        return v

    @field_validator("prompt_template")
    @classmethod
    def _template_fields(cls, v: str) -> str:
        try:
            v.format(robot="r", skill="s")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"prompt_template may only use {{robot}} and {{skill}} ({e})") from e
        return v

    def prompt(self, robot_description: str) -> str:
        """The text prompt given to the video model."""
        return self.prompt_template.format(robot=robot_description, skill=self.skill)


def format_validation_error(err: ValidationError, source: str, what: str = "config") -> str:
    """One line naming every offending key of a pydantic error (unknown keys get a hint)."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = "unknown key (check the spelling, or remove it)" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{key}: {msg.removeprefix('Value error, ')}")
    return f"invalid {what} {source}: " + "; ".join(lines)


def read_yaml_mapping(p: Path, expected: str) -> dict[str, Any] | None:
    """Parse a YAML file that must hold a mapping (or nothing); ConfigError otherwise."""
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of {expected}, got {type(data).__name__}")
    return data


def parse_config(data: dict[str, Any] | None, source: str = "") -> SkillConfig:
    """Validate a mapping into a SkillConfig, raising ConfigError that names the offending key."""
    try:
        return SkillConfig.model_validate(data or {})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def load_config(path: str | Path) -> SkillConfig:
    """Load skill.yaml (a file, or a skill directory containing one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "skill.yaml"
    if not p.exists():
        raise ConfigError(f"no skill config at {p}; create one with `nil init DIR --robot NAME --skill TEXT`")
    return parse_config(read_yaml_mapping(p, "config sections"), str(p))


def config_to_dict(cfg: SkillConfig) -> dict[str, Any]:
    """Plain-python dict of a config (tuples as lists), suitable for YAML/JSON."""
    return cfg.model_dump(mode="json")


def save_config(cfg: SkillConfig, path: str | Path) -> Path:
    """Write skill.yaml atomically; `path` may be a directory."""
    from nil.io import atomic_write_text

    p = Path(path)
    if p.is_dir() or p.suffix.lower() not in (".yaml", ".yml"):  # a folder, even one named "gait-1.5"
        p = p / "skill.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return p


def apply_overrides(cfg: SkillConfig, overrides: list[str]) -> SkillConfig:
    """Apply dotted `key=value` overrides (values parsed as YAML), e.g. `rl.total_steps=1000`."""
    data = config_to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{key}: unknown config section {part!r}")
            node = node[part]
        node[parts[-1]] = yaml.safe_load(raw)
    return parse_config(data, "(overrides)")
