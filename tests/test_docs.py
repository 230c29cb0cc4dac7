"""Every code block of README.md and docs/ runs (see tests/docs_runner.py for how, and for the
markers that make a block tiny, parse it only, or skip it with a reason)."""

from __future__ import annotations

import pytest
from docs_runner import PAGES, ROOT, Block, Page, make_bin, page_blocks, skip_reason

BLOCKS = [block for page in PAGES for block in page_blocks(page)]
_pages: dict[str, Page] = {}


@pytest.fixture(scope="module")
def shell_bin(tmp_path_factory):
    return make_bin(tmp_path_factory.mktemp("docs_bin"))


def page_of(block: Block, tmp_path_factory, shell_bin) -> Page:
    key = str(block.page)
    if key not in _pages:
        _pages[key] = Page(tmp_path_factory.mktemp(block.page.stem), shell_bin)
    return _pages[key]


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_the_block_runs(block, tmp_path_factory, shell_bin, monkeypatch):
    reason = skip_reason(block)
    if reason is not None:
        pytest.skip(f"{block.name}: {reason}")
    page = page_of(block, tmp_path_factory, shell_bin)
    monkeypatch.chdir(page.work)
    # W&B runs stay on disk: no account, no network.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    page.run(block)


def test_the_library_page_ran_its_whole_run():
    page = _pages.get(str(ROOT / "docs" / "library.md"))
    if page is None:
        pytest.skip("the library page did not run (see its blocks' results)")
    folder = page.work / page.namespace["folder"]  # relative to the page's folder
    assert folder.parent == page.work / "runs" / "sagan-ad"
    assert {p.name for p in (folder / "test").iterdir()} >= {"metrics.json", "predictions.csv"}
    assert (page.work / "sagan.onnx").is_file()
    assert page.namespace["predictions"].tolist()[0] in (0, 1)


def test_every_marker_is_understood_and_every_skip_says_why():
    for block in BLOCKS:
        for kind, value in block.actions:
            if kind in ("skip", "parse-only"):
                assert len(value.split()) >= 2, f"{block.name}: say why, in words"
        reason = skip_reason(block)
        assert reason is None or reason.strip(), block.name


def test_blocks_of_unknown_languages_are_refused():
    known = {"python", "bash", "json", "yaml", "text", "bibtex"}
    assert {b.language for b in BLOCKS} <= known, "teach docs_runner the new language"


def test_the_library_page_shows_each_step():
    page = ROOT / "docs" / "library.md"
    code = "\n".join(b.code for b in page_blocks(page) if b.language == "python")
    for step in (
        "class MaskWeightedSAGAN(SAGAN)",
        "Engine(",
        "WandbLogger(",
        "engine.fit(",
        "model.score(",
        "load_checkpoint(",
        "export_scorer(",
    ):
        assert step in code, step
