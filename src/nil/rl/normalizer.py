"""Running observation normaliser (mean/variance over everything seen, merged batch-wise, clipped)."""

from __future__ import annotations

import torch


class RunningNormalizer:
    """(x - mean) / sqrt(var + eps), clipped to [-clip, clip]; statistics merged by Chan's formula."""

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
        self.n = 0  # rows offered so far (python: no device sync to test it); count = finite rows

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch [N, dim] into the statistics (non-finite rows are ignored, without a host sync)."""
        if not self.enabled:
            return
        x = x.to(self.mean.device, torch.float64).reshape(-1, self.dim)
        if x.shape[0] == 0:
            return
        # weights instead of boolean indexing: a mask select would read its size back to the host
        w = torch.isfinite(x).all(dim=1, keepdim=True).to(torch.float64)
        x = torch.where(w > 0, x, torch.zeros_like(x))
        n = w.sum()
        safe_n = n.clamp_min(1.0)
        b_mean = (w * x).sum(0) / safe_n
        b_var = (w * (x - b_mean).pow(2)).sum(0) / safe_n
        total = self.count + n
        safe_total = total.clamp_min(1.0)
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta.pow(2) * self.count * n / safe_total
        keep = total > 0  # still nothing seen: keep the initial (0, 1)
        self.mean = torch.where(keep, self.mean + delta * n / safe_total, self.mean)
        self.var = torch.where(keep, m2 / safe_total, self.var)
        self.count = total
        self.n += x.shape[0]  # rows offered (python, no sync); count holds the finite ones

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
