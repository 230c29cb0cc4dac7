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

import os
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from sagan_ad.cli.checkpoint import adopt_checkpoint_settings, prepare_run
from sagan_ad.cli.checks import check_class_paths, check_counts, check_evaluated, check_writable
from sagan_ad.cli.commands import configs_main, export_main
from sagan_ad.cli.config_errors import check_config_files, parse_error_message
from sagan_ad.cli.errors import user_error
from sagan_ad.cli.group_errors import (
    GroupFieldError,
    check_groups_in_files,
    check_settings_groups,
    group_error_message,
)
from sagan_ad.cli.loggers import check_callback_packages, check_logger_packages
from sagan_ad.cli.usage import SUBCOMMANDS, front_door
from sagan_ad.configs import resolve_config_arguments
from sagan_ad.errors import InputError
from sagan_ad.module import SAGAN
from sagan_ad.protected import forget_inputs
from sagan_ad.training.checkpoint_files import read_checkpoint
from sagan_ad.training.engine import TRAINER_DEFAULTS, Engine, trainer_arguments
from sagan_ad.training.resume import SPECIAL_PATHS
from sagan_ad.training.run_config import RunConfigSaver
from sagan_ad.training.trainer_checks import barebones_refusal

__all__ = ["SAGANCLI", "main"]

TRAINER_OPTIONS = ("callbacks", "plugins", "enable_checkpointing", "enable_progress_bar")
"""The Trainer settings that decide which defaults `trainer_arguments` adds."""


class SAGANCLI(LightningCLI):
    """LightningCLI for SAGAN: ``fit`` also tests the best checkpoint when the data has a test set.

    The Trainer's defaults, the checkpoint checks before a run and the test after fit are those
    of `sagan_ad.Engine`, the same run path from Python; a ``ModelCheckpoint`` of the config
    adds to the built-in best and last checkpoints, so ``--ckpt_path best`` and ``last`` keep
    their meaning.

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
    newest ``last.ckpt`` of the experiment (`sagan_ad.training.resume.find_last_checkpoint`: all
    ``version_*`` folders of earlier runs included; a fresh run starts when there is none), so a
    killed run restarts with the command that started it plus ``--ckpt_path last``, and continues
    in the killed run's own version folder (`sagan_ad.training.resume.continue_run`).

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

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = self._get(config, "trainer", default={})
        check_logger_packages(trainer.get("logger"))
        check_callback_packages(trainer.get("callbacks"))
        if trainer.get("barebones"):
            raise InputError(barebones_refusal())

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse as Lightning does, but report a wrong setting as one sentence that names it,
        where it was given and the setting meant (`parse_error_message`, and
        `group_error_message` for a field of a settings group), not jsonargparse's usage text
        and nested union errors."""
        parsers = [parser, *_subcommand_parsers(parser).values()]
        for each in parsers:
            each.exit_on_error = False
        argv = [str(a) for a in args] if isinstance(args, list | tuple) else sys.argv[1:]
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            known = _known_settings(parser, argv)
            raise InputError(parse_error_message(str(err), argv, known)) from None
        except GroupFieldError as err:
            raise InputError(group_error_message(err, argv)) from None
        finally:
            for each in parsers:
                each.exit_on_error = True

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """Add the default callbacks and atomic checkpoint writes (`sagan_ad.Engine`'s)."""
        config = self._get(self.config_init, "trainer", default={})
        check_writable(Path(config.get("default_root_dir") or os.getcwd()))
        options = self.config[self.subcommand] if self.subcommand else self.config
        check_counts(config, options, self.subcommand)
        given = {key: config.get(key) for key in TRAINER_OPTIONS}
        arguments = trainer_arguments(
            given,
            write_outputs=options.get("write_outputs", True),
            val_samples=options.get("val_samples", 8),
            last_every_n_iterations=options.get("last_every_n_iterations"),
        )
        defaults = {"callbacks": arguments["callbacks"], "plugins": arguments["plugins"]}
        return super().instantiate_trainer(**{**defaults, **kwargs})

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
        if self.config[self.subcommand].get("test_after_fit", True):
            Engine(self.trainer).test_kept_checkpoint(self.model, self.datamodule)


