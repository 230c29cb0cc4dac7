"""One-line description of the machine a benchmark ran on, shared by the benchmark scripts."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path


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
    import torch

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
