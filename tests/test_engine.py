"""`sagan_ad.Engine`, the run path Python and the command line share, and the Lightning habits
it keeps working: a user's ModelCheckpoint, max_steps, logger packages, GPU configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_DATA_ARGS, TINY_MODEL_ARGS, tiny_sagan
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from sagan_ad import (
    Engine,
    EvaluationWriter,
    LastCheckpoint,
    SyntheticCXRDataModule,
    best_and_last_checkpoints,
)
from sagan_ad.cli import main
from sagan_ad.cli.loggers import LOGGER_PACKAGES, check_logger_packages
from sagan_ad.training.engine import default_callbacks
from sagan_ad.training.runs import run_dir

QUIET = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}


def tiny_data() -> SyntheticCXRDataModule:
    return SyntheticCXRDataModule(
        num_known_normal=16, num_test=8, image_size=32, batch_size=4, split={"val_fraction": 0.25}
    )


def engine(tmp_path, **settings) -> Engine:
    logger = CSVLogger(tmp_path, name="sagan")
    return Engine(val_check_interval=2, logger=logger, val_samples=0, **{**QUIET, **settings})


def kinds(callbacks) -> list[str]:
    return [type(c).__name__ for c in callbacks]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One Engine run of 2 iterations with its test (the tests below copy its folder)."""
    root = tmp_path_factory.mktemp("engine")
    run = engine(root)
    results = run.fit(tiny_sagan(max_iterations=2), tiny_data())
    return root, run, results


def test_fit_trains_keeps_best_and_last_and_tests_the_kept_checkpoint(fitted):
    _, run, results = fitted
    assert 0.0 <= results[0]["test/AUROC"] <= 1.0
    folder = run_dir(run.trainer)
    names = {p.name for p in (folder / "checkpoints").iterdir()}
    assert "last.ckpt" in names and any(n.startswith("best-iteration=") for n in names)
    metrics = json.loads((folder / "test" / "metrics.json").read_text())
    # The test ran on the checkpoint chosen on validation, not on the final weights.
    assert metrics["checkpoint"] == run.trainer.checkpoint_callback.best_model_path
    assert run.trainer.max_epochs == -1 and run.trainer.check_val_every_n_epoch is None


def test_fit_from_last_continues_the_run_in_its_own_folder(fitted, tmp_path):
    shutil.copytree(fitted[0] / "sagan", tmp_path / "sagan")
    model = tiny_sagan(max_iterations=4)
    run = engine(tmp_path, test_after_fit=False)
    assert run.fit(model, tiny_data(), ckpt_path="last") is None
    assert model.iteration == 4
    assert run_dir(run.trainer) == tmp_path / "sagan" / "version_0"
    assert [p.name for p in (tmp_path / "sagan").iterdir()] == ["version_0"]


def test_a_checkpoint_of_another_architecture_is_refused_by_name(fitted, tmp_path):
    shutil.copytree(fitted[0] / "sagan", tmp_path / "sagan")
    wider = tiny_sagan(max_iterations=2)
    wider.generator = type(wider.generator)(image_size=32, base_channels=8, num_res_blocks=1)
    with pytest.raises(Exception, match=r"last\.ckpt' \(ckpt_path\) does not fit the model"):
        engine(tmp_path).test(wider, tiny_data(), ckpt_path="last")


def test_a_users_model_checkpoint_adds_to_the_built_in_ones():
    mine = ModelCheckpoint(monitor="val/AP", mode="max", filename="ap-{iteration:.0f}")
    callbacks = default_callbacks([mine], val_samples=0)
    checkpoints = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    # The built-in best comes first: it is the Trainer's checkpoint_callback, "best".
    assert checkpoints[0].monitor == "val/AUROC"
    assert isinstance(checkpoints[1], LastCheckpoint) and checkpoints[2] is mine


def test_a_checkpoint_of_the_same_kind_replaces_the_built_in_one():
    best, last = best_and_last_checkpoints()
    assert default_callbacks([best, last], val_samples=0)[:2] == [best, last]
    saving_last = ModelCheckpoint(monitor="val/AP", mode="max", save_last=True)
    kept = [c for c in default_callbacks([saving_last]) if isinstance(c, ModelCheckpoint)]
    assert kinds(kept) == ["ModelCheckpoint", "ModelCheckpoint"]
    assert kept[0].monitor == "val/AUROC" and kept[1] is saving_last


