"""SAC and BRO on batched torch tensors. BRO is SAC plus three changes, so BRO subclasses SAC.

Shared (SACAgent): tanh-Gaussian actor, two critics in one ensemble, target critics updated by
Polyak averaging (tau), automatic entropy temperature, running observation normalisation (the
buffer keeps raw observations; they are normalised with the current statistics when sampled).
The critics' two estimates are combined as ``mean - pessimism * |q1 - q2| / 2``: with pessimism 1
this is exactly SAC's min(q1, q2); BRO's default pessimism is 0 (the mean).

BROAgent (Nauman et al. 2024, "Bigger, Regularized, Optimistic"), on top of that:
- BroNet networks (LayerNorm residual MLPs): critic width 512 depth 2, actor width 256 depth 1;
  AdamW for the networks, Adam(b1=0.5) for the temperature; target entropy -|A|/2.
- Distributional critics: each critic outputs ``n_quantiles`` quantiles, trained with the quantile
  Huber loss (kappa 1) against target quantiles; actors use the mean over quantiles.
- Optimistic exploration (from DAC): a second, exploration actor shifts the conservative actor's
  mean and uses its std times ``std_multiplier``. It maximises ``mean + optimism * |q1 - q2| / 2``
  with a KL penalty (weight ``kl_weight``) to the conservative policy. Two dual variables, each in
  a tanh-bounded log parametrisation (log in [-10, 7.5]), are tuned by Adam(lr 3e-5, b1 0.5) so
  that the per-dimension KL stays near ``kl_target``: KL above target lowers optimism and raises
  the KL weight. Environment actions come from the exploration actor; evaluation uses the
  conservative actor's tanh(mean).
- Full resets of every network, optimiser, temperature and dual at the configured update counts.

Simplifications against the reference JAX code: no vmapped multi-seed training (one agent per
process); the actor trunk's two heads are initialised as in BRO but the critic's last layer uses the
same orthogonal gain as its hidden layers; the constant clip term of the optimism loss (no gradient
for positive optimism) is left out.

Replay ratio (both agents): ``replay_ratio`` gradient updates per environment transition, counted
over all envs, i.e. a batched step of N envs is followed by ``replay_ratio * N`` updates (the
trainer does the counting, and fires BRO's resets at the update counts in ``rl.reset_updates``).

Beyond the paper (switches, off by default): LayerNorm MLP critics for SAC (``rl.critic_layernorm``),
n-step targets (``rl.n_step``: the batch carries gamma^m), ``torch.compile`` of the critic and actor
objectives on CUDA (``rl.compile``). Optimisers are fused on CUDA, multi-tensor elsewhere.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nil.config import BROConfig, RLConfig
from nil.errors import CheckpointError, TrainingError
from nil.rl.networks import Critics, NetKind, OptimisticActor, TanhGaussianActor
from nil.rl.normalizer import RunningNormalizer
from nil.rl.observation import ObservationLayout
from nil.rl.replay import Batch
from nil.sim.base import SimBatch

Stats = dict[str, torch.Tensor]


def quantile_huber_loss(pred: torch.Tensor, target: torch.Tensor, kappa: float = 1.0) -> torch.Tensor:
    """Quantile Huber loss of predicted quantiles pred [M,B,K] against target samples [B,K'].

    Quantile i has level tau_i = (i + 0.5) / K. Summed over the predicted quantiles and the M
    critics, averaged over the batch and the target samples.
    """
    k = pred.shape[-1]
    taus = (torch.arange(k, device=pred.device, dtype=pred.dtype) + 0.5) / k
    td = target[None, :, None, :] - pred[..., :, None]  # [M, B, K, K']
    abs_td = td.abs()
    huber = torch.where(abs_td <= kappa, 0.5 * td.pow(2), kappa * (abs_td - 0.5 * kappa))
    weight = (taus[:, None] - (td.detach() < 0).to(pred.dtype)).abs()
    return (weight * huber / kappa).sum(dim=2).mean(dim=(1, 2)).sum()


def _bounded_log_param(init_value: float, log_min: float = -10.0, log_max: float = 7.5) -> nn.Parameter:
    """Raw parameter p with value exp(log_min + (log_max - log_min) * (1 + tanh p) / 2) == init_value."""
    x = (math.log(init_value) - log_min) / (0.5 * (log_max - log_min)) - 1.0
    return nn.Parameter(torch.tensor(math.atanh(x), dtype=torch.float32))


def _bounded_value(p: torch.Tensor, log_min: float = -10.0, log_max: float = 7.5) -> torch.Tensor:
    return torch.exp(log_min + 0.5 * (log_max - log_min) * (1 + torch.tanh(p)))


class SACAgent:
    """Soft actor-critic on batched tensors: act() on raw observations, update() on a raw Batch."""

    algo = "sac"
    net_kind: NetKind = "mlp"
    log_std_min = -5.0

    def __init__(
        self, cfg: RLConfig, obs_dim: int, action_dim: int, device: torch.device | str = "cpu"
    ) -> None:
        self.cfg, self.obs_dim, self.action_dim = cfg, int(obs_dim), int(action_dim)
        self.device = torch.device(device)
        self.obs_norm = RunningNormalizer(obs_dim, self.device, enabled=cfg.obs_norm)
        self.pessimism = self.default_pessimism() if cfg.pessimism is None else cfg.pessimism
        self.target_entropy = (
            self.default_target_entropy() if cfg.target_entropy is None else cfg.target_entropy
        )
        self.n_quantiles = 1
        self.num_updates = 0
        self.num_resets = 0
        self.build()

    # -- construction ---------------------------------------------------------------------------------
    def default_pessimism(self) -> float:
        """SAC: 1 (= min of the two critics)."""
        return 1.0

    def default_target_entropy(self) -> float:
        """SAC: -|A|."""
        return -float(self.action_dim)

    def _fast(self) -> dict:
        """Optimiser implementation: one fused kernel per step on CUDA, multi-tensor (foreach) elsewhere."""
        return {"fused": True} if self.device.type == "cuda" else {"foreach": True}

    def _optim(self, params, lr: float) -> torch.optim.Optimizer:
        wd = self.cfg.weight_decay
        if wd is None or wd == 0:
            return torch.optim.Adam(params, lr=lr, **self._fast())
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, **self._fast())

    def _maybe_compile(self, fn):
        """torch.compile `fn` with rl.compile on a CUDA learner; a CPU learner runs it eager."""
        if not self.cfg.compile or (self.device.type != "cuda" and self.compile_backend is None):
            return fn
        return torch.compile(fn, backend=self.compile_backend or "inductor", dynamic=False)

    compile_backend: str | None = None  # tests set "eager" to trace the compiled path on a CPU

    def build(self) -> None:
        """(Re)create networks, targets, temperature and optimisers from the global torch RNG."""
        c, dev = self.cfg, self.device
        self.actor = TanhGaussianActor(
            self.net_kind,
            self.obs_dim,
            self.action_dim,
            c.actor_width,
            c.actor_depth,
            log_std_min=self.log_std_min,
        ).to(dev)

        def critics() -> Critics:
            return Critics(
                self.net_kind,
                self.obs_dim,
                self.action_dim,
                c.critic_width,
                c.critic_depth,
                n_out=self.n_quantiles,
                layernorm=c.critic_layernorm,
            ).to(dev)

        # the target is built (not deep-copied) so that it draws its init from the RNG as it always has:
        # a seeded run's later draws, and so its results, stay the same
        self.critic = critics()
        self.critic_target = critics()
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(c.init_temperature), device=dev, requires_grad=True)
        self.actor_opt = self._optim(self.actor.parameters(), c.actor_lr)
        self.critic_opt = self._optim(self.critic.parameters(), c.critic_lr)
        self.alpha_opt = torch.optim.Adam(
            [self.log_alpha], lr=c.alpha_lr, betas=self.alpha_betas(), **self._fast()
        )
        self._critic_params: list[torch.Tensor] = list(self.critic.parameters())
        self._target_params: list[torch.Tensor] = list(self.critic_target.parameters())
        self._critic_objective = self._maybe_compile(self.critic_objective)
        self._actor_objective = self._maybe_compile(self.actor_objective)

    def alpha_betas(self) -> tuple[float, float]:
        """Adam betas of the temperature optimiser."""
        return (0.9, 0.999)

    def reset_networks(self) -> None:
        """Full reset (BRO): fresh networks and optimisers; the normaliser keeps its statistics."""
        self.build()
        self.num_resets += 1

    # -- acting ---------------------------------------------------------------------------------------
    @property
    def alpha(self) -> torch.Tensor:
        """Entropy temperature."""
        return self.log_alpha.detach().exp()

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Action [N,A] in [-1,1] from the (conservative) actor for raw observations [N,D]."""
        return self.actor.act(self.obs_norm(obs.to(self.device)), deterministic)

    @torch.no_grad()
    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        """Action used to collect data (SAC: a sample of the actor)."""
        return self.act(obs, deterministic=False)

    def observe(self, obs: torch.Tensor) -> None:
        """Fold newly collected raw observations into the normaliser."""
        self.obs_norm.update(obs)

    # -- learning -------------------------------------------------------------------------------------
    def combine(self, q: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
        """[2,B,K] -> [B,K]: mean + beta * |q1 - q2| / 2 (beta = -pessimism or +optimism)."""
        return q.mean(0) + beta * (q[0] - q[1]).abs() * 0.5

    def critic_loss(self, q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """SAC: squared TD error, summed over the critics."""
        return (q - target[None]).pow(2).mean(dim=(1, 2)).sum()

    def td_target(self, batch: Batch, obs_next: torch.Tensor) -> torch.Tensor:
        """r + gamma * (1 - terminated) * (Q_target(s', a') - alpha * log pi(a'|s')), a' ~ pi: [B,K].

        With n-step transitions r is the discounted n-step return and gamma^m (m <= n) comes with the batch.
        """
        with torch.no_grad():
            next_a, next_logp = self.actor.sample(obs_next)
            q_next = self.combine(self.critic_target(obs_next, next_a), -self.pessimism)
            v_next = q_next - self.alpha * next_logp[:, None]
            if batch.discount is None:
                return batch.reward[:, None] + self.cfg.gamma * (1.0 - batch.terminated)[:, None] * v_next
            return batch.reward[:, None] + (batch.discount * (1.0 - batch.terminated))[:, None] * v_next

    def alpha_loss(self, entropy: torch.Tensor) -> torch.Tensor:
        """SAC (as Stable-Baselines3): log_alpha * (H - H_target)."""
        return self.log_alpha * (entropy - self.target_entropy)

    def critic_objective(self, obs: torch.Tensor, obs_next: torch.Tensor, batch: Batch):
        """(critic loss, Q [M,B,K], TD target [B,K]) on normalised observations (compiled with rl.compile)."""
        target = self.td_target(batch, obs_next)
        q = self.critic(obs, batch.action)
        return self.critic_loss(q, target), q, target

    def actor_objective(self, obs: torch.Tensor, alpha: torch.Tensor):
        """(actor loss, log pi [B]) through the frozen critics (compiled with rl.compile)."""
        act, logp = self.actor.sample(obs)
        q_pi = self.combine(self.critic(obs, act), -self.pessimism).mean(-1)
        return (alpha * logp - q_pi).mean(), logp

    def update(self, batch: Batch) -> Stats:
        """One gradient step of critics, target critics, actor and temperature on a raw minibatch."""
        obs, obs_next = self.obs_norm(batch.obs), self.obs_norm(batch.next_obs)
        critic_loss, q, target = self._critic_objective(obs, obs_next, batch)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, self.cfg.tau)

        # The actor's loss goes through the critics: freeze them so backward skips their weights.
        self.critic.requires_grad_(False)
        alpha = self.alpha
        actor_loss, logp = self._actor_objective(obs, alpha)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        entropy = -logp.detach().mean()
        alpha_loss = self.alpha_loss(entropy)
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        stats = {
            "loss/critic": critic_loss.detach(),
            "loss/actor": actor_loss.detach(),
            "loss/alpha": alpha_loss.detach(),
            "train/alpha": alpha,
            "train/entropy": entropy,
            "q/mean": q.detach().mean(),
            "q/target": target.mean(),
            "q/critic_gap": (q[0] - q[1]).detach().abs().mean(),
        }
        stats.update(self.update_extra(obs))
        self.critic.requires_grad_(True)
        self.num_updates += 1
        return stats

    def update_extra(self, obs: torch.Tensor) -> Stats:
        """Hook for BRO's optimistic actor (nothing for SAC)."""
        return {}

    # -- state ----------------------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """Every network by name."""
        return {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser by name."""
        return {"actor_opt": self.actor_opt, "critic_opt": self.critic_opt, "alpha_opt": self.alpha_opt}

    def state_dict(self) -> dict:
        """Everything needed to continue training bit-for-bit (except the buffer and RNGs)."""
        state: dict = {name: m.state_dict() for name, m in self.modules().items()}
        state.update({name: o.state_dict() for name, o in self.optimizers().items()})
        state.update(
            algo=self.algo,
            obs_dim=self.obs_dim,
            action_dim=self.action_dim,
            log_alpha=self.log_alpha.detach().clone(),
            obs_norm=self.obs_norm.state_dict(),
            num_updates=self.num_updates,
            num_resets=self.num_resets,
        )
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict() (same algo and sizes)."""
        for name, m in self.modules().items():
            m.load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for name, o in self.optimizers().items():
            o.load_state_dict(state[name])
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.num_updates, self.num_resets = int(state["num_updates"]), int(state["num_resets"])

    def policy_state(self) -> dict:
        """What load_policy needs: the conservative actor, its architecture and the normaliser."""
        return {
            "algo": self.algo,
            "net_kind": self.net_kind,
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "width": self.cfg.actor_width,
            "depth": self.cfg.actor_depth,
            "log_std_min": self.log_std_min,
            "actor": {k: v.cpu() for k, v in self.actor.state_dict().items()},
            "obs_norm": self.obs_norm.state_dict(),
        }


class BROAgent(SACAgent):
    """BRO: BroNet + quantile critics + optimistic exploration actor + resets (see the module docstring)."""

    algo = "bro"
    cfg: BROConfig  # make_agent builds BRO from rl.algo == "bro", i.e. a BROConfig
    net_kind: NetKind = "bronet"
    log_std_min = -10.0

    def __init__(
        self, cfg: RLConfig, obs_dim: int, action_dim: int, device: torch.device | str = "cpu"
    ) -> None:
        self.n_quantiles_cfg = cfg.n_quantiles
        super().__init__(cfg, obs_dim, action_dim, device)

    def default_pessimism(self) -> float:
        """BRO: 0 (the critics' mean)."""
        return 0.0

    def default_target_entropy(self) -> float:
        """BRO: -|A|/2."""
        return -float(self.action_dim) / 2.0

    def alpha_betas(self) -> tuple[float, float]:
        """BRO: Adam(b1=0.5) for the temperature."""
        return (0.5, 0.999)

    def _optim(self, params, lr: float) -> torch.optim.Optimizer:
        wd = 1e-4 if self.cfg.weight_decay is None else self.cfg.weight_decay  # optax.adamw's default
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, **self._fast())

    def build(self) -> None:
        """SAC's networks with quantile heads, plus the optimistic actor and its two duals."""
        self.n_quantiles = self.n_quantiles_cfg
        super().build()
        c = self.cfg
        self.actor_o = OptimisticActor(
            self.net_kind,
            self.obs_dim,
            self.action_dim,
            c.actor_width,
            c.actor_depth,
            std_multiplier=c.std_multiplier,
        ).to(self.device)
        self.actor_o_opt = self._optim(self.actor_o.parameters(), c.actor_lr)
        self.duals = nn.ParameterDict(
            {
                "optimism": _bounded_log_param(c.init_optimism),
                "kl_weight": _bounded_log_param(c.init_kl_weight),
            }
        ).to(self.device)
        self.duals_opt = torch.optim.Adam(
            self.duals.parameters(), lr=c.adjustment_lr, betas=(0.5, 0.999), **self._fast()
        )

    @property
    def optimism(self) -> torch.Tensor:
        """Current optimism coefficient."""
        return _bounded_value(self.duals["optimism"]).detach()

    @property
    def kl_weight(self) -> torch.Tensor:
        """Current KL penalty weight of the optimistic actor."""
        return _bounded_value(self.duals["kl_weight"]).detach()

    def critic_loss(self, q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Quantile Huber loss, summed over the critics."""
        return quantile_huber_loss(q, target)

    def alpha_loss(self, entropy: torch.Tensor) -> torch.Tensor:
        """BRO: alpha * (H - H_target)."""
        return self.log_alpha.exp() * (entropy - self.target_entropy)

    @torch.no_grad()
    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        """A sample of the optimistic actor."""
        o = self.obs_norm(obs.to(self.device))
        mean_c, std_c = self.actor(o)
        mean_o, std_o = self.actor_o(o, mean_c, std_c)
        return torch.tanh(mean_o + std_o * torch.randn_like(mean_o))

    def update_extra(self, obs: torch.Tensor) -> Stats:
        """Optimistic actor step (critics frozen by the caller), then the optimism / KL-weight duals."""
        with torch.no_grad():
            mean_c, std_c = self.actor(obs)
        mean_o, std_o = self.actor_o(obs, mean_c, std_c)
        u = mean_o + std_o * torch.randn_like(mean_o)
        q = self.critic(obs, torch.tanh(u))
        optimism, kl_weight = self.optimism, self.kl_weight
        q_ub = self.combine(q, optimism).mean(-1)
        # KL(N(mean_o, std_o / m) || N(mean_c, std_c)) per state, as in BRO (std_o / m == std_c: mean term)
        s_o = std_o / self.cfg.std_multiplier
        kl = (
            torch.log(std_c / s_o) + (s_o.pow(2) + (mean_o - mean_c).pow(2)) / (2 * std_c.pow(2)) - 0.5
        ).sum(-1)
        loss = -q_ub.mean() + kl_weight * kl.mean()
        self.actor_o_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_o_opt.step()

        emp_kl = kl.detach().mean() / self.action_dim
        gap = emp_kl - self.cfg.kl_target
        dual_loss = (
            _bounded_value(self.duals["optimism"]) * gap - _bounded_value(self.duals["kl_weight"]) * gap
        )
        self.duals_opt.zero_grad(set_to_none=True)
        dual_loss.backward()
        self.duals_opt.step()
        return {
            "loss/optimistic_actor": loss.detach(),
            "train/kl": emp_kl,
            "train/optimism": optimism,
            "train/kl_weight": kl_weight,
        }

    def modules(self) -> dict[str, nn.Module]:
        """Every network by name (plus the duals)."""
        return {**super().modules(), "actor_o": self.actor_o, "duals": self.duals}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser by name."""
        return {**super().optimizers(), "actor_o_opt": self.actor_o_opt, "duals_opt": self.duals_opt}


def make_agent(cfg: RLConfig, obs_dim: int, action_dim: int, device: torch.device | str = "cpu") -> SACAgent:
    """The agent named by cfg.algo."""
    return {"sac": SACAgent, "bro": BROAgent}[cfg.algo](cfg, obs_dim, action_dim, device)


class Policy:
    """A trained conservative actor with its observation normaliser and builder, for evaluation and export."""

    def __init__(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.obs_dim, self.action_dim = int(state["obs_dim"]), int(state["action_dim"])
        self.algo = state["algo"]
        # how the actor's input is built from the sim batch (plain for checkpoints without a layout)
        self.obs_layout = ObservationLayout.from_dict(state.get("observation"), self.obs_dim, self.action_dim)
        if self.obs_layout.dim != self.obs_dim:
            raise CheckpointError(
                f"the policy's observation layout gives {self.obs_layout.dim} inputs but its actor takes "
                f"{self.obs_dim}; the checkpoint is inconsistent, train again"
            )
        self.actor = TanhGaussianActor(
            state["net_kind"],
            self.obs_dim,
            self.action_dim,
            state["width"],
            state["depth"],
            log_std_min=state["log_std_min"],
        ).to(self.device)
        self.actor.load_state_dict(state["actor"])
        self.actor.eval()
        self.obs_norm = RunningNormalizer(self.obs_dim, self.device)
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.step: int | None = state.get("step")

    @property
    def sim_obs_dim(self) -> int:
        """Size of the sim observation the policy's input is built from."""
        return self.obs_layout.sim_obs_dim

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions [N,A] in [-1,1] for policy inputs [N, obs_dim] (built by `obs_layout`; for a policy
        trained without rl.obs_prev_action / rl.gait_clock that is the sim observation itself)."""
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if obs.shape[-1] != self.obs_dim:
            raise TrainingError(
                f"the policy takes {self.obs_dim} inputs but got {obs.shape[-1]}; build them from the sim "
                f"batch with policy.obs_layout(batch) (or use policy.act_batch(batch))"
            )
        return self.actor.act(self.obs_norm(obs), deterministic)

    @torch.no_grad()
    def act_batch(self, batch: SimBatch, deterministic: bool = True) -> torch.Tensor:
        """Actions for a SimBatch: its observation, previous action and t through `obs_layout`."""
        return self.act(self.obs_layout(batch), deterministic)


__all__ = ["BROAgent", "Policy", "SACAgent", "make_agent", "quantile_huber_loss"]
