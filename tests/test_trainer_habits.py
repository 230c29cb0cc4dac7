"""Lightning habits a SAGAN fit cannot follow (Trainer settings that count Lightning's steps or
epochs, limit the endless training stream or the validation, tuning callbacks) are refused before
anything trains, naming the setting and what to use instead; the ones it can follow still work."""

from __future__ import annotations

import importlib.util
import pickle
import warnings

import lightning as L
import pytest
from conftest import TINY_DATA_ARGS, TINY_MODEL_ARGS, tiny_sagan
from lightning.pytorch.callbacks import (
    BatchSizeFinder,
    EarlyStopping,
    GradientAccumulationScheduler,
    LearningRateFinder,
    StochasticWeightAveraging,
    Timer,
)

from sagan_ad import Engine, SyntheticCXRDataModule
from sagan_ad.cli import main
from sagan_ad.errors import InputError
from sagan_ad.training.engine import default_callbacks
from sagan_ad.training.trainer_checks import check_trainer_for_fit

QUIET = {
    "accelerator": "cpu",
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "logger": False,
}

# Setting -> what the refusal must say (besides naming the setting).
REFUSED = {
    "min_steps=20": ({"min_steps": 20}, "wait for steps that never come"),
    "min_epochs=2": ({"min_epochs": 2}, "one endless epoch, so a second never starts"),
    "max_epochs=0": ({"max_epochs": 0}, "trains nothing"),
    "limit_train_batches=2": ({"limit_train_batches": 2}, "repeating its first batches"),
    "limit_train_batches=0.5": ({"limit_train_batches": 0.5}, "repeating its first batches"),
    "overfit_batches=1": ({"overfit_batches": 1}, "repeating its first batches"),
    "limit_val_batches=0.5": ({"limit_val_batches": 0.5}, "--data.split.val_fraction"),
    "limit_val_batches=2": ({"limit_val_batches": 2}, "may hold no abnormal one"),
    "fast_dev_run": ({"fast_dev_run": True}, "--model.max_iterations 2"),
    "max_steps=3": ({"max_steps": 3}, "leave it at -1"),
    "barebones": ({"barebones": True}, "choose and keep SAGAN's best weights"),
}

CALLBACKS = {
    "BatchSizeFinder": (BatchSizeFinder, "--data.batch_size"),
    "LearningRateFinder": (LearningRateFinder, "optimizer_g and optimizer_d"),
    "GradientAccumulationScheduler": (
        lambda: GradientAccumulationScheduler({0: 2}),
        "manual optimization",
    ),
    "StochasticWeightAveraging": (
        lambda: StochasticWeightAveraging(swa_lrs=1e-2),
        "--model.generator_ema",
    ),
}


def trainer(**settings) -> L.Trainer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's notes on fast_dev_run and limits
        return L.Trainer(**{**QUIET, **settings})


def tiny_data() -> SyntheticCXRDataModule:
    return SyntheticCXRDataModule(
        num_known_normal=16, num_test=8, image_size=32, batch_size=4, split={"val_fraction": 0.25}
    )


@pytest.mark.parametrize(("settings", "says"), REFUSED.values(), ids=REFUSED)
def test_each_trainer_setting_a_fit_cannot_follow_is_refused_by_name(settings, says):
    name, value = next(iter(settings.items()))
    with pytest.raises(InputError) as refused:
        check_trainer_for_fit(trainer(**settings), 50)
    message = str(refused.value)
    assert message.startswith(f"Trainer({name}={value!r}) (--trainer.{name})"), message
    assert says in message


@pytest.mark.parametrize(("make", "says"), CALLBACKS.values(), ids=CALLBACKS)
def test_each_tuning_callback_a_fit_cannot_follow_is_refused_by_name(make, says):
    with pytest.raises(InputError) as refused:
        check_trainer_for_fit(trainer(callbacks=[make()]), 50)
    message = str(refused.value)
    assert message.startswith("the callback "), message
    assert "(--trainer.callbacks)" in message and says in message


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"max_epochs": -1},
        {"max_epochs": 1},
        {"min_epochs": 1},
        {"limit_train_batches": 1.0},
        {"limit_val_batches": 1.0},
        {"limit_val_batches": 0},
        {"callbacks": [Timer(duration="00:00:10:00")]},
    ],
    ids=[
        "defaults",
        "max_epochs=-1",
        "max_epochs=1",
        "min_epochs=1",
        "limit_train_batches=1.0",
        "limit_val_batches=1.0",
        "limit_val_batches=0",
        "Timer",
    ],
)
def test_settings_a_fit_can_follow_pass(settings):
    check_trainer_for_fit(trainer(**settings), 50)


def test_a_plain_trainer_refuses_min_steps_before_training():
    """min_steps made fit spin forever after max_iterations: no batch ever counted a step."""
    model = tiny_sagan(max_iterations=2)
    with pytest.raises(InputError, match=r"min_steps=5\)"):
        trainer(min_steps=5, max_epochs=-1).fit(model, datamodule=tiny_data())
    assert model.iteration == 0


