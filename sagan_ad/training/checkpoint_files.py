"""Reading checkpoint files: every way one can be unusable, and the model class it records.

`read_checkpoint` reads with ``torch.load(weights_only=True)`` (pickled code is refused, never run)
and turns a missing, empty, truncated or foreign file into a `CheckpointError` that names it and
says what to pass. Checkpoints written by `sagan_ad.SAGAN` record their class
(`MODEL_CLASS_KEY`); `import_model_class` and `check_model_class` load that class by its dotted
name or refuse another.
"""

from __future__ import annotations

import importlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch

from sagan_ad.errors import InputError, MissingFileError

MODEL_CLASS_KEY = "sagan_model_class"
"""Checkpoint entry naming the model class that wrote it (an importable dotted name)."""

ITERATION_KEY = "sagan_iteration"
"""Checkpoint entry holding the number of training iterations the weights have finished."""

_PASS_ANOTHER = (
    "pass a .ckpt file written by sagan-ad fit (or, except to export, --ckpt_path last / best)"
)


class CheckpointError(InputError):
    """A checkpoint that cannot be used; the message names the file and says what to pass.

    Examples:
        >>> read_checkpoint("missing.ckpt")
        Traceback (most recent call last):
        ...
        sagan_ad.errors.MissingFileError: checkpoint 'missing.ckpt' does not exist: pass a ...
    """


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint refused by safe loading because it holds pickled code (never run)."""


def read_checkpoint(
    path: str | Path,
    map_location: Any = "cpu",
    weights_only: bool = True,
    mmap: bool = False,
    lightning: bool = True,
) -> dict[str, Any]:
    """Read a Lightning checkpoint with ``torch.load(weights_only=True)``, or explain why not.

    Args:
        path: the checkpoint file.
        map_location: as `torch.load`; the default, CPU, also reads checkpoints saved on a GPU
            on machines without one (Lightning moves the weights to the model's device).
        weights_only: refuse pickled code (keep ``True`` unless the file is trusted).
        mmap: map the tensors instead of reading them (cheap for reading metadata).
        lightning: also require a Lightning checkpoint (``state_dict`` and the Lightning
            version); ``False`` reads any safe PyTorch file.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafeCheckpointError: it holds pickled code (the message names the objects).
        CheckpointError: it is a folder, empty, truncated, not a PyTorch file, or a PyTorch file
            that is not a Lightning checkpoint (a bare state dict, for example).

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> torch.save({"w": torch.ones(1)}, folder / "weights.pt")
        >>> read_checkpoint(folder / "weights.pt")
        Traceback (most recent call last):
        ...
        sagan_ad.training.checkpoint_files.CheckpointError: checkpoint '...weights.pt' is not a ...
    """
    if not str(path).strip():
        # Path("") is the current folder, which would be reported as "a folder, not a file".
        raise CheckpointError(f"the checkpoint path is empty: {_PASS_ANOTHER}")
    path = Path(path)
    name = repr(str(path))
    if not path.exists():
        raise MissingFileError(f"checkpoint {name} does not exist: {_PASS_ANOTHER}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {name} is a folder, not a file: {_PASS_ANOTHER}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {name} is empty (0 bytes): {_PASS_ANOTHER}")
    zipped = zipfile.is_zipfile(path)
    if not zipped:
        with path.open("rb") as f:
            if f.read(4) == b"PK\x03\x04":
                raise CheckpointError(
                    f"checkpoint {name} is truncated or corrupt (an incomplete zip archive of "
                    f"{size} bytes; was its writer killed, or the copy cut short?): "
                    f"{_PASS_ANOTHER}"
                )
    try:
        checkpoint = torch.load(
            path, map_location=map_location, weights_only=weights_only, mmap=mmap and zipped
        )
    except pickle.UnpicklingError as err:
        # Only a pickled global is code; any other refusal ("Unsupported operand 95") means the
        # bytes are no pickle torch wrote (a YAML file, random bytes), not a dangerous file.
        if "Weights only load failed" in str(err) and "GLOBAL" in str(err):
            raise UnsafeCheckpointError(_unsafe_message(name, str(err))) from None
        if "Weights only load failed" in str(err):
            operand = re.search(r"Unsupported operand \d+", str(err))
            raise CheckpointError(
                f"checkpoint {name} is not a PyTorch checkpoint (its bytes are not a pickle "
                f"torch.save writes{': ' + operand.group() if operand else ''}; is it a text, "
                f"YAML or other file?): {_PASS_ANOTHER}"
            ) from None
        raise CheckpointError(
            f"checkpoint {name} is not a PyTorch checkpoint ({first_line(err)}): {_PASS_ANOTHER}"
        ) from err
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {name} cannot be read as a PyTorch checkpoint "
            f"({type(err).__name__}: {first_line(err)}): {_PASS_ANOTHER}"
        ) from err
    required = ("state_dict", "pytorch-lightning_version") if lightning else ()
    missing = [key for key in required if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        kind = f"dict of {len(checkpoint)} entries" if isinstance(checkpoint, dict) else ""
        raise CheckpointError(
            f"checkpoint {name} is not a Lightning checkpoint (a "
            f"{kind or type(checkpoint).__name__} without {' and '.join(map(repr, missing))}): "
            f"{_PASS_ANOTHER}; a bare state dict loads with "
            "model.load_state_dict(torch.load(path, weights_only=True))"
        )
    if isinstance(checkpoint, dict):
        check_entries(checkpoint, name)
    return checkpoint


def check_entries(checkpoint: dict[str, Any], name: str) -> None:
    """Refuse a checkpoint whose entries have the wrong type (a hand-edited or foreign file),
    which would otherwise fail deep inside loading with a message that names neither the file
    nor the entry.

    Examples:
        >>> check_entries({"state_dict": [1, 2]}, "'x.ckpt'")
        Traceback (most recent call last):
        ...
        sagan_ad.training.checkpoint_files.CheckpointError: checkpoint 'x.ckpt' is damaged: its ...
    """
    problems = []
    weights = checkpoint.get("state_dict", {})
    if not isinstance(weights, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in weights.items()
    ):
        problems.append(f"'state_dict' is a {type(weights).__name__}, not names and tensors")
    recorded = checkpoint.get(MODEL_CLASS_KEY)
    if recorded is not None and not isinstance(recorded, str):
        problems.append(f"{MODEL_CLASS_KEY!r} is {recorded!r}, not a dotted class name")
    iteration = checkpoint.get(ITERATION_KEY, 0)
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        problems.append(f"{ITERATION_KEY!r} is {iteration!r}, not an iteration count (>= 0)")
    hparams = checkpoint.get("hyper_parameters", {})
    if not isinstance(hparams, dict):
        problems.append(f"'hyper_parameters' is a {type(hparams).__name__}, not settings")
    if problems:
        raise CheckpointError(
            f"checkpoint {name} is damaged: its {'; its '.join(problems)}. It was not written "
            f"as it is by sagan-ad fit (edited, or written by another program): {_PASS_ANOTHER}"
        )


def first_line(err: BaseException) -> str:
    """The gist of ``err``'s message: its first line, with the next when it ends in a colon
    (``Parser key "image_size":`` / ``Expected a <class 'int'>. Got value: abc``)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    text = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
    return text[:200]


def _unsafe_message(name: str, torch_message: str) -> str:
    found = sorted(set(re.findall(r"GLOBAL (\S+) was not an allowed global", torch_message)))
    what = f" ({', '.join(found)})" if found else ""
    return (
        f"checkpoint {name} was refused by safe loading (Weights only load failed): it holds "
        f"pickled Python code{what}, which would run when the file is unpickled; checkpoints "
        "written by sagan-ad hold only tensors and plain values. Re-save the weights as a plain "
        "checkpoint from an environment you trust, or, only if you trust the file's origin, "
        "allow exactly those objects with torch.serialization.add_safe_globals before loading"
    )


def model_class_name(cls: type) -> str:
    """The importable dotted name recorded for ``cls`` in checkpoints: its public
    ``sagan_ad.<Name>`` when sagan_ad exports it (stable across internal moves), else
    ``module.Qualname``.

    Examples:
        >>> from sagan_ad.module import SAGAN
        >>> model_class_name(SAGAN)
        'sagan_ad.SAGAN'
    """
    import sagan_ad

    if getattr(sagan_ad, cls.__name__, None) is cls:
        return f"sagan_ad.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def import_model_class(name: str, source: str = "the checkpoint") -> type[L.LightningModule]:
    """Import the LightningModule class recorded as ``name`` (a dotted path; nothing is
    unpickled), or raise a `CheckpointError` saying what to pass.

    Examples:
        >>> import_model_class("sagan_ad.SAGAN").__name__
        'SAGAN'
    """
    parts = name.split(".")
    found: Any = None
    failure = f"no importable module in {name!r}"
    for split in range(len(parts) - 1, 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except ImportError as err:
            failure = f"{type(err).__name__}: {err}"
            continue
        try:
            for attribute in parts[split:]:
                found = getattr(found, attribute)
        except AttributeError as err:
            failure, found = f"AttributeError: {err}", None
        break
    if not (isinstance(found, type) and issubclass(found, L.LightningModule)):
        raise CheckpointError(
            f"{source} was written by model class {name!r}, which cannot be imported here "
            f"({failure if found is None else 'not a LightningModule class'}): make its module "
            f"importable (install it, or add its folder to PYTHONPATH) and pass it (sagan-ad: "
            f"--model {name}; Python: model_class=...); loading the weights into another class "
            "would change how they score"
        )
    return found


def check_model_class(
    checkpoint: dict[str, Any], cls: type, source: str = "the checkpoint"
) -> None:
    """Refuse to load ``checkpoint`` into ``cls`` when it records another model class.

    Checkpoints without the record (written before it existed) load into any class.

    Examples:
        >>> from sagan_ad.module import SAGAN
        >>> check_model_class({MODEL_CLASS_KEY: "sagan_ad.SAGAN"}, SAGAN)
        >>> check_model_class({MODEL_CLASS_KEY: "mypackage.MySAGAN"}, SAGAN)
        Traceback (most recent call last):
        ...
        sagan_ad.training.checkpoint_files.CheckpointError: the checkpoint was written by model ...
    """
    recorded = checkpoint.get(MODEL_CLASS_KEY)
    if recorded is None or recorded == model_class_name(cls):
        return
    module, _, qualname = recorded.partition(".")
    # A class defined in a script is recorded under __main__, and imported under the script's
    # name elsewhere.
    if module == "__main__" and qualname == cls.__qualname__:
        return
    try:
        if import_model_class(recorded, source) is cls:
            return
    except CheckpointError:
        pass
    raise CheckpointError(
        f"{source} was written by model class {recorded!r}, not {model_class_name(cls)!r}: "
        f"load it with its own class (sagan-ad: --model {recorded}; Python: "
        "sagan_ad.load_checkpoint(path), which imports it) so that it scores as it was trained; "
        "to put the weights into another class on purpose, use "
        "model.load_state_dict(torch.load(path, weights_only=True)['state_dict'])"
    )


def check_finite_weights(
    state_dict: dict[str, torch.Tensor], names: list[str], source: str = "the checkpoint"
) -> None:
    """Refuse weights (the entries ``names`` of ``state_dict``) that hold NaN or infinity: they
    would score every image NaN, or fail inside the metrics. Buffers are not checked, because a
    NaN ``threshold`` legitimately means none was chosen.

    Examples:
        >>> check_finite_weights({"w": torch.ones(2)}, ["w"])
        >>> check_finite_weights({"w": torch.tensor([1.0, float("nan")])}, ["w"])
        Traceback (most recent call last):
        ...
        sagan_ad.training.checkpoint_files.CheckpointError: the checkpoint holds non-finite ...
    """
    bad = [
        name
        for name in names
        if isinstance(state_dict.get(name), torch.Tensor)
        and state_dict[name].is_floating_point()
        and not bool(torch.isfinite(state_dict[name]).all())
    ]
    if bad:
        raise CheckpointError(
            f"{source} holds non-finite weights (NaN or infinity in {len(bad)} tensors, first "
            f"{bad[0]}), which would score every image NaN: it was damaged or saved from a "
            "diverged run. Use an earlier checkpoint of the run (its last.ckpt or best "
            "checkpoint), see docs/reliability.md#divergence-guard"
        )
