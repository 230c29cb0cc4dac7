"""The protocol split's seeded draws: the validation hold-out (by image or by group), the
unlabeled mixture, and `SplitError`, the error of every split module."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from sagan_ad.errors import DataError


class SplitError(DataError):
    """The split file or the requested split is invalid; the message says what to change."""


def hash_position(seed: int, key: str) -> float:
    """Where ``key`` falls in ``[0, 1)`` for ``seed``: a hash, so it depends on nothing else.

    Examples:
        >>> hash_position(0, "a.png") == hash_position(0, "a.png") != hash_position(1, "a.png")
        True
    """
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def unlabeled_counts(size: int, anomaly_ratio: float) -> tuple[int, int]:
    """Abnormal and normal counts of an unlabeled set: ``floor(size * ratio)`` and the rest.

    Examples:
        >>> unlabeled_counts(170, 0.6)
        (102, 68)
    """
    if not 0.0 <= anomaly_ratio <= 1.0:
        raise SplitError(f"split.anomaly_ratio={anomaly_ratio}: must be in [0, 1]")
    if size < 0:
        raise SplitError(f"split.unlabeled_size={size}: must be >= 0")
    abnormal = math.floor(size * anomaly_ratio)
    return abnormal, size - abnormal


def build_unlabeled(
    pool_normal: Sequence[str],
    pool_abnormal: Sequence[str],
    size: int,
    anomaly_ratio: float,
) -> tuple[list[str], list[int]]:
    """The unlabeled mixture of the protocol: the first ``floor(size * ratio)`` abnormal names
    followed by the first ``size - floor(size * ratio)`` normal names.

    Returns:
        The names and their (hidden from training) labels, 1 = abnormal.

    Examples:
        >>> build_unlabeled(["n1", "n2"], ["a1", "a2"], size=2, anomaly_ratio=0.5)
        (['a1', 'n1'], [1, 0])
    """
    n_abnormal, n_normal = unlabeled_counts(size, anomaly_ratio)
    short = []
    if n_abnormal > len(pool_abnormal):
        short.append(f"{n_abnormal} abnormal images but the abnormal pool has {len(pool_abnormal)}")
    if n_normal > len(pool_normal):
        short.append(f"{n_normal} normal images but the normal pool has {len(pool_normal)}")
    if short:
        raise SplitError(
            f"an unlabeled set of {size} images at split.anomaly_ratio={anomaly_ratio} needs "
            + " and ".join(short)
            + ": lower split.unlabeled_size, or choose a split.anomaly_ratio the pools can supply"
        )
    names = list(pool_abnormal[:n_abnormal]) + list(pool_normal[:n_normal])
    return names, [1] * n_abnormal + [0] * n_normal


def holdout_indices(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(count)`` into kept and held-out indices (both sorted).

    At least two images are held out when ``fraction > 0`` (a pseudo anomaly needs a second image
    as its source).

    Examples:
        >>> keep, held = holdout_indices(10, 0.2, seed=0)
        >>> len(keep), len(held)
        (8, 2)
    """
    if not 0.0 <= fraction < 1.0:
        raise SplitError(f"split.val_fraction={fraction}: must be in [0, 1)")
    if fraction == 0.0:
        return np.arange(count), np.arange(0)
    n_held = holdout_target(count, fraction)
    if count - n_held < 2:
        raise SplitError(
            f"split.val_fraction={fraction} of {count} known normals leaves {count - n_held} for "
            "training: add known normals or lower split.val_fraction"
        )
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def holdout_groups(
    groups: Sequence[str], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`holdout_indices` by group: whole groups (for example patients) are held out, in order
    of their seeded `hash_position`, until ``fraction`` of the images is held.

    ``groups`` holds the group of each index; an empty string is a group of its own.

    Examples:
        >>> keep, held = holdout_groups(["p1", "p1", "p2", "p2", "p3", "p3"], 0.3, seed=0)
        >>> len(held), len({["p1", "p1", "p2", "p2", "p3", "p3"][i] for i in held})
        (2, 1)
    """
    if not 0.0 <= fraction < 1.0:
        raise SplitError(f"split.val_fraction={fraction}: must be in [0, 1)")
    count = len(groups)
    if fraction == 0.0:
        return np.arange(count), np.arange(0)
    target = holdout_target(count, fraction)
    held: list[int] = []
    ordered = groups_in_order(groups, seed)
    for members in ordered:
        if len(held) >= target:
            break
        held += members
    if count - len(held) < 2:
        largest, size = (Counter(g for g in groups if g).most_common(1) or [("", 0)])[0]
        if size >= max(3, count / 2):
            # Not too few images: one group value shared by most, an anonymizer's placeholder.
            raise SplitError(
                f"group {largest!r} holds {size} of the {count} known normals, so no group can "
                "be held out for validation without taking most of them: if that value is an "
                "anonymizer's placeholder (ANON, ANONYMOUS, 0000) rather than one patient, it "
                "cannot tell patients apart; set split.group_by to a column or tag that identifies "
                "patients, or leave split.group_by out"
            )
        raise SplitError(
            f"split.val_fraction={fraction} of {count} known normals in {len(ordered)} groups "
            f"leaves {count - len(held)} for training: add known normals or lower "
            "split.val_fraction"
        )
    keep = np.setdiff1d(np.arange(count), held)
    return keep, np.sort(np.array(held, dtype=np.int64))


def shares_groups(groups: Sequence[str]) -> bool:
    """Whether some group (a non-empty value) holds several of the images: only then can a
    per-image hold-out split a group.

    Examples:
        >>> shares_groups(["p1", "p2", ""]), shares_groups(["p1", "", "p1"])
        (False, True)
    """
    counts = Counter(g for g in groups if g)
    return bool(counts) and max(counts.values()) > 1


def grouped_holdout(
    groups: Sequence[str], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`holdout_groups` where some group holds several images (`shares_groups`), else
    `holdout_indices`: images that are groups of their own keep the draw they had without
    groups.

    Examples:
        >>> keep, held = grouped_holdout(["", "", "", ""], 0.5, seed=0)
        >>> held.tolist() == holdout_indices(4, 0.5, seed=0)[1].tolist()
        True
    """
    if shares_groups(groups):
        return holdout_groups(groups, fraction, seed)
    return holdout_indices(len(groups), fraction, seed)


def holdout_target(count: int, fraction: float) -> int:
    # At least two: a pseudo anomaly needs a second image as its source.
    return max(2, round(count * fraction))


def groups_in_order(groups: Sequence[str], seed: int) -> list[list[int]]:
    """The indices of each group (an empty string: a group of its own) in the seeded order
    of its `hash_position`."""
    members: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(f"group:{group}" if group else f"index:{i}", []).append(i)
    return [members[k] for k in sorted(members, key=lambda k: (hash_position(seed, k), k))]


def group_of(name: str, groups: Mapping[str, str]) -> str:
    # Prefixed so that a group value can never equal another image's name.
    value = groups.get(name, "")
    return f"group:{value}" if value else f"image:{name}"
