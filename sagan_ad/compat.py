"""What v0.1 users wrote keeps working: import paths, flat settings in configs, command-line
flags and checkpoints.

v0.1 kept every module flat in ``sagan_ad/``; they now live in the packages `sagan_ad.networks`,
`sagan_ad.evaluation` and `sagan_ad.training`. Importing a module by its old path (``import
sagan_ad.generator``, ``from sagan_ad.checkpointing import load_checkpoint``, a YAML
``class_path: sagan_ad.callbacks.IterationProgressBar``) gives the module at its new place, with a
`FutureWarning` that names the new path. The names re-exported by ``sagan_ad`` itself never
moved.

v0.1's `sagan_ad.SAGAN` took 33 flat settings; they now belong to its components
(`FLAT_SETTINGS`). Configs and flags that use them are read as components with a
`FutureWarning` (`migrate_arguments`), and checkpoints that record them load as the same model
(`upgrade_checkpoint`, `checkpoint_source`).

Examples:
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", FutureWarning)
    ...     from sagan_ad.generator import Generator
    >>> Generator.__module__
    'sagan_ad.networks.generator'
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import io
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from sagan_ad.errors import InputError
from sagan_ad.settings import INSTANTIATOR

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


_GENERATOR = (
    "in_channels",
    "image_size",
    "base_channels",
    "num_res_blocks",
    "patch_grid",
    "position_encoding",
    "attention_gates",
    "multi_level_fusion",
    "residual_keep_prob",
)
FLAT_SETTINGS: dict[str, tuple[str, str]] = {
    **{name: ("generator", name) for name in _GENERATOR},
    "critic_base_channels": ("critic", "base_channels"),
    "critic_downsamples": ("critic", "num_downsamples"),
    "lambda_gp": ("loss", "lambda_gp"),
    "lambda_identity": ("loss", "lambda_identity"),
    "lambda_restoration": ("loss", "lambda_restoration"),
    "map_sigma": ("scorer", "map_sigma"),
    "score_top_fraction": ("scorer", "top_fraction"),
    "inference": ("scorer", "inference"),
    "threshold_policy": ("evaluator", "threshold_policy"),
    "threshold_percentile": ("evaluator", "threshold_percentile"),
    "bootstrap_resamples": ("evaluator", "bootstrap_resamples"),
    "shortcut_audit": ("evaluator", "shortcut_audit"),
    "subgroup_columns": ("evaluator", "subgroup_columns"),
    "channels_last": ("performance", "channels_last"),
    "compile": ("performance", "compile"),
    "compile_options": ("performance", "compile_options"),
    "divergence_check_interval": ("performance", "divergence_check_interval"),
}
"""Each v0.1 setting of `sagan_ad.SAGAN` that moved into a component: ``(component, argument)``.
``seed`` stays and also seeds the evaluator's bootstrap, as it did."""

_COMPONENT_CLASSES = {
    "generator": "sagan_ad.Generator",
    "critic": "sagan_ad.Critic",
    "loss": "sagan_ad.SAGANLoss",
    "scorer": "sagan_ad.Scorer",
    "evaluator": "sagan_ad.Evaluator",
}


def is_flat(settings: dict[str, Any]) -> bool:
    """Whether model settings use v0.1's flat names (``image_size``, ``lambda_gp``, ...).

    Examples:
        >>> is_flat({"image_size": 32, "max_iterations": 10}), is_flat({"max_iterations": 10})
        (True, False)
    """
    return any(key in FLAT_SETTINGS for key in settings)


def migrate_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """v0.1's flat `sagan_ad.SAGAN` settings (a checkpoint's hyper-parameters, a config's
    ``model.init_args``) as the component settings that mean the same model.

    Components get a ``class_path`` mapping (settings dataclasses their fields); the critic
    keeps v0.1's rule that its width and channels follow the generator's unless set. Settings
    that did not move are kept as they are.

    Examples:
        >>> new = migrate_settings({"image_size": 32, "critic_downsamples": 5, "lambda_gp": 5.0,
        ...                         "score_top_fraction": 0.1, "max_iterations": 10})
        >>> new["generator"]["init_args"], new["critic"]["init_args"]
        ({'image_size': 32}, {'num_downsamples': 5})
        >>> new["scorer"], new["max_iterations"]
        ({'class_path': 'sagan_ad.Scorer', 'init_args': {'top_fraction': 0.1}}, 10)
        >>> migrate_settings({"map_sigma": 1.0, "scorer": {"init_args": {"top_fraction": 0.1}}})
        Traceback (most recent call last):
        ...
        sagan_ad.errors.InputError: model.map_sigma (a v0.1 setting) and model.scorer are both ...
    """
    kept = {k: v for k, v in settings.items() if k not in FLAT_SETTINGS}
    parts: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        if key in FLAT_SETTINGS:
            component, argument = FLAT_SETTINGS[key]
            if kept.get(component) is not None:
                # Either would silently replace the other.
                raise InputError(
                    f"model.{key} (a v0.1 setting) and model.{component} are both set: write it "
                    f"as model.{component}.{argument}"
                )
            parts.setdefault(component, {})[argument] = value
    critic = parts.get("critic")
    if critic is not None:
        generator = parts.get("generator", {})
        if critic.get("base_channels") is None:
            critic.pop("base_channels", None)
            if "base_channels" in generator:
                critic["base_channels"] = generator["base_channels"]
        if "in_channels" in generator:
            critic.setdefault("in_channels", generator["in_channels"])
    if "seed" in settings:
        parts.setdefault("evaluator", {}).setdefault("seed", settings["seed"])
    for component, arguments in parts.items():
        if component in _COMPONENT_CLASSES:
            kept[component] = {"class_path": _COMPONENT_CLASSES[component], "init_args": arguments}
        else:
            kept[component] = arguments
    return kept


