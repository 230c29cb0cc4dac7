"""Whether the packages of the configured loggers are installed, checked before the run: a
missing one is one sentence naming the extra to install, not jsonargparse's union error."""

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
    for entry in logger if isinstance(logger, list | tuple) else [logger]:
        class_path = _get(entry, "class_path")
        if not isinstance(class_path, str):
            continue
        known = LOGGER_PACKAGES.get(class_path.rpartition(".")[2])
        if known is None or not class_path.startswith(("lightning.", "pytorch_lightning.")):
            continue
        packages, install = known
        if not any(importlib.util.find_spec(package) for package in packages):
            raise MissingExtraError(
                f"--trainer.logger {class_path} needs the {' or '.join(packages)} package, which "
                f"is not installed: {install}, or choose another logger (the configs' default is "
                "lightning.pytorch.loggers.CSVLogger)"
            )


def _get(entry: Any, key: str) -> Any:
    if isinstance(entry, dict):
        return entry.get(key)
    return getattr(entry, key, None)
