"""Start-up cost: ``import sagan_ad`` and the command line's --help, --version and configs do
not load torch or Lightning (seconds of imports), and every public name still resolves."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sagan_ad

HEAVY = ("torch", "lightning", "numpy", "jsonargparse")


def loaded_after(code: str) -> list[str]:
    """The heavy packages a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return eval(done.stdout.strip().splitlines()[-1])


def test_importing_the_package_loads_neither_torch_nor_lightning():
    assert loaded_after("import sagan_ad") == []


@pytest.mark.parametrize(
    "args", [["--version"], ["--help"], ["configs"], ["configs", "--show", "quickstart"]]
)
def test_the_front_door_answers_without_torch(args):
    code = f"from sagan_ad.cli import main\nmain({args!r})"
    assert loaded_after(code) == []


def test_configs_copy_checks_its_folder_without_torch(tmp_path):
    args = ["configs", "--copy", "quickstart", "--to", str(tmp_path)]
    code = f"from sagan_ad.cli import main\nmain({args!r})"
    assert loaded_after(code) == []
    assert (tmp_path / "quickstart.yaml").is_file()


def test_every_public_name_resolves_and_is_listed():
    for name in sagan_ad.__all__:
        assert getattr(sagan_ad, name) is not None, name
    assert set(sagan_ad.__all__) <= set(dir(sagan_ad))
    from sagan_ad import SAGAN, Generator

    assert SAGAN.__module__ == "sagan_ad.module"
    assert Generator.__name__ == "Generator"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = sagan_ad.Nope
    with pytest.raises(ImportError):
        from sagan_ad import Nope  # noqa: F401
