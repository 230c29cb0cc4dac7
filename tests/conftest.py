"""Shared fixtures: tiny models, fake Med-AD folders, and the real data beside the project."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NIH_ROOT = SHARED_DATA / "nih-cxr14-pneumonia"

requires_nih = pytest.mark.skipif(
    not (NIH_ROOT / "data.json").is_file(),
    reason=f"real NIH chest X-rays not found at {NIH_ROOT} (only in the developers' checkout)",
)

TINY_MODEL = {
    "image_size": 32,
    "base_channels": 4,
    "num_res_blocks": 1,
    "critic_base_channels": 4,
    "critic_downsamples": 5,
}
"""A SAGAN small enough for CPU unit tests (32 px, a few thousand parameters)."""


def write_medad_tree(
    root: Path,
    counts: dict[str, int] | None = None,
    size: int = 40,
    seed: int = 0,
) -> Path:
    """A Med-AD folder of random PNGs (``images/`` + ``data.json``); abnormals are brighter."""
    counts = counts or {"known": 12, "pool0": 8, "pool1": 10, "test0": 6, "test1": 6}
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names: dict[str, list[str]] = {}
    for part, n in counts.items():
        names[part] = []
        for i in range(n):
            name = f"{part}_{i:03d}.png"
            base = 150 if part in ("pool1", "test1") else 80
            pixels = rng.integers(0, 60, (size, size)) + base
            Image.fromarray(pixels.astype(np.uint8)).save(root / "images" / name)
            names[part].append(name)
    split = {
        "train": {"0": names["known"], "unlabeled": {"0": names["pool0"], "1": names["pool1"]}},
        "test": {"0": names["test0"], "1": names["test1"]},
    }
    (root / "data.json").write_text(json.dumps(split))
    return root


@pytest.fixture
def medad_root(tmp_path: Path) -> Path:
    return write_medad_tree(tmp_path / "medad")
