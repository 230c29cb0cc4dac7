"""One line where a dump was (issue 22, class 7): a setting misspelt or mistyped at any depth of a
config, an empty or tab-indented config, an output folder that cannot be made, and a checkpoint
edited by hand each give one ``error:`` line naming the setting or file and what to do."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import pytest
import torch
import yaml
from conftest import TINY_DATA_ARGS, TINY_MODEL_ARGS, tiny_sagan

from sagan_ad import CheckpointError, load_checkpoint
from sagan_ad.cli import main
from sagan_ad.data import SyntheticCXRDataModule
from sagan_ad.data.setting_groups import SettingsGroup
from sagan_ad.preprocessing import PREPROCESSING_KEY
from sagan_ad.training.checkpointing import atomic_save


def cli_error(*args: str) -> str:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as info:
        main(list(args))
    printed = stderr.getvalue()
    assert info.value.code == 2 and "Traceback" not in printed, printed
    assert "usage:" not in printed and "Does not validate" not in printed, printed
    (line,) = [x for x in printed.splitlines() if x.startswith("error: ")]
    assert len(printed.splitlines()) == 2, printed  # the line and the debug hint
    return line


def fit_with(tmp_path: Path, text: str, *extra: str) -> str:
    config = tmp_path / "mine.yaml"
    config.write_text(text)
    return cli_error(
        "fit",
        "--model=sagan_ad.SAGAN",
        *TINY_MODEL_ARGS,
        *TINY_DATA_ARGS,
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        "--config",
        str(config),
        *extra,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "model:\n  init_args:\n    max_iteratons: 3\n",
            "model.max_iteratons is not a setting of sagan_ad.SAGAN (did you mean "
            "'max_iterations'?) (in --config {config})",
        ),
        (
            "model:\n  init_args:\n    scorer:\n      init_args:\n        top_fractoin: 0.1\n",
            "model.scorer.top_fractoin is not a setting of sagan_ad.Scorer (did you mean "
            "'top_fraction'?) (in --config {config})",
        ),
        (
            "data:\n  init_args:\n    batch_sise: 2\n",
            "data.batch_sise is not a setting of sagan_ad.SyntheticCXRDataModule (did you mean "
            "'batch_size'?) (in --config {config})",
        ),
        (
            "data:\n  init_args:\n    split:\n      val_fracton: 0.1\n",
            "split: no setting 'val_fracton' (did you mean 'val_fraction'?) (in --config "
            "{config}); the settings are val_fraction, anomaly_ratio, "
            "unlabeled_size, counts, file, group_by, leakage, val_abnormal, val_balance_by",
        ),
        (
            "trainer:\n  logger:\n    class_path: lightning.pytorch.loggers.CSVLogger\n"
            "    init_args:\n      save_dri: x\n",
            "trainer.logger.save_dri is not a setting of lightning.pytorch.loggers.CSVLogger "
            "(did you mean 'save_dir'?) (in --config {config})",
        ),
        (
            "data:\n  init_args:\n    batch_size: sixteen\n",
            "data.batch_size='sixteen': expected an int (in --config {config})",
        ),
        (
            "trainer:\n  max_stesp: 3\n",
            "trainer.max_stesp is not a setting of sagan-ad fit (did you mean "
            "'trainer.max_steps'?) (in --config {config}); sagan-ad fit --help lists the settings",
        ),
        ("", "--config {config} holds no settings (it is empty or only comments)"),
        (
            "model:\n\tmax_iterations: 3\n",
            "--config {config}: line 2, column 1 is indented with a tab",
        ),
        ("- a\n- b\n", "--config {config} holds a YAML list, not settings"),
        (
            "model:\n  init_args:\n    scorer:\n      class_path: sagan_ad.Scorr\n",
            "model.scorer: class_path 'sagan_ad.Scorr' cannot be imported (module 'sagan_ad' has "
            "no attribute 'Scorr') (did you mean 'sagan_ad.Scorer'?)",
        ),
    ],
    ids=[
        "nested",
        "component",
        "data",
        "data_group",
        "logger",
        "type",
        "trainer",
        "empty",
        "tab",
        "list",
        "class",
    ],
)
def test_config_mistakes_are_one_line_naming_the_setting_and_the_file(tmp_path, text, expected):
    line = fit_with(tmp_path, text)
    assert line.startswith("error: " + expected.format(config=tmp_path / "mine.yaml")), line


def test_a_mistake_on_the_command_line_is_named_as_given(tmp_path):
    line = fit_with(tmp_path, "seed_everything: 1\n", "--data.batch_sise=2")
    assert line == (
        "error: data.batch_sise is not a setting of sagan_ad.SyntheticCXRDataModule (did you "
        "mean 'batch_size'?) (given as --data.batch_sise on the command line)"
    )


SPLIT_FIELDS = (
    "val_fraction, anomaly_ratio, unlabeled_size, counts, file, group_by, leakage, "
    "val_abnormal, val_balance_by"
)
DECODE_FIELDS = "dicom_mode, window, fallback_window, percentiles, force_dicom, bit_depth"


def _data_config(tmp_path: Path, class_path: str, init: dict) -> Path:
    config = tmp_path / "old.yaml"
    config.write_text(yaml.safe_dump({"data": {"class_path": class_path, "init_args": init}}))
    return config


# Each group, in fit and predict, from a config file and from a flag, in the run and in
# --print_config: the group's own message, with where the field was given.
GROUP_MISTAKES = [
    (
        "fit",
        "sagan_ad.SyntheticCXRDataModule",
        {"split": {"val_fracton": 0.2}},
        [],
        "split: no setting 'val_fracton' (did you mean 'val_fraction'?) (in --config {config}); "
        f"the settings are {SPLIT_FIELDS}",
    ),
    (
        "fit",
        "sagan_ad.SyntheticCXRDataModule",
        {"split": {"val_fraction": "abc"}},
        [],
        "split.val_fraction='abc': must be a number (in --config {config})",
    ),
    (
        "fit",
        "sagan_ad.FolderDataModule",
        {"normal": "x", "cache": {"wrokers": 2}},
        [],
        "cache: no setting 'wrokers' (did you mean 'workers'?) (in --config {config}); the "
        "settings are dir, workers, identity, save_interval, progress",
    ),
    (
        "fit",
        "sagan_ad.FolderDataModule",
        {"normal": "x", "decode": {"bit_depth": 20}},
        [],
        "bit_depth=20: must be 'auto', 'dtype' or a number of bits from 1 to 16 (in --config "
        "{config})",
    ),
    (
        "fit",
        "sagan_ad.SyntheticCXRDataModule",
        {},
        ["--data.split.val_fracton", "0.2"],
        "split: no setting 'val_fracton' (did you mean 'val_fraction'?) (given as "
        f"--data.split.val_fracton on the command line); the settings are {SPLIT_FIELDS}",
    ),
    (
        "predict",
        "sagan_ad.FolderPredictDataModule",
        {"root": "x", "decode": {"bit_dpth": 8}},
        [],
        "decode: no setting 'bit_dpth' (did you mean 'bit_depth'?) (in --config {config}); the "
        f"settings are {DECODE_FIELDS}",
    ),
    (
        "predict",
        "sagan_ad.FolderPredictDataModule",
        {"root": "x"},
        ["--data.decode.bit_dpth", "8"],
        "decode: no setting 'bit_dpth' (did you mean 'bit_depth'?) (given as "
        f"--data.decode.bit_dpth on the command line); the settings are {DECODE_FIELDS}",
    ),
    # A flag of the same group after the file has jsonargparse rebuild the group from its own
    # fields: the misspelt one in the file was dropped without a word.
    (
        "fit",
        "sagan_ad.SyntheticCXRDataModule",
        {"split": {"val_fracton": 0.3, "anomaly_ratio": 0.5}},
        ["--data.split.unlabeled_size", "7"],
        "split: no setting 'val_fracton' (did you mean 'val_fraction'?) (in --config {config}); "
        f"the settings are {SPLIT_FIELDS}",
    ),
]


@pytest.mark.parametrize("print_config", [False, True], ids=["run", "print_config"])
@pytest.mark.parametrize(
    ("subcommand", "class_path", "init", "flags", "expected"),
    GROUP_MISTAKES,
    ids=[
        "split_field",
        "split_type",
        "cache_field",
        "decode_value",
        "split_flag",
        "predict_decode",
        "predict_flag",
        "file_then_flag",
    ],
)
def test_a_group_mistake_is_one_line_naming_the_field_and_where_it_was_given(
    tmp_path, subcommand, class_path, init, flags, expected, print_config
):
    config = _data_config(tmp_path, class_path, init)
    line = cli_error(
        subcommand,
        "--model=sagan_ad.SAGAN",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        f"--config={config}",
        *flags,
        *(["--print_config"] if print_config else []),
    )
    assert line == "error: " + expected.format(config=config)
    assert not (tmp_path / "runs").exists()


@dataclasses.dataclass(frozen=True)
class ToySettings(SettingsGroup):
    """A group that no DataModule of sagan_ad takes: what any new group gets by itself."""

    group: ClassVar[str] = "toy"

    size: int = 1


class ToyDataModule(SyntheticCXRDataModule):
    def __init__(self, toy: ToySettings | Mapping[str, Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.toy = ToySettings.parse(toy)


@pytest.mark.parametrize("print_config", [False, True], ids=["run", "print_config"])
def test_any_settings_group_is_held_to_its_fields(tmp_path, print_config):
    config = _data_config(tmp_path, f"{__name__}.ToyDataModule", {"toy": {"sise": 2}})
    line = cli_error(
        "fit",
        "--model=sagan_ad.SAGAN",
        f"--config={config}",
        *(["--print_config"] if print_config else []),
    )
    assert line == (
        f"error: toy: no setting 'sise' (did you mean 'size'?) (in --config {config}); the "
        "settings are size"
    )


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (Linux)")
def test_an_output_folder_that_cannot_be_made_is_one_line_and_leaves_nothing(tmp_path):
    line = cli_error(
        "fit",
        "--model=sagan_ad.SAGAN",
        *TINY_MODEL_ARGS,
        *TINY_DATA_ARGS,
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir=/proc/sagan-ad-test",
    )
    assert line.startswith(
        "error: --trainer.logger.init_args.save_dir: the output folder '/proc/sagan-ad-test' "
        "cannot be created or written ("
    )
    assert not (tmp_path / "runs").exists()


def edited(tmp_path: Path, component: str, setting: str, value: object) -> Path:
    model = tiny_sagan(max_iterations=2)
    model.iteration = 2
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    checkpoint["hyper_parameters"][component]["init_args"][setting] = value
    checkpoint.update(sagan_iteration=2, sagan_model_class="sagan_ad.SAGAN")
    checkpoint["pytorch-lightning_version"] = L.__version__
    path = tmp_path / f"{setting}.ckpt"
    atomic_save(checkpoint, path)
    return path


@pytest.mark.parametrize(
    ("setting", "value", "reason"),
    [
        ("top_fraction", 2.0, "scorer top_fraction=2.0: must be in (0, 1]"),
        ("residual_sigma", -1.0, "scorer residual_sigma=-1.0: must be >= 0"),
    ],
)
def test_an_edited_checkpoint_is_called_edited_naming_the_value(tmp_path, setting, value, reason):
    path = edited(tmp_path, "scorer", setting, value)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(
        f"checkpoint {str(path)!r} records settings whose values sagan_ad.SAGAN refuses: "
        f"scorer ({reason}"
    )
    assert "edited or damaged" in message and "another version" not in message
    line = cli_error("export", "--ckpt_path", str(path), "--output", str(tmp_path / "s.onnx"))
    assert line.startswith(f"error: checkpoint {str(path)!r} records settings whose values")
    assert torch.load(path, weights_only=True)["sagan_iteration"] == 2


@pytest.mark.parametrize("where", ["record", "scorer"])
def test_an_edited_normalisation_is_called_edited_naming_the_value(tmp_path, where):
    # Recorded with the pre-processing; older checkpoints kept it among the scorer's settings.
    path = edited(tmp_path, "scorer", "residual_sigma", 0.0)
    checkpoint = torch.load(path, weights_only=True)
    if where == "record":
        checkpoint[PREPROCESSING_KEY] = {"normalization": "bogus", "decode": None}
    else:
        checkpoint["hyper_parameters"]["scorer"]["init_args"]["normalization"] = "bogus"
    atomic_save(checkpoint, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(
        f"checkpoint {str(path)!r} records a pre-processing that cannot be read "
        "(data.normalization.method='bogus': choose one of none, equalize"
    )
    assert "edited or damaged" in message
    line = cli_error("export", "--ckpt_path", str(path), "--output", str(tmp_path / "s.onnx"))
    assert line.startswith(f"error: checkpoint {str(path)!r} records a pre-processing that")
