"""Finding the image files under a folder, and skipping hidden, system and other files."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sagan_ad.data.messages import log_once
from sagan_ad.data.reading.dicom import is_dicom_file
from sagan_ad.data.reading.file_kinds import DICOM_SUFFIXES, dicom_without_image, failed_transfer
from sagan_ad.protected import OUTPUT_MARKER

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", *DICOM_SUFFIXES)
"""The suffixes every reader of folders lists (training and ``predict`` alike), any case."""
JUNK_NAMES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r"})
JUNK_FOLDERS = frozenset(
    {
        "__macosx",
        "$recycle.bin",
        "system volume information",
        "lost+found",
        # Network storage: Synology keeps thumbnails of every image (real JPEGs) in @eaDir and
        # deleted files in #recycle; QNAP in @Recycle and @Recently-Snapshot.
        "@eadir",
        "#recycle",
        "#snapshot",
        "@recycle",
        "@recently-snapshot",
    }
)


def is_junk(name: str) -> bool:
    """Whether a file name is never an image: hidden (``.name``, including macOS's AppleDouble
    ``._name.jpg`` and ``.DS_Store``), an Office lock file (``~$name``) or a system file
    (``Thumbs.db``, ``desktop.ini``, ...).

    Examples:
        >>> is_junk("._x.jpg"), is_junk("Thumbs.db"), is_junk("x.jpg")
        (True, True, False)
    """
    return name.startswith((".", "~$")) or name.lower() in JUNK_NAMES


@dataclass
class Discovery:
    """What `discover_images` found under a folder.

    Attributes:
        images: the image files, sorted.
        junk: hidden or system files and folders that were skipped (`is_junk`, ``__MACOSX``).
        other: files that are not images (by suffix, and without DICOM magic).
        outputs: folders of sagan-ad's own outputs (`sagan_ad.protected.OUTPUT_MARKER`: run,
            test and predict folders), never read as data.
        not_images: DICOM files that hold no image (a ``DICOMDIR``, structured reports,
            presentation states, key objects: `dicom_without_image`), with what they hold.
    """

    images: list[Path]
    junk: list[Path] = field(default_factory=list)
    other: list[Path] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    not_images: list[tuple[Path, str]] = field(default_factory=list)

    def log_skipped(self, folder: str | os.PathLike) -> None:
        """One warning with the counts of what was skipped (nothing when nothing was)."""
        if not (self.junk or self.other or self.outputs or self.not_images):
            return
        parts = []
        if self.outputs:
            shown = ", ".join(str(p) for p in self.outputs[:3])
            parts.append(
                f"{len(self.outputs)} folder(s) of sagan-ad outputs ({shown}): overlays and "
                "curves of earlier runs are not data"
            )
        if self.junk:
            shown = ", ".join(p.name for p in self.junk[:3])
            parts.append(f"{len(self.junk)} hidden or system file(s) or folder(s) ({shown}, ...)")
        if self.not_images:
            kinds = Counter(kind.split(" (")[0] for _, kind in self.not_images)
            listed = ", ".join(f"{n} {kind.removeprefix('a ')}" for kind, n in kinds.most_common(4))
            parts.append(f"{len(self.not_images)} DICOM file(s) that hold no image ({listed})")
        if self.other:
            kinds = Counter(p.suffix.lower() or "(no suffix)" for p in self.other)
            listed = ", ".join(f"{n} {suffix}" for suffix, n in kinds.most_common(5))
            parts.append(f"{len(self.other)} file(s) that are not images ({listed})")
        log_once(f"{folder}: skipped {' and '.join(parts)}; read {len(self.images)} image(s)")


def discover_images(
    folder: str | os.PathLike,
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
    recursive: bool = True,
    force_dicom: bool = False,
) -> Discovery:
    """Image files under ``folder``: by suffix (any case), plus files of any other suffix, or
    none, that carry the DICOM magic (PACS exports such as ``IM000001``, files named by their
    UID such as ``1.2.840.113619.2.55.3.1268071029.320``, Siemens' ``.IMA``; 132 bytes are
    read of each); with ``force_dicom`` every file (read as DICOM). Hidden and system files and
    folders (`is_junk`, `JUNK_FOLDERS`: also the thumbnail and recycle folders of network
    storage) are never images. Symbolic links to
    folders are followed (each folder once); dangling links, link loops and special files with
    an image suffix are listed as images, so that reading them reports what they are. Folders
    of sagan-ad's own outputs (marked by `sagan_ad.protected.OUTPUT_MARKER`) are skipped whole.
    DICOM files that hold no image (``DICOMDIR``, reports, presentation states: see
    `dicom_without_image`) are skipped and counted; files without suffix that look like failed
    transfers (empty, NUL bytes, a stub: `failed_transfer`) are listed as images, so that
    reading them reports them.

    Examples:
        >>> import tempfile
        >>> discover_images(tempfile.mkdtemp()).images
        []
    """
    folder = Path(folder)
    wanted = {s.lower() if s.startswith(".") else f".{s.lower()}" for s in suffixes}
    # A folder inside sagan-ad's outputs (a run's predict/overlays) is outputs as a whole.
    above = [folder, *folder.resolve().parents]
    marked = next((p for p in above if (p / OUTPUT_MARKER).is_file()), None)
    if marked is not None:
        return Discovery([], outputs=[marked])
    images: list[str] = []
    junk: list[str] = []
    other: list[str] = []
    outputs: list[str] = []
    not_images: list[tuple[str, str]] = []
    visited: set[tuple[int, int]] = set()
    # Strings and os.scandir, not Path objects: a hospital export has hundreds of thousands of
    # files, and scandir tells regular files apart without one stat per file.
    tops = [str(folder)]
    while tops:
        top = tops.pop()
        try:
            stat = os.stat(top)
            with os.scandir(top) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError:
            continue  # as os.walk: a folder that cannot be listed is left out
        if (stat.st_dev, stat.st_ino) in visited:
            continue
        visited.add((stat.st_dev, stat.st_ino))
        if any(entry.name == OUTPUT_MARKER for entry in entries):
            outputs.append(top)
            continue
        subfolders = []
        for entry in entries:
            name, path = entry.name, entry.path
            try:
                is_dir = entry.is_dir()  # links to folders are followed, each folder once
            except OSError:
                is_dir = False
            if is_dir:
                if is_junk(name) or name.lower() in JUNK_FOLDERS:
                    junk.append(path)
                elif recursive:
                    subfolders.append(path)
                continue
            suffix = os.path.splitext(name)[1].lower()
            if is_junk(name):
                junk.append(path)
            elif not _is_file(entry):
                # A dangling link, a link loop, a FIFO: never opened here (a FIFO would block),
                # but kept where an image was meant, so that reading reports it.
                (images if force_dicom or suffix in wanted else other).append(path)
            elif (
                force_dicom
                or suffix in wanted
                or (suffix not in IMAGE_SUFFIXES and _has_dicom_magic(path))
            ):
                # Reached without a wanted suffix only by the magic: DICOM named by its UID
                # (whose last component looks like a suffix) or Siemens' ``.IMA``.
                dicom = force_dicom or suffix in DICOM_SUFFIXES or suffix not in wanted
                content = dicom_without_image(path) if dicom else None
                if content is None:
                    images.append(path)
                else:
                    not_images.append((path, content))
            elif not suffix and failed_transfer(path):
                # A PACS export's image cut short: reading it names it (an error, or skipped
                # and listed with on_error='skip'), where a README would just be passed over.
                images.append(path)
            else:
                other.append(path)
        tops.extend(reversed(subfolders))
    return Discovery(
        _sorted_paths(images),
        _sorted_paths(junk),
        _sorted_paths(other),
        _sorted_paths(outputs),
        [(Path(p), content) for p, content in not_images],
    )


def _has_dicom_magic(path: str) -> bool:
    # Every file of an unknown suffix is opened here: one that cannot be read (no permission)
    # is no reason to stop listing the folder; it is counted as not an image.
    try:
        return is_dicom_file(path)
    except OSError:
        return False


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _sorted_paths(paths: list[str]) -> list[Path]:
    # The order of Path objects (part by part), without building them to compare.
    return [Path(p) for p in sorted(paths, key=lambda p: os.path.normcase(p).split(os.sep))]


def find_images(folder: str | os.PathLike, force_dicom: bool = False) -> list[Path]:
    """The images `discover_images` finds under ``folder``, recursively, sorted.

    Examples:
        >>> import tempfile
        >>> find_images(tempfile.mkdtemp())
        []
    """
    return discover_images(folder, force_dicom=force_dicom).images
