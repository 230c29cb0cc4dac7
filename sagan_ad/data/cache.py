"""On-disk preprocessing cache: decode, window and resize every file once per setting."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from sagan_ad.data.bit_depth import BitDepth, check_bit_depth, unify_bit_depth
from sagan_ad.data.cache_files import (
    _atomic_write,
    atomic_write_text,
    content_digest,
    file_key,
    make_folder,
    read_json_store,
)
from sagan_ad.data.dicom import DicomOptions, read_tags
from sagan_ad.data.file_kinds import is_dicom, missing_reason
from sagan_ad.data.headers import IDENTITY_TAGS
from sagan_ad.data.image_io import ImageReadError, read_image
from sagan_ad.data.leakage import SAME_BYTES
from sagan_ad.data.messages import listing

log = logging.getLogger(__name__)

# Bumped whenever decoding changes in a way that settings do not capture (2: float TIFF,
# orientation, alpha and DICOM padding rules; identity tags and content digests stored).
CACHE_FORMAT = 2
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
        bit_depth: how 16-bit PNG / TIFF are scaled (see `sagan_ad.data.bit_depth.scale_bits`).
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
            bytes (`sagan_ad.data.split.SAME_BYTES`), for the leakage check.
    """

    images: np.ndarray
    kept: list[int]
    original_sizes: list[tuple[int, int]]
    tags: list[dict[str, str]]
    skipped: list[tuple[str, str]]
    identities: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Decoded:
    """One file decoded by a cache worker: its pixels and what the index keeps about it."""

    image: np.ndarray
    size: tuple[int, int]
    tags: dict[str, str]
    bits: int | None
    digest: str


def _decode(job: tuple[str, PreprocessSettings]) -> Decoded | str:
    path, settings = job
    try:
        read = read_image(
            path,
            settings.image_size,
            settings.in_channels,
            dicom=settings.dicom,
            force_dicom=settings.force_dicom,
            bit_depth=settings.bit_depth,
        )
        keywords = tuple(dict.fromkeys(settings.dicom_tags + IDENTITY_TAGS))
        dicom = is_dicom(path, settings.force_dicom)
        tags = read_tags(path, keywords) if dicom else {}
        digest = content_digest(path)
    except ImageReadError as err:
        return str(err)
    except Exception as err:
        return f"{path}: {type(err).__name__}: {err}"
    return Decoded(read.image, read.original_size, tags, read.bits, digest)


def _save_array(path: Path, array: np.ndarray) -> None:
    # An open handle keeps np.save from appending ".npy" to the temporary name.
    with open(path, "wb") as handle:
        np.save(handle, array)


def _entry_ok(value: object) -> bool:
    """Whether an index entry has the shape `ImageCache` writes (see its layout)."""
    return (
        isinstance(value, list)
        and len(value) == 6
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and isinstance(value[2], list)
        and len(value[2]) == 2
        and isinstance(value[3], dict)
        and isinstance(value[5], str)
    )


