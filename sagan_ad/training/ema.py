"""The exponential moving average of the generator's weights."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def update_average(averaged: nn.Module, trained: nn.Module, decay: float, steps: int) -> None:
    """Move ``averaged``'s weights towards ``trained``'s after the ``steps``-th update, with the
    usual warm-up (the decay is at most ``(1 + steps) / (10 + steps)``); buffers are copied.

    Examples:
        >>> a, b = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
        >>> _ = a.weight.data.fill_(0.0), b.weight.data.fill_(1.0)
        >>> update_average(a, b, decay=0.5, steps=100)
        >>> a.weight.item()
        0.5
    """
    decay = min(decay, (1 + steps) / (10 + steps))
    weights = list(averaged.parameters())
    torch._foreach_lerp_(weights, list(trained.parameters()), 1.0 - decay)
    for mine, theirs in zip(averaged.buffers(), trained.buffers(), strict=True):
        mine.copy_(theirs)
