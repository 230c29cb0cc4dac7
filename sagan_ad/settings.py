"""Settings objects built from the mappings of a YAML file or a Python caller, and the
instantiator that rebuilds a model from the settings its checkpoint records.

Kept at the top of the package, importing nothing of it, so that `sagan_ad.data` and
`sagan_ad.evaluation` can both use it without depending on each other.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sagan_ad.errors import InputError

T = TypeVar("T")


def from_mapping(
    cls: type[T],
    values: Mapping[str, Any],
    where: str,
    convert: Callable[[Any], Any] | None = None,
) -> T:
    """The dataclass ``cls`` built from ``values``, a mapping of some of its fields.

    Unknown keys are refused with one `ValueError` that names them, after ``where`` (the option
    the mapping was given as), lists the fields and suggests the closest one to each misspelt
    key. ``convert``, if given, is applied to every value first.

    Examples:
        >>> @dataclasses.dataclass
        ... class Window:
        ...     low: float = 0.0
        ...     high: float = 1.0
        >>> from_mapping(Window, {"high": 2}, "data.window", convert=float)
        Window(low=0.0, high=2.0)
        >>> from_mapping(Window, {"hihg": 2}, "window")
        Traceback (most recent call last):
        ...
        sagan_ad.errors.InputError: window has unknown field(s) hihg: the fields are high, low ...
    """
    known = sorted(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        close = [difflib.get_close_matches(str(name), known, n=1) for name in unknown]
        hints = sorted({match[0] for match in close if match})
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise InputError(
            f"{where} has unknown field(s) {', '.join(unknown)}: the fields are "
            f"{', '.join(known)}{hint}"
        )
    if convert is not None:
        values = {name: convert(value) for name, value in values.items()}
    return cls(**values)


INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"
"""Rebuilds a model from hyper-parameters that hold ``class_path`` mappings: Lightning's own
instantiator, the one ``load_from_checkpoint`` allows (see `sagan_ad.training.hparams`)."""
