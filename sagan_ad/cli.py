"""The ``sagan-ad`` command line: LightningCLI with fit / validate / test / predict, export, and
configs.

``sagan-ad export --ckpt_path best.ckpt --output sagan.onnx [--format onnx|torchscript]`` writes
the checkpoint's scorer (see `sagan_ad.export`). ``sagan-ad configs`` lists the example configs
shipped with the package and copies one out (``--copy quickstart``); ``--config`` takes their
bare names (``sagan-ad fit --config quickstart``, see `sagan_ad.configs`). Modules in the current
folder can be named by ``class_path`` (``--model my_module.MySAGAN``).

Errors the library raises about the user's data, configuration or run (`sagan_ad.SplitError`,
`sagan_ad.ImageReadError`, `sagan_ad.DivergenceError`, `sagan_ad.CheckpointError`, a
``ValueError``, ``OSError`` or ``ImportError`` raised by sagan_ad code, ...) are printed as one
``error: <message>`` line on stderr with exit status 2; set ``SAGAN_AD_DEBUG=1`` to get the full
traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import tempfile
import traceback
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

import sagan_ad
from sagan_ad.configs import (
    copy_example,
    describe,
    is_bare_name,
    resolve_config_arguments,
    shipped_file,
    shipped_files,
)
from sagan_ad.export import export_scorer
from sagan_ad.module import SAGAN
from sagan_ad.training.callbacks import IterationProgressBar, best_and_last_checkpoints
from sagan_ad.training.checkpoint_files import (
    MODEL_CLASS_KEY,
    CheckpointError,
    check_model_class,
    check_settings,
    check_weights_fit,
    first_line,
    import_model_class,
    read_checkpoint,
)
from sagan_ad.training.checkpointing import AtomicCheckpointIO, load_checkpoint
from sagan_ad.training.divergence import DivergenceError
from sagan_ad.training.outputs import EvaluationWriter
from sagan_ad.training.resume import (
    SPECIAL_PATHS,
    continue_run,
    find_last_checkpoint,
    resolve_checkpoint,
)
from sagan_ad.training.run_config import RunConfigSaver
from sagan_ad.training.runs import planned_run_dir
from sagan_ad.training.tracking import SplitRecorder, ValidationSampleLogger

SUBCOMMANDS = {
    "fit": "train from a config, validating as it goes, then test the best checkpoint",
    "validate": "evaluate a checkpoint on the validation data",
    "test": "evaluate a checkpoint on the test set: metrics, per-image CSV, ROC / PR curves",
    "predict": "score a folder of images: per-image CSV and heat maps on the original films",
    "export": "write a checkpoint's scorer as ONNX or TorchScript",
    "configs": "list the example configs shipped with sagan-ad, or copy one out to edit",
}
"""Every ``sagan-ad`` subcommand with its one-line description (``sagan-ad --help``)."""

__all__ = ["SAGANCLI", "check_output_folder", "check_writable", "find_last_checkpoint", "main"]


class SAGANCLI(LightningCLI):
    """LightningCLI for SAGAN: ``fit`` also tests the best checkpoint when the data has a test set.

    Models and DataModules are given by ``class_path`` (subclass mode), so a user's own
    ``SAGAN`` subclass or DataModule works from YAML. Unless the config brings its own, the
    Trainer gets `sagan_ad.EvaluationWriter` (``test`` writes ``test/predictions.csv``,
    ``test/metrics.json``, ``test/roc.png`` and ``test/pr.png`` into the run's own folder;
    ``predict`` writes ``predict/predictions.csv`` and ``predict/overlays/``; turn off with
    ``--write_outputs=false``), `sagan_ad.ValidationSampleLogger` (``--val_samples=N`` images
    per validation, 0 for none) and `sagan_ad.SplitRecorder`. The resolved config goes into the
    run's own folder and to every logger (`sagan_ad.training.run_config.RunConfigSaver`).

    For crash safety, checkpoints are written atomically (`sagan_ad.AtomicCheckpointIO`, unless
    the config brings its own ``CheckpointIO`` plugin), ``last.ckpt`` is also rewritten every
    ``--last_every_n_iterations`` iterations, and ``fit --ckpt_path last`` resumes from the
    newest ``last.ckpt`` of the experiment (`find_last_checkpoint`: all ``version_*`` folders of
    earlier runs included; a fresh run starts when there is none), so a killed run restarts with
    the command that started it plus ``--ckpt_path last``, and continues in the killed run's own
    version folder (`sagan_ad.training.resume.continue_run`).

    ``--ckpt_path last`` and ``best`` mean the same in every subcommand
    (`sagan_ad.training.resume.resolve_checkpoint`); validate, test and predict refuse an untrained
    model
    unless ``--allow_untrained true``; a checkpoint written by another model class than
    ``--model`` is refused, and output folders that cannot be written are reported before the run.
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
        parser.add_argument(
            "--last_every_n_iterations",
            type=int | None,
            default=None,
            help="fit: also rewrite last.ckpt every that many iterations (default: at validations)",
        )
        add_checkpoint_arguments(parser)

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """Add the default checkpointing and progress bar unless the config brings its own."""
        config = self._get(self.config_init, "trainer", default={})
        check_writable(Path(config.get("default_root_dir") or os.getcwd()))
        callbacks = list(config.get("callbacks") or [])
        options = self.config[self.subcommand] if self.subcommand else self.config
        check_counts(config, options, self.subcommand)
        if config.get("enable_checkpointing") is not False and not any(
            isinstance(c, ModelCheckpoint) for c in callbacks
        ):
            every = options.get("last_every_n_iterations")
            callbacks = best_and_last_checkpoints(last_every_n_iterations=every) + callbacks
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            callbacks.append(IterationProgressBar())
        if options.get("write_outputs", True) and not any(
            isinstance(c, EvaluationWriter) for c in callbacks
        ):
            callbacks.append(EvaluationWriter())
        if not any(isinstance(c, SplitRecorder) for c in callbacks):
            callbacks.append(SplitRecorder())
        samples = options.get("val_samples", 8)
        if samples and not any(isinstance(c, ValidationSampleLogger) for c in callbacks):
            callbacks.append(ValidationSampleLogger(num_samples=samples))
        plugins = config.get("plugins")
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins] * bool(plugins)
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        return super().instantiate_trainer(**{"callbacks": callbacks, "plugins": plugins, **kwargs})

    def _parse_ckpt_path(self) -> None:
        """Read a ``--ckpt_path`` file with clear errors and build the model from its settings.

        Lightning's own version builds the model from the checkpoint's hyper-parameters without
        a word when they differ from the configuration, and fails with a traceback on a file it
        cannot read; ``last`` and ``best`` are resolved later, by `prepare_run`.
        """
        stage = self.config.get("subcommand")
        path = self.config[stage].get("ckpt_path") if stage else None
        if isinstance(path, str) and path not in (*SPECIAL_PATHS, "hpc") and "://" not in path:
            checkpoint = read_checkpoint(path, mmap=True)
            # A resumed fit keeps the configuration it is restarted with, whether the checkpoint
            # is named by path or as last (a longer max_iterations trains longer); evaluation
            # builds the model the checkpoint was trained as.
            if stage != "fit":
                adopt_checkpoint_settings(self, checkpoint, path)

    def before_fit(self) -> None:
        """Resolve ``--ckpt_path`` (a resumed run continues in its own folder); check outputs.

        Lightning looks for ``last`` only in the checkpoint folder of the *new* run, which the
        default logger numbers ``version_N+1``; the interrupted run's checkpoints are in an
        earlier ``version_*`` folder.
        """
        prepare_run(self)

    def before_validate(self) -> None:
        prepare_run(self)

    def before_test(self) -> None:
        prepare_run(self)

    def before_predict(self) -> None:
        prepare_run(self)

    def after_validate(self) -> None:
        check_evaluated(self.trainer, "validate")

    def after_test(self) -> None:
        check_evaluated(self.trainer, "test")

    def after_predict(self) -> None:
        check_evaluated(self.trainer, "predict")

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit", True):
            return
        datamodule = self.datamodule
        if datamodule is not None and getattr(datamodule, "test", True) is None:
            return
        checkpoint = self.trainer.checkpoint_callback
        has_best = isinstance(checkpoint, ModelCheckpoint) and bool(checkpoint.best_model_path)
        self.trainer.test(self.model, datamodule=datamodule, ckpt_path="best" if has_best else None)