class ImageCache:
    """Memory-mappable cache of preprocessed images, keyed by file identity and settings.

    Layout: ``root/<settings key>/`` holds ``settings.json``, shards ``shard-*.npy`` of uint8
    ``(n, C, S, S)`` arrays and ``index.json`` mapping each file key (absolute path, size,
    modification time) to its shard row, original size, header values, used bit depth and a
    digest of the file's bytes. A damaged index or shard (cut short, deleted, not an object,
    images of other settings) is not trusted: the files it held are decoded again, with a
    warning; a cache folder that cannot be written is an `OSError` naming it. A changed setting
    never reuses stale pixels; what counts as a changed file is ``identity``:

    - ``"stat"`` (default, free): a new path, size or modification time. A file rewritten with
      the same size and its old modification time (``cp -p``, ``rsync -t``, an archive
      extracted again, a clock or file system with coarse times) is **not** detected.
    - ``"verify"``: as ``"stat"``, and a file whose path, size and time match an entry is read
      and hashed, and decoded again when its bytes changed. Every change of content is
      detected, at the cost of reading every file at every start.
    - ``"content"``: a file is known by its bytes alone, whatever its path or times: moved or
      copied files reuse their entry. Every file is read and hashed at every start.

    Missing files are decoded in parallel over ``num_workers`` processes with a progress bar;
    every ``shard_size`` images, and at least every ``save_interval`` seconds, a shard is
    written and the index replaced, both atomically, so an interrupted build keeps what it
    finished (the next build starts from there) and never leaves a half-written entry. Two
    processes filling the same cache at once stay correct, but the entries of the one that
    writes its index first are decoded again on the next run.

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
            raise ValueError(f"cache num_workers={num_workers}: must be >= 1")
        if identity not in ("stat", "verify", "content"):
            raise ValueError(f"cache identity={identity!r}: must be 'stat', 'verify' or 'content'")
        if not save_interval > 0 or shard_size < 1:
            raise ValueError(
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

    def _read_index(self) -> dict[str, list]:
        """The index, less the entries whose shard row cannot be read back as this cache's
        images (a damaged or deleted shard, a damaged entry): those files are decoded again."""
        index = read_json_store(self.index_path, "the cache index")
        c, s = self.settings.in_channels, self.settings.image_size
        shards: dict[str, int | None] = {}
        for name in {v[0] for v in index.values() if _entry_ok(v)}:
            try:
                shard = np.load(self.folder / name, mmap_mode="r")
            except (OSError, ValueError) as err:
                reason = f"{type(err).__name__}: {err}"
            else:
                if shard.dtype == np.uint8 and shard.ndim == 4 and shard.shape[1:] == (c, s, s):
                    shards[name] = len(shard)
                    self._shards[name] = shard
                    continue
                reason = f"it holds {shard.dtype} images of shape {shard.shape[1:]}"
            shards[name] = None
            log.warning(
                "cache shard %s is damaged (%s): its images are decoded again", name, reason
            )
        kept = {
            key: value
            for key, value in index.items()
            if _entry_ok(value) and (shards[value[0]] or 0) > value[1]
        }
        if len(kept) < len(index):
            log.warning(
                "the cache index %s has %d entries that cannot be read back: their files are "
                "decoded again",
                self.index_path,
                len(index) - len(kept),
            )
        return kept

    def _shard(self, name: str) -> np.ndarray:
        if name not in self._shards:
            self._shards[name] = np.load(self.folder / name, mmap_mode="r")
        return self._shards[name]

    def _decoded(self, paths: Sequence[str]) -> Iterator[Decoded | str]:
        jobs = [(p, self.settings) for p in paths]
        workers = min(self.num_workers, len(jobs))
        if workers <= 1:
            yield from map(_decode, jobs)
            return
        # fork starts workers instantly with the library imported; spawn elsewhere.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        chunk = max(1, min(16, len(jobs) // (workers * 8)))
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            yield from pool.map(_decode, jobs, chunksize=chunk)

    def _build(self, paths: Sequence[str], keys: Sequence[str], index: dict) -> dict[str, str]:
        """Decode ``paths`` into new shards; returns the errors by key."""
        make_folder(self.folder)
        settings_file = self.folder / "settings.json"
        if not settings_file.is_file():
            text = json.dumps(dataclasses.asdict(self.settings), indent=1, sort_keys=True)
            atomic_write_text(settings_file, text)
        errors: dict[str, str] = {}
        pending: list[tuple[str, Decoded]] = []
        saved = time.monotonic()

        def flush() -> None:
            nonlocal saved
            saved = time.monotonic()
            if not pending:
                return
            name = f"shard-{uuid.uuid4().hex}.npy"
            stack = np.stack([item.image for _, item in pending])
            _atomic_write(self.folder / name, lambda tmp: _save_array(tmp, stack))
            for row, (key, item) in enumerate(pending):
                index[key] = [name, row, list(item.size), item.tags, item.bits, item.digest]
            atomic_write_text(self.index_path, json.dumps(index))
            pending.clear()

        bar = tqdm(
            total=len(paths),
            desc=f"decoding into {self.folder}",
            unit="img",
            disable=not self.progress,
        )
        with bar:
            for key, result in zip(keys, self._decoded(paths), strict=True):
                if isinstance(result, str):
                    errors[key] = result
                else:
                    pending.append((key, result))
                    due = time.monotonic() - saved >= self.save_interval
                    if len(pending) >= self.shard_size or due:
                        flush()
                bar.update()
            flush()
        return errors

    def load(self, paths: Sequence[str | os.PathLike], on_error: OnError = "raise") -> CachedImages:
        """The preprocessed images of ``paths``, decoding the files not yet cached.

        The paths are one data set: with ``bit_depth="auto"`` their 16-bit images are scaled
        by the largest depth any of them uses (see `sagan_ad.data.bit_depth.unify_bit_depth`).

        Args:
            paths: image files.
            on_error: ``"raise"``: one `ImageReadError` listing every missing or unreadable
                file (the readable ones are cached all the same); ``"skip"``: leave them out and
                log the list of skipped files.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error={on_error!r}: must be 'raise' or 'skip'")
        paths = [str(p) for p in paths]
        problems: dict[int, str] = {}
        keys: dict[int, str] = {}
        for i, path in enumerate(paths):
            if Path(path).is_file():
                keys[i] = file_key(path)
            else:
                problems[i] = f"{path} {missing_reason(path)}"
        index = self._read_index()
        entry = self._entries(paths, keys, index)
        todo = [i for i in keys if i not in entry]
        todo_keys = list(dict.fromkeys(keys[i] for i in todo))
        first_path = {keys[i]: paths[i] for i in reversed(todo)}
        errors = self._build([first_path[k] for k in todo_keys], todo_keys, index) if todo else {}
        for i in todo:
            if keys[i] in errors:
                problems[i] = errors[keys[i]]
            else:
                entry[i] = keys[i]
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
        s, c = self.settings.image_size, self.settings.in_channels
        images = np.empty((len(kept), c, s, s), dtype=np.uint8)
        sizes, tags, identities, bits = [], [], [], []
        for out_row, i in enumerate(kept):
            shard, row, size, values, depth, digest = index[entry[i]]
            images[out_row] = self._shard(shard)[row]
            sizes.append((int(size[0]), int(size[1])))
            tags.append({k: values.get(k, "") for k in self.settings.dicom_tags} if values else {})
            identities.append(
                {**{k: values[k] for k in IDENTITY_TAGS if k in values}, SAME_BYTES: digest}
            )
            bits.append(depth)
        if kept:
            where = os.path.commonpath([os.path.dirname(os.path.abspath(paths[i])) for i in kept])
            names = [paths[i] for i in kept]
            unify_bit_depth(images, bits, self.settings.bit_depth, where, names)
        skipped = [(paths[i], problems[i]) for i in problems]
        return CachedImages(images, kept, sizes, tags, skipped, identities)

    def _entries(self, paths: list[str], keys: dict[int, str], index: dict) -> dict[int, str]:
        """The index entry of each path whose cached pixels are current, by ``identity``."""
        if self.identity == "stat":
            return {i: key for i, key in keys.items() if key in index}
        if self.identity == "verify":
            candidates = [i for i, key in keys.items() if key in index]
        else:
            candidates = list(keys)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            digests = dict(
                zip(
                    candidates,
                    pool.map(content_digest, [paths[i] for i in candidates]),
                    strict=True,
                )
            )
        if self.identity == "verify":
            return {i: keys[i] for i in candidates if index[keys[i]][5] == digests[i]}
        by_digest = {value[5]: key for key, value in index.items()}
        return {i: by_digest[d] for i, d in digests.items() if d in by_digest}
