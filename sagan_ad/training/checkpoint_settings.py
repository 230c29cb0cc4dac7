"""Whether a checkpoint's recorded settings and weights fit the model that loads them: each
recorded setting (a component's too) must be one the model takes, with a value of its type, and
the weights must fit the model those settings build; each refusal names the setting."""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from typing import Any

import torch

from sagan_ad.training.checkpoint_files import (
    CheckpointError,
    check_finite_weights,
    model_class_name,
)
from sagan_ad.training.hparams import is_plain


def flat_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Settings with the ``init_args`` of their components spelled as dotted keys.

    Examples:
        >>> flat_settings({"n_critic": 2, "scorer": {"class_path": "s.S", "init_args": {"t": 1}}})
        {'n_critic': 2, 'scorer': 's.S', 'scorer.t': 1}
    """
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "class_path" in value:
            flat[name] = value["class_path"]
            flat.update(flat_settings(value.get("init_args") or {}, f"{name}."))
        elif isinstance(value, dict) and key == "performance":
            flat.update(flat_settings(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def check_weights_fit(
    checkpoint: dict[str, Any],
    model: torch.nn.Module,
    source: str = "the checkpoint",
    strict: bool = True,
) -> None:
    """Refuse a checkpoint whose weights do not fit ``model`` (another architecture) or hold NaN
    or infinity, naming the settings that differ, before loading fails on it. Weights of another
    shape are refused always (no load can take them); missing and unexpected ones only when
    ``strict``, as ``load_state_dict(strict=False)`` takes them.

    Examples:
        >>> from sagan_ad import SAGAN, Critic, Generator
        >>> small = SAGAN(Generator(image_size=32, base_channels=4), Critic(1, 4, 5))
        >>> wide = SAGAN(Generator(image_size=32, base_channels=8), Critic(1, 4, 5))
        >>> checkpoint = {"state_dict": small.state_dict(), "hyper_parameters": dict(small.hparams)}
        >>> check_weights_fit(checkpoint, small)
        >>> check_weights_fit(checkpoint, wide)
        Traceback (most recent call last):
        ...
        sagan_ad.training.checkpoint_files.CheckpointError: the checkpoint does not fit ...
    """
    theirs, ours = checkpoint.get("state_dict") or {}, model.state_dict()
    check_finite_weights(theirs, [key for key, _ in model.named_parameters()], source)
    # Checkpoints from before the threshold buffer load without one (SAGAN.on_load_checkpoint).
    missing = sorted(set(ours) - set(theirs) - {"threshold"}) if strict else []
    unexpected = sorted(set(theirs) - set(ours)) if strict else []
    shapes = [
        f"{key}: {tuple(theirs[key].shape)} in the checkpoint, {tuple(ours[key].shape)} here"
        for key in sorted(set(ours) & set(theirs))
        if tuple(theirs[key].shape) != tuple(ours[key].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    ours = flat_settings(dict(getattr(model, "hparams", {})))
    settings = [
        f"{key}={value!r} (model: {ours[key]!r})"
        for key, value in flat_settings(checkpoint.get("hyper_parameters") or {}).items()
        # The model's None (an unset component: the default one) is no difference. Lightning's
        # load_from_checkpoint builds the components in the checkpoint's own settings, which
        # then hold objects rather than what was recorded: those say nothing.
        if ours.get(key) is not None and ours[key] != value and is_plain(value)
    ]
    found = shapes[:2] + [f"{len(missing)} weights missing"] * bool(missing)
    found += [f"{len(unexpected)} unexpected weights"] * bool(unexpected)
    if settings:
        advice = f"It was trained with {', '.join(settings)}: build the model with those settings"
    elif not checkpoint.get("hyper_parameters"):
        advice = (
            "It records no settings: build the model with the ones it was trained with (Python: "
            "sagan_ad.load_checkpoint(path, generator=..., critic=...))"
        )
    else:
        advice = "Build the model with the settings the checkpoint was trained with"
    raise CheckpointError(f"{source} does not fit the model: {'; '.join(found)}. {advice}")


def check_settings(checkpoint: dict[str, Any], cls: type, source: str = "the checkpoint") -> None:
    """Refuse a checkpoint whose recorded settings (hyper-parameters) ``cls`` does not take (a
    checkpoint of a newer sagan_ad version, say) or whose values have a type the setting's
    annotation excludes (a hand-edited file): the setting would be dropped without a word, or
    fail deep inside the model's construction with a message that names neither.

    Examples:
        >>> from sagan_ad.module import SAGAN
        >>> check_settings({"hyper_parameters": {"max_iterations": 32}}, SAGAN)
        >>> check_settings({"hyper_parameters": {"max_iteration": 32}}, SAGAN)
        Traceback (most recent call last):
        ...
        sagan_ad.training.checkpoint_files.CheckpointError: the checkpoint records settings ...
    """
    recorded = checkpoint.get("hyper_parameters") or {}
    problems = _problems(recorded, cls)
    if problems:
        raise CheckpointError(
            f"{source} records settings that {model_class_name(cls)} does not take: "
            f"{', '.join(problems)}. It was written by another version of sagan-ad or another "
            "model class, or edited: load it with the version and class that wrote it"
        )
    refused = _refused_values(recorded, cls)
    if refused:
        # Names and types fit, the values do not: no version of sagan-ad writes those.
        raise CheckpointError(
            f"{source} records settings whose values {model_class_name(cls)} refuses: "
            f"{'; '.join(refused)}. The file was edited or damaged after it was written: use "
            "an unedited checkpoint of the run, or correct those values"
        )


def _refused_values(recorded: dict[str, Any], cls: type, prefix: str = "") -> list[str]:
    """The recorded values that the classes' own checks refuse: each component built from its
    recorded settings, and the model's plain settings on a model of default components."""
    refused = []
    plain = {}
    for key, value in sorted(recorded.items()):
        if key.startswith("_"):
            continue
        if isinstance(value, dict) and "class_path" in value:
            component = _import_class(value["class_path"])
            arguments = value.get("init_args") or {}
            nested = _refused_values(arguments, component, f"{prefix}{key}.") if component else []
            refused += nested
            if component is not None and not nested:
                problem = _refusal(component, arguments)
                if problem:
                    refused.append(f"{prefix}{key} ({problem})")
        elif not isinstance(value, dict):
            plain[key] = _function_named(value) or value
    if not prefix and plain:
        problem = _refusal(cls, plain)
        if problem:
            refused.append(problem)
    return refused