def check_counts(trainer: Any, options: Any, stage: str | None = None) -> None:
    """Refuse counts that neither Lightning nor the callbacks name by their option: an integer
    ``val_check_interval`` below 1 divides by zero inside Lightning's loop, the callbacks
    would name ``num_samples`` and ``every_n_iterations`` rather than the options set, and a
    ``limit_*_batches`` of 0 for the evaluation ``stage`` runs would score no image and write no
    report, yet exit 0.

    Examples:
        >>> check_counts({"val_check_interval": 0}, {})
        Traceback (most recent call last):
        ...
        ValueError: --trainer.val_check_interval=0: validate every N >= 1 iterations ...
    """
    interval = trainer.get("val_check_interval")
    if isinstance(interval, int) and not isinstance(interval, bool) and interval < 1:
        raise ValueError(
            f"--trainer.val_check_interval={interval}: validate every N >= 1 iterations (or "
            "pass a fraction in (0, 1] of an epoch, where the data has epochs)"
        )
    samples = options.get("val_samples")
    if samples is not None and samples < 0:
        raise ValueError(f"--val_samples={samples}: pass 0 (no images) or a positive number")
    evaluated = {"validate": "val", "test": "test", "predict": "predict"}.get(stage or "")
    if stage == "fit" and options.get("test_after_fit", True):
        evaluated = "test"
    limit = trainer.get(f"limit_{evaluated}_batches") if evaluated else None
    if limit is not None and limit == 0:
        after_fit = " (or --test_after_fit=false)" if stage == "fit" else ""
        what = "the test after fit" if stage == "fit" else stage
        raise ValueError(
            f"--trainer.limit_{evaluated}_batches={limit}: {what} would score no image and "
            f"write no report; leave it out, or pass a number of batches >= 1 or a fraction in "
            f"(0, 1]{after_fit}"
        )
    every = options.get("last_every_n_iterations")
    if every is not None and every < 1:
        raise ValueError(
            f"--last_every_n_iterations={every}: pass a number >= 1, or leave it out to write "
            "last.ckpt at validations only"
        )


