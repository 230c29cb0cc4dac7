"""Leakage checks of a split: every file once, none outside the image folder, no patient or
image on two sides (training, validation, test)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from sagan_ad.data.splits.medad_split import MedADSplit
from sagan_ad.data.splits.spellings import PERSON_TAGS, canonical_id, warn_near_identical_ids
from sagan_ad.data.splits.split import SplitError
from sagan_ad.data.splits.twins import SAME_PIXELS
from sagan_ad.data.storage import file_identity

log = logging.getLogger(__name__)


LeakageCheck = Literal["raise", "warn", "ignore"]
SAME_BYTES = "identical bytes"
"""The identity under which `check_leakage` compares file contents (a digest of the bytes), so
that a copy of an image under another name or in another folder is caught like a link to it."""
COPIES = (SAME_BYTES, SAME_PIXELS)
"""The identities that say two files are one image (a copy, or a re-encoding)."""


def outside_root(name: str, root: str | os.PathLike) -> bool:
    """Whether a ``data.json`` name leaves the folder ``root`` it is relative to.

    Inside are names that stay in ``root`` as written (``a/../x.png``, ``../images/x.png`` when
    ``root`` is ``images``, an absolute path into ``root``) and names whose file really lies in
    ``root``; a symbolic link inside ``root`` that points elsewhere is inside (data sets are
    often assembled from links).

    Examples:
        >>> root = "/data/images"
        >>> outside_root("a/../x.png", root), outside_root("../images/x.png", root)
        (False, False)
        >>> outside_root("../x.png", root), outside_root("/etc/passwd", root)
        (True, True)
    """
    top = os.path.abspath(root)
    written = os.path.normpath(os.path.join(top, name))
    if os.path.commonpath([top, written]) == top:
        return False
    real_top = os.path.realpath(top)
    return os.path.commonpath([real_top, os.path.realpath(written)]) != real_top


def check_split_files(
    split: MedADSplit,
    image_root: str | os.PathLike,
    source: str,
    allow_outside_root: bool = False,
) -> None:
    """Check the names of a split against the files they name under ``image_root``.

    Names are compared as files, not as strings: ``x.png``, ``./x.png``, ``sub/../x.png``,
    ``../images/x.png``, an absolute path, a symbolic or hard link to it (and, on a
    case-insensitive file system, ``X.PNG``) are one file, and one file may appear once in the
    split. Names that leave ``image_root`` (see `outside_root`) are refused unless
    ``allow_outside_root``. Empty names and names with a NUL character are refused.

    Raises:
        SplitError: naming the lists and the names, and what to do.

    Examples:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / "x.png").write_bytes(b"")
        >>> check_split_files(MedADSplit(["x.png"], test_normal=["./x.png"]), root, "data.json")
        Traceback (most recent call last):
        ...
        sagan_ad.data.splits.split.SplitError: data.json: './x.png' (test."0") and 'x.png' ...
    """
    image_root = Path(image_root)
    bad, outside, same = [], [], []
    seen: dict[tuple, tuple[str, str]] = {}
    for part, names in split.parts().items():
        for name in names:
            if not name.strip() or "\0" in name:
                bad.append(f"{name!r} ({part})")
                continue
            if not allow_outside_root and outside_root(name, image_root):
                outside.append(f"{name!r} ({part})")
                continue
            identity = file_identity(image_root / name)
            if identity in seen:
                first_name, first_part = seen[identity]
                same.append(
                    f"{name!r} ({part}) and {first_name!r} ({first_part}) are the same file "
                    f"{os.path.realpath(image_root / name)}"
                )
            else:
                seen[identity] = (name, part)
    if bad:
        raise SplitError(
            f"{source}: {', '.join(bad[:10])}: not a file name (empty, blank or with a NUL "
            "character); remove or correct these entries"
        )
    if outside:
        more = f" and {len(outside) - 10} more" if len(outside) > 10 else ""
        raise SplitError(
            f"{source}: {len(outside)} name(s) point outside {image_root}: "
            f"{', '.join(outside[:10])}{more}; names are relative to that folder: move the "
            "files into it, or set allow_outside_root=True to read them where they are"
        )
    if same:
        more = f" (and {len(same) - 10} more)" if len(same) > 10 else ""
        raise SplitError(
            f"{source}: {'; '.join(same[:10])}{more} ... every file may appear once: remove "
            "the duplicates so that no test image is seen in training"
        )


def check_disjoint(groups: Mapping[str, Sequence[str]], source: str = "split") -> None:
    """Raise `SplitError` if a name is repeated inside a group or shared by two groups.

    A file in both training and test data leaks the answer into training; a duplicate inside a
    group silently re-weights the data.

    Examples:
        >>> check_disjoint({"train": ["a", "b"], "test": ["c"]})
        >>> check_disjoint({"train": ["a"], "test": ["a"]})
        Traceback (most recent call last):
        ...
        sagan_ad.data.splits.split.SplitError: split: 'a' is in both train and test ...
    """
    problems: list[str] = []
    seen: dict[str, str] = {}
    for group, names in groups.items():
        for name in names:
            if name in seen:
                where = (
                    f"twice in {group}"
                    if seen[name] == group
                    else f"in both {seen[name]} and {group}"
                )
                problems.append(f"{name!r} is {where}")
            else:
                seen[name] = group
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise SplitError(
            f"{source}: {shown}{more} ... every file may appear once: remove the duplicates so "
            "that no test image is seen in training"
        )


def check_leakage(
    sides: Mapping[str, Sequence[str]],
    identities: Mapping[str, Mapping[str, str]],
    mode: LeakageCheck = "raise",
    source: str = "split",
    group_by: str | None = None,
    roles_given: bool = False,
) -> list[str]:
    """Find patients or images on two sides of a split (training, validation, test).

    Args:
        sides: image names by side.
        identities: per image name, the values that identify its patient or image (for
            example ``{"PatientID": "P7", "SOPInstanceUID": "1.2.3"}``, and `SAME_BYTES`: a
            digest of the file, so that a copy under another name is caught); empty values are
            unknown and never match.
        mode: ``"raise"``: `SplitError`; ``"warn"``: one warning; ``"ignore"``: no check.
        source: the data set, for the message.
        group_by: the data's ``group_by`` setting, for the advice.
        roles_given: whether the user gave training and test (a ``data.json``, folders or
            CSVs of each role) rather than a split drawn by the DataModule, for the advice.

    Identities are compared in the form the grouping uses (`canonical_id`: Unicode unified,
    zero-width characters, surrounding spaces and NULs and empty trailing DICOM components
    stripped, words for a missing value unknown), so ``" P8\\u200b"`` is ``"P8"``; patient IDs
    spelt differently with the same PatientName and PatientBirthDate, and group values on two
    sides that differ only in case, zero padding or a trailing ``.0``, are named in a warning
    and kept apart (`warn_near_identical_ids`). Copies are found by bytes (`SAME_BYTES`) and
    by decoded pixels (`sagan_ad.data.splits.twins.SAME_PIXELS`: a film re-encoded).

    Identical bytes found only in training and validation (two copies of one image in the
    training data, separated by the validation hold-out) are always a warning, never an error;
    copies on one side only are a warning too (they weigh the image double).

    Returns:
        One line per value found on two sides.

    Examples:
        >>> ids = {"a": {"PatientID": "P1"}, "b": {"PatientID": "P1"}, "c": {"PatientID": "P2"}}
        >>> check_leakage({"training": ["a", "c"], "test": ["b"]}, ids, mode="warn")
        ["PatientID 'P1' in training (1) and test (1)"]
    """
    if mode == "ignore":
        return []
    found: dict[tuple[str, str], dict[str, list[str]]] = {}
    for side, names in sides.items():
        for name in dict.fromkeys(names):
            for kind, value in identities.get(name, {}).items():
                # Compared as the grouping compares them (" P8" is "P8").
                value = value if kind in COPIES else canonical_id(value)
                if value and kind not in PERSON_TAGS:
                    found.setdefault((kind, value), {}).setdefault(side, []).append(name)
    warn_near_identical_ids(sides, identities, source)
    problems, mild, twice = [], [], []
    kinds_found: set[str] = set()
    patient_sides: set[str] = set()
    # A byte copy is also a pixel twin: name it once, as the copy it is.
    copied = {
        frozenset(n for names in where.values() for n in names)
        for (kind, _), where in found.items()
        if kind == SAME_BYTES
    }
    for (kind, value), where in found.items():
        members = frozenset(n for names in where.values() for n in names)
        if kind == SAME_PIXELS and members in copied:
            continue
        if len(where) < 2:
            names = next(iter(where.values()))
            if kind in COPIES and len(names) > 1:
                twice.append(", ".join(names[:3]))
            continue
        line = f"{_shown(kind, value, where)} in " + " and ".join(
            f"{side} ({len(names)})" for side, names in where.items()
        )
        # Two copies of one image inside the training data are no leak until the validation
        # hold-out (drawn by the DataModule, not by the user) separates them; it then only
        # sways the choice of checkpoint, so it is reported but does not stop a run.
        held_apart = kind in COPIES and set(where) == {"training", "validation"}
        (mild if held_apart else problems).append(line)
        if not held_apart:
            kinds_found.add(kind)
            if kind not in COPIES:
                patient_sides.update(where)
    if twice:
        # No leak, but the image weighs double (or more) in its part.
        log.warning(
            "%s: %d image(s) are there more than once under other names, on one side of the "
            "split (%s): each copy counts as another image; remove the copies",
            source,
            len(twice),
            "; ".join(twice[:5]),
        )
    if mild and mode != "ignore":
        log.warning(
            "%s: %d copy(ies) of one image sit in training and validation: %s. Validation "
            "scores of these images are too good; remove one copy of each from the data",
            source,
            len(mild),
            "; ".join(mild[:10]),
        )
    if not problems:
        return mild
    more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
    placeholder = _placeholder_hint(found, identities)
    message = (
        f"{source}: {len(problems)} patient(s) or image(s) are on two sides of the split: "
        f"{'; '.join(problems[:10])}{more}. A model validated or tested on a patient or image "
        f"it trained on scores too well: "
        + (placeholder or _advice(kinds_found, patient_sides, group_by, roles_given))
        + "; split.leakage='warn' only reports this"
    )
    if mode == "raise":
        raise SplitError(message)
    log.warning(message)
    return problems + mild


def _placeholder_hint(
    found: Mapping[tuple[str, str], Mapping[str, list[str]]],
    identities: Mapping[str, Mapping[str, str]],
) -> str:
    """A note on header values shared by most images: an anonymizer's placeholder (PatientID
    ``ANONYMOUS``, one SOPInstanceUID for every file) rather than one patient or image."""
    having = Counter(kind for ids in identities.values() for kind, value in ids.items() if value)
    common = [
        f"{kind} {value!r} ({sum(map(len, where.values()))} of {having[kind]} images)"
        for (kind, value), where in found.items()
        if kind not in COPIES
        and len(where) > 1
        and sum(map(len, where.values())) >= max(3, having[kind] / 2)
    ]
    if not common:
        return ""
    return (
        f"shared by most images: {', '.join(common[:3])}; if that is an anonymizer's "
        "placeholder rather than one patient or image, it cannot tell patients apart: group "
        "by a column or tag that identifies patients (split.group_by), or set "
        "split.leakage='warn' (or 'ignore') and keep the patients apart yourself"
    )


def _advice(kinds: set[str], sides: set[str], group_by: str | None, roles_given: bool) -> str:
    """What to do about the leaks of ``kinds`` (patients found on ``sides``), given how the
    split was made: the user's roles are moved by the user, the DataModule's draw is grouped."""
    advice = []
    if kinds & set(COPIES) or "SOPInstanceUID" in kinds:
        advice.append(
            "remove the copies (one image under two names or encodings) so that each image is "
            "on one side"
        )
    patients = kinds - set(COPIES) - {"SOPInstanceUID"}
    named = ", ".join(sorted(patients))
    if patients and roles_given and "test" in sides:
        advice.append(
            f"the split you gave puts a patient ({named}) in training and test: move each "
            "patient's images to one side of it"
        )
    if patients and ("validation" in sides or not roles_given):
        if group_by is None:
            advice.append(
                "set split.group_by to the column or DICOM keyword that identifies patients (for "
                "example split.group_by='PatientID') to keep each patient on one side"
                + (" of the validation hold-out" if roles_given else "")
            )
        else:
            advice.append(
                f"split.group_by={group_by!r} keeps its groups whole, but these images share "
                f"another identity ({named}): group by that one instead"
            )
    return "; ".join(advice)


def _shown(kind: str, value: str, where: Mapping[str, list[str]]) -> str:
    if kind not in COPIES:
        return f"{kind} {value!r}"
    # A digest means nothing to a reader: name the files instead.
    names = [name for side_names in where.values() for name in side_names]
    more = f", ... ({len(names)} files)" if len(names) > 4 else ""
    return f"{kind} ({', '.join(names[:4])}{more})"
