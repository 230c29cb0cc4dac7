"""Whether the packages of the configured loggers and callbacks are installed, checked before the
run: a missing one is one sentence naming what to install, not jsonargparse's union error."""

from __future__ import annotations

import importlib.util
from typing import Any

from sagan_ad.errors import MissingExtraError

LOGGER_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "TensorBoardLogger": (("tensorboard", "tensorboardX"), "pip install 'sagan-ad[tensorboard]'"),
    "WandbLogger": (("wandb",), "pip install 'sagan-ad[wandb]'"),
    "MLFlowLogger": (("mlflow",), "pip install mlflow"),
    "CometLogger": (("comet_ml",), "pip install comet-ml"),
    "NeptuneLogger": (("neptune",), "pip install neptune"),
}
"""Lightning logger class -> (the packages it can use, any one will do; how to install one)."""


CALLBACK_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "RichProgressBar": (("rich",), "pip install rich"),
    "RichModelSummary": (("rich",), "pip install rich"),
}
"""Lightning callback class -> (the packages it needs, how to install one)."""


def check_logger_packages(logger: Any) -> None:
    """Refuse a ``trainer.logger`` setting (a ``class_path`` mapping or namespace, a list of
    them, or a bool) that names a Lightning logger whose package is not installed.

    Examples:
        >>> check_logger_packages({"class_path": "lightning.pytorch.loggers.CSVLogger"})
        >>> check_logger_packages({"class_path": "lightning.pytorch.loggers.NeptuneLogger"})
        Traceback (most recent call last):
        ...
        sagan_ad.errors.MissingExtraError: --trainer.logger ...
    """
    _check_packages(
        logger,
        "--trainer.logger",
        LOGGER_PACKAGES,
        "or choose another logger (the configs' default is lightning.pytorch.loggers.CSVLogger)",
    )


def check_callback_packages(callbacks: Any) -> None:
    """Refuse a ``trainer.callbacks`` setting that names a Lightning callback whose package is
    not installed (``RichProgressBar`` without ``rich``).

    Examples:
        >>> check_callback_packages([{"class_path": "lightning.pytorch.callbacks.Timer"}])
    """
    _check_packages(
        callbacks,
        "--trainer.callbacks",
        CALLBACK_PACKAGES,
        "or leave it out (sagan-ad shows its own progress bar)",
    )


def _check_packages(
    entries: Any, option: str, table: dict[str, tuple[tuple[str, ...], str]], otherwise: str
) -> None:
    for entry in entries if isinstance(entries, list | tuple) else [entries]:
        class_path = _get(entry, "class_path")
        if not isinstance(class_path, str):
            continue
        known = table.get(class_path.rpartition(".")[2])
        if known is None or not class_path.startswith(("lightning.", "pytorch_lightning.")):
            continue
        packages, install = known
        if not any(importlib.util.find_spec(package) for package in packages):
            raise MissingExtraError(
                f"{option} {class_path} needs the {' or '.join(packages)} package, which is not "
                f"installed: {install}, {otherwise}"
            )


def _get(entry: Any, key: str) -> Any:
    if isinstance(entry, dict):
        return entry.get(key)
    return getattr(entry, key, None)
