"""What the benchmark scripts share: the machine description and a training-only Trainer."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

import lightning as L
import torch

from sagan_ad.training.optimizers import PAPER_BETAS


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` where there is one, else the platform's guess."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def describe(gpu: str | None = None, packages: tuple[str, ...] = ("torch", "lightning")) -> str:
    """CPU, logical cores, torch threads, the GPU if given, Python and package versions."""
    where = f"{cpu_name()}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads"
    if gpu:
        where = f"{gpu}; host {where}"
    versions = []
    for package in packages:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} absent")
    return f"{where}; {platform.system()}, Python {platform.python_version()}, " + ", ".join(
        versions
    )


def adam(lr: float) -> functools.partial:
    """An optimizer factory like `sagan_ad.paper_adam` (betas 0.5, 0.999) with another lr."""
    return functools.partial(torch.optim.Adam, lr=lr, betas=PAPER_BETAS)


def training_only_trainer(accelerator: str = "cpu", **kwargs: Any) -> L.Trainer:
    """A one-device Trainer that only trains: no logger, checkpoints, validation or progress bar.

    The progress bar and loggers read the logged losses back from the device, which would add
    host-device syncs to timed steps; ``kwargs`` override or add Trainer arguments.
    """
    options: dict[str, Any] = {
        "accelerator": accelerator,
        "devices": 1,
        "max_epochs": -1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
    }
    return L.Trainer(**{**options, **kwargs})
