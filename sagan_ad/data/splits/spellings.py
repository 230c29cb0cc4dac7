"""The spellings of one patient or group: what makes two identity values one when compared
(`canonical_id`), and which different values look like one patient spelt twice."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)

GROUP_PREFIX = "group ("
"""How the identity of an image's group (`sagan_ad.data.splits.groups.group_identity`) is
named, ``group (<split.group_by>)``: a value with no name or birth date beside it."""
PERSON_TAGS = ("PatientName", "PatientBirthDate")
"""Header values never compared as identities (two patients may share them), but used to find
patient IDs that are one patient spelt twice (`near_identical_ids`)."""
MISSING_VALUES = frozenset({"", "nan", "none", "null", "na", "n/a", "#n/a", "-"})
"""Identity values that mean "unknown" (as pandas, R and spreadsheets write them), compared
without case."""
INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
"""Zero-width characters (and the byte-order mark) that editors and exports slip into a value:
no reader can see them, so they never tell two patients apart."""
PADDING = " \t\r\n\x00"


def canonical_id(value: object) -> str:
    """An identity (a patient ID, a group, a UID) as compared: the spellings of one value that
    no reader can tell apart are one. Unicode forms are unified (NFKC: ``José`` composed or
    not, full-width ``１２`` and ``12``, a no-break space and a space), zero-width characters
    and a byte-order mark are removed, DICOM's padding (spaces and NULs) and empty trailing
    components (``DOE^JOHN^^^``) are stripped; words for a missing value are unknown
    (``""``), which never matches.

    Examples:
        >>> canonical_id(" P8 "), canonical_id("1.2.3\\x00"), canonical_id("N/A")
        ('P8', '1.2.3', '')
        >>> canonical_id("\\ufeff\\uff11\\uff12\\u200b"), canonical_id("DOE^JOHN^^^ ")
        ('12', 'DOE^JOHN')
    """
    text = unicodedata.normalize("NFKC", str(value)).translate(INVISIBLE)
    text = text.strip(PADDING).rstrip("^" + PADDING)
    return "" if text.casefold() in MISSING_VALUES else text


def loose_id(value: str) -> str:
    """A patient ID with the differences of spelling that exports introduce taken out: letter
    case, zero padding of numbers, a trailing ``.0`` on a number (a spreadsheet's float), and
    ``-``, ``_``, ``.``, ``^`` or space separators.

    Examples:
        >>> loose_id("P-0008"), loose_id("p_8"), loose_id("12.0"), loose_id("DOE^J")
        ('p8', 'p8', '12', 'doej')
    """
    text = re.sub(r"(?<=\d)\.0+$", "", value.casefold())
    text = re.sub(r"[-_.^\s]", "", text)
    return re.sub(r"(?<!\d)0+(?=\d)", "", text)


def near_identical_ids(
    identities: Mapping[str, Mapping[str, str]], names: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """Pairs of different PatientIDs that `loose_id` makes one, among images with the same
    PatientName and PatientBirthDate (both known): one patient exported twice with another
    spelling (case, zero padding, ``-`` or ``_``).

    Examples:
        >>> ids = {"a": {"PatientID": "P-008", "PatientName": "DOE^J", "PatientBirthDate": "1970"},
        ...        "b": {"PatientID": "p8", "PatientName": "DOE^J", "PatientBirthDate": "1970"}}
        >>> near_identical_ids(ids)
        [('P-008', 'p8')]
    """
    people: dict[tuple[str, str, str], set[str]] = {}
    for name in names if names is not None else identities:
        ids = identities.get(name, {})
        patient = canonical_id(ids.get("PatientID", ""))
        person = tuple(canonical_id(ids.get(tag, "")) for tag in PERSON_TAGS)
        if patient and all(person):
            people.setdefault((loose_id(patient), *person), set()).add(patient)
    return [tuple(sorted(spellings))[:2] for spellings in people.values() if len(spellings) > 1]


def near_identical_groups(
    sides: Mapping[str, Sequence[str]], identities: Mapping[str, Mapping[str, str]]
) -> list[tuple[str, str, str]]:
    """Pairs of different group values (the `GROUP_PREFIX` identities: a CSV column, a
    metadata key) that `loose_id` makes one, on two sides of the split: ``(kind, a, b)``.

    Nothing else tells whether ``P1`` and ``p1``, ``007`` and ``7``, ``12.0`` and ``12`` are
    one patient (a spreadsheet's export) or two, so they are never merged; on one side they
    cannot leak and are not named.

    Examples:
        >>> ids = {"a": {"group (pid)": "12.0"}, "b": {"group (pid)": "12"}}
        >>> near_identical_groups({"training": ["a"], "test": ["b"]}, ids)
        [('group (pid)', '12', '12.0')]
    """
    found: dict[tuple[str, str], dict[str, set[str]]] = {}
    for side, names in sides.items():
        for name in names:
            for kind, value in identities.get(name, {}).items():
                value = canonical_id(value) if kind.startswith(GROUP_PREFIX) else ""
                if value:
                    spellings = found.setdefault((kind, loose_id(value)), {})
                    spellings.setdefault(value, set()).add(side)
    return [
        (kind, *sorted(spellings)[:2])
        for (kind, _), spellings in found.items()
        if len(spellings) > 1 and len(set().union(*spellings.values())) > 1
    ]


def warn_near_identical_ids(
    sides: Mapping[str, Sequence[str]], identities: Mapping[str, Mapping[str, str]], source: str
) -> None:
    """One warning for PatientIDs and one for group values that look like one patient spelt
    twice, each pair with the sides its spellings are on."""
    side_of = {name: side for side, names in sides.items() for name in names}
    patients = near_identical_ids(identities, list(side_of))
    groups = near_identical_groups(sides, identities)
    if not (patients or groups):
        return
    # Where each spelling is: built only when there is something to name (a large data set
    # has hundreds of thousands of identities).
    order = list(sides)
    on: dict[tuple[str, str], set[str]] = {}
    for side, names in sides.items():
        for name in names:
            for kind, value in identities.get(name, {}).items():
                on.setdefault((kind, canonical_id(value)), set()).add(side)

    def pair(kind: str, a: str, b: str) -> str:
        where = ["/".join(s for s in order if s in on.get((kind, v), ())) for v in (a, b)]
        return f"{a!r} and {b!r} ({where[0]} and {where[1]})"

    if patients:
        log.warning(
            "%s: %d PatientID(s) look like one patient spelt twice (same PatientName and "
            "PatientBirthDate; the IDs differ only in case, zero padding or separators): %s. "
            "If they are one patient, correct the IDs so that grouping and the leakage check "
            "see one",
            source,
            len(patients),
            "; ".join(pair("PatientID", a, b) for a, b in patients[:10]),
        )
    if groups:
        log.warning(
            "%s: %d %s value(s) may be one patient spelt twice on two sides of the split (they "
            "differ only in case, zero padding, a trailing '.0' or separators): %s. They are "
            "kept apart as different patients; if they are one patient, give them one spelling "
            "in the data (where split.group_by, or the data set's patient key, reads them) so "
            "that grouping and the leakage check see one",
            source,
            len(groups),
            groups[0][0],
            "; ".join(pair(kind, a, b) for kind, a, b in groups[:10]),
        )
