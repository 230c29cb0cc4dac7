"""Which checkpoint ``last`` and ``best`` mean, and resuming a killed run as the same run.

``sagan-ad fit|validate|test|predict --ckpt_path last|best`` resolve both words here, the same way
in every subcommand (`resolve_checkpoint`). ``fit --ckpt_path last`` then continues the killed run
in its own version folder (`continue_run`): same logger version, same checkpoint folder (so the
best checkpoint and its validation score are restored with the callbacks' state), the CSV log
continued from the resumed iteration, and the checkpoints and temporaries of checkpoint writes that
the killed process left after the resumed checkpoint removed.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
import weakref
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from sagan_ad.atomic import is_temporary
from sagan_ad.training.checkpoint_files import CheckpointError, read_checkpoint

SPECIAL_PATHS = ("last", "best")
"""The ``--ckpt_path`` words resolved by `resolve_checkpoint`."""
_CONTINUED: weakref.WeakKeyDictionary[L.Trainer, Path] = weakref.WeakKeyDictionary()


def continued_checkpoint(trainer: L.Trainer) -> Path | None:
    """The checkpoint whose run ``trainer`` continues (`continue_run`), or None for a new run.

    Examples:
        >>> continued_checkpoint(L.Trainer(logger=False)) is None
        True
    """
    return _CONTINUED.get(trainer)


def checkpoint_folders(trainer: L.Trainer) -> list[tuple[Path, bool]]:
    """Where the Trainer's experiment keeps checkpoints, as ``(folder, search subfolders)``.

    Every version folder of each logger's experiment folder (``<save_dir>/<name>``),
    ``<default_root_dir>/checkpoints`` when there is no logger, and the ``dirpath`` of each
    checkpoint callback that sets one; other experiments under the same root are not searched.

    Examples:
        >>> checkpoint_folders(L.Trainer(default_root_dir="/runs", logger=False))[0][0]
        PosixPath('/runs/checkpoints')
    """
    folders = [(_experiment_root(trainer, log), True) for log in trainer.loggers if log.save_dir]
    if not trainer.loggers:
        folders.append((Path(trainer.default_root_dir) / "checkpoints", False))
    callbacks = trainer.checkpoint_callbacks
    folders += [(Path(c.dirpath), False) for c in callbacks if getattr(c, "dirpath", None)]
    return folders


def _experiment_root(trainer: L.Trainer, logger: Logger) -> Path:
    """``<save_dir>/<name>``: the folder of the logger's version folders (Lightning's layout)."""
    root = getattr(logger, "root_dir", None)
    if root:
        return Path(root)
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name or "")


def find_last_checkpoint(trainer: L.Trainer) -> Path | None:
    """The newest ``last.ckpt`` (or ``last-vN.ckpt``) of the Trainer's experiment
    (see `checkpoint_folders`), by modification time.

    Examples:
        >>> find_last_checkpoint(L.Trainer(default_root_dir="/nonexistent", logger=False))
    """
    found = {
        path
        for folder, deep in checkpoint_folders(trainer)
        if folder.is_dir()
        for path in folder.glob(f"{'**/' if deep else ''}last*.ckpt")
        if path.is_file() and (path.stem == "last" or path.stem[5:].lstrip("v").isdigit())
    }
    return max(found, key=lambda path: path.stat().st_mtime_ns) if found else None


def find_best_checkpoint(trainer: L.Trainer) -> Path | None:
    """The best checkpoint of the experiment's newest run, as its checkpoint callback recorded it.

    The newest checkpoint of the experiment (`checkpoint_folders`; ``last.ckpt`` first) holds the
    state of the run's monitoring `ModelCheckpoint` (``best_model_path``, chosen on validation).
    The recorded file is looked up by name beside that checkpoint first (so a moved or copied run
    folder uses its own copy), then at the recorded path.
    With several monitoring callbacks, the one matching the Trainer's ``checkpoint_callback`` is
    used. ``None`` when no checkpoint records a best one (no validation ran yet).

    Examples:
        >>> find_best_checkpoint(L.Trainer(default_root_dir="/nonexistent", logger=False))
    """
    last = find_last_checkpoint(trainer)
    others = {
        path
        for folder, deep in checkpoint_folders(trainer)
        if folder.is_dir()
        for path in folder.glob(f"{'**/' if deep else ''}*.ckpt")
        # A killed write's temporary keeps the .ckpt suffix, and may even be complete: still
        # no checkpoint until renamed, so its record of the best one is not taken.
        if path.is_file() and path != last and not is_temporary(path)
    }
    newest_first = [last] if last else []
    newest_first += sorted(others, key=lambda path: path.stat().st_mtime_ns, reverse=True)
    for path in newest_first:
        try:
            checkpoint = read_checkpoint(path, mmap=True)
        except (CheckpointError, OSError):
            continue
        recorded = _recorded_best(checkpoint, trainer)
        if recorded is None:
            continue
        for candidate in (path.parent / Path(recorded).name, Path(recorded)):
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"checkpoint {str(path)!r} records {recorded!r} as the best checkpoint, but that "
            "file no longer exists: pass --ckpt_path with the checkpoint file to use"
        )
    return None


def _recorded_best(checkpoint: dict[str, Any], trainer: L.Trainer) -> str | None:
    states = {
        key: state
        for key, state in (checkpoint.get("callbacks") or {}).items()
        if isinstance(state, dict) and state.get("monitor") and state.get("best_model_path")
    }
    own = getattr(trainer.checkpoint_callback, "state_key", None)
    if own in states:
        return states[own]["best_model_path"]
    if len(states) == 1:
        return next(iter(states.values()))["best_model_path"]
    if states:
        raise CheckpointError(
            f"the checkpoints record several best checkpoints ({sorted(states)}): pass "
            "--ckpt_path with the checkpoint file to use"
        )
    return None


def resolve_checkpoint(trainer: L.Trainer, ckpt_path: Any, stage: str) -> Any:
    """The checkpoint file that ``--ckpt_path`` means for ``stage`` (``fit``, ``validate``,
    ``test`` or ``predict``), the same way in every stage.

    ``last``: `find_last_checkpoint`. ``best``: `find_best_checkpoint`. ``hpc``: Lightning's
    newest ``hpc_ckpt_N.ckpt`` in the run's root folder. When there is none, a `CheckpointError`
    says so, except for ``fit --ckpt_path last``, which then starts a fresh run (so that job
    scripts can always pass it). Any other value is returned unchanged.

    Examples:
        >>> trainer = L.Trainer(default_root_dir="/nonexistent", logger=False)
        >>> resolve_checkpoint(trainer, "last", "fit") is None
        True
        >>> resolve_checkpoint(trainer, "best", "test")
        Traceback (most recent call last):
        ...
        sagan_ad.training.checkpoint_files.CheckpointError: --ckpt_path best: no checkpoint ...
    """
    if ckpt_path == "hpc":
        return _hpc_checkpoint(trainer)
    if ckpt_path not in SPECIAL_PATHS:
        return ckpt_path
    finder = find_last_checkpoint if ckpt_path == "last" else find_best_checkpoint
    found = finder(trainer)
    if found is not None:
        return str(found)
    if ckpt_path == "last" and stage == "fit":
        rank_zero_info("--ckpt_path last: no last checkpoint yet, starting a fresh run")
        return None
    searched = ", ".join(repr(str(folder)) for folder, _ in checkpoint_folders(trainer))
    what = "last checkpoint" if ckpt_path == "last" else "recorded best checkpoint"
    raise CheckpointError(
        f"--ckpt_path {ckpt_path}: no checkpoint of this experiment has a {what} (searched "
        f"{searched}): train it first with sagan-ad fit and the same logger settings"
        f"{' (best needs a validation)' if ckpt_path == 'best' else ''}, or pass --ckpt_path "
        "with a checkpoint file"
    )


def _hpc_checkpoint(trainer: L.Trainer) -> str:
    """The checkpoint Lightning writes when SLURM pre-empts a job (``hpc_ckpt_N.ckpt`` in the
    run's root folder), or an error saying what to pass: Lightning's own is a traceback."""
    folder = Path(trainer.default_root_dir)
    versions = {
        int(match.group(1)): path
        for path in folder.glob("hpc_ckpt_*.ckpt")
        if (match := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", path.name))
    }
    if not versions:
        raise CheckpointError(
            f"--ckpt_path hpc: no HPC checkpoint (hpc_ckpt_N.ckpt, written by Lightning when "
            f"SLURM pre-empts a job) in {str(trainer.default_root_dir)!r}: pass --ckpt_path "
            "last, best or a checkpoint file"
        )
    return str(versions[max(versions)])


def continue_run(trainer: L.Trainer, checkpoint: str | os.PathLike) -> None:
    """Make ``trainer`` continue the run that wrote ``checkpoint`` in that run's own folder.

    Call it before ``fit`` and before anything asks the loggers for their version. A logger
    whose experiment folder holds ``checkpoint`` (``<save_dir>/<name>/<version>/checkpoints/``)
    and whose version was not set by the user gets that version (CSV, TensorBoard; W&B resumes
    the run of that id), so the checkpoint callbacks write to the same folder and restore their
    best checkpoint and score. In that folder, the temporaries of killed checkpoint writes
    (whatever host wrote them) and checkpoints of iterations after the resumed one (written by
    the killed process after ``checkpoint``) are removed, and ``metrics.csv`` keeps only the rows
    logged up to the resumed iteration, so the rows the resumed run logs again appear once.

    Examples:
        >>> continue_run(L.Trainer(logger=False), "last.ckpt")  # doctest: +SKIP
    """
    checkpoint = Path(checkpoint)
    _CONTINUED[trainer] = checkpoint
    folder = checkpoint.parent
    version_dir = folder.parent
    iteration = int(read_checkpoint(checkpoint, mmap=True).get("sagan_iteration", -1))
    # Every process takes the version; only the first edits files. Under DDP the processes
    # launched by the first one run this too, before the Trainer knows their rank (the
    # environment variables Lightning sets for them do say it).
    first = trainer.is_global_zero and rank_zero_only.rank == 0
    for logger in trainer.loggers:
        if _experiment_root(trainer, logger).resolve() != version_dir.parent.resolve():
            continue
        if folder.name != "checkpoints" or not _set_version(logger, version_dir.name):
            continue
        if isinstance(logger, CSVLogger) and iteration >= 0 and first:
            _continue_csv_log(logger, iteration)
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            _keep_state_when_moved(callback, folder)
    if not first:
        return
    removed = _remove_checkpoint_temporaries(folder)
    removed += _remove_later_checkpoints(checkpoint, iteration)
    if removed:
        rank_zero_info(
            f"resuming {str(checkpoint)!r}: removed {', '.join(p.name for p in removed)} "
            "(written after it by the interrupted run)"
        )


def _keep_state_when_moved(callback: ModelCheckpoint, folder: Path) -> None:
    """Let ``callback`` restore its state when the run folder was moved or copied.

    Lightning restores a checkpoint callback's best score only when the folder the checkpoint
    records is its own, and restores its best path (absolute, into the old folder) regardless: a
    moved run resumed in its new folder would forget its best score and later test the old
    folder's file (or fail on it), so the recorded paths are moved into ``folder`` by file name
    when the callback writes to ``folder`` (the resumed checkpoint's own).
    """
    restore = callback.load_state_dict
    # The test after fit restores the state again (from the best checkpoint): say it once.
    announced: list[str] = []

    def load_state_dict(state: dict[str, Any]) -> None:
        recorded = state.get("dirpath")
        if (
            recorded
            and callback.dirpath
            and recorded != callback.dirpath
            and "://" not in str(callback.dirpath)
            and Path(callback.dirpath).resolve() == folder.resolve()
        ):

            def moved(path: Any) -> Any:
                return str(Path(callback.dirpath) / Path(path).name) if path else path

            state = {
                **state,
                "dirpath": callback.dirpath,
                "best_model_path": moved(state.get("best_model_path")),
                "kth_best_model_path": moved(state.get("kth_best_model_path")),
                "last_model_path": moved(state.get("last_model_path")),
                "best_k_models": {moved(k): v for k, v in state.get("best_k_models", {}).items()},
            }
            if not announced:
                rank_zero_info(
                    f"{type(callback).__name__}: the run folder moved from {recorded!r}; its "
                    f"best and last checkpoints are taken from {str(folder)!r}"
                )
            announced.append(recorded)
        restore(state)

    # On the instance, so that its state key (which names its class) stays ModelCheckpoint's.
    callback.load_state_dict = load_state_dict  # type: ignore[method-assign]


def _set_version(logger: Logger, version: str) -> bool:
    """Give ``logger`` the version ``version`` unless the user chose one; True when it has it."""
    if isinstance(logger, CSVLogger | TensorBoardLogger):
        if logger._version is None:
            number = re.fullmatch(r"version_(\d+)", version)
            logger._version = int(number.group(1)) if number else version
        return str(logger.version) == version or f"version_{logger.version}" == version
    if isinstance(logger, WandbLogger):
        if logger._id is None and logger._experiment is None:
            # WandbLogger resumes ("resume": "allow") the run whose id it is given.
            logger._wandb_init["id"] = logger._id = version
        return logger.version == version
    return False


def _remove_checkpoint_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries that killed checkpoint writes left in ``folder``, and return them.

    Whatever host wrote them: the killed run may have run on another host of a cluster, whose
    temporaries `sagan_ad.atomic.remove_stale_temporaries` leaves alone. Temporaries of other
    files are kept: a ``dirpath`` may be shared with a live command writing its outputs.
    """
    removed = sorted(path for path in folder.glob("*.ckpt") if is_temporary(path))
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def _remove_later_checkpoints(checkpoint: Path, iteration: int) -> list[Path]:
    """Checkpoints beside ``checkpoint``, newer than it and of later iterations: written by the
    killed process after it, about to be written again by the resumed run."""
    removed = []
    newer = checkpoint.stat().st_mtime_ns
    for path in sorted(checkpoint.parent.glob("*.ckpt")):
        if path == checkpoint or path.stat().st_mtime_ns <= newer:
            continue
        try:
            later = int(read_checkpoint(path, mmap=True).get("sagan_iteration", -1))
        except (CheckpointError, OSError):
            continue
        if later > iteration:
            path.unlink()
            removed.append(path)
    return removed


def _continue_csv_log(logger: CSVLogger, iteration: int) -> None:
    """Keep the rows of ``metrics.csv`` logged up to ``iteration`` and make ``logger`` append.

    Rows are logged with the iteration as step: a training row of step ``i`` belongs to the
    ``i + 1``-th iteration, a validation row of step ``i`` to the validation after ``i``
    iterations, which the resumed checkpoint already includes. A last line without its newline
    was cut by the kill and is dropped.
    """
    log_dir = Path(logger.log_dir)
    metrics = log_dir / "metrics.csv"
    if not metrics.is_file():
        return
    text = metrics.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    kept = [row for row in reader if _logged_before(row, iteration)]
    hold = log_dir / f".{metrics.name}.resume"
    with hold.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(kept)
    metrics.unlink()
    with warnings.catch_warnings():
        # The writer deletes an existing metrics.csv (and says so); it was moved aside above.
        warnings.filterwarnings("ignore", message="Experiment logs directory .* is not empty")
        experiment = logger.experiment
    os.replace(hold, metrics)
    experiment.metrics_keys = header


def _logged_before(row: dict[str, str], iteration: int) -> bool:
    try:
        step = int(float(row.get("step") or "nan"))
    except ValueError:
        return False
    if step != iteration:
        return step < iteration
    return any(value not in ("", None) for key, value in row.items() if key.startswith("val/"))