def check_evaluated(trainer: L.Trainer, stage: str) -> None:
    """Fail when ``stage`` scored no image: an empty validation, test or predict set (a
    DataModule without that split, val_fraction=0) otherwise ends with exit status 0 and no
    report, which a job script reads as success."""
    split = {"validate": "val", "test": "test", "predict": "predict"}[stage]
    if sum(getattr(trainer, f"num_{split}_batches") or [0]) == 0:
        data = type(trainer.datamodule).__name__ if trainer.datamodule else "the data"
        raise ValueError(
            f"{stage} scored no image: {data} has no {split} batches; give it a {split} split "
            f"(for a DataModule with val_fraction, a value above 0), and check "
            f"--trainer.limit_{split}_batches"
        )


def check_writable(folder: Path) -> None:
    """Fail early, with the folder's name, when the run's output folder cannot be written.

    Examples:
        >>> import tempfile
        >>> check_writable(Path(tempfile.mkdtemp()) / "run")
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        # mkdir's own reason for a file in the way is "File exists" or "Not a directory".
        existing = folder
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        reason = err.strerror or str(err)
        if existing.exists() and not existing.is_dir():
            reason = f"{str(existing)!r} is a file, not a folder"
        raise PermissionError(
            f"the output folder {str(folder)!r} cannot be written ({reason}): "
            "choose another --trainer.default_root_dir"
        ) from err


def add_checkpoint_arguments(parser: LightningArgumentParser) -> None:
    """The checkpoint options of every subcommand."""
    parser.add_argument(
        "--allow_untrained",
        type=bool,
        default=False,
        help="validate / test / predict: evaluate a model that has no trained weights on purpose",
    )


def prepare_run(cli: LightningCLI) -> None:
    """Before a subcommand runs: resolve ``--ckpt_path last|best``, check the checkpoint (file,
    model class), continue a resumed run in its own folder, and check the output folders."""
    stage = cli.subcommand
    options = cli.config_init[stage]
    requested = options.get("ckpt_path")
    resolved = resolve_checkpoint(cli.trainer, requested, stage)
    if isinstance(resolved, str) and "://" not in resolved:
        checkpoint = read_checkpoint(resolved, mmap=True)
        # Evaluating last / best builds the model from the checkpoint, as a path does; a resumed
        # fit keeps the configuration it was restarted with (a longer max_iterations, say).
        adopt = requested in SPECIAL_PATHS and stage != "fit"
        if adopt and adopt_checkpoint_settings(cli, checkpoint, resolved):
            cli.model = cli._get(cli.parser.instantiate_classes(cli.config), "model")
        source = f"checkpoint {resolved!r} (--ckpt_path)"
        check_model_class(checkpoint, type(cli.model), source)
        check_weights_fit(checkpoint, cli.model, source)
        if stage == "fit" and (requested == "last" or _is_newest_last(cli.trainer, resolved)):
            continue_run(cli.trainer, resolved)
    options["ckpt_path"] = resolved
    if isinstance(cli.model, SAGAN):
        cli.model.allow_untrained = bool(options.get("allow_untrained", False))
    check_output_folders(cli.trainer, cli.datamodule, stage, options)


def _is_newest_last(trainer: L.Trainer, path: str) -> bool:
    """Whether ``path`` is the experiment's newest last checkpoint: resuming it by its path is
    the same resume as ``--ckpt_path last`` (an older checkpoint starts a new run from it)."""
    newest = find_last_checkpoint(trainer)
    return newest is not None and Path(path).resolve() == newest.resolve()


def adopt_checkpoint_settings(cli: LightningCLI, checkpoint: dict[str, Any], path: str) -> bool:
    """Take the model's class and settings from ``checkpoint``'s hyper-parameters, as Lightning
    does for ``--ckpt_path``, and warn about each that differs from the configuration.

    Returns whether anything differed (the model must then be built again).
    """
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    stage = cli.config["subcommand"]
    current = cli.config[stage].get("model")
    if not hparams or current is None:
        return False
    source = f"checkpoint {path!r} (--ckpt_path)"
    if checkpoint.get(MODEL_CLASS_KEY) is not None:
        # The class the checkpoint records must be the configured one (refused otherwise, with
        # what to pass); only checkpoints without that record take Lightning's _class_path.
        configured_class = import_model_class(current.get("class_path"), "--model")
        check_model_class(checkpoint, configured_class, source)
        hparams.pop("_class_path", None)
    recorded = hparams.pop("_class_path", None)
    check_settings(checkpoint, import_model_class(recorded or current.get("class_path")), source)
    configured = current.get("init_args") or {}
    differences = [
        f"{key}={value!r} (configuration: {configured.get(key)!r})"
        for key, value in hparams.items()
        if key in configured
        and configured.get(key) != value
        # normalization=None means "what the data uses", which fit records in the checkpoint.
        and not (key == "normalization" and configured.get(key) is None)
    ]
    if recorded is not None and recorded != current.get("class_path"):
        differences.insert(0, f"class {recorded} (configuration: {current.get('class_path')})")
    model = {"class_path": recorded or current.get("class_path"), "dict_kwargs": hparams}
    exit_on_error, cli.parser.exit_on_error = cli.parser.exit_on_error, False
    try:
        merged = cli.parser.parse_object({stage: {"model": model}}, cli.config)
    except ArgumentError as err:
        # A recorded setting of a type the model refuses: jsonargparse would print its whole
        # parse tree and exit without naming the checkpoint.
        raise CheckpointError(
            f"{source} records settings that {model['class_path']} refuses "
            f"({_argument_problem(err)}): "
            "it was written by another version of sagan-ad or another model class; load it "
            "with the version and class that wrote it"
        ) from err
    finally:
        cli.parser.exit_on_error = exit_on_error
    # In place: the callback that saves config.yaml holds this namespace.
    cli.config[stage]["model"] = merged[stage]["model"]
    if differences:
        rank_zero_warn(
            f"--ckpt_path {path}: the model is built with the checkpoint's settings, which differ "
            f"from the configuration: {', '.join(differences)}"
        )
    return bool(differences)


def _argument_problem(err: ArgumentError) -> str:
    """The innermost problem of a jsonargparse error, which nests one ``Parser key "x":`` per
    level (``image_size: Expected a <class 'int'>. Got value: abc``)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    keys = [i for i, line in enumerate(lines) if line.startswith('Parser key "')]
    if not keys or keys[-1] + 1 >= len(lines):
        return first_line(err)
    key = lines[keys[-1]].removeprefix('Parser key "').removesuffix('":').split(".")[-1]
    return f"{key}: {lines[keys[-1] + 1]}"


