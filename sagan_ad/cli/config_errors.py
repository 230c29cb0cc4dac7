"""Configuration mistakes in one sentence: a ``--config`` file that is empty, not YAML or not a
mapping, and jsonargparse's nested parse errors (a misspelt or misplaced setting at any depth, a
value of the wrong type) reduced to the setting, where it was given (`where_given`), and the
setting meant. A settings group's refusal of a field is `sagan_ad.cli.group_errors`."""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sagan_ad.errors import InputError
from sagan_ad.protected import protect

if TYPE_CHECKING:
    pass

_KEY = re.compile(r'^Parser key "(?P<key>[^"]+)":')
_CLASS = re.compile(r"^(?:- )?Problem with given class_path '(?P<cls>[^']+)':")
_UNKNOWN = re.compile(r"Option '(?P<key>[^']+)' is not accepted")
_TYPE = re.compile(r"^(?P<expected>Expected a .+?)\. Got value: (?P<value>.*)$")
_SUBCOMMAND = re.compile(r"Subcommand '(?P<cmd>[^']+)' does not accept option '(?P<key>[^']+)'")
_INLINE_CLASS = re.compile(r"class_path='(?P<cls>[^']+)'")
_NO_CLASS = re.compile(r"module '(?P<module>[^']+)' has no attribute '(?P<name>[^']+)'")
_NO_MODULE = re.compile(r"No module named '(?P<module>[^']+)'")
_STRUCTURE = ("Does not validate", "Subtypes:", "Errors:", "Given value", "Expected a <class 'None")


def config_files(argv: Iterable[str]) -> list[Path]:
    """The files of the ``--config`` / ``-c`` arguments of ``argv`` (config names resolved).

    Examples:
        >>> config_files(["fit", "--config", "a.yaml", "-c=b.yaml", "--model.x=1"])
        [PosixPath('a.yaml'), PosixPath('b.yaml')]
    """
    argv = list(argv)
    found = []
    for i, arg in enumerate(argv):
        for flag in ("--config", "-c"):
            if arg == flag and i + 1 < len(argv):
                found.append(Path(argv[i + 1]))
            elif arg.startswith(f"{flag}="):
                found.append(Path(arg[len(flag) + 1 :]))
    return found


def check_config_files(argv: Iterable[str]) -> dict[Path, dict[str, Any]]:
    """Refuse, naming the file and the line, a ``--config`` file that holds no settings (empty
    or only comments), that is not YAML (a tab in the indentation, an unclosed quote) or that
    is not a mapping of settings; protect the others from the run's own writes (a run's
    ``config.yaml`` given back as ``--config``).

    Returns:
        The settings of each file, as read (for `sagan_ad.cli.group_errors`, which checks them
        without reading the files again).

    Raises:
        sagan_ad.errors.InputError: naming the file and what to change.

    Examples:
        >>> import tempfile
        >>> empty = Path(tempfile.mkdtemp()) / "empty.yaml"
        >>> _ = empty.write_text("# nothing yet")
        >>> check_config_files(["fit", "--config", str(empty)])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sagan_ad.errors.InputError: --config .../empty.yaml holds no settings (it is empty or ...
    """
    settings: dict[Path, dict[str, Any]] = {}
    for path in config_files(argv):
        if not path.is_file():
            continue  # a YAML string given inline, or a missing file jsonargparse names
        text = path.read_bytes().decode("utf-8", errors="replace")
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise InputError(f"--config {path}: {_yaml_problem(err, text)}") from None
        if loaded is None:
            raise InputError(
                f"--config {path} holds no settings (it is empty or only comments): write the "
                "settings into it (sagan-ad configs --copy quickstart gives an example), or "
                "leave that --config out"
            )
        if not isinstance(loaded, dict):
            raise InputError(
                f"--config {path} holds a YAML {type(loaded).__name__}, not settings: write "
                "them as 'key: value' lines (model:, data:, trainer:, ...)"
            )
        protect(path, f"the config given by --config {path}")
        settings[path] = loaded
    return settings


def _yaml_problem(err: yaml.YAMLError, text: str) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if mark is None:
        return f"not valid YAML ({problem})"
    line = text.splitlines()[mark.line] if mark.line < len(text.splitlines()) else ""
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    if "\t" in line[: mark.column + 1] or line.startswith("\t"):
        return (
            f"{where} is indented with a tab, which YAML does not allow: indent with spaces "
            "(two per level)"
        )
    return f"not valid YAML at {where} ({problem}): fix that line"


