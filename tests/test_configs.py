"""The example configs as a pip user meets them: packaged, named, listed, copied; the CLI's front
door (--help, --version, unknown subcommands) and modules of the current folder."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sagan_ad
from sagan_ad import configs
from sagan_ad.cli import main
from sagan_ad.cli.usage import SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def test_a_checkout_reads_the_repository_examples_folder():
    assert configs.examples_dir() == EXAMPLES
    files = configs.shipped_files()
    assert set(files) == {p.stem for p in EXAMPLES.glob("*.yaml")} | {"subclass_sagan.py"}
    assert all(path.parent == EXAMPLES for path in files.values())


def test_an_installed_wheel_reads_its_packaged_copy(tmp_path, monkeypatch):
    # The wheel's layout: site-packages/sagan_ad/{configs.py, examples/*.yaml}, no pyproject.
    site = tmp_path / "site-packages" / "sagan_ad"
    shutil.copytree(EXAMPLES, site / "examples")
    monkeypatch.setattr(configs, "__file__", str(site / "configs.py"))
    assert configs.examples_dir() == site / "examples"
    assert configs.resolve_config("quickstart") == str(site / "examples" / "quickstart.yaml")


def test_an_installation_without_the_configs_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(configs, "__file__", str(tmp_path / "sagan_ad" / "configs.py"))
    with pytest.raises(FileNotFoundError, match="reinstall sagan-ad, or pass a config file"):
        configs.examples_dir()


def test_the_wheel_packages_examples_and_every_package_folder():
    tomllib = pytest.importorskip("tomllib")
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "sagan_ad").rglob("__init__.py")
    }
    assert set(settings["packages"]) == folders | {"sagan_ad.examples"}
    assert settings["package-dir"] == {"sagan_ad.examples": "examples"}
    assert "*.yaml" in settings["package-data"]["sagan_ad.examples"]
    assert settings["dynamic"]["version"] == {"attr": "sagan_ad.__version__"}


@pytest.mark.parametrize("name", ["quickstart", "quickstart.yaml", "logger_wandb"])
def test_bare_names_resolve_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Path(configs.resolve_config(name)).parent == EXAMPLES


def test_a_file_of_that_name_wins_and_other_values_pass_through(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart.yaml").write_text("seed_everything: 1\n")
    assert configs.resolve_config("quickstart.yaml") == "quickstart.yaml"
    assert configs.resolve_config("sub/run.yaml") == "sub/run.yaml"
    assert configs.resolve_config("{trainer: {max_epochs: 1}}") == "{trainer: {max_epochs: 1}}"
    argv = ["fit", "-c", "nih_cpu", "--config=logger_wandb", "--model.lr=1"]
    resolved = configs.resolve_config_arguments(argv)
    assert resolved[2] == str(EXAMPLES / "nih_cpu.yaml")
    assert resolved[3] == f"--config={EXAMPLES / 'logger_wandb.yaml'}"
    assert resolved[4] == "--model.lr=1"


def test_an_unknown_name_is_one_error_line_that_suggests_the_right_one(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", "quikstart"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: --config 'quikstart': no such file, and no shipped config of that name" in err
    assert "did you mean 'quickstart'?" in err and "subclass_sagan" not in err


def test_fit_takes_shipped_configs_by_name_in_an_empty_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", "quickstart", "--config=logger_wandb", "--print_config"])
    assert info.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path: sagan_ad.SAGAN" in printed and "WandbLogger" in printed
    assert list(tmp_path.iterdir()) == []


def test_configs_lists_every_shipped_file_with_its_description(capsys):
    main(["configs"])
    out = capsys.readouterr().out
    for name in configs.shipped_files():
        assert re.search(rf"^  {re.escape(name)} +\S", out, re.MULTILINE), name
    assert "Quickstart: train and test SAGAN on built-in synthetic chest phantoms" in out


def test_configs_copies_one_out_and_never_overwrites_silently(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["configs", "--copy", "quickstart"])
    copied = tmp_path / "quickstart.yaml"
    assert copied.read_bytes() == (EXAMPLES / "quickstart.yaml").read_bytes()
    assert "sagan-ad fit --config quickstart.yaml" in capsys.readouterr().out
    copied.write_text("# mine\n")
    with pytest.raises(SystemExit) as info:
        main(["configs", "--copy", "quickstart"])
    assert info.value.code == 2
    assert "quickstart.yaml already exists: edit it, remove it, or pass --force" in (
        capsys.readouterr().err
    )
    assert copied.read_text() == "# mine\n"
    main(["configs", "--copy", "quickstart", "--force"])
    assert copied.read_bytes() == (EXAMPLES / "quickstart.yaml").read_bytes()
    main(["configs", "--copy", "subclass_sagan", "--to", "examples"])
    assert (tmp_path / "examples" / "subclass_sagan.py").is_file()


def test_configs_show_prints_a_config(capsys):
    main(["configs", "--show", "logger_wandb"])
    assert capsys.readouterr().out == (EXAMPLES / "logger_wandb.yaml").read_text()


def test_help_says_what_sagan_ad_is_and_lists_every_subcommand(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert "Lightning Trainer command line tool" not in out
    assert out.startswith(f"sagan-ad {sagan_ad.__version__}: SAGAN")
    assert "anomaly detection in medical images" in out
    for name, text in SUBCOMMANDS.items():
        assert f"  {name:<10} {text}" in out
    assert set(SUBCOMMANDS) == {"fit", "validate", "test", "predict", "export", "configs"}


def test_version_matches_the_installed_distribution(capsys):
    from importlib.metadata import version

    main(["--version"])
    assert capsys.readouterr().out == f"sagan-ad {sagan_ad.__version__}\n"
    assert version("sagan-ad") == sagan_ad.__version__


@pytest.mark.parametrize("argv", [[], ["fti"]])
def test_no_or_an_unknown_subcommand_exits_2_naming_the_choices(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "choose one of fit, validate, test, predict, export, configs" in err
    assert ("unknown subcommand 'fti'" in err) == bool(argv)


def test_subcommand_help_carries_its_description():
    result = subprocess.run(
        [Path(sys.executable).parent / "sagan-ad", "predict", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert SUBCOMMANDS["predict"] in " ".join(result.stdout.split())


MY_MODULE = '''
from sagan_ad import SAGAN


class MySAGAN(SAGAN):
    """A user's subclass, in a file of the folder the command runs in."""
'''


def test_a_model_class_from_the_current_folder_is_found(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_module.py").write_text(MY_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", "quickstart", "--model", "my_module.MySAGAN", "--print_config"])
    assert info.value.code == 0
    assert "class_path: my_module.MySAGAN" in capsys.readouterr().out
    assert sys.path[-1] == str(tmp_path)  # appended: never shadows an installed package


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (
            "--model=no_such_module.MySAGAN",
            "error: --model no_such_module.MySAGAN: there is no module 'no_such_module'; put "
            "no_such_module.py in the current folder ({cwd}) or in a folder on PYTHONPATH",
        ),
        ("--model=my_module.Missing", "error: --model my_module.Missing: module 'my_module' has "),
        ("--data.class_path=nope.Data", "error: --data nope.Data: there is no module 'nope'"),
    ],
)
def test_a_class_that_cannot_be_found_says_what_to_set(
    argument, message, tmp_path, monkeypatch, capsys
):
    (tmp_path / "my_module.py").write_text(MY_MODULE)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", "quickstart", argument])
    assert info.value.code == 2
    assert message.format(cwd=tmp_path) in capsys.readouterr().err
