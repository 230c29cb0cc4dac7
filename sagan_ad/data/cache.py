"""On-disk preprocessing cache: decode, window and resize every file once per setting."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from sagan_ad.data.dicom import DicomOptions, read_tags
from sagan_ad.data.image_io import ImageReadError, is_dicom, listing, load_image_and_size

log = logging.getLogger(__name__)

# Bumped whenever decoding changes in a way that settings do not capture.
CACHE_FORMAT = 1
OnError = Literal["raise", "skip"]


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
    """

    image_size: int
    in_channels: int = 1
    dicom: DicomOptions = field(default_factory=DicomOptions)
    force_dicom: bool = False
    dicom_tags: tuple[str, ...] = ()

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
    """

    images: np.ndarray
    kept: list[int]
    original_sizes: list[tuple[int, int]]
    tags: list[dict[str, str]]
    skipped: list[tuple[str, str]]


def file_key(path: str | os.PathLike) -> str:
    """Identity of a file's current content: absolute path, size and modification time."""
    stat = os.stat(path)
    text = f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()


Decoded = tuple[np.ndarray, tuple[int, int], dict[str, str]]


def _decode(job: tuple[str, PreprocessSettings]) -> Decoded | str:
    path, settings = job
    try:
        image, size = load_image_and_size(
            path,
            settings.image_size,
            settings.in_channels,
            dicom=settings.dicom,
            force_dicom=settings.force_dicom,
        )
        tags = read_tags(path, settings.dicom_tags) if is_dicom(path, settings.force_dicom) else {}
    except ImageReadError as err:
        return str(err)
    except Exception as err:
        return f"{path}: {type(err).__name__}: {err}"
    return image, size, tags


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    # Write beside the target, then rename: a crash leaves the old file or none, never half.
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_array(path: Path, array: np.ndarray) -> None:
    # An open handle keeps np.save from appending ".npy" to the temporary name.
    with open(path, "wb") as handle:
        np.save(handle, array)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically (temporary file, then rename)."""
    _atomic_write(path, lambda tmp: tmp.write_text(text))


class ImageCache:
    """Memory-mappable cache of preprocessed images, keyed by file identity and settings.

    Layout: ``root/<settings key>/`` holds ``settings.json``, shards ``shard-*.npy`` of uint8
    ``(n, C, S, S)`` arrays and ``index.json`` mapping each file key (path, size, mtime) to its
    shard row, original size and header values. A changed file or setting therefore never
    reuses stale pixels. Missing files are decoded in parallel over ``num_workers`` processes
    with a progress bar; every ``shard_size`` images a shard is written and the index replaced,
    both atomically, so an interrupted build keeps what it finished and never leaves a
    half-written entry. Two processes filling the same cache at once stay correct, but the
    entries of the one that writes its index first are decoded again on the next run.

    Args:
        root: cache folder (created if needed).
        settings: the preprocessing settings.
        num_workers: decoding processes (default: every CPU core).
        progress: show a progress bar while decoding.
        shard_size: images per shard file.

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
    ) -> None:
        if num_workers is not None and num_workers < 1:
            raise ValueError(f"cache num_workers={num_workers}: must be >= 1")
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
        if not self.index_path.is_file():
            return {}
        return json.loads(self.index_path.read_text())

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
        self.folder.mkdir(parents=True, exist_ok=True)
        settings_file = self.folder / "settings.json"
        if not settings_file.is_file():
            text = json.dumps(dataclasses.asdict(self.settings), indent=1, sort_keys=True)
            atomic_write_text(settings_file, text)
        errors: dict[str, str] = {}
        pending: list[tuple[str, np.ndarray, tuple[int, int], dict]] = []

        def flush() -> None:
            if not pending:
                return
            name = f"shard-{uuid.uuid4().hex}.npy"
            stack = np.stack([item[1] for item in pending])
            _atomic_write(self.folder / name, lambda tmp: _save_array(tmp, stack))
            for row, (key, _, size, tags) in enumerate(pending):
                index[key] = [name, row, list(size), tags]
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
                    pending.append((key, *result))
                    if len(pending) >= self.shard_size:
                        flush()
                bar.update()
            flush()
        return errors

    def load(self, paths: Sequence[str | os.PathLike], on_error: OnError = "raise") -> CachedImages:
        """The preprocessed images of ``paths``, decoding the files not yet cached.

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
                problems[i] = f"{path}: file does not exist"
        index = self._read_index()
        todo = [i for i in keys if keys[i] not in index]
        todo_keys = list(dict.fromkeys(keys[i] for i in todo))
        first_path = {keys[i]: paths[i] for i in reversed(todo)}
        errors = self._build([first_path[k] for k in todo_keys], todo_keys, index) if todo else {}
        for i in todo:
            if keys[i] in errors:
                problems[i] = errors[keys[i]]
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
        sizes, tags = [], []
        for out_row, i in enumerate(kept):
            shard, row, size, values = index[keys[i]]
            images[out_row] = self._shard(shard)[row]
            sizes.append((int(size[0]), int(size[1])))
            tags.append(dict(values))
        return CachedImages(images, kept, sizes, tags, [(paths[i], problems[i]) for i in problems])
