"""On-disk preprocessing cache: decode, window and resize every file once per setting."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import stat as stat_module
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from sagan_ad.data.caching.cache_index import (
    BITS,
    DIGEST,
    SIZE,
    TAGS,
    add_header_values,
    current_entries,
    gather,
    read_index,
)
from sagan_ad.data.messages import listing
from sagan_ad.data.reading.bit_depth import BitDepth, check_bit_depth, unify_bit_depth
from sagan_ad.data.reading.dicom_options import DicomOptions
from sagan_ad.data.reading.file_kinds import missing_reason
from sagan_ad.data.reading.headers import IDENTITY_TAGS
from sagan_ad.data.reading.image_io import ImageReadError, read_image
from sagan_ad.data.splits.leakage import SAME_BYTES
from sagan_ad.data.storage import (
    atomic_write,
    atomic_write_text,
    make_folder,
)
from sagan_ad.errors import InputError, describe

log = logging.getLogger(__name__)

# Bumped whenever decoding changes in a way that settings do not capture (2: float TIFF,
# orientation, alpha and DICOM padding rules; identity tags and content digests stored; 3: deep
# images resized with area interpolation, SHA-256 digests, the index keyed by path with size
# and modification time).
CACHE_FORMAT = 3
OnError = Literal["raise", "skip"]
CacheIdentity = Literal["stat", "verify", "content"]


@dataclass(frozen=True)
class PreprocessSettings:
    """Everything that decides the cached pixels (and header values) of a file.

    Attributes:
        image_size: side of the cached square images.
        in_channels: 1 (grayscale) or 3 (RGB).
        dicom: how DICOM files are turned into display values.
        force_dicom: read every file as DICOM (files without suffix nor preamble).
        dicom_tags: DICOM header keywords stored with each image (for example
            ``("ViewPosition", "PatientSex")``), carried as metadata.
        bit_depth: how 16-bit PNG / TIFF are scaled (see
            `sagan_ad.data.reading.bit_depth.scale_bits`).
    """

    image_size: int
    in_channels: int = 1
    dicom: DicomOptions = field(default_factory=DicomOptions)
    force_dicom: bool = False
    dicom_tags: tuple[str, ...] = ()
    bit_depth: BitDepth = "auto"

    def __post_init__(self) -> None:
        check_bit_depth(self.bit_depth)

    def key(self) -> str:
        """A digest of every setting and the cache format.

        Examples:
            >>> PreprocessSettings(64).key() == PreprocessSettings(128).key()
            False
        """
        text = json.dumps([CACHE_FORMAT, dataclasses.asdict(self)], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass
class CachedImages:
    """What `ImageCache.load` returns, in the order of the requested paths minus skipped files.

    Attributes:
        images: uint8 ``(N, C, S, S)``.
        kept: index into the requested paths of each image.
        original_sizes: ``(height, width)`` of each original image.
        tags: the requested DICOM header values of each image (empty for other formats).
        skipped: ``(path, reason)`` of each file left out with ``on_error="skip"``.
        identities: the `IDENTITY_TAGS` of each image (DICOM only) and the digest of its
            bytes (`sagan_ad.data.splits.split.SAME_BYTES`), for the leakage check.
        headers: the values of the ``keywords`` given to `ImageCache.load` (DICOM only).
    """

    images: np.ndarray
    kept: list[int]
    original_sizes: list[tuple[int, int]]
    tags: list[dict[str, str]]
    skipped: list[tuple[str, str]]
    identities: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def select(self, rows: Sequence[int]) -> CachedImages:
        """These images' rows ``rows``, in that order (``kept`` indexes them, and nothing was
        skipped among them).

        Examples:
            >>> cached = CachedImages(np.zeros((2, 1, 4, 4), np.uint8), [0, 1], [(4, 4)] * 2,
            ...                       [{}, {}], [])
            >>> cached.select([1]).kept
            [0]
        """
        rows = list(rows)

        def pick(values: list) -> list:
            return [values[r] for r in rows] if values else []

        return CachedImages(
            self.images[rows],
            list(range(len(rows))),
            pick(self.original_sizes),
            pick(self.tags),
            [],
            pick(self.identities),
            pick(self.headers),
        )


@dataclass
class Decoded:
    """One file decoded by a cache worker: its pixels and what the index keeps about it."""

    image: np.ndarray
    size: tuple[int, int]
    tags: dict[str, str]
    bits: int | None
    digest: str


def _decode(job: tuple[str, PreprocessSettings, tuple[str, ...]]) -> Decoded | str:
    # One read of the file gives its pixels, its header values and the digest of its bytes.
    path, settings, keywords = job
    try:
        read = read_image(
            path,
            settings.image_size,
            settings.in_channels,
            dicom=settings.dicom,
            force_dicom=settings.force_dicom,
            bit_depth=settings.bit_depth,
            keywords=keywords,
            digest=True,
        )
    except ImageReadError as err:
        return str(err)
    except Exception as err:
        return f"{path}: {describe(err)}"
    return Decoded(read.image, read.original_size, read.tags, read.bits, read.digest)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def _keep_freed_memory() -> None:
    """Start of a decoding worker: let glibc keep freed memory for the next file. By default a
    film's temporaries (megabytes) are mapped afresh and returned to the system at every file,
    and the kernel zeroes every page again: half a worker's time on 512 px films. Elsewhere
    (another C library, another system) nothing is changed."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):
        return
    mallopt(M_MMAP_THRESHOLD, 32 << 20)  # the largest value glibc takes
    mallopt(M_TRIM_THRESHOLD, 64 << 20)


