"""The base of the DataModules' settings groups (``decode``, ``cache``, ``split``)."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any, ClassVar, TypeVar

from sagan_ad.errors import InputError

Group = TypeVar("Group", bound="SettingsGroup")


@dataclasses.dataclass(frozen=True)
class SettingsGroup:
    """A small frozen dataclass of related DataModule settings, given as one argument: an
    instance, a mapping of its fields (YAML ``data.cache: {dir: cache/}``, command line
    ``--data.cache.dir cache/``) or None for the defaults.

    Subclasses are frozen dataclasses that name their group in ``group`` (the DataModule
    argument), which every message about a field uses (``cache.workers=0``). The base is a
    dataclass too (with no field), so that the command line gives each field its own option.

    Examples:
        >>> from sagan_ad.data import CacheSettings
        >>> CacheSettings.parse({"workers": 2}).changed()
        {'workers': 2}
        >>> CacheSettings.parse({"worker": 2})
        Traceback (most recent call last):
        ...
        sagan_ad.errors.InputError: cache: no setting 'worker' (did you mean 'workers'?); the ...
    """

    group: ClassVar[str]

    def record(self) -> dict[str, Any]:
        """The settings as plain values (a checkpoint or manifest entry)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def changed(self) -> dict[str, Any]:
        """The settings that differ from their defaults."""
        default = type(self)()
        return {k: v for k, v in self.record().items() if getattr(default, k) != v}

    def describe(self) -> str:
        """The settings as the DataModule's ``group`` writes them."""
        return ", ".join(f"{k}={v!r}" for k, v in self.record().items())

    @classmethod
    def field_names(cls) -> list[str]:
        """The names of the group's settings, in order."""
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def parse(cls: type[Group], value: Group | Mapping[str, Any] | None) -> Group:
        """``value`` as settings: None gives the defaults, a mapping its fields; an unknown
        field is refused by name, with the list of the group's settings."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise InputError(
                f"{cls.group}={value!r}: give a sagan_ad.data.{cls.__name__} or a mapping of its "
                f"settings ({', '.join(cls.field_names())}), or None for the defaults"
            )
        fields = cls.field_names()
        unknown = [key for key in value if key not in fields]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), fields, n=1, cutoff=0.7)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(
                f"{cls.group}: no setting {unknown[0]!r}{hint}; the settings are "
                f"{', '.join(fields)}"
            )
        return cls(**value)

    @classmethod
    def from_record(cls: type[Group], record: Mapping[str, Any]) -> Group:
        """The settings of a `record`; a record that is not one is refused by name."""
        try:
            return cls(**record)
        except (AttributeError, TypeError, ValueError) as err:
            raise InputError(
                f"recorded {cls.group} settings {dict(record)!r} are not readable: {err}"
            ) from err


def check_flag(group: str, name: str, value: object) -> None:
    """Refuse a setting that is not true or false."""
    if not isinstance(value, bool):
        raise InputError(f"{group}.{name}={value!r}: must be true or false")


def check_choice(group: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    """Refuse a setting that is not one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
        raise InputError(f"{group}.{name}={value!r}: must be {options}")


def check_numbers(
    whole: Mapping[str, object] | None = None, real: Mapping[str, object] | None = None
) -> None:
    """Raise an `InputError` naming each setting that is not a whole (or a real) number.

    ``None`` passes (optional settings); ``True`` is no number. From Python, ``"64"`` or
    ``2.5`` would otherwise fail later with a `TypeError` that names nothing, or be truncated.

    Examples:
        >>> check_numbers(whole={"image_size": 64, "eval_batch_size": None}, real={"f": 0.1})
        >>> check_numbers(whole={"image_size": "64"})
        Traceback (most recent call last):
        ...
        sagan_ad.errors.InputError: image_size='64': must be a whole number
    """
    for name, value in (whole or {}).items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, Integral)):
            raise InputError(f"{name}={value!r}: must be a whole number")
    for name, value in (real or {}).items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, Real)):
            raise InputError(f"{name}={value!r}: must be a number")
