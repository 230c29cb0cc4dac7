"""Drawing a Med-AD split from labelled names: seeded, stable, disjoint, patient-aware."""

from __future__ import annotations

import bisect
import logging
from collections.abc import Mapping, Sequence
from numbers import Integral

from sagan_ad.data.splits.leakage import check_disjoint
from sagan_ad.data.splits.medad_split import MedADSplit
from sagan_ad.data.splits.split import SplitError, group_of, hash_position

log = logging.getLogger(__name__)


SPLIT_PARTS = ("known_normal", "pool_normal", "pool_abnormal", "test_normal", "test_abnormal")
"""The counts a protocol split takes (the columns of the Med-AD table)."""


def stable_draw(
    sizes: Mapping[str, int],
    counts: Mapping[str, int],
    seed: int,
    pinned: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Assign keys (images or groups of ``sizes[key]`` images) to parts of ``counts`` images.

    Each key has a seeded `hash_position` in ``[0, 1)``, and ``[0, 1)`` is cut into one region
    per part, as wide as its share of the counts. A part takes, in order of position, the keys
    of its own region that still fit; a part left short then takes the nearest keys no part
    took, going down from its region's start. A key's place depends on its own hash, not on
    the other keys: adding a key moves that key and, when the part it joins is full, the one
    key that part no longer has room for (it becomes unused); removing one lets one unused key
    in. Only a part so short that it took every spare key below its region can pass a change
    on further. ``pinned`` keys go to the part given (if they fit; else they stay unused)
    before the others are drawn.

    Returns:
        The keys of each part, in order of position. Parts may fall short only when whole
        groups do not fit, or there are too few keys.

    Examples:
        >>> stable_draw({"a": 1, "b": 1, "c": 1}, {"x": 1, "y": 2}, seed=0)
        {'x': ['c'], 'y': ['a', 'b']}
    """
    position = {key: hash_position(seed, key) for key in sizes}
    room = {part: int(count) for part, count in counts.items()}
    taken: dict[str, list[str]] = {part: [] for part in counts}

    def take(key: str, part: str) -> bool:
        if sizes[key] > room[part]:
            return False
        taken[part].append(key)
        room[part] -= sizes[key]
        return True

    pinned = pinned or {}
    for key in sorted(pinned, key=lambda k: (position[k], k)):
        take(key, pinned[key])
    parts = [part for part in counts if counts[part] > 0]
    total = sum(counts[part] for part in parts)
    starts, edge = [], 0
    for part in parts:
        starts.append(edge / max(total, 1))
        edge += counts[part]
    leftover = []
    for key in sorted((k for k in sizes if k not in pinned), key=lambda k: (position[k], k)):
        region = parts[bisect.bisect_right(starts, position[key]) - 1] if parts else None
        if region is None or not take(key, region):
            leftover.append(key)
    # A short part takes the leftovers nearest below its region first (wrapping round): a file
    # just pushed out of a full part is the lowest leftover of its region, so it is taken last
    # and does not push out the file a short part took before.
    for i, part in enumerate(parts):
        used = set()
        for key in sorted(leftover, key=lambda k: ((starts[i] - position[k]) % 1.0, k)):
            if room[part] == 0:
                break
            if take(key, part):
                used.add(key)
        leftover = [key for key in leftover if key not in used]
    return {part: sorted(keys, key=lambda k: (position[k], k)) for part, keys in taken.items()}


def protocol_split(
    normal: Sequence[str],
    abnormal: Sequence[str],
    counts: Mapping[str, int],
    seed: int,
    source: str = "data set",
    groups: Mapping[str, str] | None = None,
) -> MedADSplit:
    """Draw a Med-AD split from labelled names: seeded, stable, disjoint, patient-aware.

    Each image, or each group of images (``groups`` maps a name to its group, for example its
    patient; names without one are groups of their own), goes to its part by `stable_draw`:
    by a seeded hash of its key, so the same names and seed always give the same split, and one
    image added or lost moves that image and (almost always) at most one other. The normals
    fill the known
    normals, the unlabeled normal pool and the normal test set; the abnormals fill the abnormal
    pool and the abnormal test set; the images left over are not used. A group is never on two
    sides: a patient whose normal images went to training (or test) has its abnormal images
    drawn into the training pool (or the test set), or left unused.

    Version 0.1 shuffled the sorted names with ``numpy``'s generator instead, so the same seed
    draws another split than it did then; a ``data.json`` written then still loads unchanged.

    Args:
        normal: names of the normal images.
        abnormal: names of the abnormal images.
        counts: images per part, keys `SPLIT_PARTS`.
        seed: seed of the hash.
        source: what the names come from, for error messages.
        groups: the group of each name (for example its PatientID); default: none.

    Examples:
        >>> counts = dict(known_normal=2, pool_normal=1, pool_abnormal=1, test_normal=1,
        ...               test_abnormal=1)
        >>> split = protocol_split(list("abcd"), list("xy"), counts, seed=0)
        >>> len(split.known_normal), len(split.test_abnormal)
        (2, 1)
    """
    unknown = set(counts) - set(SPLIT_PARTS)
    if unknown or set(SPLIT_PARTS) - set(counts):
        raise SplitError(
            f"split.counts={dict(counts)}: give exactly the keys {', '.join(SPLIT_PARTS)}"
        )
    # 3.7 would be floored, True counted as 1 and "3" compared with numbers: whole numbers only.
    odd = {k: n for k, n in counts.items() if isinstance(n, bool) or not isinstance(n, Integral)}
    if odd:
        raise SplitError(f"split.counts={dict(counts)}: {odd} are not whole numbers of images")
    if any(n < 0 for n in counts.values()):
        raise SplitError(f"split.counts={dict(counts)}: counts must be >= 0")
    if counts["known_normal"] < 1:
        raise SplitError("split.counts.known_normal must be >= 1: training needs known normals")
    check_disjoint({"normal": normal, "abnormal": abnormal}, source=source)
    need_normal = counts["known_normal"] + counts["pool_normal"] + counts["test_normal"]
    need_abnormal = counts["pool_abnormal"] + counts["test_abnormal"]
    short = []
    if need_normal > len(normal):
        short.append(f"{need_normal} normal images but it has {len(normal)}")
    if need_abnormal > len(abnormal):
        short.append(f"{need_abnormal} abnormal images but it has {len(abnormal)}")
    if short:
        raise SplitError(
            f"{source}: split.counts={dict(counts)} needs " + " and ".join(short) + ": set "
            "split.counts to what the data hold (the defaults are the Med-AD counts of the full "
            "release)"
        )
    groups = groups or {}
    members: dict[str, dict[str, list[str]]] = {"normal": {}, "abnormal": {}}
    for label, names in (("normal", normal), ("abnormal", abnormal)):
        for name in names:
            members[label].setdefault(group_of(name, groups), []).append(name)
    normal_parts = ("known_normal", "pool_normal", "test_normal")
    drawn = stable_draw(
        {key: len(names) for key, names in members["normal"].items()},
        {part: counts[part] for part in normal_parts},
        seed,
    )
    side = {key: part == "test_normal" for part in normal_parts for key in drawn[part]}
    pinned = {
        key: "test_abnormal" if side[key] else "pool_abnormal"
        for key in members["abnormal"]
        if key in side
    }
    drawn.update(
        stable_draw(
            {key: len(names) for key, names in members["abnormal"].items()},
            {part: counts[part] for part in ("pool_abnormal", "test_abnormal")},
            seed,
            pinned,
        )
    )
    label_of = {part: "normal" if part in normal_parts else "abnormal" for part in SPLIT_PARTS}
    parts = {
        part: [
            name
            for key in drawn[part]
            for name in sorted(
                members[label_of[part]][key], key=lambda n: (hash_position(seed, n), n)
            )
        ]
        for part in SPLIT_PARTS
    }
    short = [
        f"{part} {len(parts[part])} of {counts[part]}"
        for part in SPLIT_PARTS
        if len(parts[part]) < counts[part]
    ]
    if short:
        log.warning(
            "%s: whole groups do not fill every part exactly: %s images (each group stays on "
            "one side of the split)",
            source,
            ", ".join(short),
        )
    return MedADSplit(**parts)


def protocol_parts(split: MedADSplit) -> list[list[str]]:
    """The names of each of `SPLIT_PARTS`, in that order.

    Examples:
        >>> protocol_parts(MedADSplit(["a"], test_abnormal=["b"]))
        [['a'], [], [], [], ['b']]
    """
    return [getattr(split, part) for part in SPLIT_PARTS]


def split_tests(split: MedADSplit) -> list[str]:
    """The test images: the normal ones, then the abnormal ones.

    Examples:
        >>> split_tests(MedADSplit(["a"], test_normal=["b"], test_abnormal=["c"]))
        ['b', 'c']
    """
    return split.test_normal + split.test_abnormal


def without_names(split: MedADSplit, dropped: set[str]) -> MedADSplit:
    """The protocol parts of ``split`` without the names ``dropped`` (images left out).

    Examples:
        >>> without_names(MedADSplit(["a", "b"], test_abnormal=["c"]), {"b"}).known_normal
        ['a']
    """
    return MedADSplit(
        **{part: [n for n in getattr(split, part) if n not in dropped] for part in SPLIT_PARTS}
    )
