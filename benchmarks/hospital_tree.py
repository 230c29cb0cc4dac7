"""A hospital-export-like tree for `data_pipeline.py`: real films as DICOM and PNG, many files.

Usage (from the project root; the tree is written once and reused while its recipe is unchanged):

    python benchmarks/hospital_tree.py /tmp/sagan_ad_tree [--dicoms 3000] [--pngs 3000]

``dicom/``: ``--dicoms`` files of 512 x 512 px made from the real radiographs in
``../shared/data/dicom`` (the three that need no decoder plugin, in turn), each a different
crop of its film, resized with OpenCV's area interpolation and written with that film's own
header (MONOCHROME1 CR at 10 and 15 bits with a window, 8-bit MONOCHROME2 DX without one,
explicit and implicit VR), its own SOP, series and study instance UIDs, and one of
``--patients`` PatientIDs. ``png/``: ``--pngs`` 8-bit NIH ChestX-ray14 films at 256 px from
``../shared/data/nih-cxr14-pneumonia/images``: the real files first, then crops of them resized
back to 256 px, so that no two files hold the same bytes or pixels.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sagan_ad.data.reading.dicom import read_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FILMS = (
    "fuji_CR-MONO1-10-chest_no_meta.dcm",
    "nema_wg04_RG1_UNCR_explicitLE.dcm",
    "nih_cxr14_google_nofinding_DX.dcm",
)
RECIPE = 1  # bumped whenever the files written change


def _crop(pixels: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random crop keeping 85-100% of each side, resized to ``size`` (area interpolation)."""
    h, w = pixels.shape[:2]
    ch, cw = (round(n * rng.uniform(0.85, 1.0)) for n in (h, w))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    part = np.ascontiguousarray(pixels[y : y + ch, x : x + cw])
    return cv2.resize(part, (size, size), interpolation=cv2.INTER_AREA).astype(pixels.dtype)


def write_dicoms(folder: Path, count: int, patients: int, size: int = 512) -> None:
    pixels = [read_dataset(SHARED / "dicom" / name).pixel_array for name in FILMS]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        k = i % len(FILMS)
        ds = pydicom.dcmread(SHARED / "dicom" / FILMS[k], force=True)
        image = _crop(pixels[k], rng, size)
        patient = i % patients
        ds.PatientID = f"PAT{patient:05d}"
        ds.StudyInstanceUID = generate_uid(entropy_srcs=[f"study {patient} {i // patients}"])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[f"series {i}"])
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"image {i}"])
        ds.Rows, ds.Columns = image.shape
        ds.PixelData = image.tobytes()
        meta = pydicom.dataset.FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.1")
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        implicit = k == 2  # the NIH film is Implicit VR Little Endian, the others explicit
        meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian if implicit else (pydicom.uid.ExplicitVRLittleEndian)
        )
        ds.file_meta = meta
        ds.preamble = b"\0" * 128
        ds.save_as(folder / f"IM{i:06d}.dcm", enforce_file_format=True)


def write_pngs(folder: Path, count: int) -> None:
    films = sorted((SHARED / "nih-cxr14-pneumonia" / "images").glob("*.png"))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        source = films[i % len(films)]
        target = folder / f"{i:06d}_{source.name}"
        if i < len(films):
            shutil.copyfile(source, target)
            continue
        image = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(target), _crop(image, rng, image.shape[0]))


def build_tree(root: Path, dicoms: int = 3000, pngs: int = 3000, patients: int = 300) -> Path:
    """Write the tree under ``root`` unless it is there already with the same recipe."""
    recipe = {"recipe": RECIPE, "dicoms": dicoms, "pngs": pngs, "patients": patients}
    stamp = root / "recipe.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return root
    shutil.rmtree(root, ignore_errors=True)
    write_dicoms(root / "images" / "dicom", dicoms, patients)
    write_pngs(root / "images" / "png", pngs)
    stamp.write_text(json.dumps(recipe))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--dicoms", type=int, default=3000)
    parser.add_argument("--pngs", type=int, default=3000)
    parser.add_argument("--patients", type=int, default=300)
    args = parser.parse_args()
    build_tree(args.root, args.dicoms, args.pngs, args.patients)
    print(f"tree: {args.root / 'images'}")


if __name__ == "__main__":
    main()