def _save_array(path: Path, array: np.ndarray) -> None:
    # An open handle keeps np.save from appending ".npy" to the temporary name.
    with open(path, "wb") as handle:
        np.save(handle, array)


class ImageCache:
    """Memory-mappable cache of preprocessed images, keyed by file identity and settings.

    Layout: ``root/<settings key>/`` holds ``settings.json``, shards ``shard-*.npy`` of uint8
    ``(n, C, S, S)`` arrays and ``index.json``, the manifest: for each file's absolute path its
    size, modification time and inode when read, its shard row, original size, header values,
    used bit depth and a digest of its bytes (see `sagan_ad.data.caching.cache_index`). A damaged
    index or shard (cut short, deleted, not an object, images of other settings) is not trusted: the
    files it held are decoded again, with a warning; a cache folder that cannot be written is
    an `OSError` naming it. A changed setting never reuses stale pixels; what counts as a
    changed file is ``identity``:

    - ``"stat"`` (default, one ``stat`` per file, no file opened): a new path, size,
      modification time or inode (a file swapped for another by a rename, as ``rsync`` does).
      A file rewritten in place with the same size and its old modification time (``cp -p``
      over it, a clock or file system with coarse times) is **not** detected.
    - ``"verify"``: as ``"stat"``, and a file whose path, size and time match an entry is read
      and hashed, and decoded again when its bytes changed. Every change of content is
      detected, at the cost of reading every file at every start.
    - ``"content"``: a file is known by its bytes alone, whatever its path or times: moved or
      copied files reuse their entry. Every file is read and hashed at every start.

    Missing files are decoded in parallel over ``num_workers`` processes with a progress bar,
    each file read once (pixels, header values and digest from the same bytes); workers send
    back only the small cached images. Every ``shard_size`` images, and at least every
    ``save_interval`` seconds, a shard is written in one block and the index replaced, both
    atomically, so an interrupted build keeps what it finished (the next build starts from
    there) and never leaves a half-written entry. Two processes filling the same cache at once
    stay correct, but the entries of the one that writes its index first are decoded again on
    the next run.

    Args:
        root: cache folder (created if needed).
        settings: the preprocessing settings.
        num_workers: decoding processes (default: every CPU core).
        progress: show a progress bar while decoding.
        shard_size: most images per shard file.
        identity: ``"stat"``, ``"verify"`` or ``"content"`` (see above).
        save_interval: seconds between saves of a running build.

    Examples:
        >>> import tempfile
        >>> cache = ImageCache(tempfile.mkdtemp(), PreprocessSettings(64))
        >>> cache.load([]).images.shape
        (0, 1, 64, 64)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        settings: PreprocessSettings,
        num_workers: int | None = None,
        progress: bool = True,
        shard_size: int = 4096,
        identity: CacheIdentity = "stat",
        save_interval: float = 60.0,
    ) -> None:
        if num_workers is not None and num_workers < 1:
            raise InputError(f"cache num_workers={num_workers}: must be >= 1")
        if identity not in ("stat", "verify", "content"):
            raise InputError(f"cache identity={identity!r}: must be 'stat', 'verify' or 'content'")
        if not save_interval > 0 or shard_size < 1:
            raise InputError(
                f"cache save_interval={save_interval}, shard_size={shard_size}: must be > 0"
            )
        self.identity = identity
        self.save_interval = float(save_interval)
        self.settings = settings
        self.folder = Path(root).expanduser() / settings.key()
        self.num_workers = num_workers or os.cpu_count() or 1
        self.progress = progress
        self.shard_size = shard_size
        self._shards: dict[str, np.ndarray] = {}

    @property
    def index_path(self) -> Path:
        return self.folder / "index.json"

    @property
    def _shape(self) -> tuple[int, int, int]:
        s = self.settings.image_size
        return (self.settings.in_channels, s, s)

    def _decoded(self, paths: Sequence[str], keywords: tuple[str, ...]) -> Iterator[Decoded | str]:
        jobs = [(p, self.settings, keywords) for p in paths]
        workers = min(self.num_workers, len(jobs))
        if workers <= 1:
            yield from map(_decode, jobs)
            return
        # fork starts workers instantly with the library imported; spawn elsewhere.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        chunk = max(1, min(64, len(jobs) // (workers * 8)))
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_keep_freed_memory
        ) as pool:
            yield from pool.map(_decode, jobs, chunksize=chunk)

    def _build(
        self,
        paths: Sequence[str],
        stats: Sequence[os.stat_result],
        index: dict,
        keywords: tuple[str, ...],
    ) -> dict[str, str]:
        """Decode ``paths`` into new shards, entered in ``index``; returns the errors by path."""
        make_folder(self.folder, owner=self.folder.parent)
        settings_file = self.folder / "settings.json"
        if not settings_file.is_file():
            text = json.dumps(dataclasses.asdict(self.settings), indent=1, sort_keys=True)
            atomic_write_text(settings_file, text)
        errors: dict[str, str] = {}
        pending: list[tuple[str, os.stat_result, Decoded]] = []
        saved = time.monotonic()

        def flush() -> None:
            nonlocal saved
            saved = time.monotonic()
            if not pending:
                return
            name = f"shard-{uuid.uuid4().hex}.npy"
            stack = np.stack([item.image for _, _, item in pending])
            atomic_write(self.folder / name, lambda tmp: _save_array(tmp, stack))
            self._shards[name] = stack
            for row, (path, stat, item) in enumerate(pending):
                index[path] = [
                    name,
                    row,
                    list(item.size),
                    item.tags,
                    item.bits,
                    item.digest,
                    stat.st_size,
                    stat.st_mtime_ns,
                    stat.st_ino,
                ]
            atomic_write_text(self.index_path, json.dumps(index))
            pending.clear()

        bar = tqdm(
            total=len(paths),
            desc=f"decoding into {self.folder}",
            unit="img",
            disable=not self.progress,
        )
        with bar:
            for path, stat, result in zip(
                paths, stats, self._decoded(paths, keywords), strict=True
            ):
                if isinstance(result, str):
                    errors[path] = result
                else:
                    pending.append((path, stat, result))
                    due = time.monotonic() - saved >= self.save_interval
                    if len(pending) >= self.shard_size or due:
                        flush()
                bar.update()
            flush()
        return errors

    def load(
        self,
        paths: Sequence[str | os.PathLike],
        on_error: OnError = "raise",
        keywords: Sequence[str] = (),
    ) -> CachedImages:
        """The preprocessed images of ``paths``, decoding the files not yet cached.

        The paths are one data set: with ``bit_depth="auto"`` their 16-bit images are scaled
        by the largest depth any of them uses (see
        `sagan_ad.data.reading.bit_depth.unify_bit_depth`).

        Args:
            paths: image files.
            on_error: ``"raise"``: one `ImageReadError` listing every missing or unreadable
                file (the readable ones are cached all the same); ``"skip"``: leave them out and
                log the list of skipped files.
            keywords: DICOM header keywords whose values to return as `CachedImages.headers`
                (for example ``group_by``): read with the pixels when a file is decoded, and
                kept in the index; entries cached without them have their headers read.
        """
        if on_error not in ("raise", "skip"):
            raise InputError(f"on_error={on_error!r}: must be 'raise' or 'skip'")
        keywords = tuple(keywords)
        wanted = tuple(dict.fromkeys(self.settings.dicom_tags + IDENTITY_TAGS + keywords))
        paths = [str(p) for p in paths]
        problems: dict[int, str] = {}
        keys: dict[int, str] = {}
        stats: dict[int, os.stat_result] = {}
        for i, path in enumerate(paths):
            with contextlib.suppress(OSError, ValueError):
                stats[i] = os.stat(path)
            if i in stats and stat_module.S_ISREG(stats[i].st_mode):
                keys[i] = os.path.abspath(path)
            else:
                problems[i] = f"{path} {missing_reason(path)}"
        index, self._shards = read_index(self.index_path, self._shape)
        entry = current_entries(self.identity, paths, keys, stats, index)
        todo = list(dict.fromkeys(keys[i] for i in keys if i not in entry))
        first = {keys[i]: i for i in reversed(keys) if i not in entry}
        errors = self._build(todo, [stats[first[k]] for k in todo], index, wanted) if todo else {}
        for i in keys:
            if i not in entry:
                if keys[i] in errors:
                    problems[i] = errors[keys[i]]
                else:
                    entry[i] = keys[i]
        if add_header_values(paths, entry, index, keywords, problems):
            atomic_write_text(self.index_path, json.dumps(index))
        if problems and on_error == "raise":
            raise ImageReadError(
                f"{len(problems)} image file(s) are missing or could not be decoded; fix or "
                f"remove them, or set on_error='skip':\n  {listing(list(problems.values()))}"
            )
        if problems:
            log.warning(
                "skipped %d unreadable image file(s):\n  %s",
                len(problems),
                "\n  ".join(problems.values()),
            )
        kept = [i for i in range(len(paths)) if i not in problems]
        entries = [index[entry[i]] for i in kept]
        images = gather(self._shards, entries, self._shape)
        dicom_tags = self.settings.dicom_tags
        sizes = [(int(e[SIZE][0]), int(e[SIZE][1])) for e in entries]
        tags = [{k: e[TAGS].get(k, "") for k in dicom_tags} if e[TAGS] else {} for e in entries]
        headers = [{k: e[TAGS].get(k, "") for k in keywords} if e[TAGS] else {} for e in entries]
        identities = [
            {**{k: e[TAGS][k] for k in IDENTITY_TAGS if k in e[TAGS]}, SAME_BYTES: e[DIGEST]}
            for e in entries
        ]
        if kept:
            # The folders of the files (their keys are absolute paths), each once.
            where = os.path.commonpath({os.path.dirname(keys[i]) for i in kept})
            names = [paths[i] for i in kept]
            bits = [e[BITS] for e in entries]
            unify_bit_depth(images, bits, self.settings.bit_depth, where, names)
        skipped = [(paths[i], problems[i]) for i in problems]
        return CachedImages(images, kept, sizes, tags, skipped, identities, headers)
