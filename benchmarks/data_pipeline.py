"""Speed of the data pipeline on a hospital-export-like tree: the library's first and second
setup against a hand-written loop over the same files.

Usage (from the project root):

    python benchmarks/data_pipeline.py [--tree /tmp/sagan_ad_tree] [--repeats 3]

The tree (`hospital_tree.py`, written once under ``--tree``, never in the repository) holds
``--dicoms`` 512 px DICOMs made from the real radiographs beside the project, with their own
UIDs and ``--patients`` PatientIDs, and ``--pngs`` 256 px NIH ChestX-ray14 PNGs. Every file is
read once before timing, so that every measurement finds it in the page cache. Then, in turn,
``--repeats`` times, each in a fresh process (imports not timed):

- the loop: what a user writes in five minutes, in one process: ``pydicom.dcmread(...)
  .pixel_array``, min-max to 8 bits and ``cv2.resize`` (area) for DICOMs, ``cv2.imread`` and
  ``cv2.resize`` for PNGs, into one array (no VOI LUT, header check, digest or cache);
- the first setup: ``FolderDataModule(tree, split={"group_by": "PatientID"}, image_size=...)``'s
  ``setup("fit")`` with an empty cache (discovery, headers, decoding on ``--workers``
  processes, digests, cache writes, split and leakage checks);
- the second setup: the same again, in another process (it reads the setup record that the
  first one wrote, `sagan_ad.data.caching.setup_record`).

It prints each run, the medians as files/s, the ratios first setup / loop (pair by pair, the
median) and the peak memory (the largest resident set of the measuring process and of any
decoding worker), and the machine with its load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KINDS = {
    "loop": "hand-written loop",
    "first": "first setup",
    "second": "second setup",
    "manifest": "manifest check",
}
KEYWORD = ("PatientID",)
PACKAGES = ("numpy", "pydicom", "opencv-python-headless", "pillow", "torch")


def hand_written_loop(folder: Path, size: int) -> int:
    import cv2
    import numpy as np
    import pydicom

    paths = sorted(p for p in folder.rglob("*") if p.suffix in (".dcm", ".png"))
    images = np.empty((len(paths), 1, size, size), np.uint8)
    for i, path in enumerate(paths):
        if path.suffix == ".dcm":
            pixels = pydicom.dcmread(path).pixel_array.astype(np.float32)
            low, high = pixels.min(), pixels.max()
            image = ((pixels - low) / max(high - low, 1) * 255).astype(np.uint8)
        else:
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        images[i, 0] = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return len(paths)


def library_setup(folder: Path, cache: Path, size: int, workers: int | None) -> int:
    from sagan_ad import FolderDataModule

    dm = FolderDataModule(
        folder,
        image_size=size,
        split={"group_by": "PatientID"},
        cache={"dir": cache, "workers": workers, "progress": False},
    )
    dm.setup("fit")
    return len(dm.known_normal) + len(dm.val or ()) // 2


def manifest_check(folder: Path, cache: Path, size: int) -> tuple[int, float]:
    """The cache's check of a filled cache alone (a ``stat`` per file against the index, the
    images gathered from the shards), as `FolderDataModule` runs it: files and seconds."""
    from sagan_ad import FolderDataModule, ImageCache
    from sagan_ad.data.reading.discovery import find_images

    settings = FolderDataModule(folder, image_size=size).settings
    paths = find_images(folder)
    start = time.perf_counter()
    cached = ImageCache(cache / "images", settings, progress=False).load(paths, "raise", KEYWORD)
    return len(cached.kept), time.perf_counter() - start


def measure(args: argparse.Namespace) -> None:
    """One timed run in this process; prints seconds, files and peak memory as JSON."""
    folder = args.tree / "images"
    # Every module a run uses is imported before the clock starts, as in a user's script:
    # `import sagan_ad` alone defers Lightning and torch to the first name used.
    if args.run == "loop":
        import cv2  # noqa: F401
        import pydicom  # noqa: F401
    else:
        # The warnings (the tree's PNGs have no PatientID) go to this process's stderr, which
        # `run` keeps apart: silenced, the first setup would keep no record (its warnings could
        # not be given again).
        from sagan_ad import FolderDataModule, ImageCache  # noqa: F401
    start, cpu = time.perf_counter(), _cpu_seconds()
    if args.run == "loop":
        files = hand_written_loop(folder, args.image_size)
    elif args.run == "manifest":
        files, check = manifest_check(folder, args.cache, args.image_size)
    else:
        files = library_setup(folder, args.cache, args.image_size, args.workers)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    again = None
    if args.run == "manifest":
        seconds = check  # the check alone, not the settings and the listing before it
        # Once more in this process: the first check also pays Python's first full garbage
        # collection after importing torch (a few tenths of a second), as any first step would.
        again = manifest_check(folder, args.cache, args.image_size)[1]
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {"seconds": seconds, "again": again, "cpu": cpu, "files": files, "mib": _peak_mib()}
    print(json.dumps({**result, "worker_mib": workers}))


def _cpu_seconds() -> float:
    """User and system time of this process and its finished children (decoding workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_mib() -> float:
    """This process's peak resident memory: VmHWM where Linux has it (ru_maxrss keeps the
    parent's resident memory from before exec), else ru_maxrss."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def run(kind: str, args: argparse.Namespace, cache: Path) -> dict:
    command = [sys.executable, __file__, "--run", kind, "--tree", str(args.tree)]
    command += ["--cache", str(cache), "--image-size", str(args.image_size)]
    if args.workers:
        command += ["--workers", str(args.workers)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=Path(tempfile.gettempdir()) / "sagan_ad_tree")
    parser.add_argument("--dicoms", type=int, default=3000)
    parser.add_argument("--pngs", type=int, default=3000)
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="cache.workers (default: 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run", choices=tuple(KINDS), help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        measure(args)
        return
    # Imported here: they import the library (and torch), which the loop's process must not.
    from harness import describe
    from hospital_tree import build_tree

    build_tree(args.tree, args.dicoms, args.pngs, args.patients)
    files = sorted(p for p in (args.tree / "images").rglob("*") if p.is_file())
    for path in files:
        path.read_bytes()  # into the page cache: every run reads from memory
    print(f"machine: {describe(packages=PACKAGES)}")
    print(f"load average at the start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(
        f"files: {len(files)} under {args.tree / 'images'} ({args.dicoms} DICOMs at 512 px, "
        f"{args.pngs} PNGs at 256 px, {args.patients} patients); cache at {args.image_size} px, "
        f"cache.workers={args.workers or 'default'}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="sagan_ad_bench_") as tmp:
        for repeat in range(args.repeats):
            cache = Path(tmp) / f"cache{repeat}"
            row = {kind: run(kind, args, cache) for kind in KINDS}
            shutil.rmtree(cache, ignore_errors=True)
            rows.append(row)
            print(
                f"run {repeat + 1}: "
                + ", ".join(
                    f"{k} {v['seconds']:.2f} s, {v['cpu']:.1f} cpu s ({v['files']} files)"
                    for k, v in row.items()
                )
            )
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    def rate(kind: str) -> float:
        return statistics.median(r[kind]["files"] / r[kind]["seconds"] for r in rows)

    ratios = [r["loop"]["seconds"] / r["first"]["seconds"] for r in rows]
    for kind, what in KINDS.items():
        seconds = statistics.median(r[kind]["seconds"] for r in rows)
        cpu = statistics.median(r[kind]["cpu"] for r in rows)
        print(f"{what:18s} median {seconds:7.2f} s  {rate(kind):9.0f} files/s  {cpu:6.1f} cpu s")
    again = statistics.median(r["manifest"]["again"] for r in rows)
    print(
        f"manifest check, again in the same process: median {again:.2f} s, "
        f"{statistics.median(r['manifest']['files'] / r['manifest']['again'] for r in rows):.0f} "
        "files/s"
    )
    print(
        f"first setup / loop (speed ratio, pair by pair): median {statistics.median(ratios):.2f} "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}); CPU time loop / first setup: "
        f"{statistics.median(r['loop']['cpu'] / r['first']['cpu'] for r in rows):.2f}; second "
        f"setup / loop: {rate('second') / rate('loop'):.0f}x"
    )
    for kind in KINDS:
        own = max(r[kind]["mib"] for r in rows)
        workers = max(r[kind]["worker_mib"] for r in rows)
        extra = (
            f", largest decoding worker {workers:.0f} MiB (shared pages included)"
            if workers
            else ""
        )
        print(f"peak memory, {kind}: {own:.0f} MiB (measuring process){extra}")


if __name__ == "__main__":
    main()