def parse_error_message(message: str, argv: list[str], known: Iterable[str] = ()) -> str:
    """One sentence for jsonargparse's error ``message``: the setting (dotted, as in YAML), where
    it was given (the ``--config`` file that holds it, or the command line), what is wrong, and
    the setting meant when one is close.

    Args:
        message: the text of jsonargparse's ``ArgumentError``.
        argv: the command's arguments, to find where the setting was given.
        known: the subcommand's own dotted settings (``trainer.max_steps``, ...), for the
            suggestion on settings outside a class.

    Examples:
        >>> text = '''Parser key "data":
        ...   Errors:
        ...     - Problem with given class_path 'sagan_ad.SyntheticCXRDataModule':
        ...         Parser key "batch_size":
        ...           Expected a <class 'int'>. Got value: sixteen
        ...     - Expected a <class 'NoneType'>'''
        >>> parse_error_message(text, [])
        "data.batch_size='sixteen': expected an int (on the command line or in a config)"
    """
    lines = message.splitlines()
    found = _SUBCOMMAND.search(message)
    if found:
        key = found["key"]
        hint = _suggest_dotted(key, list(known))
        return (
            f"{key} is not a setting of sagan-ad {found['cmd']}{hint} "
            f"({where_given(key, argv)}); sagan-ad {found['cmd']} --help lists the settings"
        )
    stack: list[tuple[int, str, str]] = []
    for raw in lines:
        text = raw.strip()
        indent = len(raw) - len(raw.lstrip(" -"))
        key, cls = _KEY.match(text), _CLASS.match(text)
        if key or cls:
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, "key", key["key"]) if key else (indent, "class", cls["cls"]))
            continue
        unknown, wrong = _UNKNOWN.search(text), _TYPE.match(text)
        missing = _NO_CLASS.search(text) or _NO_MODULE.search(text)
        if not (unknown or wrong or missing):
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [value for _, kind, value in stack if kind == "key"]
        classes = [value for _, kind, value in stack if kind == "class"]
        if missing and classes:
            return (
                f"{'.'.join(path)}: class_path {classes[-1]!r} cannot be imported ({text})"
                f"{_suggest_class(classes[-1])} ({where_given(path[-1] if path else '', argv)})"
            )
        if missing:
            continue
        inline = _INLINE_CLASS.search(text)
        owner = inline["cls"] if inline else (classes[-1] if classes else None)
        if unknown:
            name = unknown["key"]
            setting = ".".join([*path, name])
            settings = _settings_of(owner) if owner else []
            hint = _in_group(name, settings) or _suggest(name, settings)
            listed = f"; its settings: {', '.join(settings)}" if settings and not hint else ""
            return (
                f"{setting} is not a setting of {owner or 'this subcommand'}{hint} "
                f"({where_given(setting, argv)}){listed}"
            )
        expected = wrong["expected"].replace("Expected a ", "")
        setting = ".".join(path)
        return (
            f"{setting}={wrong['value']!r}: expected {_type_words(expected)} "
            f"({where_given(path[-1].split('.')[-1] if path else '', argv, wrong['value'])})"
        )
    return _innermost(lines)


def _innermost(lines: list[str]) -> str:
    """The deepest line of a nested error that says what is wrong, after its setting."""
    keys: list[str] = []
    best = (-1, lines[0].strip() if lines else "")
    for raw in lines:
        text = raw.strip().removeprefix("- ")
        key = _KEY.match(text)
        if key:
            keys.append(key["key"])
            continue
        if not text or text.startswith(_STRUCTURE) or _CLASS.match(raw.strip()):
            continue
        indent = len(raw) - len(raw.lstrip())
        if indent > best[0]:
            best = (indent, f"{'.'.join(keys)}: {text}" if keys else text)
    return best[1]


def _suggest_class(dotted: str) -> str:
    """``did you mean`` for a class path whose module exists but lacks the class."""
    module, _, name = dotted.rpartition(".")
    try:
        names = [n for n, v in vars(importlib.import_module(module)).items() if isinstance(v, type)]
    except (ImportError, ValueError):
        return ""
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.7)
    return f" (did you mean {f'{module}.{close[0]}'!r}?)" if close else ""


def _type_words(expected: str) -> str:
    simple = re.fullmatch(r"<class '(?:builtins\.)?(?P<name>\w+)'>", expected)
    if simple:
        name = simple["name"]
        article = "an" if name[0] in "aeiou" else "a"
        return f"{article} {name}"
    return expected


