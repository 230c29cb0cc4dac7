"""Test-only Lightning callbacks for the reliability tests (imported by CLI subprocesses)."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class KillAt(Callback):
    """SIGKILL the training process at the start of ``iteration`` (a hard crash, no cleanup).

    Examples:
        >>> KillAt(iteration=7).iteration
        7
    """

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if pl_module.iteration == self.iteration:
            os.kill(os.getpid(), signal.SIGKILL)
