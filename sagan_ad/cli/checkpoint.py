"""The checkpoint of a ``sagan-ad`` run (``--ckpt_path``): ``last`` and ``best`` resolved, the
file and its model class checked, evaluation's model built with the checkpoint's settings, and a
resumed fit continued in its own run folder."""

from __future__ import annotations

from argparse import ArgumentError
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from sagan_ad.cli.checks import check_output_folders
from sagan_ad.cli.resumed import check_resumed_settings
from sagan_ad.module import SAGAN
from sagan_ad.protected import protect
from sagan_ad.training.checkpoint_files import (
    MODEL_CLASS_KEY,
    CheckpointError,
    check_model_class,
    first_line,
    import_model_class,
    read_checkpoint,
)
from sagan_ad.training.checkpoint_settings import check_settings, flat_settings
from sagan_ad.training.checkpoint_upgrade import upgrade_checkpoint
from sagan_ad.training.engine import Engine
from sagan_ad.training.hparams import factory_config
from sagan_ad.training.resume import SPECIAL_PATHS, find_last_checkpoint, resolve_checkpoint
from sagan_ad.training.run_config import plain_config


def prepare_run(cli: LightningCLI) -> None:
    """Before a subcommand runs: resolve ``--ckpt_path last|best``, build an evaluation's model
    with the checkpoint's settings, check the checkpoint and continue a resumed run in its own
    folder (`sagan_ad.Engine.prepare`, as from Python), and check the output folders."""
    stage = cli.subcommand
    options = cli.config_init[stage]
    requested = options.get("ckpt_path")
    resolved = resolve_checkpoint(cli.trainer, requested, stage)
    # Evaluating last / best builds the model from the checkpoint, as a path does; a resumed fit
    # keeps the configuration it was restarted with (a longer max_iterations, say).
    if requested in SPECIAL_PATHS and stage != "fit" and isinstance(resolved, str):
        checkpoint = read_checkpoint(resolved, mmap=True)
        if adopt_checkpoint_settings(cli, checkpoint, resolved):
            cli.model = cli._get(cli.parser.instantiate_classes(cli.config), "model")
    local = isinstance(resolved, str) and "://" not in resolved
    resumed = local and stage == "fit"
    resumed = resumed and (requested == "last" or _is_newest_last(cli.trainer, resolved))
    if resumed:
        current = plain_config(cli._parser(stage), cli.config[stage])
        check_resumed_settings(Path(resolved).parent.parent, current, requested)
    elif local:
        # Only the run a checkpoint belongs to may write over it (a resumed last.ckpt).
        protect(resolved, f"the checkpoint given by --ckpt_path {requested}")
    options["ckpt_path"] = Engine(cli.trainer).prepare(
        cli.model, stage, resolved, "--ckpt_path", cli.datamodule
    )
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
    source = f"checkpoint {path!r} (--ckpt_path)"
    # An older format's settings become the components they mean.
    upgrade_checkpoint(checkpoint, source)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    stage = cli.config["subcommand"]
    current = cli.config[stage].get("model")
    if not hparams or current is None:
        return False
    if checkpoint.get(MODEL_CLASS_KEY) is not None:
        # The class the checkpoint records must be the configured one (refused otherwise, with
        # what to pass); only checkpoints without that record take Lightning's _class_path.
        configured_class = import_model_class(current.get("class_path"), "--model")
        check_model_class(checkpoint, configured_class, source)
        hparams.pop("_class_path", None)
    recorded = hparams.pop("_class_path", None)
    check_settings(checkpoint, import_model_class(recorded or current.get("class_path")), source)
    configured = flat_settings(_plain(current.get("init_args") or {}))
    differences = [
        f"{key}={value!r} (configuration: {configured.get(key)!r})"
        for key, value in flat_settings(hparams).items()
        # An unset component (None) is the default one: no difference.
        if configured.get(key) is not None and configured.get(key) != value
    ]
    if recorded is not None and recorded != current.get("class_path"):
        differences.insert(0, f"class {recorded} (configuration: {current.get('class_path')})")
    model = {"class_path": recorded or current.get("class_path"), "init_args": hparams}
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


def _plain(value: Any) -> Any:
    """A parsed configuration (jsonargparse namespaces) as plain dicts, with optimizer and
    scheduler factories as the checkpoint records them (`factory_config`)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        # As checkpoints record them (YAML has lists only).
        return [_plain(v) for v in value]
    if callable(value):
        record = factory_config(value)
        return value if record is None else record
    return value


def _argument_problem(err: ArgumentError) -> str:
    """The innermost problem of a jsonargparse error, which nests one ``Parser key "x":`` per
    level (``image_size: Expected a <class 'int'>. Got value: abc``)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    keys = [i for i, line in enumerate(lines) if line.startswith('Parser key "')]
    if not keys or keys[-1] + 1 >= len(lines):
        return first_line(err)
    key = lines[keys[-1]].removeprefix('Parser key "').removesuffix('":').split(".")[-1]
    return f"{key}: {lines[keys[-1] + 1]}"
