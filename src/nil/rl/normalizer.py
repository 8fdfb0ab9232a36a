"""Running observation normaliser (mean/variance over everything seen, merged batch-wise, clipped)."""

from __future__ import annotations

import torch


class RunningNormalizer:
    """(x - mean) / sqrt(var + eps), clipped to [-clip, clip]; statistics merged with Chan's parallel formula."""

    def __init__(
        self,
        dim: int,
        device: torch.device | str = "cpu",
        clip: float = 10.0,
        eps: float = 1e-8,
        enabled: bool = True,
    ) -> None:
        self.dim, self.clip, self.eps, self.enabled = dim, clip, eps, enabled
        # float64 statistics: float32 sums drift after millions of samples
        self.mean = torch.zeros(dim, dtype=torch.float64, device=device)
        self.var = torch.ones(dim, dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.n = 0  # python mirror of count: no device sync to test it

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch [N, dim] into the statistics (non-finite rows are ignored)."""
        if not self.enabled:
            return
        x = x.to(self.mean.device, torch.float64).reshape(-1, self.dim)
        x = x[torch.isfinite(x).all(dim=1)]
        n = x.shape[0]
        if n == 0:
            return
        b_mean = x.mean(0)
        b_var = x.var(0, unbiased=False)
        total = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta.pow(2) * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total
        self.n += n

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise x [..., dim] (identity when disabled or before any update)."""
        if not self.enabled or self.n == 0:
            return x
        mean = self.mean.to(x.dtype)
        std = (self.var + self.eps).sqrt().to(x.dtype)
        return ((x - mean) / std).clamp(-self.clip, self.clip)

    def state_dict(self) -> dict:
        """Tensors and settings for a checkpoint."""
        return {
            "mean": self.mean.clone(),
            "var": self.var.clone(),
            "count": self.count.clone(),
            "clip": self.clip,
            "eps": self.eps,
            "enabled": self.enabled,
            "dim": self.dim,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict()."""
        dev = self.mean.device
        self.mean = state["mean"].to(dev, torch.float64)
        self.var = state["var"].to(dev, torch.float64)
        self.count = state["count"].to(dev, torch.float64)
        self.clip, self.eps, self.enabled = state["clip"], state["eps"], state["enabled"]
        self.n = int(self.count.item())

    def to(self, device: torch.device | str) -> RunningNormalizer:
        """Move the statistics to `device`."""
        self.mean, self.var, self.count = self.mean.to(device), self.var.to(device), self.count.to(device)
        return self
