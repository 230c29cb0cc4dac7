"""Throughput of the data pipeline: raw DICOM decoding into the cache vs. reading the cache.

Usage (from the project root):

    python benchmarks/data_pipeline.py [--copies 16] [--dicom-dir ../shared/data/dicom]

The same files are measured throughout: the real chest radiographs in ``--dicom-dir`` (each
copied ``--copies`` times so that every core has work; copies are distinct cache entries), or,
where that folder is absent, synthetic 2048 px 12-bit films written with pydicom (uncompressed
and RLE). It prints images/s for decoding uncompressed and compressed DICOM into the cache on
every core, images/s for reading the cache at 64 and 256 px, the ratio of cache reading at
64 px to decoding (required: at least 100x), and the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import describe

from sagan_ad.data.cache import ImageCache, PreprocessSettings
from sagan_ad.data.dicom import read_dataset

DECODERS = ("numpy", "pydicom", "pillow", "pylibjpeg-openjpeg", "pylibjpeg-libjpeg")
DEFAULT_DICOM = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom"


def synthetic_films(folder: Path) -> list[Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import chest_phantom, write_dicom

    film = chest_phantom(2048, 2048)
    return [
        write_dicom(folder / "plain.dcm", film, "MONOCHROME2", bits_stored=12),
        write_dicom(folder / "rle.dcm", film, "MONOCHROME2", bits_stored=12, rle=True),
    ]


def replicate(files: list[Path], copies: int, folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    out = []
    for k in range(copies):
        for path in files:
            target = folder / f"{k:03d}_{path.name}"
            shutil.copyfile(path, target)
            out.append(target)
    return out


def decode_rate(paths: list[Path], cache_root: Path, size: int) -> float:
    cache = ImageCache(cache_root, PreprocessSettings(size), num_workers=os.cpu_count())
    start = time.perf_counter()
    cache.load(paths)
    return len(paths) / (time.perf_counter() - start)


def read_rate(paths: list[Path], cache_root: Path, size: int, seconds: float = 2.0) -> float:
    # A fresh ImageCache per pass: each pass stats and hashes every file, reads the index and
    # maps the shards, as a new training run does.
    loads, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or loads < 3:
        result = ImageCache(cache_root, PreprocessSettings(size), progress=False).load(paths)
        assert len(result.images) == len(paths)
        loads += 1
    return loads * len(paths) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dicom-dir", type=Path, default=DEFAULT_DICOM)
    parser.add_argument("--copies", type=int, default=16)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sagan_ad_bench_") as tmp:
        tmp_path = Path(tmp)
        if args.dicom_dir.is_dir():
            files = sorted(args.dicom_dir.glob("*.dcm"))
            source = f"real DICOMs in {args.dicom_dir}"
        else:
            files = synthetic_films(tmp_path / "synthetic")
            source = "synthetic 2048 px 12-bit films (real DICOM folder absent)"
        compressed = [
            p for p in files if read_dataset(p, True).file_meta.TransferSyntaxUID.is_compressed
        ]
        plain = [p for p in files if p not in compressed]
        groups = {
            "uncompressed": replicate(plain, args.copies, tmp_path / "plain"),
            "compressed": replicate(compressed, args.copies, tmp_path / "compressed"),
        }
        print(f"machine: {describe(packages=DECODERS)}")
        print(f"files: {source}; {args.copies} copies each")
        for name, paths in groups.items():
            kinds = sorted({read_dataset(p, True).file_meta.TransferSyntaxUID.name for p in paths})
            print(f"  {name}: {len(paths)} images ({', '.join(kinds)})")
        all_paths = groups["uncompressed"] + groups["compressed"]
        rates = {}
        for name, paths in groups.items():
            rates[name] = decode_rate(paths, tmp_path / "cache", 64)
            print(
                f"decode raw DICOM -> cache (64 px, {os.cpu_count()} processes), {name}: "
                f"{rates[name]:.2f} images/s"
            )
        decode_all = len(all_paths) / sum(len(p) / rates[n] for n, p in groups.items())
        decode_rate(all_paths, tmp_path / "cache", 256)  # builds the 256 px cache
        for size in (64, 256):
            rate = read_rate(all_paths, tmp_path / "cache", size)
            rates[size] = rate
            print(f"read cache at {size} px: {rate:.0f} images/s")
        ratio = rates[64] / decode_all
        verdict = "OK" if ratio >= 100 else "TOO SLOW"
        print(
            f"cache read at 64 px is {ratio:.0f}x decoding (all {len(all_paths)} images, "
            f"{decode_all:.2f} images/s): {verdict} (required >= 100x)"
        )


if __name__ == "__main__":
    main()
