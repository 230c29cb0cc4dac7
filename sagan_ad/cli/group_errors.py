"""A settings group's refusal of a field, found while the command line is read: jsonargparse lets
any mapping through a group's argument (its type also takes a mapping), so without this check a
misspelt field or a value of the wrong kind would pass the parse and ``--print_config`` and be
refused only when the class is built, with no word of where it was given."""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsonargparse import Namespace

from sagan_ad.cli.config_errors import (
    class_named,
    constructor_arguments,
    where_given,
)
from sagan_ad.errors import InputError

if TYPE_CHECKING:
    from sagan_ad.data.setting_groups import SettingsGroup


class GroupFieldError(InputError):
    """A settings group refused what the configuration gives it (a field it does not have, a
    value it does not take), found while the configuration is parsed: ``setting`` is the
    dotted field (``data.split.val_fracton``, or the group where no field is named) and
    ``value`` the value given there (None: not known). `group_error_message` adds where it
    was given."""

    def __init__(self, message: str, setting: str, value: str | None) -> None:
        super().__init__(message)
        self.setting = setting
        self.value = value


def check_settings_groups(config: Namespace) -> None:
    """Refuse, as the class would when it is built, a settings group of ``config`` (a parsed
    configuration) whose group (`sagan_ad.data.setting_groups.SettingsGroup.parse`) refuses it.

    jsonargparse lets any mapping through a group's argument, whose type also takes a mapping
    (``SplitSettings | Mapping[str, Any] | None``), so a misspelt field or a value of the wrong
    kind would otherwise pass the parse and ``--print_config`` and be refused only when the
    class is built, with no word of where it was given. A group is any argument of a
    ``class_path`` whose type names a ``SettingsGroup`` subclass.

    Raises:
        GroupFieldError: the group's own message, with the field it is about.

    Examples:
        >>> config = Namespace(data=Namespace(
        ...     class_path="sagan_ad.SyntheticCXRDataModule",
        ...     init_args=Namespace(split={"val_fracton": 0.2})))
        >>> check_settings_groups(config)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sagan_ad.cli.group_errors.GroupFieldError: split: no setting 'val_fracton' (did you ...
    """
    tree = config.as_dict()
    subcommand = tree.get("subcommand")
    if isinstance(subcommand, str) and isinstance(tree.get(subcommand), dict):
        tree = tree[subcommand]
    _check_groups_in(tree, [])


def check_groups_in_files(configs: Mapping[Path, Any], argv: list[str]) -> None:
    """Refuse, before the parse, a settings group that a ``--config`` file gives with a field
    its group refuses, naming the file; ``configs`` holds each file's settings as
    `sagan_ad.cli.config_errors.check_config_files` read them from ``argv``. The parse finds
    most of them (`check_settings_groups`), but a flag of the same group after the file
    (``--config c.yaml --data.split.unlabeled_size 7``) has jsonargparse rebuild the group from
    its own fields, and a misspelt one in the file would be dropped without a word.

    Raises:
        sagan_ad.errors.InputError: the group's message and the file.

    Examples:
        >>> settings = {"data": {"class_path": "sagan_ad.SyntheticCXRDataModule",
        ...                      "init_args": {"split": {"val_fracton": 0.3}}}}
        >>> check_groups_in_files({Path("c.yaml"): settings}, ["fit", "--config", "c.yaml"])
        Traceback (most recent call last):
        ...
        sagan_ad.errors.InputError: split: no setting 'val_fracton' (did you mean ...
    """
    for settings in configs.values():
        try:
            _check_groups_in(settings, [])
        except GroupFieldError as err:
            raise InputError(group_error_message(err, argv)) from None


def group_error_message(error: GroupFieldError, argv: list[str]) -> str:
    """The message of ``error`` with where its setting was given (`parse_error_message`'s
    ``(in --config FILE)`` or ``(given as --FLAG on the command line)``).

    Examples:
        >>> error = GroupFieldError("split: no setting 'x'; the settings are val_fraction, ...",
        ...                         "data.split.x", "1")
        >>> group_error_message(error, ["fit", "--data.split.x=1"])  # doctest: +ELLIPSIS
        "split: no setting 'x' (given as --data.split.x on the command line); the settings ..."
    """
    what, then, more = str(error).partition("; ")
    # What is wrong, where, then the help (the group's fields), as parse_error_message writes.
    return f"{what} ({where_given(error.setting, argv, error.value)}){then}{more}"


def _check_groups_in(node: object, path: list[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _check_groups_in(item, path)
        return
    if not isinstance(node, dict):
        return
    init = node.get("init_args")
    if isinstance(node.get("class_path"), str) and isinstance(init, dict):
        for name, group in _groups_of(node["class_path"]).items():
            if name in init:
                _check_group(group, init[name], [*path, name])
    for key, value in node.items():
        _check_groups_in(value, path if key == "init_args" else [*path, key])


def _check_group(group: type[SettingsGroup], value: object, path: list[str]) -> None:
    if isinstance(value, Mapping) and class_named(value.get("class_path")) is group:
        # How jsonargparse holds a dataclass until the parse ends, and how YAML may give it.
        value = value.get("init_args") or {}
    try:
        group.parse(value)
    except InputError as err:
        given = value if isinstance(value, Mapping) else {}
        field = _refused_field(group, given, str(err))
        setting = ".".join([*path, field] if field else path)
        shown = str(given[field]) if field in given else None
        raise GroupFieldError(str(err), setting, shown) from None


def _refused_field(
    group: type[SettingsGroup], given: Mapping[str, Any], message: str
) -> str | None:
    """The given field that ``message`` (the group's refusal of ``given``) is about: one the
    group does not have, else the first it names as ``field=`` (``split.val_fraction=1.5``,
    ``bit_depth=20``), as every message about a value does."""
    fields = group.field_names()
    unknown = [str(key) for key in given if key not in fields]
    if unknown:
        return unknown[0]
    named = [
        (found.start(), key)
        for key in given
        if (found := re.search(rf"(?<!\w){re.escape(str(key))}=", message))
    ]
    return min(named)[1] if named else None


def _groups_of(dotted: str) -> dict[str, type[SettingsGroup]]:
    """The arguments of the class ``dotted`` that are settings groups, each with its group
    (`sagan_ad.data.setting_groups.SettingsGroup` subclass)."""
    from sagan_ad.data.setting_groups import SettingsGroup

    groups: dict[str, type[SettingsGroup]] = {}
    hints: dict[Any, dict[str, Any]] = {}
    for init, parameter in constructor_arguments(dotted):
        if init not in hints:
            try:
                hints[init] = typing.get_type_hints(init)
            except Exception:  # annotations that cannot be resolved name no group
                hints[init] = {}
        hint = hints[init].get(parameter.name)
        for kind in (hint, *typing.get_args(hint)):
            if isinstance(kind, type) and issubclass(kind, SettingsGroup):
                groups.setdefault(parameter.name, kind)
    return groups
