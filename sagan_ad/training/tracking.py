"""Experiment tracking: fixed validation samples as images, the data split (its counts as
parameters, its ``data.json`` as a file of the run), and a run's output files in W&B."""

from __future__ import annotations

import json
import os
import shutil
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from sagan_ad.atomic import atomic_path
from sagan_ad.data.modules.datasets import to_model_range
from sagan_ad.errors import InputError
from sagan_ad.evaluation.visualization import sample_grid, save_png
from sagan_ad.protected import mark_output_folder
from sagan_ad.training.runs import RUN_FOLDER_SETTING, run_dir

WANDB_OWN_FILES = frozenset(
    {"config.yaml", "wandb-summary.json", "wandb-metadata.json", "output.log", "requirements.txt"}
)
"""Names W&B writes into a run's files itself: a run file of that name goes in as
``sagan_ad_<name>`` (W&B writing its ``config.yaml`` would otherwise replace ours)."""


def save_run_files(trainer: L.Trainer, paths: Sequence[str | os.PathLike]) -> None:
    """Attach files of the run's folder to every W&B run of the Trainer, under their path
    relative to `run_dir` (``test/metrics.json``; see `WANDB_OWN_FILES` for the exception);
    other loggers keep the files where they are.

    The files are copied into the W&B run as they are now, so the W&B run keeps them even if
    the run's folder is removed before an offline run is synced.

    Examples:
        >>> save_run_files(trainer, [run_dir(trainer) / "data.json"])  # doctest: +SKIP
    """
    loggers = [log for log in trainer.loggers if isinstance(log, WandbLogger)]
    if not loggers or not trainer.is_global_zero:
        return
    base = run_dir(trainer)
    for logger in loggers:
        files = Path(logger.experiment.dir)
        for path in map(Path, paths):
            relative = path.relative_to(base)
            if relative.as_posix() in WANDB_OWN_FILES:
                relative = relative.with_name(f"sagan_ad_{relative.name}")
            copy = files / relative
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
            logger.experiment.save(str(copy), base_path=str(files), policy="now")


def log_table(trainer: L.Trainer, key: str, rows: Sequence[dict[str, Any]]) -> None:
    """Log per-image rows (``predictions.csv``) as a W&B table named ``key``; columns are the
    union of the rows' keys, a missing value is empty.

    Examples:
        >>> log_table(trainer, "test/predictions", report.rows)  # doctest: +SKIP
    """
    if not trainer.is_global_zero:
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    data = [[row.get(c) for c in columns] for row in rows]
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and rows:
            logger.log_table(key=key, columns=columns, data=data)


def log_pictures(trainer: L.Trainer, pictures: dict[str, str | os.PathLike]) -> None:
    """Log PNG files (ROC / PR curves) as W&B images, one key each.

    Examples:
        >>> log_pictures(trainer, {"test/roc": "runs/x/test/roc.png"})  # doctest: +SKIP
    """
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            for key, path in pictures.items():
                if Path(path).is_file():
                    logger.log_image(key=key, images=[str(path)])


class SplitRecorder(Callback):
    """Keep the data split a run used with the run: ``data.json`` and ``split_source.txt`` in its
    folder (`sagan_ad.training.runs.run_dir`), and both as files of the W&B run.

    Works with any DataModule that offers ``split_manifest() -> {"source": str, "split": dict}``
    (``None`` when it has no split to record); the split is the ``data.json`` schema, the
    source says where it came from (a file given by the user, a split drawn and cached, ...).
    Recorded once per Trainer, at the first stage's setup, when the DataModule has made it.

    Examples:
        >>> trainer = L.Trainer(callbacks=[SplitRecorder()])  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._recorded: weakref.WeakSet[L.Trainer] = weakref.WeakSet()

    def __getstate__(self) -> dict[str, Any]:
        # A WeakSet cannot be pickled, and a process started by ddp_spawn gets the callbacks
        # pickled, with a Trainer of its own that nothing has recorded yet.
        return {**self.__dict__, "_recorded": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._recorded = weakref.WeakSet()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        folder = run_dir(trainer)
        if trainer in self._recorded:
            return
        self._recorded.add(trainer)
        manifest = getattr(trainer.datamodule, "split_manifest", None)
        manifest = manifest() if callable(manifest) else None
        if not isinstance(manifest, dict) or not trainer.is_global_zero:
            return
        mark_output_folder(folder, RUN_FOLDER_SETTING)
        with atomic_path(folder / "data.json") as tmp:
            tmp.write_text(json.dumps(manifest["split"], indent=1), encoding="utf-8")
        with atomic_path(folder / "split_source.txt") as tmp:
            tmp.write_text(f"{manifest['source']}\n", encoding="utf-8")
        save_run_files(trainer, [folder / "data.json", folder / "split_source.txt"])


class ValidationSampleLogger(Callback):
    """Log the same validation images after every validation: ``input | restored | heat map``.

    The samples are chosen once, evenly spaced over the DataModule's validation `ImageSet`
    (so a pseudo-anomaly validation set shows normals and pseudo anomalies), or else the first
    images of the first validation batch. Each validation adds one grid, with the SAGAN
    iteration as step, to every logger that takes images: W&B (``log_image``), TensorBoard
    (``add_image``). Without such a logger the grid is written as
    ``<dirpath or the run's folder>/val_samples/iteration_NNNNNNN.png``
    (`sagan_ad.training.runs.run_dir`).

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
            raise InputError(f"num_samples={num_samples}: must be >= 1")
        self.num_samples = num_samples
        self.key = key
        self.dirpath = dirpath
        self.samples: Tensor | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Decided here, on every rank: the rank-zero-only hooks below only read it.
        if self.dirpath is None:
            run_dir(trainer)

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
            root = Path(self.dirpath or run_dir(trainer))
            directory = root / "val_samples"
            directory.mkdir(parents=True, exist_ok=True)
            save_png(directory / f"iteration_{step:07d}.png", grid)
