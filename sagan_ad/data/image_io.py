"""Decoding image files (PNG, JPEG, TIFF, DICOM) into fixed-size uint8 arrays."""

from __future__ import annotations

import errno
import functools
import logging
import os
import unicodedata
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from sagan_ad.data.dicom import DicomOptions, DicomReadError, is_dicom_file, read_dicom

log = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")
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
# ITU-R 601-2 luma, the weights PIL uses for "RGB" -> "L".
LUMA = np.array([0.299, 0.587, 0.114])
BitDepth = int | Literal["auto", "dtype"]
EXIF_ORIENTATION = 0x0112
TIFF_PHOTOMETRIC = 262


class ImageReadError(RuntimeError):
    """One or more image files could not be read; the message lists every file and why."""


_logged: set[str] = set()


def log_once(message: str, level: int = logging.WARNING) -> None:
    """Log ``message`` the first time this process meets it (a data set is read more than once
    per run: by ``prepare_data`` and by ``setup``)."""
    if message not in _logged:
        _logged.add(message)
        log.log(level, message)


def is_dicom(path: str | os.PathLike, force_dicom: bool = False) -> bool:
    """Whether ``path`` is read as DICOM: forced, by suffix, or by the ``DICM`` magic.

    Examples:
        >>> is_dicom("scan.dcm"), is_dicom("scan.bin", force_dicom=True)
        (True, True)
    """
    if force_dicom or Path(path).suffix.lower() in DICOM_SUFFIXES:
        return True
    return Path(path).is_file() and is_dicom_file(path)


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
        other: files that are not images (by suffix, or without suffix nor DICOM magic).
    """

    images: list[Path]
    junk: list[Path] = field(default_factory=list)
    other: list[Path] = field(default_factory=list)

    def log_skipped(self, folder: str | os.PathLike) -> None:
        """One warning with the counts of what was skipped (nothing when nothing was)."""
        if not (self.junk or self.other):
            return
        parts = []
        if self.junk:
            shown = ", ".join(p.name for p in self.junk[:3])
            parts.append(f"{len(self.junk)} hidden or system file(s) or folder(s) ({shown}, ...)")
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
    """Image files under ``folder``: by suffix (any case), plus files without a suffix that
    carry the DICOM magic (PACS exports such as ``IM000001``); with ``force_dicom`` every file
    (read as DICOM). Hidden and system files and folders (`is_junk`, `JUNK_FOLDERS`: also the
    thumbnail and recycle folders of network storage) are never images. Symbolic links to
    folders are followed (each folder once); dangling links, link loops and special files with
    an image suffix are listed as images, so that reading them reports what they are.

    Examples:
        >>> import tempfile
        >>> discover_images(tempfile.mkdtemp()).images
        []
    """
    folder = Path(folder)
    wanted = {s.lower() if s.startswith(".") else f".{s.lower()}" for s in suffixes}
    found = Discovery([])
    visited: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        stat = os.stat(top)
        if (stat.st_dev, stat.st_ino) in visited:
            dirs.clear()
            continue
        visited.add((stat.st_dev, stat.st_ino))
        junk_dirs = [d for d in dirs if is_junk(d) or d.lower() in JUNK_FOLDERS]
        found.junk += [Path(top) / d for d in junk_dirs]
        dirs[:] = sorted(d for d in dirs if d not in junk_dirs) if recursive else []
        for name in files:
            path = Path(top) / name
            if is_junk(name):
                found.junk.append(path)
            elif not path.is_file():
                # A dangling link, a link loop, a FIFO: never opened here (a FIFO would block),
                # but kept where an image was meant, so that reading reports it.
                meant = force_dicom or path.suffix.lower() in wanted
                (found.images if meant else found.other).append(path)
            elif (
                force_dicom
                or path.suffix.lower() in wanted
                or (not path.suffix and is_dicom_file(path))
            ):
                found.images.append(path)
            else:
                found.other.append(path)
    found.images.sort()
    found.junk.sort()
    found.other.sort()
    return found


def find_images(folder: str | os.PathLike, force_dicom: bool = False) -> list[Path]:
    """The images `discover_images` finds under ``folder``, recursively, sorted.

    Examples:
        >>> import tempfile
        >>> find_images(tempfile.mkdtemp())
        []
    """
    return discover_images(folder, force_dicom=force_dicom).images


def check_bit_depth(bit_depth: BitDepth) -> None:
    """Raise a `ValueError` naming ``bit_depth`` unless it is ``"auto"``, ``"dtype"`` or 1..16.

    Examples:
        >>> check_bit_depth(12)
        >>> check_bit_depth(20)
        Traceback (most recent call last):
        ...
        ValueError: bit_depth=20: must be 'auto', 'dtype' or a number of bits from 1 to 16
    """
    if bit_depth in ("auto", "dtype"):
        return
    if isinstance(bit_depth, bool) or not isinstance(bit_depth, int) or not 1 <= bit_depth <= 16:
        raise ValueError(
            f"bit_depth={bit_depth!r}: must be 'auto', 'dtype' or a number of bits from 1 to 16"
        )


def used_bits(array: np.ndarray) -> int:
    """The even depth (8, 10, 12, 14 or 16 bits: the depths scanners export) that holds the
    largest value of a 16-bit image.

    Examples:
        >>> used_bits(np.array([0, 4095], np.uint16)), used_bits(np.array([4096], np.uint16))
        (12, 14)
    """
    bits = max(8, int(array.max()).bit_length()) if array.size else 8
    return min(16, bits + bits % 2)


def scale_bits(array: np.ndarray, bit_depth: BitDepth = "auto") -> int | None:
    """The depth a 16-bit image is scaled by (``2**bits - 1`` is white); ``None`` for others.

    ``"auto"``: `used_bits` of the image, so 12-bit data exported in 16-bit files keep their
    contrast (the readers of data sets then bring every image to the data set's largest depth,
    see `unify_bit_depth`); ``"dtype"``: 16 (the type's range); a number: that depth, and a
    value above it is an error.

    Examples:
        >>> scale_bits(np.array([0, 4000], np.uint16)), scale_bits(np.zeros(2, np.uint8))
        (12, None)
    """
    if array.dtype != np.uint16:
        return None
    if bit_depth == "auto":
        return used_bits(array)
    if bit_depth == "dtype":
        return 16
    top = int(array.max()) if array.size else 0
    if top > 2**bit_depth - 1:
        raise ValueError(
            f"pixel value {top} exceeds bit_depth={bit_depth} (largest {2**bit_depth - 1}): set "
            "bit_depth to the depth the files were exported with, or 'auto'"
        )
    return int(bit_depth)


SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BM", "a BMP image"),
    (b"GIF8", "a GIF image"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\x1f\x8b", "a gzip archive"),
)
"""Leading bytes of the formats a file in an image folder turns out to be."""
IMAGE_KINDS = frozenset(("a PNG image", "a JPEG image", "a TIFF image", "a BMP image"))
"""What `sniff` says of the formats read by PIL whatever the file's suffix."""


def sniff(path: str | os.PathLike) -> str | None:
    """What the first bytes of a file say it is (``"a PNG image"``, ``"a PDF document"``,
    ``"text"``, ...), or ``None``.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.png"
        >>> _ = p.write_text("<html>")
        >>> sniff(p)
        'text'
    """
    with open(path, "rb") as handle:
        head = handle.read(512)
    # First: a DICOM preamble may itself hold a TIFF header (dual DICOM / TIFF files).
    if head[128:132] == b"DICM":
        return "a DICOM file"
    if head[:2] == b"\x08\x00":
        # Group 0008 (identification) first, little endian: an old ACR-NEMA style data set.
        return "DICOM without preamble (set force_dicom=True to read such files)"
    for magic, kind in SIGNATURES:
        if head.startswith(magic):
            return kind
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text" if head else None


def _raw_mode(img: Image.Image) -> str:
    # The decoder's raw mode (for example "L;I", "I;16B", "RGB;16B"), before loading clears it.
    args = img.tile[0][3] if img.tile else None
    return str(args[0] if isinstance(args, tuple) and args else args or "")


def _sixteen_bit_colour(img: Image.Image) -> bool:
    # PIL decodes 48/64-bit RGB(A) PNGs and TIFFs (and 16-bit grey + alpha) to 8 bits per
    # channel; the raw mode still tells.
    return ";16" in _raw_mode(img) and img.mode in ("RGB", "RGBA")


def _opaque(alpha: np.ndarray, opaque: int) -> np.ndarray:
    transparent = int(np.count_nonzero(alpha != opaque))
    if transparent:
        raise ValueError(
            f"{transparent} pixel(s) are transparent (alpha channel): what lies under them is "
            "not part of the picture; flatten the image onto a background and save it without "
            "alpha"
        )
    return alpha


def _checked_values(array: np.ndarray) -> np.ndarray:
    """Decoded pixels as uint8, uint16 or float32 in ``[0, 1]``; anything else is refused."""
    if array.dtype in (np.uint8, np.uint16):
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        # Converting to 8 bits would silently turn NaN / Inf into ordinary pixels and floats
        # in [0, 1] into a black image.
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise ValueError(f"{bad} float pixel(s) are NaN or Inf: fix or re-export the image")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError(
                f"float pixel values range from {array.min():g} to {array.max():g}; float "
                "images are read as intensities in [0, 1] (0 black, 1 white): rescale to [0, 1] "
                "or export as 8 or 16-bit integers"
            )
        return array
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(
                f"{array.dtype.itemsize * 8}-bit integer pixels from {array.min()} to "
                f"{array.max()}, outside 0..65535: export as 8 or 16-bit unsigned integers"
            )
        return array.astype(np.uint16)
    raise ValueError(f"pixels of type {array.dtype} are not supported: export as 8 or 16 bit")


CONVERTED_MODES = ("CMYK", "YCbCr", "P")
"""PIL modes that PIL converts to RGB correctly (CMYK naively, as every viewer without a
colour profile does); other colour spaces (LAB, HSV) would come out as wrong colours."""


def _colour_key(array: np.ndarray, key: object) -> None:
    """Refuse the pixels a PNG ``tRNS`` colour key makes transparent (all channels equal)."""
    key = np.asarray(key)
    hit = array == key if array.ndim == 2 else np.all(array == key.reshape(1, 1, -1), axis=-1)
    _opaque(np.where(hit, 0, 1), 1)


def _pil_pixels(img: Image.Image) -> np.ndarray:
    img.load()
    # A PNG colour key (tRNS) makes every pixel of that value transparent, as alpha would.
    key = img.info.get("transparency") if img.mode in ("I;16", "I", "L", "RGB") else None
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array = np.asarray(img).astype(np.uint16)
    elif img.mode in ("I", "F", "L", "RGB"):
        array = _checked_values(np.asarray(img))
    elif img.mode in ("1", "LA", "La"):
        if img.mode != "1":
            _opaque(np.asarray(img.getchannel("A")), 255)
        return np.asarray(img.convert("L"))
    elif img.mode in ("RGBA", "RGBa", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        _opaque(np.asarray(rgba.getchannel("A")), 255)
        return np.asarray(rgba.convert("RGB"))
    elif img.mode in CONVERTED_MODES:
        return np.asarray(img.convert("RGB"))
    else:
        raise ValueError(
            f"pixel mode {img.mode!r} is not supported (it would be converted to wrong colours "
            "or values): save the image as grayscale or RGB"
        )
    if key is not None and not isinstance(key, bytes):
        _colour_key(array, key)
    return array


def _opencv_pixels(path: str | os.PathLike) -> np.ndarray:
    """The stored pixels as OpenCV decodes them: full depth, no orientation applied."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError("OpenCV could not decode the image")
    if array.ndim == 3:
        if array.shape[2] == 4:
            opaque = np.iinfo(array.dtype).max if array.dtype.kind in "ui" else 1.0
            _opaque(array[..., 3], opaque)
        array = array[..., 2::-1] if array.shape[2] >= 3 else array[..., 0]
    return _checked_values(np.ascontiguousarray(array))


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` as a viewer shows it, by its EXIF / TIFF orientation tag (1 to 8)."""
    turns = {3: 2, 6: 3, 8: 1}
    if orientation in (2, 4):
        array = array[:, ::-1] if orientation == 2 else array[::-1]
    elif orientation in turns:
        array = np.rot90(array, turns[orientation])
    elif orientation in (5, 7):
        array = np.swapaxes(array, 0, 1)
        array = array[::-1, ::-1] if orientation == 7 else array
    return np.ascontiguousarray(array)


def decode_image(
    path: str | os.PathLike,
    dicom: DicomOptions | None = None,
    force_dicom: bool = False,
) -> np.ndarray:
    """Decode a file at its native depth, as a viewer shows it: ``(H, W)`` or ``(H, W, 3)``.

    The EXIF / TIFF orientation tag is applied (TIFFs turned by a quarter are refused: the
    decoders at hand get them wrong). Files holding several images (multi-page TIFF, animated
    PNG), transparent pixels, or float pixels outside ``[0, 1]`` are refused.

    Returns:
        uint8 or uint16 for PNG / JPEG / TIFF (float32 in ``[0, 1]`` for float TIFF), float32
        in ``[0, 1]`` for DICOM in standard mode, uint8 for DICOM in benchmark mode.

    Raises:
        ImageReadError: naming the file and the reason.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x16.png"
        >>> Image.fromarray(np.full((4, 6), 4000, np.uint16)).save(p)
        >>> decode_image(p).dtype, decode_image(p).shape
        (dtype('uint16'), (4, 6))
    """
    try:
        if not Path(path).is_file():
            raise ImageReadError(f"{path} {missing_reason(path)}")
        # A PNG saved as .dcm is read as what it is, as a DICOM saved as .png is.
        if is_dicom(path, force_dicom) and (force_dicom or sniff(path) not in IMAGE_KINDS):
            return read_dicom(path, dicom)
        with _open_image(path) as img:
            frames = int(getattr(img, "n_frames", 1))
            if frames > 1:
                raise ValueError(
                    f"the file holds {frames} images (pages or frames): save the one to use as "
                    "a single-image file"
                )
            # Before anything loads the pixels: loading clears the raw mode that tells.
            sixteen_bit_colour = _sixteen_bit_colour(img)
            tiff = img.format == "TIFF"
            tags = img.tag_v2 if tiff else img.getexif()
            orientation = int(tags.get(EXIF_ORIENTATION, 1) or 1)
            if tiff and tags.get(TIFF_PHOTOMETRIC) == 0 and not _raw_mode(img).endswith(";I"):
                # PIL inverts MinIsWhite (0 = white) only at 1 and 8 bits: deeper or float
                # pixels would come out as a negative.
                raise ValueError(
                    f"TIFF photometric MinIsWhite (0 is white) in pixel mode {img.mode!r} is "
                    "not supported: save the image as MinIsBlack (0 is black)"
                )
            if tiff and orientation in (5, 6, 7, 8):
                # PIL (some versions) decodes these with width and height swapped, and OpenCV
                # refuses them: no reader here gives their pixels reliably.
                raise ValueError(
                    f"TIFF orientation {orientation} (a quarter turn) is not supported: save the "
                    "image upright"
                )
            if sixteen_bit_colour:
                # PIL reduces 16-bit colour to 8 bits per channel.
                array = _opencv_pixels(path)
            else:
                array = _pil_pixels(img)
                tags = img.tag_v2 if tiff else img.getexif()
                if EXIF_ORIENTATION not in tags:
                    orientation = 1  # PIL applied it while loading (TIFF, in recent versions)
        return _orient(array, orientation)
    except ImageReadError:
        raise
    except DicomReadError as err:
        raise ImageReadError(str(err)) from err
    except Exception as err:
        size = Path(path).stat().st_size if Path(path).is_file() else None
        hint = " (the file is empty)" if size == 0 else ""
        raise ImageReadError(f"{path}{hint}: {type(err).__name__}: {err}") from err


def _open_image(path: str | os.PathLike) -> Image.Image:
    """``Image.open``, with a message saying what the file is when PIL cannot read it."""
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        kind = sniff(path)
        if kind == "a TIFF image":
            detail = (
                "a TIFF of a kind PIL cannot decode (for example float64 or float16 pixels, or "
                "16-bit grey with alpha): save it as 8 or 16-bit unsigned integers or float32"
            )
        elif kind is None:
            detail = "not a PNG, JPEG, TIFF, BMP or DICOM file"
        else:
            detail = f"not a PNG, JPEG, TIFF, BMP or DICOM file: its bytes say it is {kind}"
        raise ValueError(f"{detail}; convert or remove it") from None


def missing_reason(path: str | os.PathLike) -> str:
    """Why ``path`` is not a file that can be read, in words, with the likely intended file.

    Covers folders, dangling links, link loops, FIFOs and other special files, and names that
    differ from a file beside them only in letter case, Unicode normalization, surrounding
    spaces or Windows backslashes.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "Scan.PNG").write_bytes(b"")
        >>> missing_reason(folder / "scan.png")  # doctest: +ELLIPSIS
        "does not exist, but '/.../Scan.PNG' does: the names differ in letter case; ..."
    """
    path = Path(path)
    if path.is_symlink():
        try:
            path.stat()
        except OSError as err:
            if err.errno == errno.ELOOP:
                return "is a symbolic link loop (it points to itself through other links)"
        return f"is a symbolic link to {os.readlink(path)}, which does not exist"
    if path.is_dir():
        return "is a folder, not an image file"
    if path.exists():
        return "is not a regular file (a FIFO, socket or device): it cannot be read as an image"
    near = _near_names(path)
    if near is None:
        return "does not exist"
    written = os.path.abspath(path)
    nfc = unicodedata.normalize
    checks = (
        ("Windows backslashes (\\ for /)", written.replace("\\", "/") == near),
        ("Unicode normalization (NFC / NFD)", nfc("NFC", written) == nfc("NFC", near)),
        ("spaces", [p.strip() for p in Path(written).parts] == list(Path(near).parts)),
        ("letter case", written.casefold() == near.casefold()),
    )
    how = next((kind for kind, same in checks if same), "case, spaces, Unicode form or slashes")
    return f"does not exist, but {near!r} does: the names differ in {how}; correct the name"


def _spelling(name: str) -> str:
    return unicodedata.normalize("NFC", name).strip().casefold()


@functools.lru_cache(maxsize=32)
def _entries_by_spelling(folder: str, mtime_ns: int) -> dict[str, str]:
    # Keyed by the folder's modification time too: a listing is reused only while the folder
    # is unchanged, and each folder is listed once however many of its files are missing.
    return {_spelling(entry): entry for entry in sorted(os.listdir(folder), reverse=True)}


def _near_names(path: Path) -> str | None:
    """The existing file whose path differs from ``path`` only in spelling details (see
    `missing_reason`), or ``None``."""
    parts = Path(os.path.abspath(str(path).replace("\\", "/"))).parts
    found = Path(parts[0])
    for part in parts[1:]:
        if (found / part).exists():
            found = found / part
            continue
        try:
            entries = _entries_by_spelling(str(found), os.stat(found).st_mtime_ns)
        except OSError:
            return None
        if _spelling(part) not in entries:
            return None
        found = found / entries[_spelling(part)]
    return str(found) if found.is_file() else None


def _to_unit_float(array: np.ndarray, bits: int | None) -> np.ndarray:
    if array.dtype == np.float32:
        return array
    scale = 2.0**bits - 1.0 if bits is not None else float(np.iinfo(array.dtype).max)
    return array.astype(np.float32) / np.float32(scale)


def resize_image(
    array: np.ndarray, image_size: int, in_channels: int = 1, bit_depth: BitDepth = "auto"
) -> np.ndarray:
    """Convert a decoded image to ``in_channels`` and resize it to a uint8 square.

    8-bit images take PIL's bilinear resize (antialiased when shrinking) exactly as the Med-AD
    benchmark did; deeper images are resized in float, at full precision, and quantized last.
    16-bit images are scaled by their depth (see `scale_bits` for ``bit_depth``).

    Returns:
        uint8 ``(in_channels, image_size, image_size)``.

    Examples:
        >>> resize_image(np.zeros((100, 80), np.uint16), 32).shape
        (1, 32, 32)
        >>> int(resize_image(np.full((4, 4), 4095, np.uint16), 4).max())  # 12-bit white
        255
    """
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels={in_channels}: must be 1 (grayscale) or 3 (RGB)")
    size = (image_size, image_size)
    if array.dtype == np.uint8:
        img = Image.fromarray(array)
        img = img.convert("L" if in_channels == 1 else "RGB").resize(size, Image.BILINEAR)
        out = np.asarray(img, dtype=np.uint8)
        return np.ascontiguousarray(out[None] if out.ndim == 2 else out.transpose(2, 0, 1))
    values = _to_unit_float(array, scale_bits(array, bit_depth))
    if values.ndim == 3 and in_channels == 1:
        values = (values @ LUMA).astype(np.float32)
    planes = [values] if values.ndim == 2 else [values[..., c] for c in range(3)]
    resized = [
        np.asarray(Image.fromarray(p, mode="F").resize(size, Image.BILINEAR)) for p in planes
    ]
    if in_channels == 3 and len(resized) == 1:
        resized = resized * 3
    stacked = np.stack(resized)
    return np.round(np.clip(stacked, 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclass
class ReadImage:
    """What `read_image` returns.

    Attributes:
        image: uint8 ``(in_channels, image_size, image_size)``.
        original_size: ``(height, width)`` of the decoded image, the frame of boxes.
        bits: for a 16-bit image, the depth its values use (`used_bits`); else ``None``.
    """

    image: np.ndarray
    original_size: tuple[int, int]
    bits: int | None = None


def read_image(
    path: str | os.PathLike,
    image_size: int,
    in_channels: int = 1,
    *,
    dicom: DicomOptions | None = None,
    force_dicom: bool = False,
    bit_depth: BitDepth = "auto",
) -> ReadImage:
    """`load_image` with the original size and the depth a 16-bit image uses.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.fromarray(np.full((8, 6), 1000, np.uint16)).save(p)
        >>> read_image(p, 4).bits, read_image(p, 4).original_size
        (10, (8, 6))
    """
    array = decode_image(path, dicom, force_dicom)
    try:
        image = resize_image(array, image_size, in_channels, bit_depth)
    except ValueError as err:
        raise ImageReadError(f"{path}: {err}") from err
    bits = used_bits(array) if array.dtype == np.uint16 else None
    return ReadImage(image, (int(array.shape[0]), int(array.shape[1])), bits)


def data_set_depth(bits: Sequence[int | None], bit_depth: BitDepth, where: str) -> int | None:
    """The depth the 16-bit images of one data set are brought to, saying so once.

    With ``"auto"``: the largest `used_bits` of the images (logged; a warning when they
    differ, since then a few deep files set the scale of all). With ``"dtype"``: ``None``, and
    a warning when the files use fewer than 16 bits (12-bit exports lose contrast that way).
    An explicit depth: ``None`` (nothing to bring together).

    Args:
        bits: `used_bits` of each image (``None`` for images that are not 16-bit).
        bit_depth: the setting the images were read with.
        where: the data set, for the messages.

    Examples:
        >>> data_set_depth([12, None, 12], "auto", "demo")
        12
    """
    depths = Counter(b for b in bits if b is not None)
    if not depths:
        return None
    listed = ", ".join(f"{n} use {b} bits" for b, n in sorted(depths.items()))
    top = max(depths)
    if bit_depth == "dtype" and top < 16:
        log_once(
            f"{where}: of the 16-bit files, {listed}; bit_depth='dtype' scales them by 65535, "
            "so they lose contrast: set bit_depth='auto' or the depth they were exported with "
            f"(for example {top})"
        )
    if bit_depth != "auto":
        return None
    if len(depths) > 1:
        log_once(
            f"{where}: of the 16-bit files, {listed}; bit_depth='auto' scales them all by the "
            f"largest depth ({2**top - 1} is white): if the deeper files are outliers, remove "
            "them or set bit_depth to the export depth"
        )
    else:
        log_once(
            f"{where}: the 16-bit files use {top} bits: scaled by {2**top - 1} "
            f"(bit_depth='auto'; pass bit_depth={top} to read other images of this data set "
            "alike)",
            logging.INFO,
        )
    return top


def unify_bit_depth(
    images: np.ndarray, bits: Sequence[int | None], bit_depth: BitDepth, where: str
) -> int | None:
    """Bring the 16-bit images of one data set to the `data_set_depth`, in place.

    With ``"auto"`` each image was scaled by its own `used_bits`; those that use fewer bits
    than the data set's depth are rescaled to it (within one grey level of scaling them by it
    directly), so that the same value is the same grey in every image.

    Args:
        images: uint8 ``(N, C, S, S)``, changed in place.
        bits: `used_bits` of each image (``None`` for images that are not 16-bit).
        bit_depth: the setting the images were read with.
        where: the data set, for the messages.

    Returns:
        The data set's depth under ``"auto"`` (``None`` without 16-bit images or otherwise).

    Examples:
        >>> images = np.array([255, 255], np.uint8).reshape(2, 1, 1, 1)
        >>> unify_bit_depth(images, [12, 14], "auto", "demo"), images.ravel().tolist()
        (14, [64, 255])
    """
    if bit_depth == "auto":
        _warn_outlier_depth(images, bits, where)
    top = data_set_depth(bits, bit_depth, where)
    if top is not None:
        for i, b in enumerate(bits):
            if b is not None and b < top:
                factor = (2.0**b - 1.0) / (2.0**top - 1.0)
                images[i] = np.round(images[i] * factor).astype(np.uint8)
    return top


def _warn_outlier_depth(images: np.ndarray, bits: Sequence[int | None], where: str) -> None:
    """Warn when 16-bit images, each scaled by the depth its largest value needs, keep nearly
    all their pixels (99%) in the darkest quarter: a few pixels far above the rest (a burned-in
    marker or text at 65535) then set the depth, and the anatomy keeps a fraction of its
    contrast. Nothing is clipped to save it: that would change the markers silently."""
    dim = [
        i
        for i, b in enumerate(bits)
        if b is not None and b > 8 and np.percentile(images[i], 99) < 64
    ]
    if dim:
        log_once(
            f"{where}: {len(dim)} of the 16-bit images keep 99% of their pixels in the "
            "darkest quarter of their scale: a few pixels far brighter than the rest (burned-in "
            "markers or text?) set their depth, and the rest keeps a fraction of its contrast; "
            "remove those pixels or export the images without them"
        )


def load_image_and_size(
    path: str | os.PathLike,
    image_size: int,
    in_channels: int = 1,
    *,
    dicom: DicomOptions | None = None,
    force_dicom: bool = False,
    bit_depth: BitDepth = "auto",
) -> tuple[np.ndarray, tuple[int, int]]:
    """`load_image` plus the original ``(height, width)``, the frame of boxes.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.new("L", (100, 80), 128).save(p)
        >>> load_image_and_size(p, 64)[1]
        (80, 100)
    """
    read = read_image(
        path, image_size, in_channels, dicom=dicom, force_dicom=force_dicom, bit_depth=bit_depth
    )
    return read.image, read.original_size


def load_image(
    path: str | os.PathLike,
    image_size: int,
    in_channels: int = 1,
    *,
    dicom: DicomOptions | None = None,
    force_dicom: bool = False,
    bit_depth: BitDepth = "auto",
) -> np.ndarray:
    """Read an image file, convert to ``in_channels`` (1 = grayscale, 3 = RGB) and resize.

    PNG / JPEG / TIFF / BMP at 8 or 16 bit (16-bit data are scaled by the depth they use, see
    ``bit_depth`` in `scale_bits`, after resizing), float TIFF in ``[0, 1]``, and DICOM (by
    suffix ``.dcm`` / ``.dicom``, by the ``DICM`` magic, or ``force_dicom=True`` for files
    without preamble nor suffix), read as set by ``dicom`` (see `DicomOptions`; default: the
    standard display pipeline). Resizing is bilinear (with PIL's antialiasing when shrinking),
    as in the Med-AD benchmark.

    Returns:
        ``uint8`` array of shape ``(in_channels, image_size, image_size)``.

    Raises:
        ImageReadError: the file is missing, empty, truncated or not a supported image.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.new("L", (100, 80), 128).save(p)
        >>> load_image(p, 64).shape
        (1, 64, 64)
    """
    return read_image(
        path, image_size, in_channels, dicom=dicom, force_dicom=force_dicom, bit_depth=bit_depth
    ).image


def load_images(
    paths: Sequence[str | os.PathLike],
    image_size: int,
    in_channels: int = 1,
    num_threads: int | None = None,
    *,
    dicom: DicomOptions | None = None,
    force_dicom: bool = False,
    bit_depth: BitDepth = "auto",
) -> np.ndarray:
    """Read many images in parallel into one ``(N, C, S, S)`` uint8 array.

    The images are one data set: with ``bit_depth="auto"``, 16-bit images are scaled by the
    largest depth any of them uses (`unify_bit_depth`). Every file is tried; if any is missing
    or unreadable, one `ImageReadError` lists all of them, so a user can fix a data set in one
    pass. For large or DICOM data sets prefer `sagan_ad.data.ImageCache`, which decodes each
    file once, on every core.

    Examples:
        >>> load_images([], 64).shape
        (0, 1, 64, 64)
    """
    out = np.empty((len(paths), in_channels, image_size, image_size), dtype=np.uint8)
    missing = [f"{p} {missing_reason(p)}" for p in paths if not Path(p).is_file()]
    if missing:
        raise ImageReadError(f"{len(missing)} image file(s) do not exist:\n  {listing(missing)}")
    bits: list[int | None] = [None] * len(paths)

    def read(i: int) -> str | None:
        try:
            result = read_image(
                paths[i],
                image_size,
                in_channels,
                dicom=dicom,
                force_dicom=force_dicom,
                bit_depth=bit_depth,
            )
        except ImageReadError as err:
            return str(err)
        out[i], bits[i] = result.image, result.bits
        return None

    workers = num_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        errors = [e for e in pool.map(read, range(len(paths))) if e is not None]
    if errors:
        raise ImageReadError(
            f"{len(errors)} image file(s) could not be decoded (corrupt, truncated or not an "
            f"image); fix or remove them from the split:\n  {listing(errors)}"
        )
    if paths:
        where = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
        unify_bit_depth(out, bits, bit_depth, where)
    return out


def listing(lines: Sequence[str], limit: int = 20) -> str:
    """The first ``limit`` lines of an error listing, then how many more."""
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n  ".join(lines[:limit]) + more
