"""The task rules, written once for every backend: observation layout, fall rule, feet, reset noise, checks.

A backend steps physics and renders; then it hands the raw state of its envs (`RawState`: numpy arrays
in the CPU workers, torch tensors on the Warp device) to `evaluate`, which derives everything the
SimBatch holds besides images and time. The few operations numpy and torch spell differently go
through `_Ops`, so the rules below are one piece of code (as in MuJoCo Playground, where the task is
written once and the physics is swappable). This module imports no torch at import time: CPU workers
load it without paying for torch.

Feet: a contact counts for foot k when one of its geoms is in foot k's body subtree and the other is
not the robot's. Its normal force (mj_contactForce's, or mujoco_warp.contact_force's, first component)
is the load; foot_contact = load > LOAD_FRACTION of the robot's weight, so a foot that merely touches
(a contact inside the margin/gap that carries nothing) is not in contact. Slip is measured where the
foot meets the ground: the velocity of the foot body at each contact point, relative to the other
body at that point, load-weighted over the foot's contacts. A foot that rolls or pivots over a planted
point reads ~0 there even though its centre of mass moves; without load, foot_vel_xy is the foot
body's centre-of-mass velocity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import mujoco
    import torch

    from nil.robots.spec import RobotSpec

# A foot is in contact while its normal load exceeds this fraction of the robot's weight.
LOAD_FRACTION = 0.01
# Names of the SimBatch fields that evaluate() returns.
OUTPUTS = (
    "obs",
    "qpos",
    "qvel",
    "torque",
    "terminated",
    "nonfinite",
    "torso_up_z",
    "root_pos",
    "root_lin_vel",
    "foot_contact",
    "foot_force",
    "foot_vel_xy",
)


@dataclass
class TaskRules:
    """Everything the rules need to know about one robot model (index tables as numpy, cached per device)."""

    nq: int
    nv: int
    nu: int
    torso: int
    fall_height: float
    cos_max_tilt: float
    load_threshold: float  # N
    reset_noise: float
    q0: np.ndarray  # [nq] initial pose
    gear: np.ndarray  # [nu] joint-space torque = actuator_force * gear
    feet: np.ndarray  # [n_feet] body ids
    foot_of_geom: np.ndarray  # [ngeom] foot index, -1 when the geom is on no foot
    is_robot_geom: np.ndarray  # [ngeom] bool
    body_of_geom: np.ndarray  # [ngeom]
    tree_root: np.ndarray  # [nbody] root body of each body's kinematic tree (cvel is taken at its com)
    _tables: dict[Any, dict[str, Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, spec: RobotSpec, model: mujoco.MjModel, reset_noise: float) -> TaskRules:
        """The rules of `spec` on its prepared model (spec.load_model() or a model with the same bodies)."""
        robot_bodies = spec.robot_body_mask(model)
        weight = float(model.body_mass[robot_bodies].sum()) * float(np.linalg.norm(model.opt.gravity))
        return cls(
            nq=int(model.nq),
            nv=int(model.nv),
            nu=int(model.nu),
            torso=spec.torso_id(model),
            fall_height=float(spec.fall_height),
            cos_max_tilt=math.cos(math.radians(float(spec.max_tilt_deg))),
            load_threshold=max(LOAD_FRACTION * weight, 1e-6),
            reset_noise=float(reset_noise),
            q0=spec.initial_qpos(model).astype(np.float64),
            gear=model.actuator_gear[:, 0].astype(np.float64).copy(),
            feet=np.asarray(spec.feet_ids(model), np.int64),
            foot_of_geom=spec.foot_geom_index(model),
            is_robot_geom=spec.robot_geom_mask(model).astype(bool),
            body_of_geom=model.geom_bodyid.astype(np.int64).copy(),
            tree_root=model.body_rootid.astype(np.int64).copy(),
        )

    @property
    def n_feet(self) -> int:
        """Number of feet."""
        return int(self.feet.shape[0])

    @property
    def obs_dim(self) -> int:
        """[qpos[2:], qvel, phase]: the root's x/y are dropped (translation invariance)."""
        return self.nq - 2 + self.nv + 1

    def table(self, name: str, like: Any) -> Any:
        """Index table `name` as an array of `like`'s kind (numpy, or a torch tensor on its device)."""
        if not _is_torch(like):
            return getattr(self, name)
        import torch

        tabs = self._tables.setdefault(like.device, {})
        if name not in tabs:
            value = getattr(self, name)
            dtype = torch.float32 if value.dtype == np.float64 else None
            tabs[name] = torch.as_tensor(value, dtype=dtype, device=like.device)
        return tabs[name]


