"""Old import paths of sagan_ad keep working.

v0.1 kept every module flat in ``sagan_ad/``; they now live in the packages `sagan_ad.networks`,
`sagan_ad.evaluation` and `sagan_ad.training`. Importing a module by its old path (``import
sagan_ad.generator``, ``from sagan_ad.checkpointing import load_checkpoint``, a YAML
``class_path: sagan_ad.callbacks.IterationProgressBar``) gives the module at its new place, with a
`FutureWarning` that names the new path. The names re-exported by ``sagan_ad`` itself never
moved.

Examples:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     from sagan_ad.generator import Generator
    >>> Generator.__module__
    'sagan_ad.networks.generator'
    >>> "sagan_ad.networks.generator" in str(caught[0].message)
    True
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED_MODULES: dict[str, str] = {
    **{
        f"sagan_ad.{name}": f"sagan_ad.networks.{name}"
        for name in ("generator", "critic", "layers", "cpu_kernels")
    },
    **{
        f"sagan_ad.{name}": f"sagan_ad.evaluation.{name}"
        for name in (
            "metrics",
            "localization",
            "thresholds",
            "scoring",
            "audit",
            "visualization",
            "inputs",
        )
    },
    **{
        f"sagan_ad.{name}": f"sagan_ad.training.{name}"
        for name in (
            "losses",
            "callbacks",
            "checkpointing",
            "checkpoint_files",
            "resume",
            "tracking",
            "runs",
            "run_config",
            "outputs",
        )
    },
}
"""v0.1 module path -> the module's path now (``sagan_ad.evaluation`` kept its name: it is the
package that re-exports the old module's names)."""


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves a v0.1 module path to the module at its new place."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED_MODULES[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there (or the name from sagan_ad)",
            FutureWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The module is already executed at its new path; the import system has just labelled
        # it with the old path's spec, which would mislead reloads and tools: put its own back.
        module.__spec__ = module.__spec__.loader_state


def install_moved_module_finder() -> None:
    """Make the v0.1 module paths importable (done once by ``import sagan_ad``)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
