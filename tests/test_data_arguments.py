"""The DataModules' shared arguments, defined once in their base classes and passed on as
``**kwargs``, are still on every DataModule's command line, and unknown ones still refused."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest
import yaml

import sagan_ad
from sagan_ad.cli import main
from sagan_ad.data import AnomalyDataModule, CacheSettings, FileDataModule, SplitSettings

# A value other than the default for every argument of the base classes: (command line, parsed).
BASE_VALUES = {
    "image_size": ("48", 48),
    "in_channels": ("3", 3),
    "batch_size": ("7", 7),
    "eval_batch_size": ("5", 5),
    "num_workers": ("2", 2),
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
}
# The settings groups, given field by field (--data.split.val_fraction=0.2): every DataModule
# takes the split settings of its class's split_options, every FileDataModule the cache group.
SPLIT_VALUES = {
    "val_fraction": ("0.2", 0.2),
    "anomaly_ratio": ("0.5", 0.5),
    "unlabeled_size": ("9", 9),
    "counts": ('{"known_normal": 3}', {"known_normal": 3}),
    "file": ("split.json", "split.json"),
    "group_by": ("PatientID", "PatientID"),
    "leakage": ("warn", "warn"),
    "val_abnormal": ("2", 2),
    "val_balance_by": ("view_position", "view_position"),
}
CACHE_VALUES = {
    "dir": ("cache", "cache"),
    "workers": ("2", 2),
    "identity": ("verify", "verify"),
    "save_interval": ("5.0", 5.0),
    "progress": ("false", False),
}


def _arguments(cls: type) -> set[str]:
    return {
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind is not p.VAR_KEYWORD
    }


def test_the_values_cover_every_base_argument():
    assert {*BASE_VALUES, "split"} == _arguments(AnomalyDataModule)
    assert {*FILE_VALUES, "cache"} == _arguments(FileDataModule)
    assert set(SPLIT_VALUES) == {field.name for field in fields(SplitSettings)}
    assert set(CACHE_VALUES) == {field.name for field in fields(CacheSettings)}


def _shared_values(data_class: str) -> dict[str, tuple[str, object]]:
    """The values given to ``data_class`` on the command line, by (dotted) argument name."""
    cls = getattr(sagan_ad, data_class)
    shared = {**BASE_VALUES}
    shared |= {f"split.{name}": SPLIT_VALUES[name] for name in cls.split_options}
    if issubclass(cls, FileDataModule):
        shared |= FILE_VALUES
        shared |= {f"cache.{name}": value for name, value in CACHE_VALUES.items()}
    return shared


def _printed_data(arguments: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--model=sagan_ad.SAGAN", *arguments, "--print_config"])
    assert info.value.code == 0, capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)["data"]


@pytest.mark.parametrize(
    ("data_class", "required"),
    [
        ("SyntheticCXRDataModule", []),
        ("MedADDataModule", ["--data.root=x"]),
        ("RSNADataModule", ["--data.root=x"]),
        ("VinDrCXRDataModule", ["--data.root=x"]),
        ("LAGDataModule", ["--data.root=x"]),
        ("FolderDataModule", ["--data.normal=x"]),
    ],
)
def test_every_shared_argument_is_on_the_command_line(data_class, required, capsys):
    shared = _shared_values(data_class)
    # Folders are given their roles: the mixture is not drawn, so these are no options of theirs.
    assert ("split.anomaly_ratio" in shared) == (data_class != "FolderDataModule")
    arguments = [f"--data=sagan_ad.{data_class}", *required]
    arguments += [f"--data.{name}={text}" for name, (text, _) in shared.items()]
    data = _printed_data(arguments, capsys)
    assert data["class_path"] == f"sagan_ad.{data_class}"
    for name, (_, value) in shared.items():
        printed = data["init_args"]
        for key in name.split("."):
            printed = printed[key]
        if isinstance(value, dict):
            printed = {k: printed[k] for k in value}
        assert printed == value, name


@pytest.mark.parametrize(
    ("data_class", "required", "unknown", "named"),
    [
        ("MedADDataModule", "--data.root=x", "--data.not_an_option=1", "not_an_option"),
        ("SyntheticCXRDataModule", "--data.seed=1", "--data.not_an_option=1", "not_an_option"),
        # The drawing split settings of RawDataModule are no settings of a folder.
        (
            "FolderDataModule",
            "--data.normal=x",
            "--data.split.file=data.json",
            "split.file='data.json': FolderDataModule takes no split.file",
        ),
        (
            "FolderDataModule",
            "--data.normal=x",
            "--data.split.anomaly_ratio=0.5",
            "split.anomaly_ratio=0.5: FolderDataModule takes no split.anomaly_ratio",
        ),
        # A settings group knows its own settings.
        (
            "MedADDataModule",
            "--data.root=x",
            "--data.split.not_an_option=1",
            "split: no setting 'not_an_option'",
        ),
        ("MedADDataModule", "--data.root=x", "--data.cache.folder=x", "cache: no setting 'folder'"),
    ],
)
def test_an_unknown_argument_is_an_error(
    data_class, required, unknown, named, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    # An argument of no DataModule ends the parse (all that --print_config runs); the settings
    # of a group are checked by name when the DataModule is built.
    in_a_group = unknown.startswith(("--data.split.", "--data.cache."))
    parse_only = [] if in_a_group else ["--print_config"]
    with pytest.raises(SystemExit) as info:
        main(
            [
                "fit",
                "--model=sagan_ad.SAGAN",
                f"--data=sagan_ad.{data_class}",
                required,
                unknown,
                *parse_only,
            ]
        )
    assert info.value.code == 2
    assert named in capsys.readouterr().err
