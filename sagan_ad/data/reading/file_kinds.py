"""What a path is before it is decoded: DICOM or not, the format its first bytes show, and why
it is not a readable file."""

from __future__ import annotations

import errno
import functools
import os
import struct
import unicodedata
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID

from sagan_ad.data.reading.dicom import is_dicom_file

DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom(path: str | os.PathLike, force_dicom: bool = False, head: bytes | None = None) -> bool:
    """Whether ``path`` is read as DICOM: forced, by suffix, or by the ``DICM`` magic (in
    ``head``, the file's first bytes, when the caller has read them).

    Examples:
        >>> is_dicom("scan.dcm"), is_dicom("scan.bin", force_dicom=True)
        (True, True)
    """
    if force_dicom or os.path.splitext(path)[1].lower() in DICOM_SUFFIXES:
        return True
    if head is not None:
        return head[128:132] == b"DICM"
    return Path(path).is_file() and is_dicom_file(path)


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
        return sniff_bytes(handle.read(512))


def sniff_bytes(head: bytes) -> str | None:
    """`sniff` of a file's first bytes (512 are enough)."""
    # First: a DICOM preamble may itself hold a TIFF header (dual DICOM / TIFF files).
    if head[128:132] == b"DICM":
        return "a DICOM file"
    if head[:2] == b"\x08\x00":
        # Group 0008 (identification) first, little endian: an old ACR-NEMA style data set.
        return (
            "DICOM without preamble (set force_dicom=True, a DataModule's decode.force_dicom, "
            "to read such files)"
        )
    for magic, kind in SIGNATURES:
        if head.startswith(magic):
            return kind
    if head and not head.strip(b"\0"):
        return "a file of NUL bytes only (a transfer that failed?)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text" if head else None


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


def dicom_without_image(path: str | os.PathLike) -> str | None:
    """What a DICOM file holds when it is no image, by its name (``DICOMDIR``) or its Media
    Storage SOP Class (a directory, structured report, presentation state, key object
    selection, encapsulated PDF, ...), or None: an image, or a class not known to hold none.

    Examples:
        >>> dicom_without_image("export/DICOMDIR")
        'a DICOMDIR (the index of a PACS export)'
    """
    if os.path.basename(path).upper() == "DICOMDIR":
        return "a DICOMDIR (the index of a PACS export)"
    try:
        sop_class = media_storage_class(path)
    except Exception:
        return None  # no file meta: read as an image, which reports what is wrong
    return None if sop_class is None else _non_image_class(sop_class)


@functools.lru_cache(maxsize=256)
def _non_image_class(sop_class: str) -> str | None:
    name = UID(sop_class).name
    # pydicom names every standard class; image classes say so ("DX Image Storage - For
    # Presentation", "Ophthalmic Photography 8 Bit Image Storage"), others do not.
    if name == sop_class or "Image" in name:
        return None
    return f"a DICOM {name.removesuffix(' Storage')} ({sop_class}), not an image"


# Explicit-VR elements with a 4-byte length (after two reserved bytes); the others have 2.
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_META_HEAD = 4096


def media_storage_class(path: str | os.PathLike) -> str | None:
    """The Media Storage SOP Class UID of a DICOM file's meta header, or None when the header
    has none; raises when the file has no DICOM preamble.

    The meta header (group 0002) is always explicit VR little endian, so it is read straight
    from the file's first bytes: every file of a folder is looked at once per setup, and
    pydicom's general reader costs more than ten times as much. Anything unexpected in those bytes
    goes to pydicom's reader, which gives the same answer or the error.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "note.txt"
        >>> _ = path.write_text("not DICOM")
        >>> media_storage_class(path)
        Traceback (most recent call last):
        ...
        pydicom.errors.InvalidDicomError: File is missing DICOM File Meta Information header ...
    """
    with open(path, "rb") as handle:
        head = handle.read(_META_HEAD)
    found = _meta_element(head, 0x0002) if head[128:132] == b"DICM" else None
    if found is None:
        value = read_file_meta_info(path).get("MediaStorageSOPClassUID")
        return None if value is None else str(value)
    return found or None


def _meta_element(head: bytes, element: int) -> str | None:
    """The text of element (0002, ``element``) in ``head``, "" when the group ends without
    it, or None when ``head`` is cut short or not plain explicit VR little endian."""
    at = 132
    while at + 8 <= len(head):
        group, number = struct.unpack_from("<HH", head, at)
        if group != 0x0002:
            return ""
        vr = head[at + 4 : at + 6]
        if not (vr.isalpha() and vr.isupper()):
            return None
        if vr in _LONG_VRS:
            if at + 12 > len(head):
                return None
            length, start = struct.unpack_from("<I", head, at + 8)[0], at + 12
        else:
            length, start = struct.unpack_from("<H", head, at + 6)[0], at + 8
        if start + length > len(head) or length == 0xFFFFFFFF:
            return None
        if number == element:
            return head[start : start + length].decode("ascii", "replace").rstrip("\0 ")
        at = start + length
    return None


def failed_transfer(path: str | os.PathLike) -> bool:
    """Whether a file without suffix looks like a transfer that failed (a PACS export's image
    cut short): empty, only NUL bytes, or under the 132 bytes of a DICOM preamble and not text.

    Examples:
        >>> import tempfile
        >>> stub = Path(tempfile.mkdtemp()) / "IM000007"
        >>> _ = stub.write_bytes(b"")
        >>> failed_transfer(stub)
        True
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    if not head.strip(b"\0"):
        return True
    if len(head) >= 132:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