def migration_hint(settings: dict[str, Any]) -> str:
    """One line per moved setting of ``settings``: where it lives now.

    Examples:
        >>> migration_hint({"lambda_gp": 5.0})
        'model.lambda_gp -> model.loss.lambda_gp'
    """
    return "; ".join(
        f"model.{key} -> model.{'.'.join(FLAT_SETTINGS[key])}"
        for key in settings
        if key in FLAT_SETTINGS
    )


def upgrade_checkpoint(checkpoint: dict[str, Any]) -> bool:
    """Rewrite a v0.1 checkpoint's flat hyper-parameters (in place) as component settings that
    rebuild the same model; True when anything changed.

    Examples:
        >>> checkpoint = {"hyper_parameters": {"image_size": 32, "seed": 3}}
        >>> upgrade_checkpoint(checkpoint), checkpoint["hyper_parameters"]["evaluator"]
        (True, {'class_path': 'sagan_ad.Evaluator', 'init_args': {'seed': 3}})
        >>> upgrade_checkpoint(checkpoint)
        False
    """
    recorded = checkpoint.get("hyper_parameters")
    if not isinstance(recorded, dict):
        return False
    moved = _move_normalization(checkpoint, recorded)
    if not is_flat(recorded):
        return moved
    if any(recorded.get(component) is not None for component in _COMPONENT_CLASSES):
        # Written with components: flat keys beside them were added by hand, and are refused
        # as settings the model does not take rather than read as v0.1's.
        return moved
    upgraded = migrate_settings(recorded)
    # Only Lightning's own instantiator turns the class_path mappings back into components.
    upgraded["_instantiator"] = INSTANTIATOR
    checkpoint["hyper_parameters"] = upgraded
    return True


def _move_normalization(checkpoint: dict[str, Any], recorded: dict[str, Any]) -> bool:
    """Move the training data's normalisation, which checkpoints written before 2026-12-08 kept
    among the model's settings (v0.1: ``normalization``; then ``scorer.init_args``), into the
    model's recorded pre-processing (`sagan_ad.preprocessing.PREPROCESSING_KEY`)."""
    from sagan_ad.preprocessing import PREPROCESSING_KEY

    scorer = recorded.get("scorer")
    arguments = scorer.get("init_args") if isinstance(scorer, dict) else None
    found = [
        settings.pop("normalization")
        for settings in (recorded, arguments)
        if isinstance(settings, dict) and "normalization" in settings
    ]
    if not found:
        return False
    if PREPROCESSING_KEY not in checkpoint:
        checkpoint[PREPROCESSING_KEY] = {"normalization": found[-1] or "none", "decode": None}
    return True


def migrate_arguments(argv: list[str]) -> list[str]:
    """Command-line arguments with v0.1's flat model settings spelled as components, each with
    a `FutureWarning` that says what to write instead.

    ``--model.image_size=32`` (or ``--model.init_args.image_size 32``) becomes
    ``--model.generator.image_size=32``; a ``--config`` file whose ``model`` section is flat is
    passed on as the migrated YAML text (the file itself is left as it is).

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     migrate_arguments(["fit", "--model.lambda_gp=5", "--model.init_args.seed", "1"])
        ['fit', '--model.loss.lambda_gp=5', '--model.init_args.seed', '1']
    """
    out = list(argv)
    for i, arg in enumerate(out):
        flag, equals, value = arg.partition("=")
        if flag in ("--config", "-c") and equals:
            out[i] = f"{flag}={_migrated_config(value)}"
        elif arg in ("--config", "-c") and i + 1 < len(out):
            out[i + 1] = _migrated_config(out[i + 1])
        elif flag.startswith("--model."):
            name = flag.removeprefix("--model.").removeprefix("init_args.")
            if name in FLAT_SETTINGS:
                new = f"--model.{'.'.join(FLAT_SETTINGS[name])}"
                warnings.warn(
                    f"{flag} is a v0.1 setting: write {new} (see docs/concepts.md)",
                    FutureWarning,
                    stacklevel=2,
                )
                out[i] = f"{new}{equals}{value}"
    return out


def _migrated_config(value: str) -> str:
    """A config file's path, or its migrated YAML text when its model settings are flat."""
    path = Path(value)
    if not path.is_file():
        return value
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return value  # the CLI's own reading reports it
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        return value
    nested = isinstance(model.get("init_args"), dict)
    settings = model["init_args"] if nested else model
    if not is_flat(settings):
        return value
    warnings.warn(
        f"{value}: its model settings are v0.1's flat ones, read as components; write "
        f"{migration_hint(settings)} (see docs/concepts.md)",
        FutureWarning,
        stacklevel=3,
    )
    migrated = migrate_settings(settings)
    config["model"] = {**model, "init_args": migrated} if nested else migrated
    return yaml.safe_dump(config, sort_keys=False)


def checkpoint_source(path: Any) -> Any:
    """What to hand Lightning's ``load_from_checkpoint`` for ``path``: the path itself, or an
    in-memory copy whose v0.1 settings are upgraded (`upgrade_checkpoint`). File objects and
    files that do not load are passed on as they are, for Lightning to report.

    Examples:
        >>> checkpoint_source("no-such.ckpt")
        'no-such.ckpt'
    """
    if not isinstance(path, (str, Path)):
        return path
    # Here rather than at the top: `import sagan_ad` installs this module's finder, and must not
    # pay for torch.
    import torch

    try:
        # Memory-mapped: the tensors are not read, only the settings are looked at.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return path
    if not isinstance(checkpoint, dict) or not upgrade_checkpoint(checkpoint):
        return path
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return buffer
