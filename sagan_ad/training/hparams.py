"""How a model records its components in its hyper-parameters, as plain values.

A checkpoint must rebuild the model that wrote it, and `sagan_ad.load_checkpoint` refuses
pickled objects, so each component (network, loss, scorer, evaluator) is recorded as the
``{"class_path": ..., "init_args": {...}}`` mapping the Lightning CLI writes in YAML, and settings
dataclasses as their fields. Lightning's own instantiator (the one the CLI uses, allowed by
``load_from_checkpoint``) rebuilds them from that.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from typing import Any

from sagan_ad.settings import INSTANTIATOR
from sagan_ad.training.checkpoint_files import model_class_name

_PLAIN = (bool, int, float, str, type(None))
_warned: dict[type, set[str]] = {}


def is_plain(value: Any) -> bool:
    """Whether ``value`` is made of numbers, strings, None, lists and string-keyed dicts only.

    Examples:
        >>> is_plain({"a": [1, 2.0, None]}), is_plain({"a": object()})
        (True, False)
    """
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


def component_config(component: Any) -> dict[str, Any] | None:
    """The plain record of ``component``: a dataclass's fields, or ``{"class_path",
    "init_args"}`` read from the attributes named like its constructor's arguments; None when an
    argument is not kept under its name or is not a plain value (it cannot be rebuilt).

    Examples:
        >>> from sagan_ad.evaluation.scorer import Scorer
        >>> component_config(Scorer(top_fraction=0.1))["init_args"]["top_fraction"]
        0.1
        >>> class Hidden:
        ...     def __init__(self, size: int = 3) -> None:
        ...         self._size = size
        >>> component_config(Hidden()) is None
        True
    """
    if dataclasses.is_dataclass(component) and not isinstance(component, type):
        fields = dataclasses.asdict(component)
        return fields if is_plain(fields) else None
    init_args: dict[str, Any] = {}
    for name, parameter in inspect.signature(type(component).__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        value = getattr(component, name, inspect.Parameter.empty)
        if value is inspect.Parameter.empty or not is_plain(value):
            return None
        init_args[name] = list(value) if isinstance(value, tuple) else value
    return {"class_path": model_class_name(type(component)), "init_args": init_args}


def record_components(module: Any, names: tuple[str, ...]) -> None:
    """Record ``module``'s components ``names`` in its hyper-parameters as plain settings (those
    that `component_config` can read), so a checkpoint rebuilds the same model."""
    for name in names:
        component = getattr(module, name)
        config = component_config(component)
        if config is not None:
            module.hparams[name] = config
        elif name not in _warned.setdefault(type(component), set()):
            _warned[type(component)].add(name)
            warnings.warn(
                f"the model's {name} ({type(component).__qualname__}) cannot be recorded in its "
                "checkpoints: keep each constructor argument as an attribute of the same name, "
                "with a plain value; until then, load its checkpoints into a model built with "
                f"the same {name} (Trainer ckpt_path=, or the config that trained it)",
                stacklevel=2,
            )
    module.hparams["_instantiator"] = INSTANTIATOR
    # Loggers get `hparams_initial`, Lightning's copy from `save_hyperparameters`, which was taken
    # before the components were recorded.
    initial = getattr(module, "_hparams_initial", None)
    if initial is not None:
        initial.update({name: module.hparams[name] for name in names if name in module.hparams})
