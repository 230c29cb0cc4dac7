"""One run path for Python and the command line: what ``sagan-ad fit`` does beyond Lightning.

`Engine` builds a Trainer with SAGAN's settings and default callbacks, resolves ``ckpt_path``
``"last"`` / ``"best"`` and checks the checkpoint before a run, continues a resumed run in its own
folder, and tests the kept checkpoint after fit. ``sagan-ad`` builds its Trainer with
`trainer_arguments` and calls `Engine.prepare` and `Engine.test_kept_checkpoint` around
Lightning's own ``fit`` / ``validate`` / ``test`` / ``predict``, so both paths behave the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities.model_helpers import is_overridden

from sagan_ad.errors import InputError
from sagan_ad.preprocessing import adopt_decode
from sagan_ad.training.callbacks import IterationProgressBar, best_and_last_checkpoints
from sagan_ad.training.checkpoint_files import check_model_class, read_checkpoint
from sagan_ad.training.checkpoint_settings import check_weights_fit
from sagan_ad.training.checkpointing import AtomicCheckpointIO, LastCheckpoint
from sagan_ad.training.outputs import EvaluationWriter
from sagan_ad.training.resume import continue_run, find_last_checkpoint, resolve_checkpoint
from sagan_ad.training.run_state import preprocessing_of
from sagan_ad.training.tracking import SplitRecorder, ValidationSampleLogger
from sagan_ad.training.trainer_checks import check_trainer_for_fit

__all__ = ["TRAINER_DEFAULTS", "Engine", "default_callbacks", "trainer_arguments"]

TRAINER_DEFAULTS: dict[str, Any] = {"max_epochs": -1, "check_val_every_n_epoch": None}
"""Trainer settings every SAGAN run needs: the training data are an endless stream, validation
runs every ``val_check_interval`` iterations, and the model's ``max_iterations`` ends training."""


def default_callbacks(
    callbacks: list[Callback] | None = None,
    *,
    checkpointing: bool = True,
    progress_bar: bool = True,
    write_outputs: bool = True,
    val_samples: int = 8,
    last_every_n_iterations: int | None = None,
) -> list[Callback]:
    """``callbacks`` plus the ones ``sagan-ad`` adds unless a callback of the kind is given.

    With ``checkpointing``, the best (by ``val/AUROC``) and last checkpoints
    (`sagan_ad.best_and_last_checkpoints`) come first, so ``ckpt_path="best"`` and ``"last"``
    keep their meaning; a `ModelCheckpoint` of the user's adds to them, and replaces one only
    when it is the same kind (a `LastCheckpoint`, or the same monitor, mode and intervals, which
    Lightning cannot keep twice). Then the `IterationProgressBar` (with ``progress_bar``), the
    `EvaluationWriter` (with ``write_outputs``), the `SplitRecorder` and the
    `ValidationSampleLogger` (``val_samples`` images, 0 for none).

    Examples:
        >>> mine = ModelCheckpoint(monitor="val/AP", mode="max", filename="ap-{iteration:.0f}")
        >>> [type(c).__name__ for c in default_callbacks([mine])][:3]
        ['ModelCheckpoint', 'LastCheckpoint', 'ModelCheckpoint']
    """
    given = list(callbacks or [])
    added: list[Callback] = []
    if checkpointing:
        taken = {c.state_key for c in given if isinstance(c, ModelCheckpoint)}
        # A user's last.ckpt (save_last) would be written over by ours, and the other way round.
        has_last = any(
            isinstance(c, LastCheckpoint) or (isinstance(c, ModelCheckpoint) and c.save_last)
            for c in given
        )
        added = [
            c
            for c in best_and_last_checkpoints(last_every_n_iterations=last_every_n_iterations)
            if c.state_key not in taken and not (has_last and isinstance(c, LastCheckpoint))
        ]
    result = added + given
    if progress_bar and not any(isinstance(c, ProgressBar) for c in given):
        result.append(IterationProgressBar())
    if write_outputs and not any(isinstance(c, EvaluationWriter) for c in given):
        result.append(EvaluationWriter())
    if not any(isinstance(c, SplitRecorder) for c in given):
        result.append(SplitRecorder())
    if val_samples and not any(isinstance(c, ValidationSampleLogger) for c in given):
        result.append(ValidationSampleLogger(num_samples=val_samples))
    return result


