"""What a write may replace: never a file the same command reads (its checkpoint, config, split
file, tables or images), and never anything but a regular file (a device, FIFO, socket or
folder is refused, and a symbolic link is written through, not replaced).

Readers call `protect` on their inputs (the DataModules also on their data folders); every
writer of sagan_ad asks `writable_target` before it renames a finished temporary over its
target, and `mark_output_folder` refuses a folder that holds a data folder of the command.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from sagan_ad.errors import FileError

__all__ = [
    "OUTPUT_MARKER",
    "OutputIsInputError",
    "forget_inputs",
    "mark_output_folder",
    "protect",
    "writable_target",
]

OUTPUT_MARKER = ".sagan-ad-outputs"
"""The file that marks a folder of sagan-ad's outputs (a run folder, a test or predict folder):
image discovery never reads such a folder as data, so overlays, curves and sample grids of an
earlier run are never trained on or scored."""

# (device, inode) of each input -> (what it is, size, modification time). Size and time tell an
# input from a later file that reuses a deleted input's inode, and from an input a run has since
# rewritten itself (a resumed run's last.ckpt).
_INPUTS: dict[tuple[int, int], tuple[str, int, int]] = {}
# Real path of each input folder (a data root, an image folder) -> what it is: a folder marked
# as outputs above one would hide its images from every later command's discovery.
_INPUT_FOLDERS: dict[str, str] = {}
protected_now: list[list[str]] | None = None
"""Where a setup being recorded keeps the inputs it protects
(`sagan_ad.data.caching.setup_record`), so that a setup read from its record protects them
again."""


class OutputIsInputError(FileError, FileExistsError):
    """A write would replace a file that the same command reads (or a file that is no regular
    file); the message names both and says what to choose instead."""


def protect(paths: str | os.PathLike | Iterable[str | os.PathLike], what: str) -> None:
    """Record ``paths`` as inputs of this command: no writer of sagan_ad replaces them, and
    no folder holding a folder among them is marked as outputs (`mark_output_folder`).

    Missing paths are ignored (reading them reports them).

    Examples:
        >>> import tempfile
        >>> ckpt = Path(tempfile.mkdtemp()) / "run.ckpt"
        >>> _ = ckpt.write_bytes(b"weights")
        >>> protect(ckpt, "the checkpoint given by --ckpt_path")
        >>> writable_target(ckpt)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sagan_ad.protected.OutputIsInputError: .../run.ckpt is the checkpoint given by ...
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    for path in paths:
        if protected_now is not None:
            protected_now.append([os.fspath(path), what])
        try:
            found = os.stat(path)
        except (OSError, ValueError):
            continue
        if stat.S_ISREG(found.st_mode):
            _INPUTS[(found.st_dev, found.st_ino)] = (what, found.st_size, found.st_mtime_ns)
        elif stat.S_ISDIR(found.st_mode):
            _INPUT_FOLDERS[os.path.realpath(path)] = what


def forget_inputs() -> None:
    """Start a new command: nothing read so far is its input (the command line calls this)."""
    _INPUTS.clear()
    _INPUT_FOLDERS.clear()


def input_role(path: str | os.PathLike) -> str | None:
    """What ``path`` is to this command when it is one of its inputs (`protect`), else None."""
    try:
        found = os.stat(path)
    except (OSError, ValueError):
        return None
    entry = _INPUTS.get((found.st_dev, found.st_ino))
    if entry is None or entry[1:] != (found.st_size, found.st_mtime_ns):
        return None
    return entry[0]


def writable_target(path: str | os.PathLike, setting: str | None = None) -> Path:
    """The file a write to ``path`` replaces, checked: a symbolic link's target (the link is
    kept); refused when it is an input of this command or exists as anything but a regular file.

    Args:
        path: where the caller means to write.
        setting: the option that chose ``path``, named in the message (default: "another
            output path").

    Raises:
        OutputIsInputError: naming the file, what it is, and what to choose instead.

    Examples:
        >>> writable_target("/dev/null")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sagan_ad.protected.OutputIsInputError: cannot write /dev/null: it is a character device...
    """
    target = Path(path)
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    instead = f"choose another {setting}" if setting else "choose another output path"
    role = input_role(target)
    if role is not None:
        raise OutputIsInputError(
            f"{path} is {role}, an input of this command: writing there would replace it; {instead}"
        )
    try:
        mode = os.stat(target).st_mode
    except (OSError, ValueError):
        return target
    if not stat.S_ISREG(mode):
        raise OutputIsInputError(
            f"cannot write {path}: it is {_kind(mode)}, not a regular file, and a file written "
            f"there would replace it; {instead}"
        )
    return target


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


def mark_output_folder(folder: str | os.PathLike, setting: str = "the output folder") -> None:
    """Mark ``folder`` as holding sagan-ad's outputs (`OUTPUT_MARKER`), creating it; refused,
    before anything is written, when it is or holds an input folder of this command (`protect`):
    the marker would hide that data from every later discovery.

    Args:
        folder: the outputs folder.
        setting: the option that chose ``folder``, named in the message.

    Raises:
        OutputIsInputError: naming the folder, the input folder in it and ``setting``.

    Examples:
        >>> import tempfile
        >>> project = Path(tempfile.mkdtemp())
        >>> (project / "data").mkdir()
        >>> protect(project / "data", "the data root")
        >>> mark_output_folder(project / "run")
        >>> (project / "run" / OUTPUT_MARKER).is_file()
        True
        >>> mark_output_folder(project)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sagan_ad.protected.OutputIsInputError: cannot mark ... as sagan-ad's outputs: it holds ...
    """
    folder = Path(folder)
    marker = folder / OUTPUT_MARKER
    if marker.exists():
        return
    inside = _input_folder_in(folder)
    if inside is not None:
        path, what = inside
        raise OutputIsInputError(
            f"cannot mark {folder} as sagan-ad's outputs: it holds {path}, {what}, an input of "
            f"this command, and image discovery skips every folder below an outputs folder; "
            f"choose another {setting} (a folder beside the data, not above it)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(
        "Outputs of sagan-ad (a run, a test or a predict). sagan-ad never reads the images "
        "of a folder holding this file as data.\n",
        encoding="utf-8",
    )


def _input_folder_in(folder: Path) -> tuple[str, str] | None:
    top = os.path.realpath(folder)
    for path, what in _INPUT_FOLDERS.items():
        if path == top or path.startswith(top.rstrip(os.sep) + os.sep):
            return path, what
    return None
