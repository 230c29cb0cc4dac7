"""The ``sagan-ad`` command line: LightningCLI with fit / validate / test / predict, and export.

``sagan-ad export --ckpt_path best.ckpt --output sagan.onnx [--format onnx|torchscript]`` writes
the checkpoint's scorer (see `sagan_ad.export`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from sagan_ad.callbacks import IterationProgressBar, best_and_last_checkpoints
from sagan_ad.export import export_scorer
from sagan_ad.module import SAGAN
from sagan_ad.outputs import EvaluationWriter
from sagan_ad.tracking import ValidationSampleLogger


class SAGANCLI(LightningCLI):
    """LightningCLI for SAGAN: ``fit`` also tests the best checkpoint when the data has a test set.

    Models and DataModules are given by ``class_path`` (subclass mode), so a user's own
    ``SAGAN`` subclass or DataModule works from YAML. Unless the config brings its own, the
    Trainer gets `sagan_ad.EvaluationWriter` (``test`` writes ``test/predictions.csv``,
    ``test/metrics.json``, ``test/roc.png`` and ``test/pr.png`` into the run's log folder;
    ``predict`` writes ``predict/predictions.csv`` and ``predict/overlays/``; turn off with
    ``--write_outputs=false``) and `sagan_ad.ValidationSampleLogger` (``--val_samples=N`` images
    per validation, 0 for none).
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="fit only: test the best checkpoint (chosen on validation) after training",
        )
        parser.add_argument(
            "--write_outputs",
            type=bool,
            default=True,
            help="test / predict: write per-image CSVs, metrics JSON, curves and overlays",
        )
        parser.add_argument(
            "--val_samples",
            type=int,
            default=8,
            help="validation images logged as input | restored | heat map grids (0: none)",
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
        options = self.config[self.subcommand] if self.subcommand else self.config
        if options.get("write_outputs", True) and not any(
            isinstance(c, EvaluationWriter) for c in callbacks
        ):
            callbacks.append(EvaluationWriter())
        samples = options.get("val_samples", 8)
        if samples and not any(isinstance(c, ValidationSampleLogger) for c in callbacks):
            callbacks.append(ValidationSampleLogger(num_samples=samples))
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


def _import(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def export_main(args: list[str]) -> None:
    """``sagan-ad export``: write a checkpoint's scorer as ONNX or TorchScript.

    Examples:
        >>> export_main(["--ckpt_path", "best.ckpt", "--output", "sagan.onnx"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(
        prog="sagan-ad export",
        description="Export a checkpoint's scorer (generator, anomaly map and score).",
    )
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by sagan-ad fit")
    parser.add_argument("--output", required=True, help="output file (.onnx or .pt)")
    parser.add_argument(
        "--format",
        choices=("onnx", "torchscript"),
        default=None,
        help="default: from the output's extension (.onnx, else torchscript)",
    )
    parser.add_argument("--model", default="sagan_ad.SAGAN", help="the checkpoint's model class")
    parser.add_argument("--batch_size", type=int, default=2, help="batch of the tracing example")
    options = parser.parse_args(args)
    model = _import(options.model).load_from_checkpoint(options.ckpt_path, map_location="cpu")
    fmt = options.format or ("onnx" if options.output.endswith(".onnx") else "torchscript")
    path = export_scorer(model, options.output, format=fmt, batch_size=options.batch_size)
    print(f"wrote {fmt} scorer to {path}")


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``sagan-ad`` console script."""
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["export"]:
        export_main(argv[1:])
        return
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
