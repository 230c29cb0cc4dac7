"""The "Use it from your own code" page runs: its Python blocks, in order, at a tiny size."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "library.md"

#: The page's sizes -> the test's: each must occur on the page, so an edit cannot drop one silently.
TINY = {
    "num_known_normal=500": "num_known_normal=16",
    "num_test=200": "num_test=8",
    "batch_size=16": "batch_size=4",
    "max_iterations=1000": "max_iterations=4",
    "val_check_interval=100": "val_check_interval=2",
    "trainer = L.Trainer(": "trainer = L.Trainer(accelerator='cpu', enable_progress_bar=False,",
}


def page_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", PAGE.read_text(), re.MULTILINE | re.DOTALL)


def test_the_page_shows_each_step():
    code = "\n".join(page_blocks())
    for step in (
        "class MaskWeightedSAGAN(SAGAN)",
        "L.Trainer(",
        "WandbLogger(",
        "trainer.test(",
        "model.score(",
        "load_checkpoint(",
        "export_scorer(",
    ):
        assert step in code, step


def test_the_page_runs(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    code = "\n".join(page_blocks())
    for page_text, tiny in TINY.items():
        assert page_text in code, f"{page_text!r} is no longer on the page: update TINY"
        code = code.replace(page_text, tiny)
    namespace: dict = {"__name__": "library_page"}
    exec(compile(code, str(PAGE), "exec"), namespace)
    folder = namespace["folder"]
    assert folder.absolute().parent == tmp_path / "runs" / "sagan-ad"
    assert {p.name for p in (folder / "test").iterdir()} >= {"metrics.json", "predictions.csv"}
    assert (tmp_path / "sagan.onnx").is_file()
    assert namespace["predictions"].tolist()[0] in (0, 1)