def check_output_folder(folder: str | os.PathLike, setting: str) -> None:
    """Fail, naming ``setting``, when ``folder`` cannot be created or written (without creating
    it).

    Examples:
        >>> check_output_folder("/etc/hostname/run", "--trainer.default_root_dir")
        Traceback (most recent call last):
        ...
        NotADirectoryError: --trainer.default_root_dir: the output folder '/etc/hostname/run' ...
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem, error = f"{str(existing)!r} is a file, not a folder", NotADirectoryError
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem, error = f"{str(existing)!r} is not writable", PermissionError
    if problem is not None:
        raise error(
            f"{setting}: the output folder {str(folder)!r} cannot be created or written "
            f"({problem}): choose another folder with {setting}"
        )


def check_output_folders(
    trainer: L.Trainer, datamodule: Any, stage: str, options: Any = None
) -> None:
    """Check, before a run, every folder it will write: the loggers', the run's, the evaluation
    outputs' and the data cache."""
    for logger in trainer.loggers:
        if logger.save_dir:
            check_output_folder(logger.save_dir, "--trainer.logger.init_args.save_dir")
    check_output_folder(trainer.log_dir or trainer.default_root_dir, "--trainer.default_root_dir")
    if stage == "fit":
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "dirpath", None):
                check_output_folder(callback.dirpath, f"dirpath of {type(callback).__name__}")
    cache = getattr(datamodule, "cache_dir", None)
    if cache is not None:
        check_output_folder(cache, "--data.init_args.cache_dir")
    writes = {"test": "test", "predict": "predict/overlays"}
    if stage == "fit" and (options is None or options.get("test_after_fit", True)):
        stage = "test"
    for writer in trainer.callbacks:
        if isinstance(writer, EvaluationWriter) and stage in writes:
            # Not the run folder itself: deciding it now would fix a W&B run's name too early.
            folder = Path(writer.dirpath or planned_run_dir(trainer)) / writes[stage]
            setting = "dirpath of the EvaluationWriter" if writer.dirpath else "the run folder"
            check_output_folder(folder, f"--trainer.default_root_dir ({setting})")