def _suggest(name: str, candidates: Iterable[str]) -> str:
    candidates = list(candidates)
    leaf = name.split(".")[-1]
    leaves = {c.split(".")[-1]: c for c in candidates}
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
    if not close:
        near = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.7)
        close = [leaves[near[0]]] if near else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def _in_group(name: str, settings: list[str]) -> str:
    """``did you mean`` for a setting that is a field of one of the class's settings groups
    (``val_fraction`` -> ``split.val_fraction``, ``cache_dir`` -> ``cache.dir``), as a config
    written before the groups has them."""
    from sagan_ad.data.setting_groups import SettingsGroup

    for group in SettingsGroup.__subclasses__():
        if group.group not in settings:
            continue
        field = name.removeprefix(f"{group.group}_")
        if field in group.field_names():
            return (
                f" (did you mean {f'{group.group}.{field}'!r}? in YAML: "
                f"{group.group}: {{{field}: ...}})"
            )
    return ""


def _suggest_dotted(key: str, known: list[str]) -> str:
    """The suggestion for a dotted setting: the first part that no setting has, corrected
    (``modle.max_iterations`` -> ``model``; ``trainer.max_stesp`` -> ``trainer.max_steps``)."""
    parts = key.split(".")
    prefixes = {".".join(k.split(".")[: i + 1]) for k in known for i in range(k.count(".") + 1)}
    for i in range(len(parts)):
        if ".".join(parts[: i + 1]) in prefixes:
            continue
        head = ".".join(parts[:i])
        siblings = {k.split(".")[i] for k in known if k.count(".") >= i and k.startswith(head)}
        close = difflib.get_close_matches(parts[i], sorted(siblings), n=1, cutoff=0.7)
        if close:
            return f" (did you mean {'.'.join([*parts[:i], close[0]])!r}?)"
        return ""
    return ""


def _settings_of(dotted: str) -> list[str]:
    """The constructor arguments of the class ``dotted`` (through ``**kwargs`` to its bases,
    as jsonargparse resolves them), or ``[]`` when it cannot be imported."""
    names: list[str] = []
    for _, parameter in constructor_arguments(dotted):
        if parameter.name not in names:
            names.append(parameter.name)
    return names


def constructor_arguments(dotted: str) -> list[tuple[Any, inspect.Parameter]]:
    """The constructor arguments of the class ``dotted``, each with the ``__init__`` that
    declares it: its own, then through ``**kwargs`` its bases' (as jsonargparse resolves
    them); ``[]`` when it cannot be imported.

    Examples:
        >>> [parameter.name for _, parameter in constructor_arguments("sagan_ad.SAGANLoss")]
        ['lambda_gp', 'lambda_identity', 'lambda_restoration']
    """
    cls = class_named(dotted)
    found: list[tuple[Any, inspect.Parameter]] = []
    for klass in getattr(cls, "__mro__", ()):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            parameters = list(inspect.signature(init).parameters.values())[1:]
        except (TypeError, ValueError):
            break
        found += [(init, p) for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return found


def class_named(dotted: object) -> Any:
    """The class (or other object) that the dotted path ``dotted`` names; None when it names
    nothing that can be imported.

    Examples:
        >>> class_named("sagan_ad.SAGANLoss").__name__, class_named("sagan_ad.NoSuch")
        ('SAGANLoss', None)
    """
    if not isinstance(dotted, str):
        return None
    module, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def where_given(name: str, argv: list[str], value: str | None = None) -> str:
    """Where ``name`` (a setting, or its last part) was given: on the command line, or the
    last ``--config`` file that holds it as a key (with ``value``, where one does), as later
    files override earlier ones. A dotted ``name`` matches only the options that end with it
    (``data.val_fraction`` is not ``--data.split.val_fraction``)."""
    leaf = name.split(".")[-1]
    flags = {}
    for i, arg in enumerate(argv):
        key, equals, given = arg.partition("=")
        option = key.removeprefix("--").replace(".init_args.", ".")
        same = option == name or option.endswith(f".{name}") if "." in name else True
        if arg.startswith("--") and key.split(".")[-1] == leaf and same:
            flags[key] = given if equals else (argv[i + 1] if i + 1 < len(argv) else "")
    files = [p for p in config_files(argv) if p.is_file() and _holds_key(p, leaf)]
    if value is not None:
        # Where the refused value itself was given, when it was given more than once.
        exact_flags = [key for key, given in flags.items() if given == value]
        if exact_flags:
            return f"given as {exact_flags[-1]} on the command line"
        exact = [p for p in files if _holds_key(p, leaf, value)]
        if exact:
            return f"in --config {exact[-1]}"
    if flags:
        return f"given as {list(flags)[-1]} on the command line"
    if files:
        return f"in --config {files[-1]}"
    return "on the command line or in a config"


def _holds_key(path: Path, key: str, value: str | None = None) -> bool:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return False

    def walk(node: object) -> bool:
        if isinstance(node, dict):
            here = key in node and (value is None or str(node[key]) == value)
            return here or any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(loaded)