class SAGANArgumentParser(LightningArgumentParser):
    """The parser of `SAGANCLI`: validating a configuration, as the parse does and
    ``--print_config`` before it prints, also holds every settings group to its fields
    (`sagan_ad.cli.group_errors.check_settings_groups`), which jsonargparse's own check lets
    through as a mapping."""

    def validate(self, namespace: Namespace, *args: Any, **kwargs: Any) -> None:
        """Check ``namespace`` as jsonargparse does, then its settings groups.

        Raises:
            sagan_ad.cli.group_errors.GroupFieldError: a group refuses what it is given.
        """
        super().validate(namespace, *args, **kwargs)
        check_settings_groups(namespace)


def add_checkpoint_arguments(parser: LightningArgumentParser) -> None:
    """The checkpoint options of every subcommand."""
    parser.add_argument(
        "--allow_untrained",
        type=bool,
        default=False,
        help="validate / test / predict: evaluate a model that has no trained weights on purpose",
    )


def _subcommand_parsers(parser: LightningArgumentParser) -> dict[str, Any]:
    action = getattr(parser, "_subcommands_action", None)
    return dict(getattr(action, "_name_parser_map", {}) or {})


def _known_settings(parser: LightningArgumentParser, argv: list[str]) -> list[str]:
    """The dotted settings of the subcommand in ``argv`` (for suggestions)."""
    subparser = _subcommand_parsers(parser).get(argv[0] if argv else "")
    if subparser is None:
        return []
    try:
        # Namespace.keys() gives the nested keys dotted; iterating a Namespace does not.
        return [str(key) for key in subparser.get_defaults().keys()]  # noqa: SIM118
    except Exception:  # a default that cannot be built: no suggestions, the error still shows
        return []


def _use_working_folder() -> None:
    """Let ``class_path`` name modules of the current folder (``--model my_module.MySAGAN``),
    as ``python -m`` would; appended, so a local file never shadows an installed package."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``sagan-ad`` console script.

    The library's errors about the user's input end the program with ``error: <message>`` on
    stderr and exit status 2 (``SAGAN_AD_DEBUG=1``: re-raised with the traceback).

    Examples:
        >>> main(["fit", "--config", "examples/quickstart.yaml"])  # doctest: +SKIP
    """
    forget_inputs()
    try:
        _main(args)
    except Exception as error:
        report(error)


def report(error: Exception) -> NoReturn:
    """End the program on ``error``: one ``error:`` line and exit status 2 for the library's
    verdicts on the user's input (`sagan_ad.cli.errors`), the traceback for anything else or
    with ``SAGAN_AD_DEBUG=1``."""
    found = user_error(error)
    if os.environ.get("SAGAN_AD_DEBUG", "") not in ("", "0") or found is None:
        raise error
    print(f"error: {found}", file=sys.stderr)
    print("(set SAGAN_AD_DEBUG=1 for the full traceback)", file=sys.stderr)
    sys.exit(2)


def _main(args: list[str] | None) -> None:
    argv = sys.argv[1:] if args is None else args
    if front_door(argv):
        return
    _use_working_folder()
    if argv[:1] == ["configs"]:
        configs_main(argv[1:])
        return
    if argv[:1] == ["export"]:
        export_main(argv[1:])
        return
    check_class_paths(argv)
    argv = resolve_config_arguments(argv)
    check_groups_in_files(check_config_files(argv), argv)
    with warnings.catch_warnings():
        # The arguments always come as `args` (config names resolved), which LightningCLI takes
        # for a mistake when sys.argv holds arguments too.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        _lightning_cli(argv)


def _lightning_cli(args: list[str]) -> None:
    SAGANCLI(
        SAGAN,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        parser_class=SAGANArgumentParser,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={name: {"description": SUBCOMMANDS[name]} for name in SAGANCLI.subcommands()},
        trainer_defaults=TRAINER_DEFAULTS,
        args=args,
    )