def _refusal(cls: type, arguments: dict[str, Any]) -> str | None:
    """The message of the ``ValueError`` ``cls(**arguments)`` raises, or None (also when it
    needs arguments not recorded: those are the model's to report)."""
    try:
        # On the meta device: the checks run, no weights are allocated or initialised.
        with torch.device("meta"):
            cls(**arguments)
    except ValueError as err:
        return str(err).splitlines()[0]
    except Exception:
        return None
    return None


def _problems(recorded: dict[str, Any], cls: type, prefix: str = "") -> list[str]:
    """What of ``recorded`` ``cls`` does not take, a component's settings included (named
    ``component.setting``)."""
    accepted = accepted_settings(cls)
    if accepted is None:
        return []
    problems = []
    # Keys with a leading underscore are Lightning's own records (_class_path, _instantiator).
    for key, value in sorted(recorded.items()):
        name = f"{prefix}{key}"
        if key.startswith("_"):
            continue
        if key not in accepted:
            problems.append(f"{name}={value!r} (no such setting)")
        elif isinstance(value, dict) and "class_path" in value:
            component = _import_class(value["class_path"])
            if component is None:
                problems.append(f"{name}: class {value['class_path']!r} cannot be imported")
            else:
                problems += _problems(value.get("init_args") or {}, component, f"{name}.")
        elif not _fits(value, accepted[key]):
            problems.append(f"{name}={value!r} (expects {_describe(accepted[key])})")
    return problems


def _function_named(value: Any) -> Any:
    """The module-level function a recorded dotted name names (an optimizer factory such as
    ``sagan_ad.paper_adam``, which loading builds the model with), or None: the values are
    checked as the model gets them, not as strings it would warn it cannot record."""
    found = _imported(value) if isinstance(value, str) and "." in value else None
    return found if inspect.isfunction(found) else None


def _import_class(path: str) -> type | None:
    """The class at the dotted ``path``, or None."""
    found = _imported(path)
    return found if isinstance(found, type) else None


def _imported(path: str) -> Any:
    """The object at the dotted ``path``, or None where it cannot be imported."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def accepted_settings(cls: type) -> dict[str, Any] | None:
    """The keyword arguments ``cls`` takes, with their annotations (``Any`` when unknown),
    following ``**kwargs`` up its bases; None when it takes any.

    Examples:
        >>> from sagan_ad.module import SAGAN
        >>> accepted_settings(SAGAN)["max_iterations"]
        <class 'int'>
    """
    names: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            hints = typing.get_type_hints(init)
        except Exception:
            # An annotation that does not resolve here (a name imported only for type checkers)
            # leaves the types to the model.
            hints = {}
        parameters = list(inspect.signature(init).parameters.values())[1:]
        for p in parameters:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                names.setdefault(p.name, hints.get(p.name, Any))
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return names
    return None


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` can be a value of the plain annotation ``hint`` (numbers, strings,
    literals, optionals); other annotations (callables, classes) are left to the model."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _describe(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
