"""Speed settings of SAGAN training that change how it runs, never what it computes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sagan_ad.errors import InputError


@dataclass(frozen=True)
class Performance:
    """How `sagan_ad.SAGAN` runs its networks (YAML: ``performance: {channels_last: true}``).

    Args:
        channels_last: keep both networks' weights and the training batches in channels-last
            memory format, which GPU convolutions (cuDNN, bf16 tensor cores) run faster.
        compile: ``torch.compile`` the generator and the critic in place (parameter names and
            checkpoints are unchanged). The gradient penalty calls the critic eagerly, because
            compiled graphs do not support the double backward it needs.
        compile_options: keyword arguments of ``torch.compile`` (default ``{"dynamic": False}``:
            one specialised graph per batch shape; the training step uses two).
        divergence_check_interval: iterations between host-side reads of the finiteness checks
            (`sagan_ad.training.divergence.DivergenceGuard`). 1 (default) stops before a
            non-finite step is applied, at the cost of one host-device sync per optimizer step;
            on a GPU, tens keep the step sync-free, and a bad step is still named exactly (its
            weights may then be non-finite, but they are never checkpointed).

    Examples:
        >>> Performance(channels_last=True).divergence_check_interval
        1
    """

    channels_last: bool = False
    compile: bool = False
    compile_options: dict[str, Any] | None = None
    divergence_check_interval: int = 1

    def __post_init__(self) -> None:
        interval = self.divergence_check_interval
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise InputError(f"divergence_check_interval={interval!r}: must be an integer >= 1")

    def prepare(self, trained: list[nn.Module], averaged: nn.Module | None = None) -> None:
        """Put the ``trained`` networks (and the ``averaged`` generator, which only runs
        inference, eagerly) in the memory format and compile the trained ones."""
        if self.channels_last:
            # Later `.to(device)` calls preserve the format, and checkpoints load into it.
            for network in [*trained, averaged]:
                if network is not None:
                    network.to(memory_format=torch.channels_last)
        if self.compile:
            options = {"dynamic": False, **(self.compile_options or {})}
            for network in trained:
                network.compile(**options)