def _user_error(error: BaseException) -> BaseException | None:
    """The library's message about the user's input or run behind ``error``, if any (not a bug).

    jsonargparse re-raises a model's or DataModule's ``ValueError`` wrapped in its own, so the
    chain of causes is searched.
    """
    package = str(Path(sagan_ad.__file__).parent)
    cause: BaseException | None = error
    while cause is not None:
        # Lightning's MisconfigurationException is its verdict on a Trainer setting the user
        # chose (max_steps=-5, devices=0, a GPU accelerator without a GPU).
        if isinstance(
            cause,
            DivergenceError | sagan_ad.ImageReadError | CheckpointError | MisconfigurationException,
        ):
            return cause
        # W&B's own errors (no API key, no network) are about the user's environment; wandb is
        # optional, so they are known by their module rather than imported.
        if type(cause).__module__.startswith("wandb.errors"):
            return RuntimeError(
                f"W&B: {cause} To log without an account, set WANDB_MODE=offline (the run "
                "stays on disk for `wandb sync`), or choose another logger with --trainer.logger"
            )
        frames = traceback.extract_tb(cause.__traceback__)
        # Raised by sagan_ad's own argument and data checks, not deep inside a dependency (an
        # ImportError from sagan_ad names the missing optional extra).
        if (
            isinstance(cause, ValueError | OSError | ImportError)
            and frames
            and frames[-1].filename.startswith(package)
        ):
            return cause
        cause = cause.__cause__
    return None


def _import(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"--model {dotted!r} cannot be imported ({type(err).__name__}: {err}): pass the "
            "dotted path of the checkpoint's model class (for example mypackage.MySAGAN), or "
            "leave --model out to use the class the checkpoint records"
        ) from None
    if not (isinstance(found, type) and issubclass(found, L.LightningModule)):
        raise ValueError(f"--model {dotted!r} is not a LightningModule class")
    return found


