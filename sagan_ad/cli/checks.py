"""The command line's checks of a run's settings, output folders and named classes, before the
run (and, for an evaluation that scored nothing, after it): each failure is one sentence that
names the option to change."""

from __future__ import annotations

import importlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sagan_ad.configs import is_bare_name
from sagan_ad.errors import FileError, InputError

if TYPE_CHECKING:
    import lightning as L

__all__ = ["check_output_folder", "check_writable"]


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
        sagan_ad.errors.InputError: --trainer.val_check_interval=0: validate every N >= 1 ...
    """
    interval = trainer.get("val_check_interval")
    if isinstance(interval, int) and not isinstance(interval, bool) and interval < 1:
        raise InputError(
            f"--trainer.val_check_interval={interval}: validate every N >= 1 iterations (the "
            "training data are one endless epoch, so a fraction of it has no meaning either)"
        )
    samples = options.get("val_samples")
    if samples is not None and samples < 0:
        raise InputError(f"--val_samples={samples}: pass 0 (no images) or a positive number")
    evaluated = {"validate": "val", "test": "test", "predict": "predict"}.get(stage or "")
    if stage == "fit" and options.get("test_after_fit", True):
        evaluated = "test"
    limit = trainer.get(f"limit_{evaluated}_batches") if evaluated else None
    if limit is not None and limit == 0:
        after_fit = " (or --test_after_fit=false)" if stage == "fit" else ""
        what = "the test after fit" if stage == "fit" else stage
        raise InputError(
            f"--trainer.limit_{evaluated}_batches={limit}: {what} would score no image and "
            f"write no report; leave it out, or pass a number of batches >= 1 or a fraction in "
            f"(0, 1]{after_fit}"
        )
    every = options.get("last_every_n_iterations")
    if every is not None and every < 1:
        raise InputError(
            f"--last_every_n_iterations={every}: pass a number >= 1, or leave it out to write "
            "last.ckpt at validations only"
        )


def check_evaluated(trainer: L.Trainer, stage: str) -> None:
    """Fail when ``stage`` scored no image: an empty validation, test or predict set (a
    DataModule without that split, split.val_fraction=0) otherwise ends with exit status 0 and no
    report, which a job script reads as success."""
    split = {"validate": "val", "test": "test", "predict": "predict"}[stage]
    if sum(getattr(trainer, f"num_{split}_batches") or [0]) == 0:
        data = type(trainer.datamodule).__name__ if trainer.datamodule else "the data"
        raise InputError(
            f"{stage} scored no image: {data} has no {split} batches; give it a {split} split "
            f"(for a DataModule with split.val_fraction, a value above 0), and check "
            f"--trainer.limit_{split}_batches"
        )


def check_writable(folder: Path) -> None:
    """Fail early, with the folder's name, when the run's output folder cannot be written.

    Examples:
        >>> import tempfile
        >>> check_writable(Path(tempfile.mkdtemp()) / "run")
    """
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    # Created and taken back: a run stopped by a later check leaves no empty folders behind.
    reason = _try_creating(folder, existing)
    if reason is not None:
        # mkdir's own reason for a file in the way is "File exists" or "Not a directory".
        if existing.exists() and not existing.is_dir():
            reason = f"{str(existing)!r} is a file, not a folder"
        raise FileError(
            f"the output folder {str(folder)!r} cannot be written ({reason}): "
            "choose another --trainer.default_root_dir"
        )


def check_output_folder(folder: str | os.PathLike, setting: str) -> None:
    """Fail, naming ``setting``, when ``folder`` cannot be created or written (without creating
    it).

    Examples:
        >>> check_output_folder("/etc/hostname/run", "--trainer.default_root_dir")
        Traceback (most recent call last):
        ...
        sagan_ad.errors.FileError: --trainer.default_root_dir: the output folder ... cannot ...
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        problem = f"{str(existing)!r} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{str(existing)!r} is not writable"
    else:
        # Permissions do not tell everything (root may write anywhere, yet no folder can be
        # made under /proc or on a read-only mount): try, and take back what was made.
        problem = _try_creating(folder, existing)
    if problem is not None:
        raise FileError(
            f"{setting}: the output folder {str(folder)!r} cannot be created or written "
            f"({problem}): choose another folder with {setting}"
        )


def _try_creating(folder: Path, existing: Path) -> str | None:
    """Create ``folder`` (below its existing ancestor ``existing``) and a file in it, then
    remove both; the reason it failed, or None."""
    made = []
    try:
        for part in reversed([folder, *folder.parents]):
            if part.exists() or existing.is_relative_to(part):
                continue
            part.mkdir()
            made.append(part)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return f"{err.strerror or err}"
    finally:
        for part in reversed(made):
            part.rmdir()
    return None


def check_output_folders(
    trainer: L.Trainer, datamodule: Any, stage: str, options: Any = None
) -> None:
    """Check, before a run, every folder it will write: the loggers', the run's, the evaluation
    outputs' and the data cache."""
    # Imported here: `sagan-ad configs --copy` checks its folder without loading Lightning.
    from sagan_ad.training.outputs import EvaluationWriter
    from sagan_ad.training.runs import planned_run_dir

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
        check_output_folder(cache, "--data.init_args.cache.dir")
    writes = {"test": "test", "predict": "predict/overlays"}
    if stage == "fit" and (options is None or options.get("test_after_fit", True)):
        stage = "test"
    for writer in trainer.callbacks:
        if isinstance(writer, EvaluationWriter) and stage in writes:
            # Not the run folder itself: deciding it now would fix a W&B run's name too early.
            folder = Path(writer.dirpath or planned_run_dir(trainer)) / writes[stage]
            setting = "dirpath of the EvaluationWriter" if writer.dirpath else "the run folder"
            check_output_folder(folder, f"--trainer.default_root_dir ({setting})")


def check_class_paths(argv: list[str]) -> None:
    """Check the ``--model`` / ``--data`` classes named on the command line before parsing, so
    that a missing module is one sentence saying where to put it.

    Raises:
        sagan_ad.errors.InputError: the module cannot be found or lacks the class.

    Examples:
        >>> check_class_paths(["fit", "--model", "sagan_ad.SAGAN"])
        >>> check_class_paths(["fit", "--model=my_modul.MySAGAN"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sagan_ad.errors.InputError: --model my_modul.MySAGAN: there is no module 'my_modul'; ...
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
            raise InputError(
                f"{flag} {value}: there is no module {module!r}; put {module.split('.')[0]}.py "
                f"in the current folder ({os.getcwd()}) or in a folder on PYTHONPATH, or install "
                "the package that provides it"
            )
        if not hasattr(importlib.import_module(module), name):
            raise InputError(f"{flag} {value}: module {module!r} has no class {name!r}")
