"""SAGAN under DistributedDataParallel."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import DDPStrategy


def allow_unused_parameters(trainer: Any) -> None:
    """Let DDP accept the parameters an alternating GAN step leaves out of a backward pass.

    The alternating steps leave a network out on purpose (the generator in critic-only
    iterations, the critic, frozen, in the generator's), which plain DDP rejects as unused
    parameters; finding them costs one autograd-graph walk per backward. Parameters left out on
    every rank are left untouched by DDP, so each network's gradients are averaged only by its
    own optimizer's backward pass. Call it before the strategy wraps the module (the module's
    ``setup``); Lightning has no public setter for this.
    """
    strategy = getattr(trainer, "strategy", None)
    if isinstance(strategy, DDPStrategy):
        strategy._ddp_kwargs.setdefault("find_unused_parameters", True)
