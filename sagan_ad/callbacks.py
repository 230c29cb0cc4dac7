"""Lightning callbacks for iteration-based SAGAN training."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class IterationProgressBar(TQDMProgressBar):
    """Progress bar over training *iterations* (``model.max_iterations``) rather than epochs.

    SAGAN trains on an endless stream, so Lightning's default bar has no total; this one shows
    ``iteration / max_iterations`` and resumes where a checkpoint left off.

    Example:
        >>> trainer = L.Trainer(callbacks=[IterationProgressBar()])  # doctest: +SKIP
    """

    @property
    def total_train_batches(self) -> int | float:
        total = getattr(self.trainer.lightning_module, "max_iterations", None)
        return total if total is not None else super().total_train_batches

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        done = getattr(trainer.lightning_module, "iteration", 0)
        self.train_progress_bar.initial = done
        self.train_progress_bar.n = done
        self.train_progress_bar.set_description("Training")
