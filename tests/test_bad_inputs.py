"""One matrix of bad inputs across the data layer and the CLI: each must fail with a clear,
actionable message (and, for the CLI, ``error: <message>`` with exit status 2, no traceback)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_MODEL_ARGS, write_dicom, write_medad_tree
from PIL import Image

from sagan_ad import (
    SAGAN,
    Critic,
    FolderDataModule,
    Generator,
    ImageReadError,
    MedADDataModule,
    SplitError,
)
from sagan_ad.cli import main
from sagan_ad.data.reading.image_io import load_image


class CLIError(Exception):
    """What the ``sagan-ad`` command printed on stderr when it exited with status 2."""


def cli(*args: str) -> None:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as info:
        main(list(args))
    printed = stderr.getvalue()
    assert info.value.code == 2, printed
    assert "Traceback" not in printed
    raise CLIError(printed)


def cli_fit(root: Path, *extra: str) -> None:
    cli(
        "fit",
        "--model=sagan_ad.SAGAN",
        *TINY_MODEL_ARGS,
        "--model.max_iterations=2",
        "--data=sagan_ad.MedADDataModule",
        f"--data.root={root}",
        "--data.image_size=32",
        "--data.batch_size=4",
        "--trainer.accelerator=cpu",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={root.parent / 'run'}",
        *extra,
    )


def png(path: Path, size: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), 90, np.uint8)).save(path)
    return path


def truncated_png(tmp: Path) -> None:
    path = png(tmp / "cut.png")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    load_image(path, 32)


def float_tiff(tmp: Path, value: float) -> None:
    pixels = np.full((16, 16), 0.5, np.float32)
    pixels[3, 4] = value
    Image.fromarray(pixels, mode="F").save(tmp / "float.tiff")
    load_image(tmp / "float.tiff", 32)


def medad(tmp: Path, edit: Callable[[dict], None] | None = None) -> Path:
    root = write_medad_tree(tmp / "medad")
    if edit is not None:
        split = json.loads((root / "data.json").read_text())
        edit(split)
        (root / "data.json").write_text(json.dumps(split))
    return root


def setup_medad(tmp: Path, edit: Callable[[dict], None] | None = None, **kwargs) -> None:
    MedADDataModule(medad(tmp, edit), image_size=32, **kwargs).setup()


def corrupt_image_cli(tmp: Path) -> None:
    root = medad(tmp)
    (root / "images" / "known_001.png").write_bytes(b"")
    cli_fit(root)


def unwritable_output(tmp: Path) -> None:
    (tmp / "a_file").write_text("not a folder")
    cli_fit(medad(tmp), f"--trainer.default_root_dir={tmp / 'a_file' / 'run'}")


CASES: dict[str, tuple[Callable[[Path], None], type[Exception], str]] = {
    "zero-byte PNG": (
        lambda tmp: load_image((tmp / "zero.png").touch() or tmp / "zero.png", 32),
        ImageReadError,
        r"zero\.png \(the file is empty\)",
    ),
    "truncated PNG": (truncated_png, ImageReadError, r"cut\.png: OSError: .*truncated"),
    "corrupt DICOM": (
        lambda tmp: load_image(
            (tmp / "x.dcm").write_bytes(b"not dicom" * 20) and tmp / "x.dcm", 32
        ),
        ImageReadError,
        r"x\.dcm",
    ),
    "DICOM without pixel data": (
        lambda tmp: load_image(write_dicom(tmp / "header.dcm", None), 32),
        ImageReadError,
        r"header\.dcm.*no pixel data",
    ),
    "NaN in a float TIFF": (
        lambda tmp: float_tiff(tmp, float("nan")),
        ImageReadError,
        r"float\.tiff: 1 float pixel\(s\) are NaN or Inf",
    ),
    "Inf in a float TIFF": (
        lambda tmp: float_tiff(tmp, float("inf")),
        ImageReadError,
        r"float\.tiff: 1 float pixel\(s\) are NaN or Inf",
    ),
    "image smaller than the patch grid": (
        lambda tmp: SAGAN(
            generator=Generator(image_size=8, base_channels=4),
            critic=Critic(base_channels=4, num_downsamples=3),
        ),
        ValueError,
        r"image_size=8 cannot be cut into a 2x2 patch grid.*multiple of patch_grid \* 8 = 16",
    ),
    "image size not divisible by the patch grid": (
        lambda tmp: SAGAN(
            generator=Generator(image_size=40, base_channels=4),
            critic=Critic(base_channels=4, num_downsamples=5),
        ),
        ValueError,
        r"image_size=40 .*must be a multiple of patch_grid \* 8 = 16",
    ),
    "data.json with missing keys": (
        lambda tmp: setup_medad(tmp, lambda s: s["train"].pop("0")),
        SplitError,
        r"data\.json.*\"0\"",
    ),
    "file listed in data.json but unknown in images/": (
        lambda tmp: setup_medad(tmp, lambda s: s["test"]["1"].append("ghost.png")),
        ImageReadError,
        r"1 image file\(s\) do not exist:\n .*ghost\.png",
    ),
    "duplicate across splits (leakage)": (
        lambda tmp: setup_medad(tmp, lambda s: s["test"]["0"].append(s["train"]["0"][0])),
        SplitError,
        r'known_000\.png.* in both train\."0" and test\."0"',
    ),
    "negative anomaly ratio": (
        lambda tmp: setup_medad(tmp, split={"anomaly_ratio": -0.1}),
        ValueError,
        r"split\.anomaly_ratio=-0\.1: must be in \[0, 1\]",
    ),
    "anomaly ratio above 1": (
        lambda tmp: setup_medad(tmp, split={"anomaly_ratio": 1.5}),
        ValueError,
        r"split\.anomaly_ratio=1\.5: must be in \[0, 1\]",
    ),
    "abnormal pool overflow": (
        lambda tmp: setup_medad(tmp, split={"anomaly_ratio": 1.0}),
        SplitError,
        r"needs 12 abnormal images but the abnormal pool has 10",
    ),
    "empty folder": (
        lambda tmp: FolderDataModule(normal=(tmp / "empty").mkdir() or tmp / "empty").setup(),
        ImageReadError,
        r"(?s)1 empty source\(s\); fix them or set on_error='skip'.*normal=.*empty' lists no im",
    ),
    "CLI: wrong channel count (model vs data)": (
        lambda tmp: cli_fit(medad(tmp), "--data.in_channels=3"),
        CLIError,
        r"^error: model\.generator\.in_channels=1 but data\.in_channels=3: set both to the same "
        r"value",
    ),
    "CLI: image size not divisible by the patch grid": (
        lambda tmp: cli_fit(medad(tmp), "--model.generator.image_size=40", "--data.image_size=40"),
        CLIError,
        r"^error: image_size=40 cannot be cut into a 2x2 patch grid .*patch_grid \* 8 = 16",
    ),
    "CLI: missing data root": (
        lambda tmp: cli_fit(tmp / "nowhere"),
        CLIError,
        r"^error: data\.root=.*nowhere",
    ),
    "CLI: corrupt image in the data set": (
        corrupt_image_cli,
        CLIError,
        r"(?s)^error: 1 image file\(s\) could not be decoded.*known_001\.png \(the file is empty\)",
    ),
    "CLI: unwritable output folder": (
        unwritable_output,
        CLIError,
        r"^error: the output folder .*a_file/run' cannot be written .*--trainer\.default_root_dir",
    ),
    "CLI: misspelled config key": (
        lambda tmp: cli_fit(tmp, "--model.base_chanels=8"),
        CLIError,
        r"base_chanels",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_a_clear_message(case, tmp_path):
    action, error, message = CASES[case]
    with pytest.raises(error, match=message):
        action(tmp_path)
