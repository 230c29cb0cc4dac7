"""The example configs of the raw-release DataModules and synthesizers parse and build."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagan_ad.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    ("config", "data_class"),
    [
        ("raw_rsna.yaml", "sagan_ad.RSNADataModule"),
        ("raw_vindr.yaml", "sagan_ad.VinDrCXRDataModule"),
        ("raw_lag.yaml", "sagan_ad.LAGDataModule"),
        ("folder_dicom.yaml", "sagan_ad.FolderDataModule"),
    ],
)
def test_raw_example_configs_parse(config, data_class, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", f"--config={EXAMPLES / config}", "--print_config"])
    assert info.value.code == 0
    assert f"class_path: {data_class}" in capsys.readouterr().out


def test_synthesizer_is_selected_from_yaml(capsys):
    with pytest.raises(SystemExit) as info:
        main(
            [
                "fit",
                f"--config={EXAMPLES / 'raw_rsna.yaml'}",
                f"--config={EXAMPLES / 'synthesizer_perlin.yaml'}",
                "--print_config",
            ]
        )
    assert info.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path: sagan_ad.PerlinBlobSynthesizer" in printed
    assert "min_area: 0.02" in printed
