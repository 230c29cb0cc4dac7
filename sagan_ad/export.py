"""Deployable scorers: the generator, the score and the anomaly map as ONNX or TorchScript.

The exported graph takes float32 images ``(B, C, S, S)`` in ``[-1, 1]`` (any batch size) and
returns ``(scores (B,), anomaly_maps (B, 1, S, S))``: the model's inference path
(`sagan_ad.AnomalyScorer`, the module validation, test and predict run), traced. The patching
of the image into the generator's grid is inside the generator, and the map and score are the
model's `sagan_ad.Scorer` (a subclass's own included). Scoring is deterministic (the released
code's random inference is not exported).

Both formats refuse what the model refuses: another rank, channel count or image size, and
another dtype than float32, raise an error naming what was expected and what came (ONNX Runtime
checks the graph's fixed input shape; the TorchScript module checks in TorchScript before the
traced graph runs). An exported graph cannot raise on values, so an image with values outside
``[-1, 1]`` (see `sagan_ad.evaluation.inputs`), NaN or infinity gets a NaN score and a NaN map
instead of a
number that looks valid. Files are written atomically; an ONNX file holds its weights unless
they exceed the 2 GB protobuf limit (`ONNX_INLINE_LIMIT`), then they go into ``<file>.data``
beside it.

A model trained on intensity-normalised images (``data.normalization``, recorded in
``model.preprocessing``) carries its normalisation inside the graph, so the input stays the
image as decoded; CLAHE has no graph expression, and its export needs
``input_normalized=True``: the caller then normalises with `sagan_ad.data.normalize_images`
first.

ONNX export needs the ``export`` extra (``pip install 'sagan-ad[export]'``: onnx, onnxscript,
onnxruntime).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import io
import logging
import os
import shutil
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from sagan_ad.atomic import atomic_path
from sagan_ad.errors import FileError, InputError, MissingExtraError
from sagan_ad.inference import AnomalyScorer
from sagan_ad.module import SAGAN
from sagan_ad.protected import OutputIsInputError, input_role, writable_target

ONNX_INLINE_LIMIT = 2**31 - 2**26
"""Weights (bytes) above which an ONNX export keeps them in a ``.data`` file beside the model:
the 2 GiB protobuf limit less room for the graph."""

ExportFormat = Literal["onnx", "torchscript"]


class CheckedScorer(nn.Module):
    """A traced scorer behind the shape and dtype checks that tracing drops (for TorchScript).

    Scripted, so the checks stay in the saved module and raise ``ValueError`` (seen as
    ``torch.jit.Error`` by the caller) with the expected and the received shape.

    Examples:
        >>> from sagan_ad.networks.critic import Critic
        >>> from sagan_ad.networks.generator import Generator
        >>> model = SAGAN(Generator(image_size=32, base_channels=4), Critic(1, 4, 5))
        >>> checked = CheckedScorer(AnomalyScorer.from_model(model), channels=1, size=32)
        >>> checked(torch.zeros(1, 1, 64, 64))
        Traceback (most recent call last):
        ...
        ValueError: images must have shape (B, 1, 32, 32), got [1, 1, 64, 64]
    """

    def __init__(self, scorer: nn.Module, channels: int, size: int) -> None:
        super().__init__()
        self.scorer = scorer
        self.channels = channels
        self.size = size

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        # Built-in exceptions only: TorchScript cannot raise sagan_ad's.
        if (
            images.dim() != 4
            or images.shape[1] != self.channels
            or images.shape[2] != self.size
            or images.shape[3] != self.size
        ):
            raise ValueError(
                f"images must have shape (B, {self.channels}, {self.size}, {self.size}), got "
                f"{list(images.shape)}"
            )
        if images.dtype != torch.float32:
            raise ValueError(
                # No dtype in the message: TorchScript formats it as a number.
                "images must be float32 in [-1, 1]: convert uint8 images with "
                "sagan_ad.data.to_model_range(images), other floats with images.float()"
            )
        if images.shape[0] == 0:
            # The traced graph indexes the first image; the model scores an empty batch as empty.
            return images.new_zeros([0]), images.new_zeros([0, 1, self.size, self.size])
        return self.scorer(images)


def export_scorer(
    model: SAGAN | AnomalyScorer,
    path: str | os.PathLike,
    format: ExportFormat = "onnx",
    batch_size: int = 2,
    input_normalized: bool = False,
) -> Path:
    """Write ``model``'s scorer to ``path`` as ONNX or TorchScript.

    The model is traced on a random batch of ``batch_size`` images of its size; the batch
    dimension stays dynamic, channels and size are fixed and checked. Inputs are named
    ``images``, outputs ``scores`` and ``anomaly_maps`` (NaN for images outside ``[-1, 1]``).
    The file is written atomically (a failed or interrupted export leaves no partial file); a
    write that fails (full disk, unwritable folder) raises ``OSError`` naming the path. ONNX
    files hold their weights, unless those exceed `ONNX_INLINE_LIMIT`: then they are written to
    ``<path>.data``, which must stay beside the ``.onnx`` file.

    Args:
        model: a trained `SAGAN` (or an `AnomalyScorer`).
        path: output file (``.onnx`` or ``.pt`` by convention).
        format: ``"onnx"`` or ``"torchscript"``.
        batch_size: batch size of the tracing example.
        input_normalized: the caller applies the model's intensity normalisation (see
            `AnomalyScorer.from_model`).

    Returns:
        The written path.

    Examples:
        >>> model = SAGAN.load_from_checkpoint("best.ckpt")  # doctest: +SKIP
        >>> export_scorer(model, "sagan.onnx")  # doctest: +SKIP
        >>> export_scorer(model, "sagan.pt", format="torchscript")  # doctest: +SKIP
    """
    if format not in ("onnx", "torchscript"):
        raise InputError(f"format={format!r}: choose 'onnx' or 'torchscript'")
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: must be >= 1")
    scorer = (
        model
        if isinstance(model, AnomalyScorer)
        else AnomalyScorer.from_model(model, input_normalized)
    )
    # A copy, so that exporting leaves the caller's model on its device and in its mode.
    scorer = copy.deepcopy(scorer).cpu().eval().requires_grad_(False)
    generator = scorer.generator
    channels, size = generator.in_channels, generator.image_size
    example = torch.rand(batch_size, channels, size, size) * 2 - 1
    path = _output_path(path)
    with torch.no_grad(), _writing(path):
        if format == "torchscript":
            with warnings.catch_warnings():
                # The traced shape checks compare the fixed channels and image size only, and
                # CheckedScorer repeats them in TorchScript; the batch dimension stays free.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(scorer, example)
            buffer = io.BytesIO()
            torch.jit.save(torch.jit.script(CheckedScorer(traced, channels, size)), buffer)
            with atomic_path(path) as tmp:
                tmp.write_bytes(buffer.getvalue())
        else:
            _write_onnx(scorer, example, path)
    return path


def check_export_target(path: str | os.PathLike, setting: str | None = None) -> Path:
    """The file an export to ``path`` writes, refused when it would replace anything but an
    earlier export: a checkpoint (``--output best.ckpt`` for ``last``), saved weights or a
    config, which no export can give back. Also refuses a target named ``.ckpt``, which would
    be taken for a checkpoint, and an input of this command (`sagan_ad.protected`).

    Examples:
        >>> import tempfile
        >>> config = Path(tempfile.mkdtemp()) / "config.yaml"
        >>> _ = config.write_text("model: {}")
        >>> check_export_target(config)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sagan_ad.errors.FileError: export target '...config.yaml' exists and is not an exported ...
    """
    # As given: an error names the path the user wrote (``ck/./x.ckpt``), not its normal form.
    target = writable_target(path, setting)
    named = f"{setting} {str(path)!r}" if setting else f"export target {str(path)!r}"
    if Path(path).suffix.lower() == ".ckpt":
        raise FileError(
            f"{named}: an exported scorer named .ckpt would be taken for a checkpoint (and "
            "--ckpt_path last / best could pick it up): name it .onnx or .pt"
        )
    if target.is_file() and not _is_export(target):
        raise FileError(
            f"{named} exists and is not an exported scorer (a checkpoint, saved weights, a "
            "config or another file, which the export would replace for good): choose a new "
            "file name, or remove that file first if it is meant to go"
        )
    return target


def _is_export(path: Path) -> bool:
    """Whether ``path`` holds what an export writes: a TorchScript archive (a zip with the
    module's ``code/``, which a checkpoint or ``torch.save`` archive lacks) or an ONNX file."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in f"/{name}" for name in archive.namelist())
    return path.suffix.lower() == ".onnx"


def _output_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        raise FileError(
            f"export target {str(path)!r} is a folder: give a file name, such as "
            f"{str(path / 'sagan.onnx')!r}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FileError(
            f"export target {str(path)!r}: its folder cannot be created ({err.strerror or err}): "
            "choose another output path"
        ) from err
    return check_export_target(path)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Name the target in write failures (full disk, no permission): torch's own say neither."""
    try:
        yield
    except OutputIsInputError:
        raise  # names the file and what it is already
    except OSError as err:
        full = err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        advice = "free some space or choose" if full else "choose"
        raise FileError(
            f"cannot write the exported scorer to {str(path)!r} ({err.strerror or err}): "
            f"{advice} another output path, in a folder you can write; no partial file was left"
        ) from err


class _NoTorchvisionNotice(logging.Filter):
    """Drops the ONNX exporter's notices that torchvision (which sagan_ad never uses) is absent."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("torchvision is not installed")


def _write_onnx(scorer: AnomalyScorer, example: Tensor, path: Path) -> None:
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    quiet = _NoTorchvisionNotice()
    registration.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
            program = torch.onnx.export(
                scorer,
                (example,),
                input_names=["images"],
                output_names=["scores", "anomaly_maps"],
                dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
                dynamo=True,
                verbose=False,
            )
    except ImportError as err:
        raise MissingExtraError(
            f"ONNX export needs the export extra ({err.name or err} is missing): pip install "
            "'sagan-ad[export]'"
        ) from err
    finally:
        registration.removeFilter(quiet)
    sidecar = path.with_name(path.name + ".data")
    weights = sum(t.numel() * t.element_size() for t in scorer.state_dict().values())
    if weights <= ONNX_INLINE_LIMIT:
        data = program.model_proto.SerializeToString()
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        # A sidecar beside the new file belongs to an earlier export it replaces (unless it is
        # no export's: an input of this command, or not a regular file).
        if sidecar.is_file() and input_role(sidecar) is None:
            sidecar.unlink()
        return
    staging = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        staging.mkdir()
        program.save(staging / path.name, external_data=True)
        os.replace(staging / sidecar.name, writable_target(sidecar))
        os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
