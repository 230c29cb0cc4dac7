"""Experiment tracking: fixed validation samples as images, and the data split as parameters."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from sagan_ad.data.datasets import to_model_range
from sagan_ad.visualization import sample_grid, save_png


class ValidationSampleLogger(Callback):
    """Log the same validation images after every validation: ``input | restored | heat map``.

    The samples are chosen once, evenly spaced over the DataModule's validation `ImageSet`
    (so a pseudo-anomaly validation set shows normals and pseudo anomalies), or else the first
    images of the first validation batch. Each validation adds one grid, with the SAGAN
    iteration as step, to every logger that takes images: W&B (``log_image``), TensorBoard
    (``add_image``). Without such a logger the grid is written as
    ``<dirpath or trainer.log_dir>/val_samples/iteration_NNNNNNN.png``.

    At the start of fit it also logs the DataModule's ``summary()`` (the image counts of the
    split) as hyper-parameters ``data/<part>`` to every logger.

    Args:
        num_samples: images per grid.
        key: name of the image in the loggers.
        dirpath: folder of the PNG files when no logger takes images.

    Examples:
        >>> trainer = L.Trainer(callbacks=[ValidationSampleLogger(num_samples=4)])  # doctest: +SKIP
    """

    def __init__(
        self,
        num_samples: int = 8,
        key: str = "val/samples",
        dirpath: str | os.PathLike | None = None,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples}: must be >= 1")
        self.num_samples = num_samples
        self.key = key
        self.dirpath = dirpath
        self.samples: Tensor | None = None

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = getattr(trainer.datamodule, "summary", None)
        if summary is None:
            return
        counts = {f"data/{part}": count for part, count in summary().items()}
        for logger in trainer.loggers:
            logger.log_hyperparams(counts)

    def _pick_samples(self, trainer: L.Trainer) -> Tensor | None:
        data = getattr(trainer.datamodule, "val", None)
        images = getattr(data, "images", None)
        if not isinstance(images, Tensor) or len(images) == 0:
            return None
        picks = np.linspace(0, len(images) - 1, min(self.num_samples, len(images)))
        return images[torch.as_tensor(np.round(picks), dtype=torch.long).unique()]

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: object,
        batch: dict,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.samples is None and batch_idx == 0 and dataloader_idx == 0:
            picked = self._pick_samples(trainer)
            self.samples = picked if picked is not None else batch["image"][: self.num_samples]

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.samples is None:
            return
        images = self.samples.to(pl_module.device)
        if images.dtype == torch.uint8:
            images = to_model_range(images)
        with torch.no_grad():
            out = pl_module.infer(images, with_restored=True)
        grid = sample_grid(images, out["restored"], out["anomaly_map"])
        iteration = getattr(pl_module, "iteration", None)
        step = int(trainer.global_step if iteration is None else iteration)
        logged = False
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=self.key, images=[grid], step=step)
                logged = True
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.key, grid, global_step=step, dataformats="HWC")
                logged = True
        if not logged:
            root = Path(self.dirpath or trainer.log_dir or trainer.default_root_dir)
            directory = root / "val_samples"
            directory.mkdir(parents=True, exist_ok=True)
            save_png(directory / f"iteration_{step:07d}.png", grid)
