"""Trainer settings and callbacks that a SAGAN fit cannot follow, refused before anything trains.

A SAGAN run is ``max_iterations`` iterations of one or two optimizer steps each (manual
optimization, two optimizers) over one endless stream of training batches, in which batch ``i``
depends only on the seed and ``i``. Lightning settings that count its optimizer steps, end or
repeat epochs, cut the validation that chooses the checkpoint, or tune by trial runs would
otherwise stop a run early, repeat batches without a word, wait for steps that never come, or
leave it untrained. Each is refused with the setting's name and what to use instead;
`check_trainer_for_fit` runs in every fit (`sagan_ad.SAGAN.setup`), and `sagan_ad.Engine` (the
command line's run path) calls it before the data are set up.
"""

from __future__ import annotations

import difflib
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import (
    BatchSizeFinder,
    EarlyStopping,
    GradientAccumulationScheduler,
    LearningRateFinder,
    ModelCheckpoint,
    StochasticWeightAveraging,
)

from sagan_ad.errors import InputError

_CALLBACKS: dict[type, str] = {
    BatchSizeFinder: (
        "runs trial fits of Lightning's steps and then restores their checkpoint, after which "
        "the SAGAN run trains nothing: set the batch size yourself (--data.batch_size)"
    ),
    LearningRateFinder: (
        "searches one learning rate, and SAGAN has two optimizers (generator and critic): set "
        "their lr in the model's optimizer_g and optimizer_d"
    ),
    GradientAccumulationScheduler: (
        "cannot accumulate the gradients of SAGAN's two optimizers, which it steps itself "
        "(manual optimization): use a larger --data.batch_size"
    ),
    StochasticWeightAveraging: (
        "works with one optimizer, and SAGAN has two: the model's generator_ema "
        "(--model.generator_ema 0.99) averages the generator's weights"
    ),
}


def check_trainer_for_fit(trainer: L.Trainer, max_iterations: int) -> None:
    """Refuse the ``trainer`` settings and callbacks a SAGAN fit of ``max_iterations``
    iterations cannot follow, naming the setting and what to use instead.

    Raises:
        sagan_ad.errors.InputError: the first such setting.

    Examples:
        >>> check_trainer_for_fit(L.Trainer(max_epochs=-1, logger=False), 100)
        >>> check_trainer_for_fit(L.Trainer(min_steps=20, logger=False), 100)
        Traceback (most recent call last):
        ...
        sagan_ad.errors.InputError: Trainer(min_steps=20) (--trainer.min_steps) counts ...
    """
    problem = _problem(trainer, max_iterations)
    if problem is not None:
        raise InputError(problem)


def check_monitors(trainer: L.Trainer) -> None:
    """Refuse, when a validation of a fit has logged its metrics, an ``EarlyStopping`` or
    ``ModelCheckpoint`` whose ``monitor`` names none of them, with the name meant: the callback
    itself would end the run with a traceback, or with its list of every metric. The metrics a
    validation logs depend on the data (subgroups, matched subsets), so this waits for them.

    Raises:
        sagan_ad.errors.InputError: naming the callback, its monitor and the metric meant.
    """
    logged = sorted(trainer.callback_metrics)
    for callback in trainer.callbacks:
        monitor = getattr(callback, "monitor", None)
        if not isinstance(callback, EarlyStopping | ModelCheckpoint) or not monitor:
            continue
        if monitor in logged:
            continue
        meant = difflib.get_close_matches(monitor, logged, n=1)
        hint = f" (did you mean {meant[0]!r}?)" if meant else ""
        raise InputError(
            f"the callback {type(callback).__name__} (--trainer.callbacks) monitors {monitor!r}, "
            f"which the validation does not log{hint}: monitor one it logs, such as val/AUROC "
            "or val/AP (the run's metrics.csv lists them all)"
        )


def _problem(trainer: L.Trainer, max_iterations: int) -> str | None:
    length = (
        f"set the run's length with the model's max_iterations (now {max_iterations}; "
        "--model.max_iterations)"
    )
    repeat = (
        "the training batches are one endless stream in which batch i depends only on the seed "
        "and i; a limit would end the epoch and start the stream over, repeating its first "
        f"batches: leave it out and {length}"
    )
    if trainer.fast_dev_run:
        return (
            f"{_named('fast_dev_run', trainer.fast_dev_run)} runs a few of Lightning's optimizer "
            "steps (one or two per SAGAN iteration) and keeps no checkpoint: leave it out, and for "
            f"a quick run {length}, for example --model.max_iterations 2"
        )
    if trainer.overfit_batches:
        return f"{_named('overfit_batches', trainer.overfit_batches)}: {repeat}"
    if trainer.max_steps != -1:
        # Lightning would stop after that many optimizer steps, part-way through the run
        # that max_iterations describes: a silent early stop.
        return (
            f"{_named('max_steps', trainer.max_steps)} counts Lightning's optimizer steps, one or "
            f"two per SAGAN iteration: leave it at -1 and {length}"
        )
    if trainer.fit_loop.min_steps:
        return (
            f"{_named('min_steps', trainer.fit_loop.min_steps)} counts Lightning's optimizer "
            "steps, and training ends after max_iterations whatever it says, so Lightning would "
            f"wait for steps that never come: leave it out and {length}"
        )
    if (trainer.fit_loop.min_epochs or 0) > 1:
        return (
            f"{_named('min_epochs', trainer.fit_loop.min_epochs)}: the training batches are one "
            f"endless epoch, so a second never starts: leave it out and {length}"
        )
    if trainer.max_epochs == 0:
        return f"{_named('max_epochs', 0)} trains nothing: leave it at -1 and {length}"
    if not _whole(trainer.limit_train_batches):
        return f"{_named('limit_train_batches', trainer.limit_train_batches)}: {repeat}"
    limit_val = trainer.limit_val_batches
    if limit_val != 0 and not _whole(limit_val):
        return (
            f"{_named('limit_val_batches', limit_val)}: validation chooses the checkpoint and "
            "the threshold on normal and abnormal images, and a part of it (normals come first) "
            "may hold no abnormal one: make validation smaller with --data.split.val_fraction, "
            "or pass 0 to train without validation"
        )
    if trainer.barebones:
        return barebones_refusal()
    for callback in trainer.callbacks:
        for kind, why in _CALLBACKS.items():
            if isinstance(callback, kind):
                return f"the callback {type(callback).__name__} (--trainer.callbacks) {why}"
    return None


def barebones_refusal() -> str:
    """Why ``Trainer(barebones=True)`` is refused: it turns off what a SAGAN run relies on."""
    return (
        f"{_named('barebones', True)} turns off the logging and the checkpoints that choose and "
        "keep SAGAN's best weights: leave it out (--trainer.enable_progress_bar false and "
        "--trainer.enable_model_summary false make a run quiet)"
    )


def _named(setting: str, value: Any) -> str:
    return f"Trainer({setting}={value!r}) (--trainer.{setting})"


def _whole(limit: Any) -> bool:
    """Whether a ``limit_*_batches`` value means all the batches (a float 1.0; an integer 1
    means one batch)."""
    return isinstance(limit, float) and limit == 1.0
