"""Checkpoints written by sagan_ad v0.1 keep loading and scoring identically.

``fixtures/v0_1_tiny.ckpt`` was written by ``Trainer.save_checkpoint`` after a 4-iteration fit of
a tiny SAGAN (EMA generator, smoothed top-10% score) with the v0.1 code, and
``v0_1_tiny_scores.json`` holds the scores that code gave on a seeded random batch. Any change of
the checkpoint format, the module's structure or the scoring that breaks old checkpoints fails
here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from sagan_ad import SAGAN, load_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"


def _expected() -> dict:
    return json.loads((FIXTURES / "v0_1_tiny_scores.json").read_text())


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
