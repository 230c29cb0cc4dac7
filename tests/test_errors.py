"""One exception base: every error sagan_ad raises on purpose is a `SaganError`, the user's are
`UserError`s, and the command line knows them by type."""

from __future__ import annotations

import pytest

import sagan_ad
from sagan_ad.cli.errors import user_error
from sagan_ad.errors import (
    DataError,
    FileError,
    InputError,
    MissingFileError,
    SaganError,
    UserError,
    describe,
)


@pytest.mark.parametrize(
    ("name", "builtin"),
    [
        ("CheckpointError", ValueError),
        ("DivergenceError", RuntimeError),
        ("ImageReadError", RuntimeError),
        ("SplitError", ValueError),
        ("InputError", ValueError),
        ("MissingFileError", FileNotFoundError),
    ],
)
def test_the_library_errors_share_one_base_and_keep_their_builtin_kind(name, builtin):
    error_class = getattr(sagan_ad, name)
    assert issubclass(error_class, UserError)
    assert issubclass(error_class, SaganError)
    assert issubclass(error_class, builtin)


def test_the_cli_reports_user_errors_by_type_wherever_they_were_raised():
    # Raised here, in a test, not inside the package: still the user's.
    error = InputError("batch_size=0: must be >= 1")
    assert user_error(error) is error
    wrapped = RuntimeError("jsonargparse could not build the data")
    wrapped.__cause__ = MissingFileError("data.root='x' is not a folder")
    assert isinstance(user_error(wrapped), MissingFileError)
    # A built-in error is a defect of the library (or of a dependency): its traceback shows.
    assert user_error(ValueError("internal")) is None
    assert user_error(FileNotFoundError("cache shard")) is None


def test_a_bad_setting_raises_an_input_error_that_names_it():
    with pytest.raises(InputError, match=r"n_critic=0: must be >= 1"):
        sagan_ad.SAGAN(n_critic=0)
    with pytest.raises(MissingFileError, match="is not a folder of images"):
        sagan_ad.FolderPredictDataModule("no-such-folder").setup()


def test_describe_gives_a_user_error_its_message_alone():
    assert describe(DataError("2 pages: save one")) == "2 pages: save one"
    assert describe(FileError("cannot write x")) == "cannot write x"
    assert describe(OSError("disk")) == "OSError: disk"
