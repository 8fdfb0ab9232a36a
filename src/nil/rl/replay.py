"""Replay buffer on torch tensors (ring buffer on the learner's device), with save/load of the filled part.

A transition is (obs, action, reward, next_obs, terminated). Only `terminated` is stored: a
truncated episode (end of the reference) still bootstraps from next_obs, which is the final
observation of that episode (read before the env is reset).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nil.errors import CheckpointError


@dataclass
class Batch:
    """A sampled minibatch: obs [B,D], action [B,A], reward [B], next_obs [B,D], terminated [B] float (1 = cut)."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


class ReplayBuffer:
    """Fixed-capacity FIFO of transitions; add() takes a batch of N env transitions at once."""

    def __init__(
        self, capacity: int, obs_dim: int, action_dim: int, device: torch.device | str = "cpu"
    ) -> None:
        self.capacity, self.obs_dim, self.action_dim = int(capacity), int(obs_dim), int(action_dim)
        self.device = torch.device(device)
        f32 = dict(dtype=torch.float32, device=self.device)
        # torch.empty: on a CPU the pages of a large, mostly unfilled buffer are never touched (not resident)
        self.obs = torch.empty(self.capacity, obs_dim, **f32)
        self.action = torch.empty(self.capacity, action_dim, **f32)
        self.reward = torch.empty(self.capacity, **f32)
        self.next_obs = torch.empty(self.capacity, obs_dim, **f32)
        self.terminated = torch.empty(self.capacity, **f32)
        self.ptr = 0  # next write position
        self.size = 0  # filled entries

    def __len__(self) -> int:
        return self.size

    @torch.no_grad()
    def add(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
    ) -> None:
        """Append N transitions (each argument has a leading N dim)."""
        n = obs.shape[0]
        if n > self.capacity:  # keep only the newest `capacity`
            obs, action, reward, next_obs, terminated = (
                x[-self.capacity :] for x in (obs, action, reward, next_obs, terminated)
            )
            n = self.capacity
        idx = (torch.arange(n, device=self.device) + self.ptr) % self.capacity
        self.obs[idx] = obs.to(self.device, torch.float32)
        self.action[idx] = action.to(self.device, torch.float32)
        self.reward[idx] = reward.to(self.device, torch.float32)
        self.next_obs[idx] = next_obs.to(self.device, torch.float32)
        self.terminated[idx] = terminated.to(self.device, torch.float32)
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """Uniform minibatch with replacement."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (batch_size,), device=self.device, generator=generator)
        return Batch(
            self.obs[idx], self.action[idx], self.reward[idx], self.next_obs[idx], self.terminated[idx]
        )

    def state_dict(self) -> dict:
        """The filled part only (CPU tensors), plus the write pointer."""
        n = self.size
        return {
            "capacity": self.capacity,
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "ptr": self.ptr,
            "size": n,
            "obs": self.obs[:n].cpu(),
            "action": self.action[:n].cpu(),
            "reward": self.reward[:n].cpu(),
            "next_obs": self.next_obs[:n].cpu(),
            "terminated": self.terminated[:n].cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict(); the capacity and sizes must match."""
        for key, mine in (
            ("obs_dim", self.obs_dim),
            ("action_dim", self.action_dim),
            ("capacity", self.capacity),
        ):
            if int(state[key]) != mine:
                raise CheckpointError(f"replay buffer {key} is {state[key]} in the checkpoint but {mine} now")
        n = int(state["size"])
        for name in ("obs", "action", "reward", "next_obs", "terminated"):
            getattr(self, name)[:n] = state[name].to(self.device)
        self.size, self.ptr = n, int(state["ptr"])

    def save(self, path: str | Path) -> Path:
        """torch.save the filled part atomically."""
        from nil.io import atomic_save

        state = self.state_dict()
        return atomic_save(path, lambda tmp: torch.save(state, tmp))

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> ReplayBuffer:
        """A buffer rebuilt from save()."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        buf = cls(state["capacity"], state["obs_dim"], state["action_dim"], device)
        buf.load_state_dict(state)
        return buf
