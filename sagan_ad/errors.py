"""The errors sagan_ad raises on purpose, under one base.

`SaganError` is the base of them all; `UserError` marks a verdict on what the user gave (a
setting, a file, the data, a checkpoint, a run) rather than a defect of the library. The
``sagan-ad`` command line prints a `UserError` as one ``error: <message>`` line and exits with
status 2, and shows the traceback of anything else. Each subclass also derives from the
built-in exception that describes it, so ``except ValueError`` and ``except OSError`` keep
working.

Kept at the top of the package, importing nothing of it, so that every module can raise them.

Examples:
    >>> try:
    ...     raise InputError("batch_size=0: must be >= 1")
    ... except ValueError as err:
    ...     isinstance(err, UserError)
    True
"""

from __future__ import annotations


class SaganError(Exception):
    """Base of every error that sagan_ad raises on purpose."""


class UserError(SaganError):
    """A verdict on the user's settings, files, data, checkpoint or run; the message names what
    was refused and what to do."""


class InputError(UserError, ValueError):
    """A value given to sagan_ad is refused: a setting, an argument, a file's content."""


class DataError(InputError):
    """The data cannot be used as given: a split, a DICOM file, a label table."""


class DataMismatchError(DataError):
    """Data prepared otherwise than the model's record (size, channels, decoding,
    normalisation)."""


class FileError(UserError, OSError):
    """A file or folder cannot be read or written where the user pointed."""


class MissingFileError(FileError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class MissingExtraError(UserError, ImportError):
    """A feature needs an optional extra that is not installed; the message names it."""


class RunError(UserError, RuntimeError):
    """A run cannot go on (a diverged step, a non-finite checkpoint)."""


def describe(error: BaseException) -> str:
    """One line for ``error`` inside another message: a `UserError`'s message alone (it says
    what was refused and what to do), any other error's type and message.

    Examples:
        >>> describe(InputError("2 pages")), describe(KeyError("x"))
        ('2 pages', "KeyError: 'x'")
    """
    return str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
