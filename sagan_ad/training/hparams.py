"""How a model records its components in its hyper-parameters, as plain values.

A checkpoint must rebuild the model that wrote it, and `sagan_ad.load_checkpoint` refuses
pickled objects, so each component (network, synthesizer, loss, scorer, evaluator) is recorded
as the ``{"class_path": ..., "init_args": {...}}`` mapping the Lightning CLI writes in YAML,
settings dataclasses as their fields, and optimizer and scheduler factories as the dotted name of
a function or the ``class_path`` mapping of a class with its settings. Lightning's own
instantiator (the one the CLI uses, allowed by ``load_from_checkpoint``) rebuilds them from that.

What cannot be recorded (a lambda, a component that does not keep its arguments) is named in the
checkpoint (`UNRECORDED_KEY`), and loading the checkpoint into a model built without it warns
(`warn_unrestored`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import sys
import typing
import warnings
from typing import Any

from sagan_ad.settings import INSTANTIATOR
from sagan_ad.training.checkpoint_files import model_class_name

_PLAIN = (bool, int, float, str, type(None))
_warned: dict[Any, set[str]] = {}

UNRECORDED_KEY = "sagan_ad_unrecorded"
"""Checkpoint key: ``{setting: what it was}`` for each constructor argument the model could not
record in its hyper-parameters."""


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


def _listed(value: Any) -> Any:
    """``value`` with its tuples as lists, at every depth (YAML and jsonargparse read lists)."""
    if isinstance(value, list | tuple):
        return [_listed(v) for v in value]
    if isinstance(value, dict):
        return {k: _listed(v) for k, v in value.items()}
    return value


def factory_config(factory: Any) -> str | dict[str, Any] | None:
    """The plain record of an optimizer or scheduler factory: the dotted name of a module-level
    function, or ``{"class_path", "init_args"}`` of a class or a `functools.partial` of one with
    plain settings (what jsonargparse builds from YAML); None when it cannot be rebuilt from a
    record (a lambda, a local function, a function without its return annotation, a partial
    of a function).

    Examples:
        >>> import torch
        >>> from sagan_ad.training.optimizers import paper_adam
        >>> factory_config(paper_adam)
        'sagan_ad.paper_adam'
        >>> factory_config(functools.partial(torch.optim.SGD, lr=0.1))
        {'class_path': 'torch.optim.SGD', 'init_args': {'lr': 0.1}}
        >>> factory_config(lambda params: torch.optim.SGD(params, lr=0.1)) is None
        True
    """
    if isinstance(factory, functools.partial):
        func, args = factory.func, factory.args
        # jsonargparse's factory for a class_path: partial(<its wrapper>, <instantiator>, cls).
        if (
            len(args) == 2
            and isinstance(args[1], type)
            and getattr(func, "__module__", "").startswith("jsonargparse")
        ):
            func, args = args[1], ()
        keywords = _listed(dict(factory.keywords))
        if args or not isinstance(func, type) or not is_plain(keywords):
            return None
        return {"class_path": import_path(func), "init_args": keywords}
    if isinstance(factory, type):
        return {"class_path": import_path(factory), "init_args": {}}
    if not inspect.isfunction(factory) or not _returns_a_class(factory):
        return None
    name = import_path(factory)
    module, _, attribute = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError):
        return None
    return name if found is factory else None


def _returns_a_class(function: Any) -> bool:
    """Whether ``function`` declares the class it returns, which jsonargparse requires of a
    factory it rebuilds by name (``def adam(params) -> torch.optim.Optimizer``)."""
    try:
        returned = typing.get_type_hints(function).get("return")
    except Exception:
        return False
    return isinstance(returned, type)


def import_path(obj: Any) -> str:
    """The shortest dotted name ``obj`` is exported as by a loaded module of its package, as
    jsonargparse writes class paths in configs (``torch.optim.Adam``, not
    ``torch.optim.adam.Adam``), so records compare equal to configs.

    Examples:
        >>> import torch
        >>> import_path(torch.optim.Adam)
        'torch.optim.Adam'
    """
    name = getattr(obj, "__qualname__", "")
    parts = str(getattr(obj, "__module__", "")).split(".")
    for end in range(1, len(parts)):
        module = sys.modules.get(".".join(parts[:end]))
        if "." not in name and getattr(module, name, None) is obj:
            return f"{'.'.join(parts[:end])}.{name}"
    return model_class_name(obj)


def record_components(module: Any, names: tuple[str, ...], factories: tuple[str, ...] = ()) -> None:
    """Record ``module``'s components ``names`` (those that `component_config` can read) and
    its optimizer and scheduler ``factories`` (`factory_config`) in its hyper-parameters as
    plain settings, so a checkpoint rebuilds the same model; what cannot be recorded warns once
    and is kept in ``module._unrecorded`` for `unrecorded_settings`."""
    unrecorded: dict[str, str] = {}
    for name in (*names, *factories):
        value = getattr(module, name)
        if value is None:
            module.hparams[name] = None
            continue
        config = factory_config(value) if name in factories else component_config(value)
        if config is not None:
            module.hparams[name] = config
            continue
        unrecorded[name] = _describe(value)
        module.hparams.pop(name, None)
        kind = unrecorded[name] if name in factories else type(value)
        if name in _warned.setdefault(kind, set()):
            continue
        _warned[kind].add(name)
        how = (
            "give a module-level function that declares its return type (-> "
            "torch.optim.Optimizer), a class, or functools.partial of a class with plain "
            "settings (for example partial(torch.optim.Adam, lr=1e-4))"
            if name in factories
            else "keep each constructor argument as an attribute of the same name, with a "
            "plain value"
        )
        warnings.warn(
            f"the model's {name} ({unrecorded[name]}) cannot be recorded in its checkpoints: "
            f"{how}; until then, pass the same {name} when loading them "
            f"(load_checkpoint(path, {name}=...)) or build the model with it",
            stacklevel=2,
        )
    module._unrecorded = unrecorded
    module.hparams["_instantiator"] = INSTANTIATOR
    # Loggers get `hparams_initial`, Lightning's copy from `save_hyperparameters`, which was taken
    # before the components were recorded.
    initial = getattr(module, "_hparams_initial", None)
    if initial is not None:
        recorded = (*names, *factories)
        initial.update({name: module.hparams[name] for name in recorded if name in module.hparams})


def _describe(value: Any) -> str:
    """How a setting that could not be recorded is named in messages."""
    if inspect.isfunction(value) or isinstance(value, type):
        return value.__qualname__
    if isinstance(value, functools.partial):
        return f"functools.partial({_describe(value.func)}, ...)"
    return f"a {type(value).__qualname__}"


def warn_unrestored(module: Any, checkpoint: dict[str, Any]) -> None:
    """Warn about each setting ``checkpoint`` could not record (`UNRECORDED_KEY`) that
    ``module`` was built without: it was rebuilt with a default or another value.

    A module built with its own unrecordable setting of that name (the caller passed it again)
    is taken to have the right one.
    """
    missing = {
        name: what
        for name, what in (checkpoint.get(UNRECORDED_KEY) or {}).items()
        if name not in getattr(module, "_unrecorded", {})
    }
    if missing:
        names = ", ".join(f"{name} ({what})" for name, what in missing.items())
        example = next(iter(missing))
        warnings.warn(
            f"the checkpoint could not record the model's {names}; this model has "
            f"{', '.join(_describe(getattr(module, n)) for n in missing)} instead. Pass the "
            f"same settings when loading (load_checkpoint(path, {example}=...), or "
            f"load_from_checkpoint(path, {example}=...)), or build the model with them before "
            "Trainer(ckpt_path=...)",
            stacklevel=2,
        )
