"""Checkpoints written by sagan_ad v0.1, and by main before the code was reorganised into
components (2026-12-01), keep loading and scoring identically.

``fixtures/v0_1_tiny.ckpt`` was written by ``Trainer.save_checkpoint`` after a 4-iteration fit of
a tiny SAGAN (EMA generator, smoothed top-10% score) with the v0.1 code, and
``v0_1_tiny_scores.json`` holds the scores that code gave on a seeded random batch. Any change of
the checkpoint format, the module's structure or the scoring that breaks old checkpoints fails
here.

``fixtures/main_2026_12_tiny.ckpt`` was written the same way by main at ea6f1ac (the flat
33-argument `SAGAN`), with every concern away from its default: a wider critic, ``n_critic`` 2,
``lambda_gp`` 5, ``lambda_restoration`` 2, seed 3, EMA 0.9, a smoothed (sigma 1) top-20% score,
the Youden threshold, a shortcut-audit margin of 0.1 and z-score-normalised training data.
``main_2026_12_tiny_scores.json`` holds its scores and map sums, and those of its exported
scorer (`sagan_ad.AnomalyScorer`, which embeds the normalisation), on a seeded random batch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from sagan_ad import SAGAN, AnomalyScorer, load_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"


def _expected(name: str = "v0_1_tiny") -> dict:
    return json.loads((FIXTURES / f"{name}_scores.json").read_text())


def _images(expected: dict) -> torch.Tensor:
    generator = torch.Generator().manual_seed(expected["seed"])
    return torch.rand(*expected["shape"], generator=generator) * 2 - 1


def test_v0_1_checkpoint_loads_and_scores_identically() -> None:
    expected = _expected()
    model = load_checkpoint(FIXTURES / "v0_1_tiny.ckpt")
    assert isinstance(model, SAGAN)
    assert model.iteration == expected["iteration"]
    assert math.isclose(float(model.threshold), expected["threshold"], rel_tol=1e-6)
    with torch.no_grad():
        scores = model.score(_images(expected))
    torch.testing.assert_close(scores, torch.tensor(expected["scores"]), rtol=1e-5, atol=1e-6)


def test_pre_component_checkpoint_loads_scores_and_exports_identically() -> None:
    expected = _expected("main_2026_12_tiny")
    model = load_checkpoint(FIXTURES / "main_2026_12_tiny.ckpt")
    assert isinstance(model, SAGAN)
    assert model.iteration == expected["iteration"]
    assert model.preprocessing.normalization.spec() == expected["normalization"]
    assert math.isclose(float(model.threshold), expected["threshold"], rel_tol=1e-6)
    images = _images(expected)
    with torch.no_grad():
        scores = model.score(images)
        maps = model.anomaly_map(images)
        exported_scores, exported_maps = AnomalyScorer.from_model(model)(images)
    close = {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(scores, torch.tensor(expected["scores"]), **close)
    torch.testing.assert_close(maps.sum(dim=(1, 2, 3)), torch.tensor(expected["map_sums"]), **close)
    torch.testing.assert_close(exported_scores, torch.tensor(expected["export_scores"]), **close)
    torch.testing.assert_close(
        exported_maps.sum(dim=(1, 2, 3)), torch.tensor(expected["export_map_sums"]), **close
    )