@dataclass
class RawState:
    """Raw physics state of n envs; what a backend reads off its engine after a step or reset.

    Contacts come as one flat list over the n envs (`con_world` says whose); `con_valid` marks the
    live entries of a fixed-capacity list (None: all live).
    """

    qpos: Any  # [n, nq]
    qvel: Any  # [n, nv]
    actuator_force: Any  # [n, nu]
    torso_zz: Any  # [n] world-z component of the torso's z axis (xmat[torso, 8])
    nonfinite: Any  # [n] bool
    xipos: Any  # [n, nbody, 3] body centres of mass
    cvel: Any  # [n, nbody, 6] com-based velocities (angular, linear) at subtree_com of the tree root
    subtree_com: Any  # [n, nbody, 3]
    con_world: Any  # [K] int env row of each contact
    con_geom: Any  # [K, 2] int
    con_pos: Any  # [K, 3] contact point
    con_force: Any  # [K] normal force
    con_valid: Any | None = None  # [K] bool


# ----------------------------------------------------------------------------------------- array ops
def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


class _Ops:
    """The handful of operations whose numpy and torch spellings differ."""

    def __init__(self, like: Any) -> None:
        self.torch = _is_torch(like)
        self.like = like

    def zeros(self, shape: tuple[int, ...], dtype: str = "float") -> Any:
        if self.torch:
            import torch

            dt = {"float": torch.float32, "bool": torch.bool, "long": torch.int64}[dtype]
            return torch.zeros(shape, dtype=dt, device=self.like.device)
        return np.zeros(shape, {"float": np.float64, "bool": np.bool_, "long": np.int64}[dtype])

    def zeros_like(self, x: Any) -> Any:
        if self.torch:
            import torch

            return torch.zeros_like(x)
        return np.zeros_like(x)

    def arange(self, n: int) -> Any:
        if self.torch:
            import torch

            return torch.arange(n, device=self.like.device)
        return np.arange(n)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        if self.torch:
            import torch

            return torch.where(cond, a, b)
        return np.where(cond, a, b)

    def cross(self, a: Any, b: Any) -> Any:
        if self.torch:
            import torch

            return torch.linalg.cross(a, b, dim=-1)
        return np.cross(a, b)

    def finite(self, x: Any) -> Any:
        if self.torch:
            import torch

            return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

    def clip(self, x: Any, lo: float, hi: float) -> Any:
        return x.clamp(lo, hi) if self.torch else np.clip(x, lo, hi)

    def index_add(self, target: Any, index: Any, values: Any) -> Any:
        if self.torch:
            return target.index_add_(0, index, values.to(target.dtype))
        np.add.at(target, index, values)
        return target

    def concat(self, parts: list[Any], axis: int) -> Any:
        if self.torch:
            import torch

            return torch.cat(parts, dim=axis)
        return np.concatenate(parts, axis=axis)


