"""The DataModules' settings groups (``split`` and ``cache``, beside ``decode``): one argument
each, in Python as a settings object or a mapping, in YAML as a nested mapping and on the command
line as dotted options; every field checked by name; a DataModule refuses the split settings that
mean nothing for its data; a resumed run and the setup record treat each field as what it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from sagan_ad.cli import main
from sagan_ad.cli.resumed import check_resumed_settings
from sagan_ad.data import (
    CacheSettings,
    DecodeSettings,
    FolderDataModule,
    LAGDataModule,
    MedADDataModule,
    RSNADataModule,
    SplitSettings,
    SyntheticCXRDataModule,
    VinDrCXRDataModule,
)
from sagan_ad.data.caching.setup_digest import canonical
from sagan_ad.data.caching.setup_record import record_of
from sagan_ad.errors import InputError

# A value other than the default for every split setting.
SPLIT_VALUES = {
    "val_fraction": 0.2,
    "anomaly_ratio": 0.5,
    "unlabeled_size": 10,
    "counts": {"known_normal": 4},
    "file": "data.json",
    "group_by": "PatientID",
    "leakage": "warn",
    "val_abnormal": 2,
    "val_balance_by": "view",
}


def test_a_group_is_given_as_an_object_a_mapping_or_none():
    assert SplitSettings.parse(None) == SplitSettings()
    given = CacheSettings(dir="c", workers=2)
    assert CacheSettings.parse(given) is given
    assert CacheSettings.parse({"dir": "c", "workers": 2}) == given
    assert given.changed() == {"dir": "c", "workers": 2}
    assert CacheSettings.from_record(given.record()) == given
    assert SplitSettings.from_record(SplitSettings(**SPLIT_VALUES).record()).changed() == (
        SPLIT_VALUES
    )


@pytest.mark.parametrize(
    ("group", "value", "message"),
    [
        (
            CacheSettings,
            {"folder": "c"},
            "cache: no setting 'folder'; the settings are dir, workers, identity, save_interval, "
            "progress",
        ),
        (
            SplitSettings,
            {"split_counts": {}},
            "split: no setting 'split_counts'; the settings are val_fraction, anomaly_ratio, "
            "unlabeled_size, counts, file, group_by, leakage, val_abnormal, val_balance_by",
        ),
        (
            CacheSettings,
            "cache/",
            "cache='cache/': give a sagan_ad.data.CacheSettings or a mapping",
        ),
        (DecodeSettings, {"mode": "x"}, "decode: no setting 'mode'; the settings are dicom_mode"),
    ],
)
def test_an_unknown_field_or_a_value_of_another_kind_is_refused_by_name(group, value, message):
    with pytest.raises(InputError) as info:
        group.parse(value)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("group", "fields", "message"),
    [
        (SplitSettings, {"val_fraction": 1.0}, "split.val_fraction=1.0: must be in [0, 1)"),
        (SplitSettings, {"val_fraction": "0.1"}, "split.val_fraction='0.1': must be a number"),
        (SplitSettings, {"anomaly_ratio": 1.5}, "split.anomaly_ratio=1.5: must be in [0, 1]"),
        (SplitSettings, {"unlabeled_size": 0}, "split.unlabeled_size=0: must be >= 1"),
        (SplitSettings, {"unlabeled_size": 2.5}, "split.unlabeled_size=2.5: must be a whole"),
        (SplitSettings, {"val_abnormal": -1}, "split.val_abnormal=-1: must be >= 0"),
        (
            SplitSettings,
            {"leakage": "maybe"},
            "split.leakage='maybe': must be 'raise', 'warn' or 'ignore'",
        ),
        (SplitSettings, {"counts": [1, 2]}, "split.counts=[1, 2]: give images per part"),
        (CacheSettings, {"workers": 0}, "cache.workers=0: must be >= 1 (or None: every core)"),
        (CacheSettings, {"workers": True}, "cache.workers=True: must be a whole number"),
        (
            CacheSettings,
            {"identity": "mtime"},
            "cache.identity='mtime': must be 'stat', 'verify' or 'content'",
        ),
        (CacheSettings, {"save_interval": 0}, "cache.save_interval=0: must be > 0 seconds"),
        (CacheSettings, {"progress": "no"}, "cache.progress='no': must be true or false"),
    ],
)
def test_every_field_is_checked_and_named_with_its_group(group, fields, message):
    with pytest.raises(InputError) as info:
        group(**fields)
    assert str(info.value).startswith(message)


DATA_MODULES = [
    (SyntheticCXRDataModule, {}),
    (MedADDataModule, {"root": "x"}),
    (RSNADataModule, {"root": "x"}),
    (VinDrCXRDataModule, {"root": "x"}),
    (LAGDataModule, {"root": "x"}),
    (FolderDataModule, {"normal": "x"}),
]


@pytest.mark.parametrize(
    ("kind", "required"), DATA_MODULES, ids=lambda v: getattr(v, "__name__", "")
)
def test_each_datamodule_takes_its_split_settings_and_refuses_the_others_by_name(kind, required):
    assert set(kind.split_options) <= set(SPLIT_VALUES)
    for name, value in SPLIT_VALUES.items():
        if name in kind.split_options:
            if name == "val_balance_by":
                # Balancing needs its carve-out and its column (checked by MedADDataModule).
                fields = {name: value, "val_abnormal": 2}
                dm = kind(**required, metadata_csv="labels.csv", split=fields)
            else:
                dm = kind(**required, split={name: value})
            assert getattr(dm.split, name) == value
            continue
        with pytest.raises(InputError) as info:
            kind(**required, split={name: value})
        assert str(info.value).startswith(
            f"split.{name}={value!r}: {kind.__name__} takes no split.{name}"
        )
        assert f"its split settings are {', '.join(kind.split_options)}" in str(info.value)


def test_the_groups_are_nested_options_on_the_command_line_and_in_yaml(tmp_path, capsys):
    def printed(*arguments: str) -> dict:
        with pytest.raises(SystemExit) as info:
            main(["fit", "--model=sagan_ad.SAGAN", *arguments, "--print_config"])
        assert info.value.code == 0, capsys.readouterr().err
        return yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]

    flags = printed(
        "--data=sagan_ad.RSNADataModule",
        "--data.root=x",
        "--data.split.val_fraction=0.3",
        "--data.split.group_by=PatientID",
        "--data.cache.dir=cache",
        "--data.cache.workers=2",
    )
    config = tmp_path / "data.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "class_path": "sagan_ad.RSNADataModule",
                    "init_args": {
                        "root": "x",
                        "split": {"val_fraction": 0.3, "group_by": "PatientID"},
                        "cache": {"dir": "cache", "workers": 2},
                    },
                }
            }
        )
    )
    nested = printed(f"--config={config}")
    assert flags == nested
    assert flags["split"] == {**SplitSettings(val_fraction=0.3, group_by="PatientID").record()}
    assert flags["cache"] == CacheSettings(dir="cache", workers=2).record()


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (
            "--data.split.counts={'known_normal': 3}",
            "error: split.counts={'known_normal': 3}: SyntheticCXRDataModule takes no "
            "split.counts (the phantoms are generated, not drawn from files)",
        ),
        (
            "--data.split.val_fraction=1.5",
            "error: split.val_fraction=1.5: must be in [0, 1) (given as --data.split.val_fraction "
            "on the command line)",
        ),
        (
            "--data.split.fraction=0.2",
            "error: split: no setting 'fraction' (did you mean 'val_fraction'?) (given as "
            "--data.split.fraction on the command line); the settings are",
        ),
    ],
)
def test_a_refused_split_setting_is_one_error_line_of_the_run(argument, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config=quickstart", argument, "--trainer.fast_dev_run=true"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def _saved_run(folder: Path, split: dict | None, cache: dict | None) -> dict:
    init = {"root": "x", "split": split, "cache": cache}
    run = {"data": {"class_path": "sagan_ad.MedADDataModule", "init_args": init}}
    (folder / "config.yaml").write_text(yaml.safe_dump(run))
    return run


def _with(run: dict, **init) -> dict:
    data = run["data"]
    return {"data": {**data, "init_args": {**data["init_args"], **init}}, "ckpt_path": "last"}


def test_a_resumed_run_may_change_its_cache_and_leakage_check_but_not_its_split(tmp_path):
    run = _saved_run(tmp_path, split=None, cache=None)
    # A group given as None is its defaults: the same run.
    check_resumed_settings(tmp_path, _with(run, split={}, cache={}), "last")
    with pytest.warns(UserWarning, match="resuming with settings that differ") as caught:
        check_resumed_settings(
            tmp_path,
            _with(run, split={"leakage": "warn"}, cache={"dir": "elsewhere", "workers": 1}),
            "last",
        )
    assert "data.cache.dir='elsewhere' (the run: None)" in str(caught[0].message)
    with pytest.raises(InputError) as info:
        check_resumed_settings(
            tmp_path, _with(run, split={"val_fraction": 0.3, "leakage": "warn"}), "last"
        )
    assert "data settings were others: data.split.val_fraction=0.3 (the run: None);" in str(
        info.value
    )


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "normal"
    folder.mkdir()
    for i in range(4):
        pixels = np.full((12, 12), 40 * i + 20, np.uint8)
        Image.fromarray(pixels).save(folder / f"n{i}.png")
    return folder


def test_how_fast_the_cache_builds_is_not_part_of_the_setup_record(tmp_path):
    folder = _folder(tmp_path)

    def digest_settings(**cache) -> str:
        dm = FolderDataModule(folder, image_size=8, cache={"dir": tmp_path / "c", **cache})
        settings = record_of(dm)._settings
        # Only what decides the images set up: the folder and how a file is recognised.
        assert settings["cache"] == {"dir": dm.cache_dir, "identity": dm.cache.identity}
        out: list[str] = []
        canonical(settings, out)
        return "".join(out)

    quiet = digest_settings(workers=1, progress=False)
    assert digest_settings(workers=2, progress=True, save_interval=5.0) == quiet
    assert digest_settings(dir=tmp_path / "other") != quiet
    assert digest_settings(dir=str(tmp_path / "c")) == quiet
    # A cache that recognises files by their bytes has no setup record (see record_of).
    verify = FolderDataModule(folder, cache={"dir": tmp_path / "c", "identity": "verify"})
    assert record_of(verify)._settings is None


def test_medad_decodes_with_the_cache_settings_it_is_given(tmp_path, medad_root, monkeypatch):
    from sagan_ad.data.caching import cache as cache_module

    workers = []
    original = cache_module.ImageCache.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        workers.append((self.num_workers, self.progress))

    monkeypatch.setattr(cache_module.ImageCache, "__init__", spy)
    # As YAML gives them: plain strings.
    cache = {"dir": str(tmp_path / "c"), "workers": 1, "progress": False}
    split = {"file": str(medad_root / "data.json")}
    dm = MedADDataModule(medad_root, image_size=16, cache=cache, split=split)
    dm.setup()
    assert workers == [(1, False)]
    assert dm.split_path == medad_root / "data.json"
    assert (tmp_path / "c" / "twins.json").is_file()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("val_fraction", "split.val_fraction"),
        ("cache_dir", "cache.dir"),
        ("split_file", "split.file"),
    ],
)
def test_a_config_with_a_setting_now_in_a_group_is_told_where_it_went(old, new, tmp_path, capsys):
    config = tmp_path / "old.yaml"
    init = {"normal": "x", old: "value"}
    config.write_text(
        yaml.safe_dump({"data": {"class_path": "sagan_ad.FolderDataModule", "init_args": init}})
    )
    # The same setting given in its new place on the command line is not where the old one is.
    group, field = new.split(".")
    with pytest.raises(SystemExit) as info:
        main(["fit", f"--config={config}", f"--data.{group}.{field}=other", "--print_config"])
    assert info.value.code == 2
    assert (
        f"error: data.{old} is not a setting of sagan_ad.FolderDataModule (did you mean "
        f"'{new}'? in YAML: {group}: {{{field}: ...}}) (in --config {config})"
    ) in capsys.readouterr().err
