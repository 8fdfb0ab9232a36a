"""Networks of the learner: plain MLPs (SAC) and BroNet residual MLPs with LayerNorm (BRO).

Both critics of an agent live in ONE module whose layers hold the weights of every member stacked
([members, in, out]) and run as one batched matmul: on a CPU the update is dominated by per-op
overhead, so two critics cost about as much as one.

Shapes: a plain network maps [B, in] -> [B, out]; an ensemble maps [B, in] (shared input) or
[M, B, in] -> [M, B, out].
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

NetKind = Literal["mlp", "bronet"]


class EnsembleLinear(nn.Module):
    """M independent linear layers applied in one batched matmul: [M, B, in] -> [M, B, out]."""

    def __init__(self, members: int, d_in: int, d_out: int, bias: bool = True) -> None:
        super().__init__()
        self.members, self.d_in, self.d_out = members, d_in, d_out
        self.weight = nn.Parameter(torch.empty(members, d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(members, 1, d_out)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn.Linear's default init, per member."""
        bound = 1.0 / math.sqrt(self.d_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # shared input: one [B,in] x [in, M*out] matmul instead of M copies of x
            w = self.weight.transpose(0, 1).reshape(self.d_in, self.members * self.d_out)
            y = (x @ w).view(x.shape[0], self.members, self.d_out).transpose(0, 1)
            return y if self.bias is None else y + self.bias
        if self.bias is None:
            return torch.bmm(x, self.weight)
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dim with a separate affine transform per member."""

    def __init__(self, members: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(members, 1, dim))
        self.bias = nn.Parameter(torch.zeros(members, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, F.layer_norm(x, (self.dim,)), self.weight)


def _linear(members: int, d_in: int, d_out: int, bias: bool = True) -> nn.Module:
    return nn.Linear(d_in, d_out, bias=bias) if members == 0 else EnsembleLinear(members, d_in, d_out, bias)


def _norm(members: int, dim: int) -> nn.Module:
    return nn.LayerNorm(dim) if members == 0 else EnsembleLayerNorm(members, dim)


def orthogonal_init_(layer: nn.Linear | EnsembleLinear, gain: float) -> None:
    """Orthogonal weights (per member for an ensemble) and zero bias, as BRO initialises its layers."""
    w = layer.weight
    with torch.no_grad():
        if w.dim() == 3:  # [M, in, out]: orthogonal per member, on the [out, in] view torch expects
            for m in range(w.shape[0]):
                q = torch.empty(w.shape[2], w.shape[1], dtype=w.dtype, device=w.device)
                w[m].copy_(nn.init.orthogonal_(q, gain=gain).T)
        else:
            nn.init.orthogonal_(w, gain=gain)
        if layer.bias is not None:
            layer.bias.zero_()


class MLP(nn.Module):
    """`depth` hidden layers of Linear -> ReLU (Linear -> LayerNorm -> ReLU with `layernorm`), then a linear
    head (omitted when d_out is None)."""

    def __init__(
        self, d_in: int, d_out: int | None, width: int, depth: int, members: int = 0, layernorm: bool = False
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = d_in
        for _ in range(depth):
            layers.append(_linear(members, d, width))
            if layernorm:  # bounds the critic's features: keeps Q stable at high update-to-data ratios
                layers.append(_norm(members, width))
            layers.append(nn.ReLU())
            d = width
        self.trunk = nn.Sequential(*layers)
        self.head = _linear(members, d, d_out) if d_out is not None else None
        self.out_features: int = d_out if d_out is not None else d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trunk(x)
        return self.head(x) if self.head is not None else x


class BroBlock(nn.Module):
    """BroNet residual block: x + LN(Linear(ReLU(LN(Linear(x)))))."""

    def __init__(self, width: int, members: int = 0) -> None:
        super().__init__()
        self.fc1, self.ln1 = _linear(members, width, width), _norm(members, width)
        self.fc2, self.ln2 = _linear(members, width, width), _norm(members, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = F.relu(self.ln1(self.fc1(x)))
        return x + self.ln2(self.fc2(res))


class BroNet(nn.Module):
    """BroNet (Nauman et al. 2024): Linear -> LN -> ReLU, `depth` residual blocks, linear head."""

    def __init__(self, d_in: int, d_out: int | None, width: int, depth: int, members: int = 0) -> None:
        super().__init__()
        self.fc_in, self.ln_in = _linear(members, d_in, width), _norm(members, width)
        self.blocks = nn.Sequential(*[BroBlock(width, members) for _ in range(depth)])
        self.head = _linear(members, width, d_out) if d_out is not None else None
        self.out_features: int = d_out if d_out is not None else width
        for mod in self.modules():  # BRO: orthogonal init with gain sqrt(2) everywhere
            if isinstance(mod, nn.Linear | EnsembleLinear):
                orthogonal_init_(mod, math.sqrt(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.ln_in(self.fc_in(x))))
        return self.head(x) if self.head is not None else x


def make_net(
    kind: NetKind,
    d_in: int,
    d_out: int | None,
    width: int,
    depth: int,
    members: int = 0,
    layernorm: bool = False,
) -> MLP | BroNet:
    """An MLP (optionally with LayerNorm) or a BroNet (always has it); `members` > 0 makes an ensemble."""
    if kind == "bronet":
        return BroNet(d_in, d_out, width, depth, members)
    return MLP(d_in, d_out, width, depth, members, layernorm=layernorm)


class Critics(nn.Module):
    """M Q-networks in one ensemble: (obs [B,D], act [B,A]) -> [M, B, n_out] (n_out quantiles, or 1)."""

    def __init__(
        self,
        kind: NetKind,
        obs_dim: int,
        action_dim: int,
        width: int,
        depth: int,
        n_out: int = 1,
        members: int = 2,
        layernorm: bool = False,
    ) -> None:
        super().__init__()
        self.members, self.n_out = members, n_out
        self.net = make_net(kind, obs_dim + action_dim, n_out, width, depth, members, layernorm=layernorm)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], dim=-1))


LOG_2 = math.log(2.0)


def tanh_log_prob(u: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log pi(tanh(u)) for u ~ N(mean, std), summed over action dims ([B, A] -> [B])."""
    log_normal = -0.5 * ((u - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)
    # log(1 - tanh(u)^2) written stably: 2 * (log 2 - u - softplus(-2u))
    log_det = 2.0 * (LOG_2 - u - F.softplus(-2.0 * u))
    return (log_normal - log_det).sum(-1)


class TanhGaussianActor(nn.Module):
    """SAC/BRO actor: obs -> (mean, std) of a Gaussian squashed by tanh into [-1, 1]^A."""

    def __init__(
        self,
        kind: NetKind,
        obs_dim: int,
        action_dim: int,
        width: int,
        depth: int,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        self.trunk = make_net(kind, obs_dim, None, width, depth)
        self.mean = nn.Linear(self.trunk.out_features, action_dim)
        self.log_std = nn.Linear(self.trunk.out_features, action_dim)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        if kind == "bronet":  # BRO's heads: orthogonal, gain sqrt(2) for the mean, 1 for log-std
            orthogonal_init_(self.mean, math.sqrt(2.0))
            orthogonal_init_(self.log_std, 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        # tanh-bounded log-std (smooth, unlike clamping): [log_std_min, log_std_max]
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (
            1 + torch.tanh(self.log_std(h))
        )
        return self.mean(h), log_std.exp()

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action [B, A] and its log-probability [B]."""
        mean, std = self(obs)
        u = mean + std * torch.randn_like(mean)
        return torch.tanh(u), tanh_log_prob(u, mean, std)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """tanh(mean) when deterministic, else a sample."""
        mean, std = self(obs)
        return torch.tanh(mean if deterministic else mean + std * torch.randn_like(mean))


class OptimisticActor(nn.Module):
    """BRO's exploration actor: shifts the conservative actor's mean; its std is std_c * std_multiplier.

    Input is (obs, mean_c); the shift head starts near zero (orthogonal gain 0.01, no bias), so the
    optimistic policy starts as a narrower copy of the conservative one.
    """

    def __init__(
        self,
        kind: NetKind,
        obs_dim: int,
        action_dim: int,
        width: int,
        depth: int,
        std_multiplier: float = 0.75,
    ) -> None:
        super().__init__()
        self.trunk = make_net(kind, obs_dim + action_dim, None, width, depth)
        self.shift = nn.Linear(self.trunk.out_features, action_dim, bias=False)
        orthogonal_init_(self.shift, 0.01)
        self.std_multiplier = std_multiplier

    def forward(
        self, obs: torch.Tensor, mean_c: torch.Tensor, std_c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shift = self.shift(self.trunk(torch.cat([obs, mean_c], dim=-1)))
        return mean_c + shift, std_c * self.std_multiplier
