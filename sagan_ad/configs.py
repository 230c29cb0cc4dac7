"""The example configs shipped with the package: list them, resolve a bare name, copy one out.

The repository's ``examples/`` folder is the only copy of these files. A wheel carries it as
``sagan_ad/examples/`` (``pyproject.toml`` maps that package folder to ``examples/``); in a
checkout, editable install or not, the files are read from ``examples/`` itself. So
``sagan-ad fit --config quickstart`` works in any folder, and ``sagan-ad configs --copy
quickstart`` writes ``./quickstart.yaml`` to edit.
"""

from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path

from sagan_ad.atomic import atomic_path
from sagan_ad.errors import FileError, InputError, MissingFileError

CONFIG_SUFFIXES = (".yaml", ".yml")


def examples_dir() -> Path:
    """The folder of the shipped example configs (and ``subclass_sagan.py``).

    Examples:
        >>> (examples_dir() / "quickstart.yaml").is_file()
        True
    """
    packaged = Path(__file__).resolve().parent / "examples"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "examples").is_dir():
        return checkout / "examples"
    raise MissingFileError(
        f"the example configs are missing from this installation ({packaged} does not exist): "
        "reinstall sagan-ad, or pass a config file by its path"
    )


def shipped_files() -> dict[str, Path]:
    """Every shipped example by name: configs without their suffix, Python files with it.

    Examples:
        >>> files = shipped_files()
        >>> files["quickstart"].name, files["subclass_sagan.py"].name
        ('quickstart.yaml', 'subclass_sagan.py')
    """
    found = {}
    for path in sorted(examples_dir().iterdir()):
        if path.suffix in CONFIG_SUFFIXES:
            found[path.stem] = path
        elif path.suffix == ".py" and not path.name.startswith("_"):
            found[path.name] = path
    return found


def describe(path: Path) -> str:
    """The first sentence of a shipped file's opening comment (or docstring): its description.

    Examples:
        >>> describe(shipped_files()["quickstart"])
        'Quickstart: train and test SAGAN on built-in synthetic chest phantoms (no files needed).'
    """
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        body = text.lstrip("#").lstrip('"')
        # The opening comment ends at a blank line, an indented command line or the code.
        if not text.startswith(("#", '"')) or not body.strip() or body.startswith("  "):
            break
        words.append(body.strip())
        if body.rstrip().endswith("."):
            break
    return " ".join(words)


def needs_gpu(path: Path) -> bool:
    """Whether a shipped config asks for a GPU (``trainer.accelerator: gpu`` or ``cuda``).

    Examples:
        >>> needs_gpu(shipped_files()["medad_rsna"]), needs_gpu(shipped_files()["quickstart"])
        (True, False)
    """
    import yaml

    if path.suffix not in CONFIG_SUFFIXES:
        return False
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    trainer = config.get("trainer") if isinstance(config, dict) else None
    accelerator = trainer.get("accelerator") if isinstance(trainer, dict) else None
    return str(accelerator).lower() in ("gpu", "cuda")


def _unknown(name: str, kind: str, configs_only: bool = False) -> InputError:
    files = shipped_files()
    names = [n for n, p in files.items() if p.suffix in CONFIG_SUFFIXES or not configs_only]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return InputError(
        f"{kind} {name!r}: no such file, and no shipped config of that name; {hint}"
        f"shipped: {', '.join(names)} (`sagan-ad configs` describes them)"
    )


def is_bare_name(value: str) -> bool:
    """Whether ``value`` can only mean a shipped file: a word, no folder, no YAML text.

    Examples:
        >>> is_bare_name("quickstart"), is_bare_name("configs/run.yaml"), is_bare_name("{a: 1}")
        (True, False, False)
    """
    return bool(value) and not any(c in value for c in "/\\:{}[]\n ,=")


def resolve_config(value: str) -> str:
    """The path a ``--config`` value stands for: an existing file as given, else the shipped
    config of that name (``quickstart`` or ``quickstart.yaml``).

    Values that are neither a file nor a bare name (inline YAML, ``a/b.yaml``) are returned
    unchanged for the config parser to judge.

    Raises:
        sagan_ad.errors.InputError: a bare name that is neither a file nor a shipped config ...
            the shipped ones).

    Examples:
        >>> Path(resolve_config("quickstart")).name
        'quickstart.yaml'
        >>> resolve_config("quikstart")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sagan_ad.errors.InputError: --config 'quikstart': no such file, ... did you mean ...
    """
    if Path(value).is_file():
        try:
            Path(value).read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            # jsonargparse reports it as a UnicodeDecodeError traceback without the file name.
            raise InputError(
                f"--config {value!r} is not UTF-8 text (byte {err.object[err.start]:#04x} at "
                f"position {err.start}): a config is a YAML file; save it as UTF-8"
            ) from None
    if Path(value).exists() or not is_bare_name(value):
        return value
    stem = value[: -len(Path(value).suffix)] if Path(value).suffix in CONFIG_SUFFIXES else value
    path = shipped_files().get(stem)
    if path is None or path.suffix not in CONFIG_SUFFIXES:
        raise _unknown(value, "--config", configs_only=True)
    return str(path)


def resolve_config_arguments(argv: list[str]) -> list[str]:
    """``argv`` with every ``--config`` / ``-c`` value passed through `resolve_config`.

    Examples:
        >>> args = resolve_config_arguments(["fit", "--config", "quickstart", "-c=logger_wandb"])
        >>> [Path(a.split("=")[-1]).name for a in args[2:]]
        ['quickstart.yaml', 'logger_wandb.yaml']
    """
    out = list(argv)
    for i, arg in enumerate(out):
        for flag in ("--config", "-c"):
            if arg == flag and i + 1 < len(out):
                out[i + 1] = resolve_config(out[i + 1])
            elif arg.startswith(f"{flag}="):
                out[i] = f"{flag}={resolve_config(arg[len(flag) + 1 :])}"
    return out


def shipped_file(name: str) -> Path:
    """The shipped file called ``name``: a config with or without its suffix, a Python example
    with or without ``.py``.

    Raises:
        sagan_ad.errors.InputError: no shipped file has that name (the message lists them).

    Examples:
        >>> shipped_file("subclass_sagan").name, shipped_file("logger_wandb.yaml").name
        ('subclass_sagan.py', 'logger_wandb.yaml')
    """
    files = shipped_files()
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in CONFIG_SUFFIXES else name
    found = files.get(stem) or files.get(f"{name}.py")
    if found is None:
        raise _unknown(name, "shipped file")
    return found


def copy_example(name: str, folder: str | os.PathLike = ".", overwrite: bool = False) -> Path:
    """Copy a shipped file (``quickstart``, ``subclass_sagan.py``, ...) into ``folder``.

    Raises:
        FileExistsError: the target exists and ``overwrite`` is false.
        sagan_ad.errors.InputError: no shipped file has that name (the message lists them).

    Examples:
        >>> import tempfile
        >>> copy_example("quickstart", tempfile.mkdtemp()).name
        'quickstart.yaml'
    """
    source = shipped_file(name)
    target = Path(folder) / source.name
    if target.exists() and not overwrite:
        raise FileError(
            f"{target} already exists: edit it, remove it, or pass --force to overwrite it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target
