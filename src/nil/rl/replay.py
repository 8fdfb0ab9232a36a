"""Replay buffer on torch tensors (ring buffer on the learner's device), with save/load of the filled part.

A transition is (obs, action, reward, next_obs, terminated). Only `terminated` is stored: a
truncated episode (end of the reference) still bootstraps from next_obs, which is the final
observation of that episode (read before the env is reset). n-step transitions (nil.rl.nstep) also
store their bootstrap discount gamma^m (m <= n: shorter where the episode ended inside the window).

A checkpoint holds only the filled part (copied out of the preallocated storage: torch.save of a
slice view would write the whole storage, i.e. the capacity).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nil.errors import CheckpointError


@dataclass
class Batch:
    """A sampled minibatch: obs [B,D], action [B,A], reward [B], next_obs [B,D], terminated [B] (1 = cut)."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    discount: torch.Tensor | None = None  # [B] gamma^m of n-step transitions; None: one-step (gamma)


class ReplayBuffer:
    """Fixed-capacity FIFO of transitions; add() takes a batch of N env transitions at once."""

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        action_dim: int,
        device: torch.device | str = "cpu",
        with_discount: bool = False,
    ) -> None:
        self.capacity, self.obs_dim, self.action_dim = int(capacity), int(obs_dim), int(action_dim)
        self.device = torch.device(device)

        def empty(*shape: int) -> torch.Tensor:
            # torch.empty: a CPU never touches (makes resident) the pages of a large, mostly unfilled buffer
            return torch.empty(self.capacity, *shape, dtype=torch.float32, device=self.device)

        self.obs = empty(obs_dim)
        self.action = empty(action_dim)
        self.reward = empty()
        self.next_obs = empty(obs_dim)
        self.terminated = empty()
        self.discount = empty() if with_discount else None
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
        discount: torch.Tensor | None = None,
    ) -> None:
        """Append N transitions (each argument has a leading N dim; discount only for n-step buffers)."""
        if (discount is None) != (self.discount is None):
            raise ValueError("pass discount exactly when the buffer stores it (with_discount=True)")
        n = obs.shape[0]
        if n > self.capacity:  # keep only the newest `capacity`
            obs, action, reward, next_obs, terminated = (
                x[-self.capacity :] for x in (obs, action, reward, next_obs, terminated)
            )
            discount = discount[-self.capacity :] if discount is not None else None
            n = self.capacity
        idx = (torch.arange(n, device=self.device) + self.ptr) % self.capacity
        self.obs[idx] = obs.to(self.device, torch.float32)
        self.action[idx] = action.to(self.device, torch.float32)
        self.reward[idx] = reward.to(self.device, torch.float32)
        self.next_obs[idx] = next_obs.to(self.device, torch.float32)
        self.terminated[idx] = terminated.to(self.device, torch.float32)
        if self.discount is not None and discount is not None:
            self.discount[idx] = discount.to(self.device, torch.float32)
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """Uniform minibatch with replacement."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (batch_size,), device=self.device, generator=generator)
        return Batch(
            self.obs[idx],
            self.action[idx],
            self.reward[idx],
            self.next_obs[idx],
            self.terminated[idx],
            None if self.discount is None else self.discount[idx],
        )

    def _fields(self) -> tuple[str, ...]:
        return ("obs", "action", "reward", "next_obs", "terminated") + (
            ("discount",) if self.discount is not None else ()
        )

    def state_dict(self) -> dict:
        """The filled part only (compact CPU copies), plus the write pointer."""
        n = self.size
        state: dict = {
            "capacity": self.capacity,
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "ptr": self.ptr,
            "size": n,
        }
        for name in self._fields():
            # .clone(): a CPU slice is a view of the whole preallocated storage, and torch.save writes it all
            state[name] = getattr(self, name)[:n].to("cpu", copy=True)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict(); the capacity and sizes must match."""
        for key, mine in (
            ("obs_dim", self.obs_dim),
            ("action_dim", self.action_dim),
            ("capacity", self.capacity),
        ):
            if int(state[key]) != mine:
                raise CheckpointError(f"replay buffer {key} is {state[key]} in the checkpoint but {mine} now")
        if ("discount" in state) != (self.discount is not None):
            raise CheckpointError(
                "the replay buffer in the checkpoint was written with another rl.n_step setting"
            )
        n = int(state["size"])
        for name in self._fields():
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
        buf = cls(
            state["capacity"],
            state["obs_dim"],
            state["action_dim"],
            device,
            with_discount="discount" in state,
        )
        buf.load_state_dict(state)
        return buf
