"""Where a forward pass is, handed to every job's loss: step, micro-step, epoch, rank, seed.

Its own module so that both the loop and the set-up (which probes memory with a forward
pass) use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepInfo:
    """Where a forward pass is: global optimiser step, micro-step, epoch, rank."""

    step: int
    micro: int
    epoch: int
    rank: int
    seed: int

    def generator(self, device: torch.device) -> torch.Generator:
        """A generator seeded by (seed, step, micro, rank): the same draws after a resume."""
        gen = torch.Generator(device=device)
        gen.manual_seed(mix_seed(self.seed, self.step, self.micro, self.rank))
        return gen


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (distinct parts give distinct seeds)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p + 0x632BE59BD9B4E019 + (h << 6) + (h >> 2))) & (2**63 - 1)
    return h