def trainer_arguments(
    settings: dict[str, Any],
    *,
    write_outputs: bool = True,
    val_samples: int = 8,
    last_every_n_iterations: int | None = None,
) -> dict[str, Any]:
    """The Trainer's keyword arguments for a SAGAN run: `TRAINER_DEFAULTS`, then ``settings``,
    with `default_callbacks` and atomic checkpoint writes (`sagan_ad.AtomicCheckpointIO`,
    unless a ``CheckpointIO`` plugin is given).

    Examples:
        >>> arguments = trainer_arguments({"val_check_interval": 100})
        >>> arguments["max_epochs"], type(arguments["plugins"][0]).__name__
        (-1, 'AtomicCheckpointIO')
    """
    arguments = {**TRAINER_DEFAULTS, **settings}
    arguments["callbacks"] = default_callbacks(
        _as_list(arguments.get("callbacks")),
        checkpointing=arguments.get("enable_checkpointing") is not False,
        progress_bar=arguments.get("enable_progress_bar") is not False,
        write_outputs=write_outputs,
        val_samples=val_samples,
        last_every_n_iterations=last_every_n_iterations,
    )
    plugins = _as_list(arguments.get("plugins"))
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    arguments["plugins"] = plugins
    return arguments


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


class Engine:
    """Train, test and score a SAGAN from Python as ``sagan-ad`` does.

    ``fit`` resolves ``ckpt_path="last"`` (the experiment's newest ``last.ckpt``; a fresh run when
    there is none) or ``"best"``, refuses a checkpoint of another model class or architecture
    by name, continues a resumed run in its own version folder, trains, and then tests the
    checkpoint kept on validation (the best ``val/AUROC``) when the data has a test set. The
    Trainer gets `TRAINER_DEFAULTS`, the default callbacks (`default_callbacks`: checkpoints,
    progress bar, the test and predict files, the split record, validation sample grids) and
    atomic checkpoint writes.

    Args:
        trainer: a Trainer to run with as it is (default: one built from ``trainer_settings``).
        test_after_fit: test the kept checkpoint after ``fit``.
        write_outputs: write ``test/`` and ``predict/`` files into the run's folder.
        val_samples: validation images logged as input | restored | heat map grids (0: none).
        last_every_n_iterations: also rewrite ``last.ckpt`` every that many iterations.
        **trainer_settings: ``L.Trainer`` arguments (``val_check_interval``, ``logger``,
            ``callbacks``, ``default_root_dir``, ...).

    Examples:
        >>> from sagan_ad import SAGAN, Critic, Generator, SyntheticCXRDataModule
        >>> engine = Engine(val_check_interval=100, default_root_dir="runs/python")
        >>> model = SAGAN(Generator(image_size=32, base_channels=8, num_res_blocks=1),
        ...               Critic(base_channels=16, num_downsamples=4), max_iterations=1000)
        >>> data = SyntheticCXRDataModule(image_size=32)
        >>> results = engine.fit(model, data)  # doctest: +SKIP
        >>> engine.fit(model, data, ckpt_path="last")  # after a kill: resumes  # doctest: +SKIP
    """

    def __init__(
        self,
        trainer: L.Trainer | None = None,
        *,
        test_after_fit: bool = True,
        write_outputs: bool = True,
        val_samples: int = 8,
        last_every_n_iterations: int | None = None,
        **trainer_settings: Any,
    ) -> None:
        if trainer is not None and trainer_settings:
            raise InputError(
                f"Engine(trainer=..., {', '.join(sorted(trainer_settings))}=...): give either a "
                "Trainer or its settings, not both"
            )
        if val_samples < 0:
            raise InputError(f"val_samples={val_samples}: pass 0 (no images) or a positive number")
        if last_every_n_iterations is not None and last_every_n_iterations < 1:
            raise InputError(
                f"last_every_n_iterations={last_every_n_iterations}: pass a number >= 1, or None "
                "to write last.ckpt at validations only"
            )
        self.test_after_fit = test_after_fit
        self.trainer = trainer or L.Trainer(
            **trainer_arguments(
                trainer_settings,
                write_outputs=write_outputs,
                val_samples=val_samples,
                last_every_n_iterations=last_every_n_iterations,
            )
        )

    def prepare(
        self,
        model: L.LightningModule,
        stage: str,
        ckpt_path: Any = None,
        setting: str = "ckpt_path",
        datamodule: Any = None,
    ) -> Any:
        """Before ``stage`` (``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``): the
        checkpoint file ``ckpt_path`` means (`sagan_ad.training.resume.resolve_checkpoint`),
        checked against ``model`` (its class, then whether its weights fit); a fit from the
        experiment's newest ``last.ckpt`` continues that run in its folder
        (`sagan_ad.training.resume.continue_run`). Before predict, a ``datamodule`` without
        decode settings (`sagan_ad.data.FolderPredictDataModule`'s ``decode=None``) gets the
        ones the checkpoint (or, without one, the model) records. Returns the resolved path;
        errors name the checkpoint and ``setting`` (the option that gave it)."""
        if stage == "fit":
            # Before the data are set up, which can take long on a folder seen the first time.
            check_trainer_for_fit(self.trainer, getattr(model, "max_iterations", -1))
        resolved = resolve_checkpoint(self.trainer, ckpt_path, stage)
        if not isinstance(resolved, str | Path) or "://" in str(resolved):
            if stage == "predict" and resolved is None and hasattr(model, "preprocessing"):
                adopt_decode(datamodule, model.preprocessing)
            return resolved
        checkpoint = read_checkpoint(resolved, mmap=True)
        source = f"checkpoint {str(resolved)!r} ({setting})"
        check_model_class(checkpoint, type(model), source)
        check_weights_fit(checkpoint, model, source)
        if stage == "predict":
            adopt_decode(datamodule, preprocessing_of(checkpoint))
        if stage == "fit":
            newest = find_last_checkpoint(self.trainer)
            if newest is not None and Path(resolved).resolve() == newest.resolve():
                continue_run(self.trainer, resolved)
        return resolved

    def fit(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule | None = None,
        *,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        ckpt_path: Any = None,
    ) -> list[dict[str, float]] | None:
        """Train ``model`` (resuming from ``ckpt_path``), then test the kept checkpoint.

        Returns:
            The test's results (``trainer.test``'s list), or None when nothing was tested.
        """
        path = self.prepare(model, "fit", ckpt_path)
        self.trainer.fit(
            model, train_dataloaders, val_dataloaders, datamodule=datamodule, ckpt_path=path
        )
        if not self.test_after_fit:
            return None
        return self.test_kept_checkpoint(model, datamodule)

    def test_kept_checkpoint(
        self, model: L.LightningModule, datamodule: L.LightningDataModule | None = None
    ) -> list[dict[str, float]] | None:
        """Test the checkpoint the run kept on validation (the model as it is when no validation
        chose one); None, testing nothing, when there is no test set: ``datamodule`` has none,
        or, without a DataModule, the model has no ``test_dataloader`` of its own."""
        if datamodule is None and not is_overridden("test_dataloader", model):
            return None
        if datamodule is not None and getattr(datamodule, "test", True) is None:
            # A fit in spawned processes (ddp_spawn) set the data up there only: whether there
            # is a test set is known once they are set up here.
            datamodule.setup("test")
            if datamodule.test is None:
                return None
        checkpoint = self.trainer.checkpoint_callback
        has_best = isinstance(checkpoint, ModelCheckpoint) and bool(checkpoint.best_model_path)
        return self.trainer.test(
            model, datamodule=datamodule, ckpt_path="best" if has_best else None
        )

    def validate(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule | None = None,
        *,
        dataloaders: Any = None,
        ckpt_path: Any = None,
    ) -> list[dict[str, float]]:
        """Evaluate on the validation data (``ckpt_path``: a file, ``"last"`` or ``"best"``)."""
        path = self.prepare(model, "validate", ckpt_path)
        return self.trainer.validate(model, dataloaders, datamodule=datamodule, ckpt_path=path)

    def test(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule | None = None,
        *,
        dataloaders: Any = None,
        ckpt_path: Any = None,
    ) -> list[dict[str, float]]:
        """Evaluate on the test set (``ckpt_path``: a file, ``"last"`` or ``"best"``)."""
        path = self.prepare(model, "test", ckpt_path)
        return self.trainer.test(model, dataloaders, datamodule=datamodule, ckpt_path=path)

    def predict(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule | None = None,
        *,
        dataloaders: Any = None,
        ckpt_path: Any = None,
    ) -> list[Any] | None:
        """Score images: the batches of `sagan_ad.SAGAN.predict_step` (and, with the default
        callbacks, ``predict/predictions.csv`` and the overlays in the run's folder)."""
        path = self.prepare(model, "predict", ckpt_path, datamodule=datamodule)
        return self.trainer.predict(model, dataloaders, datamodule=datamodule, ckpt_path=path)
