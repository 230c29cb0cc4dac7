"""The run's own folder: where a run's config, split, test and predict outputs go, whatever the
logger, so that no two runs ever write into the same folder.

- A logger that numbers or names its runs (CSV, TensorBoard, W&B, MLflow, ...): the folder
  Lightning puts the run's ``checkpoints/`` in, ``<save_dir>/<name>/<version>``; for W&B that is
  ``<save_dir>/<project>/<run id>`` (Lightning's own ``trainer.log_dir`` is the shared
  ``save_dir`` there).
- No logger: ``<default_root_dir>/version_N``, the first ``N`` not taken yet.

A run that resumes into an existing version folder (same logger version) writes into that folder
again: nothing here assumes the folder is new.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import lightning as L

_RUN_DIRS: weakref.WeakKeyDictionary[L.Trainer, Path] = weakref.WeakKeyDictionary()


RUN_FOLDER_SETTING = "trainer.default_root_dir (or the logger's save_dir)"
"""The settings that choose the run folder, as messages name them."""


def _claim_version(root: Path) -> Path:
    """Create and return ``root/version_N`` for the first free ``N`` (created, so that a second
    Trainer deciding at the same moment takes the next one)."""
    root.mkdir(parents=True, exist_ok=True)
    while True:
        taken = [int(p.name[8:]) for p in root.glob("version_*") if p.name[8:].isdigit()]
        folder = root / f"version_{max(taken, default=-1) + 1}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder


def run_dir(trainer: L.Trainer) -> Path:
    """The run's own folder (see the module docstring); the same for the Trainer's lifetime.

    The first call decides and, under several processes, broadcasts rank 0's choice: make it
    from a hook that every rank runs (``setup``), not from a rank-zero-only one.

    Examples:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> trainer = L.Trainer(default_root_dir=root, logger=False)
        >>> run_dir(trainer).name, run_dir(trainer) == run_dir(trainer)
        ('version_0', True)
        >>> run_dir(L.Trainer(default_root_dir=root, logger=False)).name  # another run
        'version_1'
    """
    found = _RUN_DIRS.get(trainer)
    if found is not None:
        return found
    if trainer.loggers:
        folder = _named_run_dir(trainer)
        if folder is None:
            # A W&B run is named when its experiment starts: start it, then ask again.
            _ = trainer.loggers[0].experiment
            folder = _named_run_dir(trainer) or _logger_root(trainer)
    elif trainer.is_global_zero:
        folder = _claim_version(Path(trainer.default_root_dir))
    else:
        folder = Path(trainer.default_root_dir)
    folder = Path(trainer.strategy.broadcast(str(folder)))
    _RUN_DIRS[trainer] = folder
    return folder


def _logger_root(trainer: L.Trainer) -> Path:
    logger = trainer.loggers[0]
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name)


def _named_run_dir(trainer: L.Trainer) -> Path | None:
    """The first logger's run folder, or None while the logger has not named its run yet."""
    version = trainer.loggers[0].version
    if version is None:
        return None
    return _logger_root(trainer) / (version if isinstance(version, str) else f"version_{version}")


def planned_run_dir(trainer: L.Trainer) -> Path:
    """Where the run's folder is or will be, as far as is known before the run starts, without
    claiming or fixing it (for checks of the output folders): the run's own folder once decided
    or named by the logger, else the folder it will be created in.

    Examples:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> planned_run_dir(L.Trainer(default_root_dir=root, logger=False)) == Path(root)
        True
    """
    found = _RUN_DIRS.get(trainer)
    if found is not None:
        return found
    if trainer.loggers:
        return _named_run_dir(trainer) or _logger_root(trainer)
    return Path(trainer.default_root_dir)