# ---------------------------------------------------------------------------------------------- rules
def evaluate(rules: TaskRules, raw: RawState) -> dict[str, Any]:
    """Every SimBatch field the rules define (see OUTPUTS), from the raw state of n envs.

    obs's last column (the phase) is 0 here: `apply_time` sets it with the truncation flag.
    """
    ops = _Ops(raw.qpos)
    bad = raw.nonfinite
    qpos, qvel = ops.finite(raw.qpos), ops.finite(raw.qvel)
    n = qpos.shape[0]
    torque = ops.finite(raw.actuator_force * rules.table("gear", qpos))
    up_z = ops.where(bad, ops.zeros_like(raw.torso_zz), ops.finite(raw.torso_zz))
    fell = (qpos[:, 2] < rules.fall_height) | (up_z < rules.cos_max_tilt)
    obs = ops.concat([qpos[:, 2:], qvel, ops.zeros((n, 1))], axis=1)
    contact, force, vel = _feet(rules, raw, ops, n)
    return {
        "obs": obs,
        "qpos": qpos,
        "qvel": qvel,
        "torque": torque,
        "terminated": fell | bad,
        "nonfinite": bad,
        "torso_up_z": up_z,
        "root_pos": qpos[:, :3],
        "root_lin_vel": qvel[:, :3],  # a free joint's linear velocity is in the world frame
        "foot_contact": contact,
        "foot_force": force,
        "foot_vel_xy": vel,
    }


def _point_velocity(rules: TaskRules, raw: RawState, ops: _Ops, world: Any, body: Any, point: Any) -> Any:
    """World-frame linear velocity of `body` at `point` (mj_objectVelocity's rule, at an arbitrary point)."""
    root = rules.table("tree_root", point)[body]
    com = raw.subtree_com[world, root]
    vel6 = raw.cvel[world, body]
    return vel6[..., 3:] + ops.cross(vel6[..., :3], point - com)


def _feet(rules: TaskRules, raw: RawState, ops: _Ops, n: int) -> tuple[Any, Any, Any]:
    """(foot_contact [n, nf] bool, foot_force [n, nf], foot_vel_xy [n, nf, 2]); see the module docstring."""
    nf = rules.n_feet
    bad = raw.nonfinite
    feet = rules.table("feet", raw.qpos)
    rows = ops.arange(n)
    # without load: the feet's centre-of-mass velocity
    w = rows[:, None] + 0 * feet[None, :]
    b = feet[None, :] + 0 * rows[:, None]
    com_vel = _point_velocity(rules, raw, ops, w, b, raw.xipos[w, b])[..., :2]
    k = raw.con_geom.shape[0]
    if k and nf:
        foot_of, robot, body_of = (
            rules.table(t, raw.qpos) for t in ("foot_of_geom", "is_robot_geom", "body_of_geom")
        )
        g = ops.clip(raw.con_geom, 0, foot_of.shape[0] - 1)
        world = ops.clip(raw.con_world, 0, n - 1)
        g1, g2 = g[:, 0], g[:, 1]
        f1, f2 = foot_of[g1], foot_of[g2]
        on1 = (f1 >= 0) & ~robot[g2]
        on2 = (f2 >= 0) & ~robot[g1] & ~on1
        hit = (on1 | on2) & ~bad[world]
        if raw.con_valid is not None:
            hit = hit & raw.con_valid
        foot = ops.where(on1, f1, f2)
        foot_body = ops.where(on1, body_of[g1], body_of[g2])
        other_body = ops.where(on1, body_of[g2], body_of[g1])
        pos = raw.con_pos
        slip = (
            _point_velocity(rules, raw, ops, world, foot_body, pos)
            - _point_velocity(rules, raw, ops, world, other_body, pos)
        )[:, :2]
        load = ops.where(
            hit, ops.clip(ops.finite(raw.con_force), 0.0, math.inf), ops.zeros_like(raw.con_force)
        )
        slot = ops.where(hit, world * nf + foot, 0 * world + n * nf)  # n * nf: a dump slot for misses
        force = ops.index_add(ops.zeros((n * nf + 1,)), slot, load)[: n * nf].reshape(n, nf)
        moment = ops.index_add(ops.zeros((n * nf + 1, 2)), slot, slip * load[:, None])[: n * nf]
        moment = moment.reshape(n, nf, 2)
    else:
        force = ops.zeros((n, nf))
        moment = ops.zeros((n, nf, 2))
    contact = force > rules.load_threshold
    contact_vel = moment / ops.clip(force, 1e-9, math.inf)[..., None]
    vel = ops.where(contact[..., None], contact_vel, com_vel)
    vel = ops.where(bad[:, None, None], ops.zeros_like(vel), ops.finite(vel))
    return contact, force, vel


