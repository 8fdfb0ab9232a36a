"""The skill config: pydantic models of everything a run needs, loaded from and saved to skill.yaml.

Each section is owned by one layer (named in its docstring). Unknown keys and bad values fail with a
ConfigError naming the key, e.g. ``reward.zeta: Input should be a valid number``.

The config owns the defaults: they are Field defaults, each algorithm's or generator's on its own
variant class (generator, segmenter, encoder, rl, sim and generator.retime are `PluggableSection`s);
the presets are typed values in nil.presets; what depends on the robot or the video model is filled in
by `nil init` (nil.skill.resolve_defaults) and recorded in `derived`. A plugin adds a variant without
touching this module, and this module imports no layer above it (pydantic, yaml and nil.registry only):

    @GENERATOR_CONFIGS.register("mine")      # next to the plugin's @GENERATORS.register("mine")
    class MyGeneratorConfig(GeneratorConfig):
        name: str = "mine"
        strength: float = 1.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from nil.errors import ConfigError
from nil.registry import Registry

DEFAULT_PROMPT_TEMPLATE = "The {robot} agent is {skill}, camera follows the agent."


class StrictModel(BaseModel):
    """Base of every config model (and the sweep file's): unknown keys are errors, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


_Strict = StrictModel  # the sections' historical base name


_S = TypeVar("_S", bound="PluggableSection")


class PluggableSection(StrictModel):
    """A section whose `KEY` field names an implementation, each with its own config class.

    The section's root class (the one that defines `CONFIGS`, a Registry of name -> config class) is a
    discriminated union that a plugin can extend: `@GENERATOR_CONFIGS.register("mine")` on a subclass
    makes `generator: {name: mine, ...}` valid in skill.yaml. Building the root class dispatches on the
    name, so `RLConfig(algo="bro")` is a `BROConfig` and `GeneratorConfig(name="file")` a
    `FileGeneratorConfig`; each variant carries only its own options, so a stray key is an error.
    """

    KEY: ClassVar[str]
    CONFIGS: ClassVar[Registry[Any]]

    @classmethod
    def _root(cls) -> type[PluggableSection]:
        return next(c for c in cls.__mro__ if "CONFIGS" in c.__dict__)

    @classmethod
    def config_class(cls, name: object) -> type[PluggableSection]:
        """The config class registered for `name` (the root class itself when none is)."""
        root = cls._root()
        return root.CONFIGS.get(name) if isinstance(name, str) and name in root.CONFIGS else root

    @classmethod
    def _name_of(cls, data: dict[str, Any]) -> object:
        return data.get(cls.KEY, cls._root().model_fields[cls.KEY].default)

    def __new__(cls, *args: Any, **data: Any) -> Any:
        if "CONFIGS" in cls.__dict__:  # the root: build the variant the name asks for
            cls = cls.config_class(cls._name_of(data))
        return super().__new__(cls)

    @model_validator(mode="wrap")
    @classmethod
    def _dispatch(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if "CONFIGS" in cls.__dict__ and isinstance(data, dict):
            sub = cls.config_class(cls._name_of(data))
            if sub is not cls:
                return sub.model_validate(data)
        return handler(data)

    @model_validator(mode="after")
    def _variant_matches(self) -> PluggableSection:
        key = self.KEY
        name = getattr(self, key)
        want = self.config_class(name)
        if not isinstance(self, want):
            raise ValueError(f"{key} {name!r} is configured by {want.__name__}, not {type(self).__name__}")
        self.model_fields_set.add(key)  # a partial dump (presets) always keeps the name
        return self

    def as_variant(self, cls: type[_S]) -> _S:
        """This section as the variant `cls` (for a layer that needs its options; typed for mypy).

        ConfigError naming the key when the section is another variant, e.g. a SAM2 option on `flow`.
        """
        if not isinstance(self, cls):
            key = self.CONFIGS.kind  # e.g. "segmenter.name"
            fits = [n for n in self.CONFIGS.names() if issubclass(self.CONFIGS.get(n), cls)]
            name = getattr(self, self.KEY)
            raise ConfigError(f"{key} is {name!r}, but this needs {cls.__name__} ({key}: {' | '.join(fits)})")
        return self

    def variant_defaults(self) -> list[str]:
        """Fields left at a default that differs between this section's variants (e.g. pessimism)."""
        root = self._root()
        classes = [root.CONFIGS.get(n) for n in root.CONFIGS.names()]
        out = []
        for name in type(self).model_fields:
            if name in self.model_fields_set or name == self.KEY or name not in root.model_fields:
                continue
            defaults = {
                repr(c.model_fields[name].get_default(call_default_factory=True))
                for c in classes
                if name in c.model_fields
            }
            if len(defaults) > 1:
                out.append(name)
        return out


def registered_name(key: str) -> Any:
    """A field validator for a root section's `key`: the name must be registered (the error lists them)."""

    def check(cls: type[PluggableSection], v: str) -> str:
        names = cls._root().CONFIGS.names()
        if v not in names:
            raise ValueError(f"unknown name {v!r}; registered: {', '.join(names)}")
        return v

    return field_validator(key)(classmethod(check))


class RobotConfig(_Strict):
    """Which robot (robots layer): a preset name or an MJCF path, plus overrides of the inferred/preset spec.

    None: the robot's own value; `nil init` writes every one of them (see Derived).
    """

    name: str = "ant"
    description: str | None = None  # b_j in the prompt; defaults to the preset's description
    keyframe: str | None = None
    # actuated-joint angles (actuator order) over the keyframe's pose: start a task in another pose
    initial_pose: list[float] | None = None
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
    # world offset (m) of the look-at point from the root (+ the preset's height); a fitted camera sets it
    lookat_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # beyond the paper: "fixed" looks at the root's initial position for the whole episode instead of
    # following it, so the masks show where the robot moved (a tracking camera hides every translation);
    # for skills done in place (sitting, balancing). "root" is the paper's "camera follows the agent".
    track: Literal["root", "fixed"] = "root"
    # beyond the paper: fit this camera to an imported/generated video's frame 0 (`nil calibrate`)
    calibrate: bool = False
    calibrate_min_iou: float = Field(default=0.7, ge=0, le=1)  # a fit below this IoU stops the pipeline


RETIME_CONFIGS: Registry[type[RetimeConfig]] = Registry("generator.retime.method")


@RETIME_CONFIGS.register("flow")
@RETIME_CONFIGS.register("nearest")
@RETIME_CONFIGS.register("rife")
class RetimeConfig(PluggableSection):
    """Bringing the reference to the control rate (reference.retime); a plugin interpolator registers here."""

    KEY: ClassVar[str] = "method"
    CONFIGS: ClassVar[Registry[Any]] = RETIME_CONFIGS

    method: str = "flow"
    _method_ok = registered_name("method")
    rife_path: str | None = None  # local directory with RIFE weights, for method=rife


GENERATOR_CONFIGS: Registry[type[GeneratorConfig]] = Registry("generator.name")
SEGMENTER_CONFIGS: Registry[type[SegmenterConfig]] = Registry("segmenter.name")
ENCODER_CONFIGS: Registry[type[EncoderConfig]] = Registry("encoder.name")
RL_CONFIGS: Registry[type[RLConfig]] = Registry("rl.algo")
SIM_CONFIGS: Registry[type[SimConfig]] = Registry("sim.backend")


class GeneratorConfig(PluggableSection):
    """Stage-1 video generator (reference.generators); one variant per generator, picked by `name`.

    What every generator takes lives here; `generate(num_frames=, fps=, seed=)` gets these three.
    """

    KEY: ClassVar[str] = "name"
    CONFIGS: ClassVar[Registry[Any]] = GENERATOR_CONFIGS

    name: str = "synthetic"
    _name_ok = registered_name("name")
    seed: int = 0
    # None: the generator's own length/rate (a diffusers family's native one, a file's own; for the
    # synthetic teacher the length comes from `seconds`)
    num_frames: int | None = Field(default=None, ge=2, le=2000)
    fps: float | None = Field(default=None, gt=0, le=240)
    retime: SerializeAsAny[RetimeConfig] = Field(default_factory=RetimeConfig)


@GENERATOR_CONFIGS.register("synthetic")
class SyntheticGeneratorConfig(GeneratorConfig):
    """The synthetic teacher (reference.generators.synthetic): a controller simulated, rendered in MuJoCo."""

    name: str = "synthetic"
    fps: float | None = Field(default=25.0, gt=0, le=240)  # a video model's rate; retimed to the control rate
    # a nil.teachers.TEACHERS name: cpg (a gait), keyframes (poses), policy (a checkpoint)
    teacher: str = "cpg"
    teacher_checkpoint: str | None = None
    # keyframes teacher: MJCF keyframe names or joint-target lists (one per actuator, actuator order),
    # reached at keyframe_times seconds (None: evenly over the first 60 % of `seconds`)
    keyframes: list[str | list[float]] = Field(default_factory=list)
    keyframe_times: list[float] | None = None
    seconds: float = Field(default=4.0, gt=0, le=120)
    gait_hz: float | None = Field(default=None, gt=0, le=10)  # None: the robot's tuned CPG frequency
    gait_amplitude: float = Field(default=1.0, gt=0, le=3)  # scales the CPG's joint amplitudes
    teacher_background: Literal["scene", "flat"] = "scene"  # flat: non-robot pixels -> camera.background


@GENERATOR_CONFIGS.register("file")
class FileGeneratorConfig(GeneratorConfig):
    """A user's video file (reference.generators.file), at its own length and rate."""

    name: str = "file"
    path: str | None = None


@GENERATOR_CONFIGS.register("diffusers")
class DiffusersGeneratorConfig(GeneratorConfig):
    """The paper's stage 1: a diffusers image-to-video pipeline (reference.generators.diffusers_i2v).

    num_frames/fps None: the family's native length/rate (CogVideoX 49 @ 8 fps, Wan 81 @ 16, LTX 121 @ 25,
    SVD 25 @ 7); `nil init` writes them when the family is known (named, or read from a local folder).
    """

    name: str = "diffusers"
    model_id: str = "THUDM/CogVideoX-5b-I2V"
    revision: str | None = None  # hub revision; None: the default branch (its commit goes to meta.json)
    family: Literal["auto", "cogvideox", "wan", "ltx", "svd"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    device: str = "auto"
    cpu_offload: bool = False
    vae_tiling: bool = False
    steps: int = Field(default=50, ge=1, le=1000)
    # None: the family's (CogVideoX 6, Wan 5, LTX 3, SVD 3)
    guidance: float | None = Field(default=None, ge=0)
    height: int | None = Field(default=None, ge=16, le=4096)  # model input size; None: the family's default
    width: int | None = Field(default=None, ge=16, le=4096)
    negative_prompt: str | None = None


class SegmenterConfig(PluggableSection):
    """Reference segmentation (reference.segment): one variant per segmenter, picked by `name`.

    The mask-quality checks and gates apply to every segmenter, so they live here.
    """

    KEY: ClassVar[str] = "name"
    CONFIGS: ClassVar[Registry[Any]] = SEGMENTER_CONFIGS

    name: str = "auto"
    _name_ok = registered_name("name")
    min_area_ratio: float = Field(default=0.2, gt=0)  # mask area / m0 area below this fails the quality check
    max_area_ratio: float = Field(default=5.0, gt=1)  # above: a warning
    max_frame_fraction: float = Field(default=0.9, gt=0, le=1)  # mask covering more of a frame fails
    min_consecutive_iou: float = Field(default=0.5, ge=0, le=1)  # below: a "jump" warning
    # quality gates that stop the pipeline (`--force` goes on anyway); see reference/segment/quality.py
    gate_area_band: tuple[float, float] = (0.4, 2.5)  # mask area / frame 0's mask area must stay inside
    gate_border_run: float = Field(default=0.3, ge=0, le=1)  # longest border-touching run / T above: stop
    gate_min_consecutive_iou: float = Field(default=0.2, ge=0, le=1)  # a jump below this IoU: stop


@SEGMENTER_CONFIGS.register("sam2")
class Sam2SegmenterConfig(SegmenterConfig):
    """SAM2 video segmentation (reference.segment.sam2), prompted with e0's exact mask."""

    name: str = "sam2"
    model_id: str = "facebook/sam2.1-hiera-large"
    device: str = "auto"
    chunk_size: int = Field(default=64, ge=2)  # frames per inference session (chunks overlap by one frame)
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU


@SEGMENTER_CONFIGS.register("auto")
class AutoSegmenterConfig(Sam2SegmenterConfig):
    """SAM2 when its weights are on this machine, else the offline flow segmenter (at `nil segment`)."""

    name: str = "auto"


@SEGMENTER_CONFIGS.register("flow")
class FlowSegmenterConfig(SegmenterConfig):
    """Offline fallback (reference.segment.flow): e0's exact mask propagated by dense optical flow."""

    name: str = "flow"


@SEGMENTER_CONFIGS.register("background")
class BackgroundSegmenterConfig(SegmenterConfig):
    """Background difference (reference.segment.background), for references filmed by a static camera."""

    name: str = "background"
    background_threshold: int = Field(default=30, ge=1, le=255)  # colour difference that counts as robot


@ENCODER_CONFIGS.register("timesformer")
@ENCODER_CONFIGS.register("videomae")
class EncoderConfig(PluggableSection):
    """Video encoder for S_V (reward.encoders); a plugin encoder registers its config in ENCODER_CONFIGS."""

    KEY: ClassVar[str] = "name"
    CONFIGS: ClassVar[Registry[Any]] = ENCODER_CONFIGS

    name: str = "timesformer"
    _name_ok = registered_name("name")
    model_id: str = "facebook/timesformer-base-finetuned-k400"
    clip_len: int = Field(default=8, ge=1)
    clip_stride: int = Field(default=1, ge=1)
    resolution: int = Field(default=224, ge=16)
    background_fill: tuple[int, int, int] = (0, 0, 0)
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_size: int = Field(default=64, ge=1)
    attention: Literal["sdpa", "eager"] = "sdpa"  # sdpa: fused attention kernels, same maths as eager
    revision: str | None = None  # hub revision of model_id
    local_files_only: bool = False  # never touch the network (fail fast when the weights are not cached)


class RewardConfig(_Strict):
    """R_t = zeta*S_V + beta*S_M + eta*P (+ task) (reward layer). See docs/reward.md."""

    zeta: float = 1.0
    beta: float = 1.0  # 0 turns S_M off (still logged raw)
    eta: float = 1.0  # 0 turns P off (still logged raw)
    use_video: bool = True  # false: no encoder is loaded and S_V is not computed (zeta=0 still computes it)
    video_metric: Literal["cosine", "neg_l2"] = "cosine"
    video_every: int = Field(default=1, ge=1)
    early_clip: Literal["repeat_first", "zero"] = "repeat_first"
    torque_coef: float = Field(default=1e-5, ge=0)
    action_rate_coef: float = Field(default=0.01, ge=0)
    joint_vel_coef: float = Field(default=1e-3, ge=0)
    foot_slip_coef: float = Field(default=0.25, ge=0)
    tilt_coef: float = Field(default=1.0, ge=0)
    tilt_form: Literal["one_minus_up", "angle_sq"] = "one_minus_up"
    # beyond the paper: a side-on camera cannot see the robot lean sideways, so the video cannot say how
    # much it should; this penalises the root's roll alone (added to reg_tilt), leaving pitch to the video
    roll_coef: float = Field(default=0.0, ge=0)
    # -c * sum_j u_j^2 (q_j - q_rest_j)^2 over the joints whose motion runs along the camera's ray (u_j, the
    # unseen fraction: nil.reward.visibility): the video cannot say where they are, so they stay at rest
    unseen_joint_coef: float = Field(default=0.0, ge=0)
    iou_empty: float = Field(default=1.0, ge=0, le=1)  # S_M when agent and reference masks are both empty
    nonfinite_reward: float | None = (
        None  # None: raise on a non-finite reward; a value: use it for sim-flagged envs
    )
    task_weight: float = Field(default=0.0, ge=0)
    target_speed: float = 1.0
    # beyond the paper (docs/reward.md "Beyond the paper"); the defaults are the paper's reward
    iou_window: int = Field(default=0, ge=0, le=25)  # S_M = best IoU over reference frames t-w..t+w
    speed_weight: float = Field(default=0.0, ge=0)  # root-motion cue S_R from the reference's floor flow
    speed_sigma: float = Field(default=0.25, gt=0)  # m/s: S_R = exp(-|v_agent - v_ref|^2 / sigma^2)
    # m/s: S_R's width along the camera's line of sight (on the ground), where the floor's flow is weakest
    # and the estimate least sure; None: speed_sigma in every direction
    speed_sigma_depth: float | None = Field(default=None, gt=0)
    # root-position cue S_P: the root's planar displacement from its start against the same floor-flow
    # velocity integrated over the reference (where the robot has got to, not how fast it goes now)
    position_weight: float = Field(default=0.0, ge=0)
    position_sigma: float = Field(default=0.2, gt=0)  # m: S_P = exp(-|p_agent - p_ref|^2 / sigma^2)
    # moving-part mask term S_D: the IoU over the pixels outside the reference's static core (those the
    # robot covers in >= motion_core of its frames), so the legs are scored apart from the body that
    # standing still already matches
    motion_iou_weight: float = Field(default=0.0, ge=0)
    motion_core: float = Field(default=0.9, gt=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _removed_switches(cls, data: Any) -> Any:
        """use_iou/use_reg became beta/eta = 0; old skill.yaml files still load (false: weight 0)."""
        if isinstance(data, dict) and ("use_iou" in data or "use_reg" in data):
            data = dict(data)
            for old, weight in (("use_iou", "beta"), ("use_reg", "eta")):
                if old in data and not data.pop(old):
                    data[weight] = 0.0
        return data


class RLConfig(PluggableSection):
    """Learner and training loop (rl layer); one variant per algorithm, picked by `algo`.

    Options every learner takes live here; each algorithm's own defaults (pessimism, weight decay) and
    options (BRO's optimistic actor) live on its variant, so skill.yaml records the values the run used.
    """

    KEY: ClassVar[str] = "algo"
    CONFIGS: ClassVar[Registry[Any]] = RL_CONFIGS

    algo: str = "sac"
    _algo_ok = registered_name("algo")
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
    # None: TARGET_ENTROPY_PER_ACTION * |A| (SAC -|A|, BRO -|A|/2); `nil init` writes the value
    target_entropy: float | None = None
    actor_width: int = Field(default=256, ge=1)
    actor_depth: int = Field(default=1, ge=1)
    critic_width: int = Field(default=256, ge=1)
    critic_depth: int = Field(default=2, ge=1)
    n_quantiles: int = Field(default=100, ge=1)
    # BRO's full network resets, at these gradient-update counts (not env steps: the update budget is
    # replay_ratio updates per env transition, so resets in updates mean the same with 4 or 4096 envs)
    reset_updates: list[int] = []
    obs_norm: bool = True
    eval_interval: int = Field(default=5_000, ge=1)
    eval_episodes: int = Field(default=2, ge=1)
    checkpoint_interval: int = Field(default=5_000, ge=1)
    keep_checkpoints: int = Field(default=3, ge=1)
    # beyond the paper: also keep the policy of the best in-training eval return (the imitation reward on
    # the eval envs' fixed starts) in train/best/, and evaluate and export that one instead of the last
    keep_best: bool = False
    video_interval: int = Field(default=10_000, ge=1)
    device: str = "auto"
    # learner details (nil.rl.agents): each algorithm's own default is on its variant; null means it too
    pessimism: float = 1.0  # critics combined as mean - pessimism*|q1-q2|/2 (1: SAC's min)
    weight_decay: float = Field(default=0.0, ge=0)  # 0: Adam; above 0: AdamW
    log_interval: int = Field(default=1_000, ge=1)  # env steps between TensorBoard scalar writes
    # CPU threads for torch: the learner's matmuls are small, extra OpenMP threads mostly spin on a shared CPU
    torch_threads: int = Field(default=1, ge=1)
    # learner upgrades beyond the paper (nil.rl; docs/reward.md): each off reproduces the paper's learner
    critic_layernorm: bool = False  # LayerNorm after every hidden layer of SAC's MLP critics (BRO has it)
    n_step: int = Field(default=1, ge=1)  # n-step TD returns (1: one-step, the paper)
    obs_prev_action: bool = False  # the policy also sees its previous action (nil.rl.observation)
    gait_clock: bool = False  # the policy also sees sin/cos of the reference's gait phase
    gait_period_s: float | None = Field(default=None, gt=0)  # None: estimated from the reference masks
    compile: bool = False  # torch.compile the update (CUDA only; ignored on a CPU learner)

    @field_validator("pessimism", "weight_decay", "torch_threads", mode="before")
    @classmethod
    def _null_is_the_default(cls, v: Any, info: ValidationInfo) -> Any:
        # an older skill.yaml wrote null for "the algorithm's default": read it as that value
        return cls.model_fields[str(info.field_name)].default if v is None else v


@RL_CONFIGS.register("sac")
class SACConfig(RLConfig):
    """Soft actor-critic (nil.rl.agents.SACAgent): twin critics combined by their min."""

    TARGET_ENTROPY_PER_ACTION: ClassVar[float] = -1.0  # target_entropy = this * |A| (`nil init` writes it)
    algo: str = "sac"


@RL_CONFIGS.register("bro")
class BROConfig(RLConfig):
    """BRO (nil.rl.agents.BROAgent): BroNet quantile critics, their mean, an optimistic exploration actor."""

    TARGET_ENTROPY_PER_ACTION: ClassVar[float] = -0.5
    algo: str = "bro"
    pessimism: float = 0.0  # the critics' mean
    weight_decay: float = Field(default=1e-4, ge=0)  # AdamW, optax.adamw's default
    kl_target: float = Field(default=0.05, gt=0)  # optimistic actor: per-dimension KL target
    std_multiplier: float = Field(default=0.75, gt=0)  # optimistic actor std = conservative std * this
    init_optimism: float = Field(default=1.0, gt=0)
    init_kl_weight: float = Field(default=0.25, gt=0)
    adjustment_lr: float = Field(default=3e-5, gt=0)  # Adam lr of the optimism / KL-weight duals


@SIM_CONFIGS.register("mujoco")
@SIM_CONFIGS.register("warp")
class SimConfig(PluggableSection):
    """Simulator backend (sim layer); a plugin backend registers its config in SIM_CONFIGS."""

    KEY: ClassVar[str] = "backend"
    CONFIGS: ClassVar[Registry[Any]] = SIM_CONFIGS

    backend: str = "mujoco"
    _backend_ok = registered_name("backend")
    device: str = "cpu"
    num_envs: int = Field(default=4, ge=1)
    num_workers: int = Field(default=2, ge=0)  # 0: in-process
    reset_noise: float = Field(default=0.02, ge=0)
    nconmax: int | None = None
    njmax: int | None = None
    cuda_graph: bool = True  # warp backend on CUDA: replay physics + render as one captured CUDA graph


class SceneObjectConfig(_Strict):
    """One object of the scene (nil.scene), placed relative to the robot's initial pose: x forward along
    its heading, y to its left, z up from the floor. None: the kind's default for this robot's size."""

    kind: Literal["chair", "bar", "board", "mjcf"]
    pos: tuple[float, float, float] | None = None  # chair: behind the robot; bar: above it; board: under it
    yaw_deg: float = 0.0
    # chair seat / bar height (m); None: from the robot's size
    height: float | None = Field(default=None, gt=0)
    size: float | None = Field(default=None, gt=0)  # chair seat width / bar length / board length (m)
    radius: float | None = Field(default=None, gt=0)  # bar radius / the board's cylinder radius (m)
    mjcf: str | None = None  # kind mjcf: an MJCF snippet (<body>/<geom> elements) or a path to an .xml file
    rgba: tuple[float, float, float, float] | None = None
    # beyond the paper, bar only: robot bodies (hands) that grip the bar once their end comes within
    # nil.scene.grip.GRIP_RADIUS of it (a MuJoCo connect constraint; NIL's action space has no fingers)
    grip: list[str] = Field(default_factory=list)


class SceneConfig(_Strict):
    """Objects around the robot and the task they make (nil.scene); empty: the robot on a plain floor."""

    objects: list[SceneObjectConfig] = Field(default_factory=list)
    task: Literal["none", "sitting", "hanging", "balancing"] = "none"  # which success measure eval reports


# section name -> its root class (the sections a plugin can extend)
PLUGGABLE_SECTIONS: dict[str, type[PluggableSection]] = {
    "generator": GeneratorConfig,
    "segmenter": SegmenterConfig,
    "encoder": EncoderConfig,
    "rl": RLConfig,
    "sim": SimConfig,
}


class Derived(StrictModel):
    """What `nil init` filled in from other settings, so that skill.yaml holds every value a run uses.

    `fields` maps each filled key to the settings it was derived from; `sources` holds those settings'
    values at the time. When a source changes (say robot.name, by hand or by a sweep axis), the keys
    derived from it are dropped on load and derived again for the new value (at `nil init`, or by the
    layer that reads them), instead of carrying the old robot's gains or camera over; keys a user set
    are never in `fields`. A changed section name (rl.algo, generator.name ...) also drops the options
    the new variant does not have.
    """

    sources: dict[str, Any] = Field(default_factory=dict)  # setting -> its value when the fields were filled
    fields: dict[str, str] = Field(default_factory=dict)  # filled key -> its sources, joined by "+"


def _get_path(data: dict[str, Any], key: str, default: Any = None) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _drop_stale_derived(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without the derived keys whose source settings changed (see `Derived`)."""
    der = data.get("derived")
    if not isinstance(der, dict) or not isinstance(der.get("sources"), dict):
        return data
    sources, fields = dict(der["sources"]), dict(der.get("fields") or {})
    defaults = SkillConfig().model_dump(mode="json")  # a key left out has its default value
    stale = {k for k, v in sources.items() if _get_path(data, k, _get_path(defaults, k)) != v}
    if not stale:
        return data
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for key, srcs in list(fields.items()):
        if stale & set(str(srcs).split("+")):
            sec, _, name = key.partition(".")
            if isinstance(data.get(sec), dict):
                data[sec].pop(name, None)
            del fields[key]
    for key in stale:
        sec, _, name = key.partition(".")
        root = PLUGGABLE_SECTIONS.get(sec)
        if root is not None and name == root.KEY and isinstance(data.get(sec), dict):
            keep = root.config_class(data[sec].get(name, root.model_fields[name].default)).model_fields
            data[sec] = {k: v for k, v in data[sec].items() if k in keep}
        del sources[key]
    data["derived"] = {"sources": sources, "fields": fields}
    return data


class SkillConfig(_Strict):
    """A whole skill: what skill.yaml holds."""

    robot: RobotConfig = Field(default_factory=RobotConfig)
    skill: str = "walking"
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    seed: int = 0
    camera: CameraConfig = Field(default_factory=CameraConfig)
    # pluggable sections: SerializeAsAny dumps the variant's own fields, not only the root's
    generator: SerializeAsAny[GeneratorConfig] = Field(default_factory=SyntheticGeneratorConfig)
    segmenter: SerializeAsAny[SegmenterConfig] = Field(default_factory=AutoSegmenterConfig)
    encoder: SerializeAsAny[EncoderConfig] = Field(default_factory=EncoderConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    rl: SerializeAsAny[RLConfig] = Field(default_factory=SACConfig)
    sim: SerializeAsAny[SimConfig] = Field(default_factory=SimConfig)
    scene: SceneConfig = Field(default_factory=SceneConfig)
    derived: Derived = Field(default_factory=Derived)  # written by `nil init`; see Derived

    @model_validator(mode="before")
    @classmethod
    def _stale_derived(cls, data: Any) -> Any:
        return _drop_stale_derived(data) if isinstance(data, dict) else data

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

    @model_validator(mode="after")
    def _speed_cue_needs_tracking(self) -> SkillConfig:
        for key in ("speed_weight", "position_weight"):
            if self.camera.track == "fixed" and getattr(self.reward, key) > 0:
                raise ValueError(
                    f"reward.{key} > 0 reads the root's motion from the floor flow under a camera that "
                    f"follows the root; with camera.track: fixed set reward.{key}: 0 (the masks show the "
                    "motion there) or camera.track: root"
                )
        return self

    def prompt(self, robot_description: str) -> str:
        """The text prompt given to the video model."""
        return self.prompt_template.format(robot=robot_description, skill=self.skill)


def format_validation_error(err: ValidationError, source: str, what: str = "config") -> str:
    """One line naming every offending key of a pydantic error (unknown keys get a hint)."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key (check the spelling, or remove it{_other_variants_hint(e['loc'])})"
        lines.append(f"{key}: {msg.removeprefix('Value error, ')}")
    return f"invalid {what} {source}: " + "; ".join(lines)


def _other_variants_hint(loc: tuple[int | str, ...]) -> str:
    """For a key of another variant of a pluggable section: which variants take it."""
    root = PLUGGABLE_SECTIONS.get(str(loc[0])) if len(loc) == 2 else None
    if root is None:
        return ""
    owners = [n for n in root.CONFIGS.names() if str(loc[1]) in root.CONFIGS.get(n).model_fields]
    return f"; only {loc[0]}.{root.KEY}: {' | '.join(owners)} takes it" if owners else ""


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
    # only what was set (by the user, a preset, or skill.yaml): a changed rl.algo then brings its own
    # defaults instead of the old algorithm's, and options of another variant do not linger
    data = cfg.model_dump(mode="json", exclude_unset=True)
    full = config_to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        node, full_node = data, full
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(full_node, dict) or not isinstance(full_node.get(part), dict):
                raise ConfigError(f"{key}: unknown config section {part!r}")
            node, full_node = node.setdefault(part, {}), full_node[part]
        value = yaml.safe_load(raw)
        root = PLUGGABLE_SECTIONS.get(parts[0]) if len(parts) == 2 else None
        if root is not None and parts[1] == root.KEY and node.get(root.KEY, full_node.get(root.KEY)) != value:
            keep = root.config_class(value).model_fields  # another variant: drop what it does not take
            for k in [k for k in node if k not in keep]:
                del node[k]
        node[parts[-1]] = value
    return parse_config(data, "(overrides)")
