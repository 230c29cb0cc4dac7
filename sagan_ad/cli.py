"""The ``sagan-ad`` command line: LightningCLI with fit / validate / test / predict."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from sagan_ad.callbacks import IterationProgressBar, best_and_last_checkpoints
from sagan_ad.module import SAGAN


class SAGANCLI(LightningCLI):
    """LightningCLI for SAGAN: ``fit`` also tests the best checkpoint when the data has a test set.

    Models and DataModules are given by ``class_path`` (subclass mode), so a user's own
    ``SAGAN`` subclass or DataModule works from YAML.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="fit only: test the best checkpoint (chosen on validation) after training",
        )

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """Add the default checkpointing and progress bar unless the config brings its own."""
        config = self._get(self.config_init, "trainer", default={})
        callbacks = list(config.get("callbacks") or [])
        if config.get("enable_checkpointing") is not False and not any(
            isinstance(c, ModelCheckpoint) for c in callbacks
        ):
            callbacks = best_and_last_checkpoints() + callbacks
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            callbacks.append(IterationProgressBar())
        return super().instantiate_trainer(**{"callbacks": callbacks, **kwargs})

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit", True):
            return
        datamodule = self.datamodule
        if datamodule is not None and getattr(datamodule, "test", True) is None:
            return
        checkpoint = self.trainer.checkpoint_callback
        has_best = isinstance(checkpoint, ModelCheckpoint) and bool(checkpoint.best_model_path)
        self.trainer.test(self.model, datamodule=datamodule, ckpt_path="best" if has_best else None)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``sagan-ad`` console script."""
    SAGANCLI(
        SAGAN,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"max_epochs": -1, "check_val_every_n_epoch": None},
        args=args,
    )


if __name__ == "__main__":
    main()