def apply_time(obs: Any, truncated: Any, t: Any, horizon: int | None) -> None:
    """Write the phase column of obs (t / horizon, 0 without a horizon) and truncated = t >= horizon."""
    if horizon is None:
        truncated[...] = False
        obs[:, -1] = 0.0
    else:
        truncated[...] = t >= horizon
        obs[:, -1] = t / float(horizon)


def apply_action(action: Any, prev_action: Any, a: Any) -> Any:
    """Regulariser state of a step: prev_action <- action, action <- clip(a, -1, 1); returns action."""
    prev_action[...] = action
    action[...] = _Ops(a).clip(a, -1.0, 1.0)
    return action


def clear_on_reset(action: Any, prev_action: Any, torque: Any, rows: Any) -> None:
    """The regulariser state of freshly reset envs `rows`: no action, no previous action, no torque."""
    for buf in (action, prev_action, torque):
        buf[rows] = 0.0


# ------------------------------------------------------------------------------------------ resets
def make_rngs(seed: int, start: int, stop: int) -> list[np.random.Generator]:
    """Reset-noise generators of envs [start, stop), seeded by (seed, env index): layout-independent."""
    return [np.random.default_rng([int(seed), i]) for i in range(start, stop)]


def reset_pose(rules: TaskRules, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(qpos, qvel) of a reset: the initial pose with uniform noise on the joints; the root at rest."""
    qpos = rules.q0.copy()
    qvel = np.zeros(rules.nv)
    if rules.reset_noise > 0:
        noise = rules.reset_noise
        qpos[7:] += rng.uniform(-noise, noise, rules.nq - 7)
        qvel[6:] = rng.uniform(-noise, noise, rules.nv - 6)
    return qpos, qvel


# -------------------------------------------------------------------------------------- input checks
def num_envs(requested: int | None, configured: int) -> int:
    """The batch size: the caller's, else sim.num_envs; SimulationError below 1."""
    from nil.errors import SimulationError

    n = int(requested if requested is not None else configured)
    if n < 1:
        raise SimulationError(f"num_envs must be >= 1, got {n}")
    return n


def check_idle(closed: bool, stepping: bool, what: str) -> None:
    """SimulationError when `what` (a call) reaches a closed simulator or one with a step in flight."""
    from nil.errors import SimulationError

    if closed:
        raise SimulationError("the simulator is closed; create a new one with make_sim()")
    if stepping:
        raise SimulationError(f"{what} while a step is in flight: call step_wait() first")


def check_action(action: Any, num_envs: int, action_dim: int) -> torch.Tensor:
    """The action as a float32 tensor [num_envs, action_dim]; SimulationError on a wrong shape or NaN/inf."""
    import torch

    from nil.errors import SimulationError

    a = torch.as_tensor(action).detach()
    if tuple(a.shape) != (num_envs, action_dim):
        raise SimulationError(f"action must have shape ({num_envs}, {action_dim}), got {tuple(a.shape)}")
    a = a.to(torch.float32)
    if not bool(torch.isfinite(a).all()):
        raise SimulationError("the action contains NaN or inf; check the policy's outputs (and its inputs)")
    return a


def reset_rows(env_ids: Any, num_envs: int) -> np.ndarray:
    """bool[num_envs] (host) of the envs to reset: all (None), int indices, or a bool mask [num_envs]."""
    from nil.errors import SimulationError

    if env_ids is None:
        return np.ones(num_envs, bool)
    ids = env_ids.detach().cpu().numpy() if _is_torch(env_ids) else np.asarray(env_ids)
    flags = np.zeros(num_envs, bool)
    if ids.dtype == np.bool_:
        if ids.shape != (num_envs,):
            raise SimulationError(f"reset mask must have shape ({num_envs},), got {tuple(ids.shape)}")
        flags[:] = ids
        return flags
    idx = ids.astype(np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= num_envs):
        raise SimulationError(f"reset env_ids must be in [0, {num_envs}), got {idx.tolist()}")
    flags[idx] = True
    return flags
