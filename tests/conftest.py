"""Shared fixtures: tiny models, fake Med-AD folders, and the real data beside the project."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from sagan_ad import SAGAN, Critic, Generator

# One intra-op thread, here and in the commands the tests start: the suite runs one process per
# core, its networks are tiny, and a second thread per process would mostly wait at OpenMP
# barriers (docs/performance.md, "Threads").
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NIH_ROOT = SHARED_DATA / "nih-cxr14-pneumonia"

requires_nih = pytest.mark.skipif(
    not (NIH_ROOT / "data.json").is_file(),
    reason=f"real NIH chest X-rays not found at {NIH_ROOT} (only in the developers' checkout)",
)

PEDIATRIC_ROOT = SHARED_DATA / "pediatric-cxr-pneumonia"
requires_pediatric = pytest.mark.skipif(
    not (PEDIATRIC_ROOT / "data.json").is_file(),
    reason=f"real pediatric chest X-rays not found at {PEDIATRIC_ROOT} (only in the developers' "
    "checkout)",
)


def tiny_trainer(root: Path, **kwargs) -> L.Trainer:
    """A quiet CPU Trainer for tiny runs: validation every 2 iterations, no logger or bar;
    ``kwargs`` override or add Trainer arguments."""
    options = {
        "max_epochs": -1,
        "check_val_every_n_epoch": None,
        "val_check_interval": 2,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": root,
        "accelerator": "cpu",
    }
    return L.Trainer(**{**options, **kwargs})


def tiny_networks(image_size: int = 32, in_channels: int = 1, **generator_args) -> dict:
    """The generator and critic of a SAGAN small enough for CPU unit tests (32 px, a few
    thousand parameters), fresh each call: ``SAGAN(**tiny_networks(), max_iterations=4)``.
    ``generator_args`` override the generator's other arguments."""
    generator = {"base_channels": 4, "num_res_blocks": 1, **generator_args}
    return {
        "generator": Generator(in_channels=in_channels, image_size=image_size, **generator),
        "critic": Critic(in_channels=in_channels, base_channels=4, num_downsamples=5),
    }


def tiny_sagan(**kwargs) -> SAGAN:
    """A `tiny_networks` SAGAN; ``kwargs`` are the other arguments of `SAGAN`."""
    return SAGAN(**tiny_networks(), **kwargs)


TINY_MODEL_ARGS = [
    "--model.generator.image_size=32",
    "--model.generator.base_channels=4",
    "--model.generator.num_res_blocks=1",
    "--model.critic.base_channels=4",
    "--model.critic.num_downsamples=5",
]
"""Command-line arguments of the `tiny_networks` model."""

TINY_DATA_ARGS = [
    "--data=sagan_ad.SyntheticCXRDataModule",
    "--data.num_known_normal=16",
    "--data.num_test=8",
    "--data.image_size=32",
    "--data.batch_size=4",
    "--data.split.val_fraction=0.25",
]
"""Command-line arguments of a synthetic data set that fits `tiny_networks` (16 known normals)."""


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


DICOM_ROOT = SHARED_DATA / "dicom"

requires_dicom_samples = pytest.mark.skipif(
    not (DICOM_ROOT / "nema_wg04_RG1_UNCR_explicitLE.dcm").is_file(),
    reason=f"real DICOM radiographs not found at {DICOM_ROOT} (only in the developers' checkout)",
)


def write_dicom(
    path: Path,
    pixels: np.ndarray | None,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    rle: bool = False,
    file_meta: bool = True,
    **tags: object,
) -> Path:
    """A small DICOM file (DX) holding ``pixels``; extra ``tags`` by keyword.

    ``pixels=None`` writes a header without pixel data; ``rle`` compresses with RLE Lossless
    (pydicom's own encoder); ``file_meta=False`` writes an old-style file without preamble and
    file meta (implicit VR little endian).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PhotometricInterpretation = photometric
    if pixels is not None:
        colour = pixels.ndim == 3
        ds.Rows, ds.Columns = pixels.shape[:2]
        ds.SamplesPerPixel = 3 if colour else 1
        if colour:
            ds.PlanarConfiguration = 0
        allocated = pixels.dtype.itemsize * 8
        ds.BitsAllocated = allocated
        ds.BitsStored = bits_stored or allocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = int(np.issubdtype(pixels.dtype, np.signedinteger))
        ds.PixelData = pixels.tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not file_meta:
        dcmwrite(path, ds, implicit_vr=True, little_endian=True)
        return path
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if rle:
        ds.compress(RLELossless, pixels)
    ds.save_as(path, enforce_file_format=True)
    return path


def film(value: int, shape: tuple[int, ...] = (8, 8), dtype: type = np.uint8) -> np.ndarray:
    """A small test image of about ``value``: a uniform image is refused as a blank film, so a
    left-to-right ramp (4 grey levels at 8 bits, a quarter of the value at 16) leads down to it
    (up from it near 0), leaving the largest value, and so the used bit depth, unchanged."""
    spread = 4 if dtype == np.uint8 else max(4, value // 4)
    ramp = np.round(np.linspace(spread, 0, shape[1]))
    row = value - ramp if value >= spread else value + ramp[::-1]
    return np.ascontiguousarray(np.broadcast_to(row, shape).astype(dtype))


def mark(pixels: np.ndarray, i: int, value: int | None = None) -> np.ndarray:
    """``pixels`` with a bright band of rows and one of columns (an eighth of the image each)
    placed by ``i``, and from ``i = 64`` on a third band, of half the brightness (512
    placements): films of different patients made from one phantom would
    otherwise be the same image, which the leakage check finds (identical decoded pixels) as a
    copy on two sides."""
    marked = pixels.copy()
    h, w = marked.shape[:2]
    top = marked.max() if value is None else value
    rows, cols = max(1, h // 8), max(1, w // 8)
    row, col = (i % 8) * rows, (i // 8 % 8) * cols
    marked[row : row + rows, ...] = top
    marked[:, col : col + cols, ...] = top
    if i >= 64:
        second = (i // 64 % 8) * cols
        marked[:, second : second + cols, ...] = top // 2
    return marked


def chest_phantom(height: int = 48, width: int = 40, high: int = 4095) -> np.ndarray:
    """A crude chest in display values (bright spine band, dark lungs) as uint16 in 0..high."""
    image = np.full((height, width), 0.5)
    image[:, : width // 3] = 0.15  # right lung (image left)
    image[:, 2 * width // 3 :] = 0.15  # left lung
    image[:, width // 3 + 2 : 2 * width // 3 - 2] = 0.9  # mediastinum / spine
    return np.round(image * high).astype(np.uint16)


def lung_contrast(image: np.ndarray) -> float:
    """Mean of a central vertical band minus the mean of the two lung boxes (positive for a
    chest film shown with bone bright)."""
    image = np.asarray(image, dtype=np.float64)
    h, w = image.shape[-2:]
    rows = slice(int(0.3 * h), int(0.6 * h))
    centre = image[..., rows, int(0.45 * w) : int(0.55 * w)].mean()
    left = image[..., rows, int(0.15 * w) : int(0.3 * w)].mean()
    right = image[..., rows, int(0.7 * w) : int(0.85 * w)].mean()
    return float(centre - (left + right) / 2)