def test_a_batch_size_search_is_refused_before_its_trial_runs(tmp_path):
    """Its trial fits restored their checkpoint and the run then trained 0 iterations, and
    Engine.fit returned without a word."""
    model = tiny_sagan(max_iterations=2)
    run = Engine(
        default_root_dir=tmp_path,
        callbacks=[BatchSizeFinder()],
        val_check_interval=2,
        val_samples=0,
        **QUIET,
    )
    with pytest.raises(InputError, match=r"the callback BatchSizeFinder .*--data\.batch_size"):
        run.fit(model, tiny_data())
    assert model.iteration == 0
    assert not list(tmp_path.rglob("*.ckpt"))


def test_no_validation_warns_at_the_start_of_fit(tmp_path):
    model = tiny_sagan(max_iterations=2)
    run = Engine(default_root_dir=tmp_path, limit_val_batches=0, val_samples=0, **QUIET)
    with pytest.warns(UserWarning, match=r"limit_val_batches=0\) .* runs no validation: no chec"):
        run.fit(model, tiny_data())
    assert model.iteration == 2


CLI = ["fit", *TINY_MODEL_ARGS, *TINY_DATA_ARGS, "--model.max_iterations=4"]
CLI += ["--trainer.accelerator=cpu", "--val_samples=0"]


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--trainer.min_steps=20"], "error: Trainer(min_steps=20) (--trainer.min_steps) counts"),
        (["--trainer.barebones=true"], "error: Trainer(barebones=True) (--trainer.barebones)"),
        (
            ["--trainer.callbacks+=lightning.pytorch.callbacks.BatchSizeFinder"],
            "error: the callback BatchSizeFinder (--trainer.callbacks) runs trial fits",
        ),
    ],
    ids=["min_steps", "barebones", "batch_size_finder"],
)
def test_the_command_line_refuses_them_in_one_line_before_the_data(tmp_path, capsys, flags, line):
    with pytest.raises(SystemExit) as info:
        main([*CLI, f"--trainer.default_root_dir={tmp_path}", *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert line in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.skipif(importlib.util.find_spec("rich") is not None, reason="rich is installed")
def test_a_callback_whose_package_is_missing_is_one_line(tmp_path, capsys):
    flags = ["--trainer.callbacks+=lightning.pytorch.callbacks.RichProgressBar"]
    with pytest.raises(SystemExit) as info:
        main([*CLI, f"--trainer.default_root_dir={tmp_path}", *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert (
        "error: --trainer.callbacks lightning.pytorch.callbacks.RichProgressBar needs the rich"
        in err
    )
    assert "pip install rich" in err and "Traceback" not in err


def test_the_default_callbacks_survive_pickling_as_ddp_spawn_needs():
    """ddp_spawn pickles the callbacks into each process: SplitRecorder's WeakSet could not."""
    for callback in default_callbacks():
        copy = pickle.loads(pickle.dumps(callback))
        assert type(copy) is type(callback)


def test_a_misspelt_monitor_is_one_error_naming_the_metric_meant(tmp_path):
    """EarlyStopping ended the run with a RuntimeError traceback at the first validation."""
    model = tiny_sagan(max_iterations=4)
    stop = EarlyStopping(monitor="val/AUROCC", mode="max")
    run = Engine(
        default_root_dir=tmp_path, callbacks=[stop], val_check_interval=2, val_samples=0, **QUIET
    )
    with pytest.raises(InputError) as refused:
        run.fit(model, tiny_data())
    assert str(refused.value).startswith(
        "the callback EarlyStopping (--trainer.callbacks) monitors 'val/AUROCC', which the "
        "validation does not log (did you mean 'val/AUROC'?)"
    )


def test_a_monitor_the_validation_logs_is_followed(tmp_path):
    model = tiny_sagan(max_iterations=4)
    stop = EarlyStopping(monitor="val/AUROC", mode="max", patience=100)
    run = Engine(
        default_root_dir=tmp_path,
        callbacks=[stop],
        val_check_interval=2,
        val_samples=0,
        test_after_fit=False,
        **QUIET,
    )
    run.fit(model, tiny_data())
    assert model.iteration == 4 and stop.best_score is not None


def test_the_test_after_fit_sets_up_data_a_spawned_fit_set_up_elsewhere(tmp_path):
    """With ddp_spawn the data are set up in the spawned processes only: the main process's
    DataModule had no test set yet, and the test after fit was skipped without a word."""
    model = tiny_sagan(max_iterations=2)
    run = Engine(default_root_dir=tmp_path, val_check_interval=2, val_samples=0, **QUIET)
    run.fit(
        model,
        tiny_data(),
    )
    fresh = tiny_data()
    assert fresh.test is None
    results = run.test_kept_checkpoint(model, fresh)
    assert results and 0.0 <= results[0]["test/AUROC"] <= 1.0
