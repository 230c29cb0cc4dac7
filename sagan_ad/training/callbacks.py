"""Lightning callbacks for iteration-based SAGAN training."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar

from sagan_ad.training.checkpointing import LastCheckpoint


class IterationProgressBar(TQDMProgressBar):
    """Progress bar over training *iterations* (``model.max_iterations``) rather than epochs.

    SAGAN trains on an endless stream, so Lightning's default bar has no total; this one shows
    ``iteration / max_iterations`` and resumes where a checkpoint left off.

    Examples:
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


def best_and_last_checkpoints(
    dirpath: str | None = None, last_every_n_iterations: int | None = None
) -> list[ModelCheckpoint]:
    """Checkpointing for SAGAN runs: the best weights by ``val/AUROC`` and the latest weights.

    The best checkpoint (``best-iteration=N.ckpt``) is chosen on validation only, never on test.
    ``last.ckpt`` is rewritten at every validation so that a run can always be resumed (Lightning's
    own ``save_last`` writes it only when a new best is found) and, with
    ``last_every_n_iterations``, also every that many iterations (see
    `sagan_ad.LastCheckpoint`). List the best one first: it is the Trainer's
    ``checkpoint_callback`` and the one ``ckpt_path="best"`` refers to.

    Args:
        dirpath: checkpoint folder (default: the logger's ``checkpoints/`` folder).
        last_every_n_iterations: also rewrite ``last.ckpt`` every that many iterations.

    Examples:
        >>> best, last = best_and_last_checkpoints()
        >>> best.monitor, last.monitor
        ('val/AUROC', None)
    """
    best = ModelCheckpoint(
        dirpath=dirpath, monitor="val/AUROC", mode="max", filename="best-{iteration:.0f}"
    )
    last = LastCheckpoint(dirpath=dirpath, every_n_iterations=last_every_n_iterations)
    return [best, last]