def _flag(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r}: pass true or false")


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
    parser.add_argument(
        "--model",
        default=None,
        help="the checkpoint's model class (default: the class it records; sagan_ad.SAGAN for "
        "checkpoints written before classes were recorded)",
    )
    parser.add_argument("--batch_size", type=int, default=2, help="batch of the tracing example")
    parser.add_argument(
        "--input_normalized",
        action="store_true",
        help="leave the model's intensity normalisation out of the graph: the caller applies it "
        "(needed for CLAHE, see sagan_ad.data.normalize_images)",
    )
    parser.add_argument(
        "--allow_untrained",
        type=_flag,
        nargs="?",
        const=True,
        default=False,
        help="export a checkpoint of an untrained model (iteration 0) on purpose",
    )
    options = parser.parse_args(args)
    if options.ckpt_path in SPECIAL_PATHS:
        # Only the run subcommands know the logger settings that say where a run's
        # checkpoints are.
        example = "last.ckpt" if options.ckpt_path == "last" else "best-iteration=N.ckpt"
        raise CheckpointError(
            f"sagan-ad export --ckpt_path {options.ckpt_path}: export takes a checkpoint file "
            "(only fit, validate, test and predict resolve last / best, from the run's logger "
            f"settings): pass the file, for example lightning_logs/version_0/checkpoints/{example}"
        )
    model_class = _import(options.model) if options.model else None
    model = load_checkpoint(options.ckpt_path, model_class)
    if getattr(model, "iteration", None) == 0 and not options.allow_untrained:
        raise CheckpointError(
            f"checkpoint {options.ckpt_path!r} holds an untrained model (iteration 0): export a "
            "trained checkpoint, or pass --allow_untrained true to export it on purpose"
        )
    # Any case: scorer.ONNX written as TorchScript would only fail later, in ONNX Runtime.
    fmt = options.format or ("onnx" if options.output.lower().endswith(".onnx") else "torchscript")
    path = export_scorer(
        model,
        options.output,
        format=fmt,
        batch_size=options.batch_size,
        input_normalized=options.input_normalized,
    )
    print(f"wrote {fmt} scorer to {path}")
    sidecar = path.with_name(path.name + ".data")
    if fmt == "onnx" and sidecar.is_file():
        print(
            f"its weights exceed the 2 GB protobuf limit and are in {sidecar}: keep the two files "
            "together (see docs/evaluation.md)"
        )


def overview() -> str:
    """What ``sagan-ad --help`` prints: what the tool is, every subcommand, where to start.

    Examples:
        >>> "export" in overview() and "configs" in overview()
        True
    """
    commands = "\n".join(f"  {name:<10} {text}" for name, text in SUBCOMMANDS.items())
    return f"""sagan-ad {sagan_ad.__version__}: SAGAN (Spatial-aware Attention GAN, MICCAI 2024) for
semi-supervised anomaly detection in medical images. It trains on known normal images plus an
unlabeled mix, scores new images, and draws heat maps of where they look abnormal.

usage: sagan-ad <subcommand> [options]    (sagan-ad <subcommand> --help lists its options)

subcommands:
{commands}

start here:
  sagan-ad fit --config quickstart    train and test on synthetic chest phantoms (minutes, CPU)
  sagan-ad configs                    the other shipped configs: real data, GPUs, W&B logging

options:
  -h, --help    show this overview and exit
  --version     show the version and exit
"""


def configs_main(args: list[str]) -> None:
    """``sagan-ad configs``: list the shipped example configs, or copy one out to edit.

    Examples:
        >>> configs_main(["--copy", "quickstart"])  # doctest: +SKIP
        wrote quickstart.yaml: edit it, then run sagan-ad fit --config quickstart.yaml
    """
    parser = argparse.ArgumentParser(prog="sagan-ad configs", description=SUBCOMMANDS["configs"])
    parser.add_argument("--copy", metavar="NAME", help="copy this config (or example) out")
    parser.add_argument("--to", default=".", metavar="FOLDER", help="where --copy writes")
    parser.add_argument("--force", action="store_true", help="let --copy overwrite a file")
    parser.add_argument("--show", metavar="NAME", help="print this config")
    options = parser.parse_args(args)
    files = shipped_files()
    if options.copy:
        check_output_folder(options.to, "--to")
        target = copy_example(options.copy, options.to, overwrite=options.force)
        run = f"sagan-ad fit --config {target}" if target.suffix != ".py" else f"python {target}"
        print(f"wrote {target}: edit it, then run {run}")
        return
    if options.show:
        print(shipped_file(options.show).read_text(encoding="utf-8"), end="")
        return
    width = max(len(name) for name in files) + 2
    print("Configs shipped with sagan-ad (pass the name: sagan-ad fit --config quickstart):")
    for name, path in files.items():
        if path.suffix != ".py":
            print(f"  {name:<{width}}{describe(path)}")
    print("\nPython examples:")
    for name, path in files.items():
        if path.suffix == ".py":
            print(f"  {name:<{width}}{describe(path)}")
    print(
        "\nCopy one out to edit: sagan-ad configs --copy quickstart (writes ./quickstart.yaml); "
        "print one: sagan-ad configs --show quickstart"
    )


