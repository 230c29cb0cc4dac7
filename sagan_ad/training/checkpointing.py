"""Crash-safe checkpoints: atomic writes, a periodic ``last`` checkpoint, safe loading, RNG state.

A SAGAN run killed at any moment (SIGKILL, pre-emption, power loss) leaves only complete
checkpoints behind, keeps a ``last.ckpt`` at most ``every_n_iterations`` iterations old, and resumes
from it bit-identically on CPU (see ``docs/reliability.md``). Checkpoints are read with
``torch.load(weights_only=True)``, which refuses pickled code; a file that cannot be used (missing,
empty, truncated, not a Lightning checkpoint, holding pickled code, written by another model class)
raises a `CheckpointError` that names it and says what to do (see
`sagan_ad.training.checkpoint_files`).
"""

from __future__ import annotations

import random
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from sagan_ad.atomic import atomic_path
from sagan_ad.errors import FileError, InputError
from sagan_ad.protected import OutputIsInputError
from sagan_ad.training.checkpoint_files import (
    MODEL_CLASS_KEY,
    CheckpointError,
    UnsafeCheckpointError,
    check_model_class,
    first_line,
    import_model_class,
    model_class_name,
    read_checkpoint,
)
from sagan_ad.training.checkpoint_settings import check_settings
from sagan_ad.training.checkpoint_upgrade import CurrentCheckpoint, upgrade_checkpoint

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "LastCheckpoint",
    "UnsafeCheckpointError",
    "atomic_save",
    "global_rng_state",
    "load_checkpoint",
    "read_checkpoint",
    "set_global_rng_state",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint I/O that never leaves a half-written checkpoint and loads with ``weights_only``.

    Saving goes through `atomic_save`: a hidden temporary in the checkpoint's own folder,
    flushed to disk and renamed over ``<path>`` with `os.replace` (atomic on POSIX and Windows),
    so a process killed mid-write leaves the previous checkpoint intact and at worst a stale
    temporary, which the next save into that folder removes. Remote paths (``s3://`` ...) are
    written by Lightning's own transactional save.

    Loading defaults to ``torch.load(weights_only=True)``: tensors and plain Python values
    only, so a crafted checkpoint cannot run code on unpickling; unusable files raise
    `CheckpointError` naming them (see `read_checkpoint`).

    Examples:
        >>> trainer = L.Trainer(plugins=[AtomicCheckpointIO()])  # doctest: +SKIP
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} takes no storage_options, got {storage_options}"
            )
        atomic_save(checkpoint, path)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # On the CPU first, as Lightning's own default: a checkpoint saved on a GPU also loads
        # on a machine without one, and Lightning moves the state to the model's device.
        location = "cpu" if map_location is None else map_location
        safe = weights_only is not False
        if "://" in str(path):
            try:
                return super().load_checkpoint(path, map_location=location, weights_only=safe)
            except Exception as err:
                # fsspec's ImportError for a storage whose package is missing, a missing object,
                # a refused connection: all tracebacks from deep inside fsspec otherwise.
                raise CheckpointError(
                    f"checkpoint {str(path)!r} cannot be read ({type(err).__name__}: "
                    f"{first_line(err)}): check the address and your access to it, and that "
                    "the storage's fsspec package is installed (s3fs for s3://, gcsfs for "
                    "gs://, adlfs for az://), or download the file and pass its local path"
                ) from err
        return read_checkpoint(path, location, weights_only=safe, lightning=False)


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save` ``obj`` to ``path`` so that ``path`` is either the old or the new file.

    The file is written through `sagan_ad.atomic.atomic_path` with ``durable=True``: a kill, a
    power loss or a crash of the operating system during the save leaves the previous file (and
    at worst a temporary beside it, ``.<stem>.partial-<pid>-<host><suffix>``, which the next
    write into that folder removes). A missing folder is created.

    Raises:
        sagan_ad.errors.FileError: the write failed (full disk, folder not writable); the
            message names the file, and the previous file is left as it was.
        sagan_ad.protected.OutputIsInputError: ``path`` is an input of this command or no
            regular file.

    Examples:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "state.pt"
        >>> atomic_save({"x": torch.ones(2)}, target)
        >>> torch.load(target, weights_only=True)["x"].tolist()
        [1.0, 1.0]
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path, durable=True) as tmp, tmp.open("wb") as f:
            torch.save(obj, f)
    except OutputIsInputError:
        raise  # names the file and what it is already
    except (OSError, RuntimeError) as err:
        # torch's writer reports a full disk as "enforce fail at inline_container.cc".
        if isinstance(err, RuntimeError) and "inline_container" not in str(err):
            raise
        reason = (err.strerror or str(err)) if isinstance(err, OSError) else None
        reason = reason or "the write stopped part-way"
        raise FileError(
            f"cannot write checkpoint {str(path)!r} ({reason}): is the disk full or the folder "
            "not writable? The previous checkpoint, if any, is left as it was"
        ) from err


def load_checkpoint(
    path: str | Path,
    model_class: type[L.LightningModule] | None = None,
    map_location: Any = "cpu",
    **settings: Any,
) -> L.LightningModule:
    """Load a model from a checkpoint with ``torch.load(weights_only=True)``, as its own class.

    Unlike a plain pickle load, this refuses checkpoints that carry code (a pickled object whose
    unpickling calls a function): such a file raises `UnsafeCheckpointError` (a
    ``pickle.UnpicklingError``). Checkpoints written by sagan_ad hold only tensors and plain
    values and load fine. The model class is the one the checkpoint records (imported by its
    dotted name, never unpickled); checkpoints written before classes were recorded load as
    `sagan_ad.SAGAN`. Checkpoints of v0.1, whose settings were flat, load as the same model
    built from components (`sagan_ad.training.checkpoint_upgrade.upgrade_checkpoint`).

    Args:
        path: a ``.ckpt`` file written by ``sagan-ad fit`` or a Lightning Trainer.
        model_class: the checkpoint's LightningModule class (default: the recorded one); a
            different class than the recorded one is refused with a `CheckpointError`.
        map_location: where to put the tensors (default CPU).
        **settings: model settings to build it with instead of the recorded ones, such as a
            component or optimizer factory the checkpoint could not record (loading names
            those in a warning).

    Returns:
        The model, in eval mode.

    Examples:
        >>> model = load_checkpoint("best.ckpt")  # doctest: +SKIP
    """
    source = f"checkpoint {str(path)!r}"
    # Read whole, not mapped: a file damaged inside its tensor data fails here, with its name.
    checkpoint = read_checkpoint(path)
    if model_class is None:
        model_class = import_model_class(checkpoint.get(MODEL_CLASS_KEY, "sagan_ad.SAGAN"), source)
    check_model_class(checkpoint, model_class, source)
    upgrade_checkpoint(checkpoint, source)
    check_settings(checkpoint, model_class, source)
    # Lightning builds the model from the checkpoint read above (upgraded, in memory): the file
    # is read once, and a file replaced meanwhile cannot give the model other weights.
    in_memory = CurrentCheckpoint()
    torch.save(checkpoint, in_memory)
    in_memory.seek(0)
    del checkpoint
    try:
        with warnings.catch_warnings():
            # Lightning's instantiator calls a jsonargparse method jsonargparse deprecates.
            warnings.filterwarnings("ignore", message=r".*instantiate_classes.*deprecated")
            model = model_class.load_from_checkpoint(
                in_memory, map_location=map_location, weights_only=True, **settings
            )
    except CheckpointError as err:
        # Raised by the model's on_load_checkpoint, which does not know the file's name.
        raise CheckpointError(str(err).replace("the checkpoint", source, 1)) from err
    except (ArgumentError, TypeError, ValueError) as err:
        # A recorded setting the model refuses when it is built. Weights that do not fit the
        # model are refused by name before they load (`run_state.CheckedLoading`).
        raise CheckpointError(
            f"{source} cannot be loaded into {model_class_name(model_class)} "
            f"({type(err).__name__}: {first_line(err)}): it was written by another version of "
            "sagan-ad or another model class; load it with the version and class that wrote it"
        ) from err
    return model.eval()


def global_rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and Python global RNG states, as tensors and plain values
    (loadable with ``weights_only=True``).

    Examples:
        >>> state = global_rng_state()
        >>> a = torch.rand(1); set_global_rng_state(state); torch.equal(a, torch.rand(1))
        True
    """
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore the global RNG states captured by `global_rng_state`.

    Examples:
        >>> set_global_rng_state(global_rng_state())
    """
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``, rewritten at every validation and every ``every_n_iterations`` iterations.

    Lightning's ``every_n_train_steps`` counts optimizer steps, and a SAGAN iteration makes one
    or two of them (critic, and generator every ``n_critic``-th), so this callback counts the
    module's ``iteration`` instead. The periodic save happens at the end of a training batch
    (where Lightning knows how to resume from) unless a validation follows it, in which case
    the validation's own save covers it: the checkpoint then holds exactly ``iteration``
    finished iterations and the RNG states the next one will use, which is what an exact resume
    needs. With `AtomicCheckpointIO` (the ``sagan-ad`` default) a kill during the
    save leaves the previous ``last.ckpt`` in place.

    Args:
        dirpath: checkpoint folder (default: the logger's ``checkpoints/`` folder).
        every_n_iterations: iterations between periodic saves; ``None`` saves at validations
            only.

    Examples:
        >>> LastCheckpoint(every_n_iterations=500).every_n_iterations
        500
    """

    def __init__(self, dirpath: str | Path | None = None, every_n_iterations: int | None = None):
        super().__init__(
            dirpath=dirpath, monitor=None, filename="last", enable_version_counter=False
        )
        if every_n_iterations is not None and every_n_iterations < 1:
            raise InputError(f"every_n_iterations={every_n_iterations}: must be >= 1 (or None)")
        self.every_n_iterations = every_n_iterations

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Also warn, before ``fit``, when no validation will run (the DataModule has no
        validation set, or ``Trainer(limit_val_batches=0)``)."""
        super().setup(trainer, pl_module, stage)
        data = trainer.datamodule
        if stage != "fit":
            return
        if data is not None and getattr(data, "val", False) is None:
            why = (
                f"{type(data).__name__} has no validation set (split.val_fraction="
                f"{_val_fraction(data)} and no val split)"
            )
            remedy = "set split.val_fraction above 0 or give a val split"
        elif trainer.limit_val_batches == 0:
            why = "Trainer(limit_val_batches=0) (--trainer.limit_val_batches) runs no validation"
            remedy = "leave limit_val_batches out"
        else:
            return
        rank_zero_warn(
            f"{why}: no checkpoint is chosen on validation and no threshold is set, so last.ckpt "
            "keeps the final weights, the test after fit scores them, and predictions are -1 "
            f"(undecided); {remedy} to choose both"
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save the final weights as ``last.ckpt`` unless a validation just did: a run that
        never validates (no validation set) would otherwise end with no checkpoint at all."""
        if trainer.global_step == self._last_global_step_saved or trainer.global_step == 0:
            return
        filepath = self.format_checkpoint_name({})
        trainer.save_checkpoint(filepath, self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
        self.last_model_path = self.best_model_path = filepath

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        iteration = getattr(pl_module, "iteration", None)
        if (
            not self.every_n_iterations
            or not iteration
            or iteration % self.every_n_iterations
            or iteration >= getattr(pl_module, "max_iterations", float("inf"))
            # A validation follows this batch and rewrites last.ckpt after it; saving here too
            # would make a resumed run skip that validation (and the RNG draws it makes).
            or trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher)
        ):
            return
        filepath = self.format_checkpoint_name({})
        trainer.save_checkpoint(filepath, self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
        self.last_model_path = self.best_model_path = filepath


def _val_fraction(data: object) -> object:
    """The validation fraction of a DataModule's ``split`` settings (``?`` for another kind)."""
    return getattr(getattr(data, "split", None), "val_fraction", "?")