def test_given_callbacks_of_each_kind_are_not_doubled():
    writer = EvaluationWriter(overlay_style="panels")
    callbacks = default_callbacks([writer], progress_bar=False, checkpointing=False)
    assert kinds(callbacks) == ["EvaluationWriter", "SplitRecorder", "ValidationSampleLogger"]
    assert callbacks[0] is writer


def test_engine_takes_a_trainer_or_its_settings_not_both(tmp_path):
    trainer = engine(tmp_path).trainer
    assert Engine(trainer).trainer is trainer
    with pytest.raises(ValueError, match="either a Trainer or its settings"):
        Engine(trainer, val_check_interval=2)


def test_max_steps_is_refused_with_the_setting_to_use(tmp_path):
    run = engine(tmp_path, max_steps=3)
    with pytest.raises(ValueError, match=r"max_steps=3\).*max_iterations \(now 4"):
        run.fit(tiny_sagan(max_iterations=4), tiny_data())


CLI = ["fit", *TINY_MODEL_ARGS, *TINY_DATA_ARGS, "--model.max_iterations=4"]
CLI += ["--trainer.val_check_interval=2", "--trainer.accelerator=cpu", "--val_samples=0"]
CLI += ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_the_command_line_keeps_best_and_last_beside_a_users_checkpoint(tmp_path):
    main(
        [
            *CLI,
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.save_dir={tmp_path}",
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.monitor=val/AP",
            "--trainer.callbacks.mode=max",
            "--trainer.callbacks.filename=ap-{iteration:.0f}",
        ]
    )
    names = {p.name for p in tmp_path.rglob("*.ckpt")}
    assert "last.ckpt" in names
    assert any(n.startswith("ap-iteration=") for n in names)
    # The test after fit loaded "best": the built-in best by val/AUROC, not the user's.
    (metrics,) = tmp_path.glob("*/version_0/test/metrics.json")
    assert Path(json.loads(metrics.read_text())["checkpoint"]).name.startswith("best-iteration=")


def test_max_steps_on_the_command_line_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main([*CLI, f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=3"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: Trainer(max_steps=3) (--trainer.max_steps)" in err
    assert "--model.max_iterations" in err and "Traceback" not in err


def test_a_missing_logger_package_is_one_error_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    with pytest.raises(ImportError, match=r"pip install neptune, or choose another logger"):
        check_logger_packages([{"class_path": "lightning.pytorch.loggers.NeptuneLogger"}])
    # As if tensorboard were not installed, wherever the tests run.
    missing = (("no_such_package_for_the_test",), "pip install 'sagan-ad[tensorboard]'")
    monkeypatch.setitem(LOGGER_PACKAGES, "TensorBoardLogger", missing)
    with pytest.raises(SystemExit) as info:
        main(
            [
                *CLI,
                f"--trainer.default_root_dir={tmp_path}",
                "--trainer.logger=lightning.pytorch.loggers.TensorBoardLogger",
                f"--trainer.logger.save_dir={tmp_path}",
            ]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: --trainer.logger lightning.pytorch.loggers.TensorBoardLogger needs" in err
    assert "pip install 'sagan-ad[tensorboard]'" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_a_gpu_config_on_a_cpu_machine_suggests_the_cpu_flag(medad_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(
            [
                "fit",
                "--config=medad_rsna",
                f"--data.root={medad_root}",
                f"--trainer.default_root_dir={tmp_path}",
                f"--trainer.logger.init_args.save_dir={tmp_path}",
            ]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "No supported gpu backend found" in err
    assert "add --trainer.accelerator cpu" in err


def test_configs_lists_which_shipped_configs_need_a_gpu(capsys):
    main(["configs"])
    lines = {
        line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line[:2] == "  "
    }
    flag = "Needs a GPU (without one: --trainer.accelerator cpu)."
    assert lines["medad_rsna"].endswith(flag) and lines["nih_gpu"].endswith(flag)
    assert flag not in lines["quickstart"] and flag not in lines["nih_cpu"]


def test_without_a_test_set_nothing_is_tested_after_fit(tmp_path):
    run = engine(tmp_path)
    assert run.test_kept_checkpoint(tiny_sagan(), None) is None
    data = tiny_data()
    # A DataModule that has no test set once set up (a fit sets it up; one a spawned fit set up
    # elsewhere is set up here first, tests/test_trainer_habits.py).
    data.setup("fit")
    data.test = None
    assert run.test_kept_checkpoint(tiny_sagan(), data) is None