def _front_door(argv: list[str]) -> bool:
    """Answer ``--help``, ``--version``, no subcommand and an unknown subcommand; whether done."""
    first = argv[0] if argv else None
    if first in ("-h", "--help"):
        print(overview(), end="")
        return True
    if first == "--version":
        print(f"sagan-ad {sagan_ad.__version__}")
        return True
    if first is None:
        print(overview(), end="", file=sys.stderr)
        print(
            f"error: no subcommand given: choose one of {', '.join(SUBCOMMANDS)}", file=sys.stderr
        )
        sys.exit(2)
    if not first.startswith("-") and first not in SUBCOMMANDS:
        print(
            f"error: unknown subcommand {first!r}: choose one of {', '.join(SUBCOMMANDS)} "
            "(sagan-ad --help describes them)",
            file=sys.stderr,
        )
        sys.exit(2)
    return False


def _use_working_folder() -> None:
    """Let ``class_path`` name modules of the current folder (``--model my_module.MySAGAN``),
    as ``python -m`` would; appended, so a local file never shadows an installed package."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)


def check_class_paths(argv: list[str]) -> None:
    """Check the ``--model`` / ``--data`` classes named on the command line before parsing, so
    that a missing module is one sentence saying where to put it.

    Raises:
        ValueError: the module cannot be found or lacks the class.

    Examples:
        >>> check_class_paths(["fit", "--model", "sagan_ad.SAGAN"])
        >>> check_class_paths(["fit", "--model=my_modul.MySAGAN"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: --model my_modul.MySAGAN: there is no module 'my_modul'; put my_modul.py ...
    """
    for i, arg in enumerate(argv):
        key, _, value = arg.partition("=")
        if key not in ("--model", "--data", "--model.class_path", "--data.class_path"):
            continue
        value = value or (argv[i + 1] if i + 1 < len(argv) else "")
        module, _, name = value.rpartition(".")
        if not module or not is_bare_name(value) or Path(value).exists():
            continue
        flag = key.removesuffix(".class_path")
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise ValueError(
                f"{flag} {value}: there is no module {module!r}; put {module.split('.')[0]}.py "
                f"in the current folder ({os.getcwd()}) or in a folder on PYTHONPATH, or install "
                "the package that provides it"
            )
        if not hasattr(importlib.import_module(module), name):
            raise ValueError(f"{flag} {value}: module {module!r} has no class {name!r}")


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``sagan-ad`` console script.

    The library's errors about the user's input end the program with ``error: <message>`` on
    stderr and exit status 2 (``SAGAN_AD_DEBUG=1``: re-raised with the traceback).

    Examples:
        >>> main(["fit", "--config", "examples/quickstart.yaml"])  # doctest: +SKIP
    """
    try:
        _main(args)
    except Exception as error:
        found = _user_error(error)
        if os.environ.get("SAGAN_AD_DEBUG", "") not in ("", "0") or found is None:
            raise
        print(f"error: {found}", file=sys.stderr)
        print("(set SAGAN_AD_DEBUG=1 for the full traceback)", file=sys.stderr)
        sys.exit(2)


def _main(args: list[str] | None) -> None:
    argv = sys.argv[1:] if args is None else args
    if _front_door(argv):
        return
    _use_working_folder()
    if argv[:1] == ["configs"]:
        configs_main(argv[1:])
        return
    if argv[:1] == ["export"]:
        export_main(argv[1:])
        return
    check_class_paths(argv)
    with warnings.catch_warnings():
        # The arguments always come as `args` (config names resolved), which LightningCLI takes
        # for a mistake when sys.argv holds arguments too.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        _lightning_cli(resolve_config_arguments(argv))


def _lightning_cli(args: list[str]) -> None:
    SAGANCLI(
        SAGAN,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={name: {"description": SUBCOMMANDS[name]} for name in SAGANCLI.subcommands()},
        trainer_defaults={"max_epochs": -1, "check_val_every_n_epoch": None},
        args=args,
    )


if __name__ == "__main__":
    main()
