"""The DataModules' shared arguments, defined once in their base classes and passed on as
``**kwargs``, are still on every DataModule's command line, and unknown ones still refused."""

from __future__ import annotations

import inspect

import pytest
import yaml

from sagan_ad.cli import main
from sagan_ad.data import AnomalyDataModule, FileDataModule

# A value other than the default for every argument of the base classes: (command line, parsed).
BASE_VALUES = {
    "image_size": ("48", 48),
    "in_channels": ("3", 3),
    "batch_size": ("7", 7),
    "eval_batch_size": ("5", 5),
    "num_workers": ("2", 2),
    "val_fraction": ("0.2", 0.2),
    "val_synthesizer": (
        "sagan_ad.PerlinBlobSynthesizer",
        {"class_path": "sagan_ad.PerlinBlobSynthesizer"},
    ),
    "seed": ("3", 3),
    "data_on_device": ("true", True),
    "normalization": ("zscore", "zscore"),
    "augment": ('{"brightness": 0.2}', {"brightness": 0.2}),
}
FILE_VALUES = {
    "anomaly_ratio": ("0.5", 0.5),
    "unlabeled_size": ("9", 9),
    "decode": (
        '{"dicom_mode": "benchmark", "window": "minmax", "fallback_window": "percentile", '
        '"percentiles": [1, 99], "force_dicom": true, "bit_depth": "dtype"}',
        {
            "dicom_mode": "benchmark",
            "window": "minmax",
            "fallback_window": "percentile",
            "percentiles": [1.0, 99.0],
            "force_dicom": True,
            "bit_depth": "dtype",
        },
    ),
    "dicom_tags": ("[ViewPosition]", ["ViewPosition"]),
    "leakage": ("warn", "warn"),
    "cache_identity": ("verify", "verify"),
    "cache_save_interval": ("5.0", 5.0),
}
# Folders are given their roles: the mixture is not drawn, so these are no options of theirs.
DRAWING = ("anomaly_ratio", "unlabeled_size")


def _arguments(cls: type) -> set[str]:
    return {
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind is not p.VAR_KEYWORD
    }


def test_the_values_cover_every_base_argument():
    assert set(BASE_VALUES) == _arguments(AnomalyDataModule)
    assert set(FILE_VALUES) == _arguments(FileDataModule)


def _printed_data(arguments: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--model=sagan_ad.SAGAN", *arguments, "--print_config"])
    assert info.value.code == 0, capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)["data"]


@pytest.mark.parametrize(
    ("data_class", "required", "shared"),
    [
        ("SyntheticCXRDataModule", [], BASE_VALUES),
        ("MedADDataModule", ["--data.root=x"], {**BASE_VALUES, **FILE_VALUES}),
        ("RSNADataModule", ["--data.root=x"], {**BASE_VALUES, **FILE_VALUES}),
        ("VinDrCXRDataModule", ["--data.root=x"], {**BASE_VALUES, **FILE_VALUES}),
        ("LAGDataModule", ["--data.root=x"], {**BASE_VALUES, **FILE_VALUES}),
        (
            "FolderDataModule",
            ["--data.normal=x"],
            {k: v for k, v in {**BASE_VALUES, **FILE_VALUES}.items() if k not in DRAWING},
        ),
    ],
)
def test_every_shared_argument_is_on_the_command_line(data_class, required, shared, capsys):
    arguments = [f"--data=sagan_ad.{data_class}", *required]
    arguments += [f"--data.{name}={text}" for name, (text, _) in shared.items()]
    data = _printed_data(arguments, capsys)
    assert data["class_path"] == f"sagan_ad.{data_class}"
    for name, (_, value) in shared.items():
        printed = data["init_args"][name]
        if isinstance(value, dict):
            printed = {k: printed[k] for k in value}
        assert printed == value, name


@pytest.mark.parametrize(
    ("data_class", "required", "unknown"),
    [
        ("MedADDataModule", "--data.root=x", "--data.not_an_option=1"),
        ("SyntheticCXRDataModule", "--data.seed=1", "--data.not_an_option=1"),
        # RawDataModule's split options are no options of a folder.
        ("FolderDataModule", "--data.normal=x", "--data.split_file=data.json"),
        ("FolderDataModule", "--data.normal=x", "--data.anomaly_ratio=0.5"),
    ],
)
def test_an_unknown_argument_is_an_error(data_class, required, unknown, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", f"--data=sagan_ad.{data_class}", required, unknown, "--print_config"])
    assert info.value.code == 2
    assert unknown.split("=")[0].removeprefix("--data.") in capsys.readouterr().err
