"""n-step returns for N envs stepping in lockstep, with no host sync (rl.n_step > 1; beyond the paper).

A window of the last n steps is kept per env, as n slots indexed by start step mod n. Each slot holds
a transition that started at some step: its obs and action, the discounted reward sum so far, the
newest next_obs, whether that ended in a fall, and gamma^m for the steps folded in. A slot stops
accumulating once its episode ends inside the window (done), so it never mixes two episodes.

Every call folds in one step and emits exactly N transitions: the ones that started n-1 steps ago
(none during the first n-1 calls after a `clear`). The TD target is then
    R + gamma^m * (1 - terminated) * V(s_{t+m}),  m = n, or fewer where the episode ended earlier.
The bootstrap uses the current policy at s_{t+m} without an off-policy correction, as n-step SAC/TD3
variants do. Transitions still in the window when training stops or resumes are not stored.
"""

from __future__ import annotations

import torch

from nil.rl.replay import ReplayBuffer


class NStepWindow:
    """Per-env windows of n steps; `push` folds one batched step in and writes the finished ones out."""

    def __init__(self, n: int, num_envs: int, obs_dim: int, action_dim: int, gamma: float, device) -> None:
        self.n, self.gamma = int(n), float(gamma)
        f32 = dict(dtype=torch.float32, device=device)
        self.obs = torch.zeros(n, num_envs, obs_dim, **f32)
        self.action = torch.zeros(n, num_envs, action_dim, **f32)
        self.ret = torch.zeros(n, num_envs, **f32)
        self.next_obs = torch.zeros(n, num_envs, obs_dim, **f32)
        self.terminated = torch.zeros(n, num_envs, **f32)
        self.discount = torch.ones(n, num_envs, **f32)
        self.open = torch.zeros(n, num_envs, dtype=torch.bool, device=device)  # still accumulating
        self.pushed = 0  # steps since clear()

    def clear(self) -> None:
        """Drop every window (the envs start fresh episodes)."""
        self.open.zero_()
        self.pushed = 0

    @torch.no_grad()
    def push(
        self,
        buffer: ReplayBuffer,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        done: torch.Tensor,
    ) -> None:
        """Fold in one step of every env (done = terminated | truncated), then store the n-step-old slot."""
        slot = self.pushed % self.n
        self.obs[slot] = obs
        self.action[slot] = action
        self.ret[slot] = 0.0
        self.discount[slot] = 1.0
        self.open[slot] = True
        live = self.open.float()  # [n, N]
        self.ret += live * self.discount * reward[None]
        self.discount = torch.where(self.open, self.discount * self.gamma, self.discount)
        self.next_obs = torch.where(self.open[..., None], next_obs[None], self.next_obs)
        self.terminated = torch.where(self.open, terminated.float()[None], self.terminated)
        self.open &= ~done[None]
        self.pushed += 1
        if self.pushed >= self.n:
            out = self.pushed % self.n  # the slot that started n-1 steps ago (the next to be reused)
            buffer.add(
                self.obs[out],
                self.action[out],
                self.ret[out],
                self.next_obs[out],
                self.terminated[out],
                self.discount[out],
            )
            self.open[out] = False
