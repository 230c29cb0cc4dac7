"""The semi-supervised protocol split: unlabeled mixture, validation hold-out, leakage checks."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class SplitError(ValueError):
    """The split file or the requested split is invalid; the message says what to change."""


@dataclass(frozen=True)
class MedADSplit:
    """File names of a Med-AD ``data.json`` split file.

    Attributes:
        known_normal: ``train."0"``, the known normal images.
        pool_normal: ``train.unlabeled."0"``, normals available to the unlabeled mixture.
        pool_abnormal: ``train.unlabeled."1"``, abnormals available to the unlabeled mixture.
        test_normal: ``test."0"``.
        test_abnormal: ``test."1"``.
        val_normal: optional labelled validation normals (``val."0"``).
        val_abnormal: optional labelled validation abnormals (``val."1"``).
    """

    known_normal: list[str]
    pool_normal: list[str] = field(default_factory=list)
    pool_abnormal: list[str] = field(default_factory=list)
    test_normal: list[str] = field(default_factory=list)
    test_abnormal: list[str] = field(default_factory=list)
    val_normal: list[str] = field(default_factory=list)
    val_abnormal: list[str] = field(default_factory=list)

    @property
    def has_validation(self) -> bool:
        """Whether the split file brings its own labelled validation set."""
        return bool(self.val_normal or self.val_abnormal)

    def to_json(self) -> dict:
        """The ``data.json`` structure of this split."""
        data: dict = {
            "train": {
                "0": self.known_normal,
                "unlabeled": {"0": self.pool_normal, "1": self.pool_abnormal},
            },
            "test": {"0": self.test_normal, "1": self.test_abnormal},
        }
        if self.has_validation:
            data["val"] = {"0": self.val_normal, "1": self.val_abnormal}
        return data

    def with_labelled_validation(
        self,
        val_fraction: float,
        num_abnormal: int,
        seed: int = 0,
        groups: Mapping[str, str] | None = None,
        reserve: int = 0,
    ) -> MedADSplit:
        """This split with a labelled validation set carved from its *training* data.

        Pseudo anomalies can be a poor proxy for a real disease (on the NIH pneumonia films they
        score at chance for every model), so hyperparameters and score variants chosen on them
        are chosen at random. Benchmark splits label their unlabeled pool, and the mixture uses
        only the *first* names of each pool, so the last ``num_abnormal`` abnormal names are
        training data that no run trains on. They become ``val."1"``; ``val."0"`` is the same
        seeded hold-out of the known normals that ``val_fraction`` takes without a labelled
        validation (`holdout_indices`), so the training known normals do not change. The test
        set is never touched.

        With ``groups`` (a group per name, for example the radiographic view) the abnormals are
        balanced against the held-out normals: each group gets the same share of the abnormals
        as of the normals (largest remainders), taken from the end of the pool but never from
        its first ``reserve`` names (the part the unlabeled mixture uses). A validation set whose
        classes differ by group lets the group choose the checkpoint instead of the disease.
        Names without a group form the group ``""``.

        Args:
            val_fraction: fraction of the known normals held out, in ``(0, 1)``.
            num_abnormal: abnormal validation images taken from the end of the abnormal pool.
            seed: seed of the known-normal hold-out (the DataModule's ``seed``).
            groups: optional group of each name, to balance the abnormals by.
            reserve: with ``groups``: leading pool abnormals that are never taken.

        Raises:
            SplitError: if the split already has a validation set, or the pool or the known
                normals are too small.

        Examples:
            >>> split = MedADSplit(known_normal=list("abcdefghij"), pool_normal=["n"],
            ...                    pool_abnormal=["x", "y", "z"])
            >>> carved = split.with_labelled_validation(0.2, num_abnormal=2)
            >>> len(carved.known_normal), carved.val_abnormal, carved.pool_abnormal
            (8, ['y', 'z'], ['x'])
            >>> views = {"x": "AP", "y": "PA", "z": "PA", **dict.fromkeys("abcdefghij", "AP")}
            >>> split.with_labelled_validation(0.2, 2, groups=views).val_abnormal
            Traceback (most recent call last):
            ...
            sagan_ad.data.split.SplitError: cannot balance the 2 validation abnormals by group ...
        """
        if self.has_validation:
            raise SplitError("the split already has a labelled validation set (val)")
        if not 0.0 < val_fraction < 1.0:
            raise SplitError(f"val_fraction={val_fraction}: must be in (0, 1)")
        if not 1 <= num_abnormal < len(self.pool_abnormal):
            raise SplitError(
                f"num_abnormal={num_abnormal}: must be at least 1 and leave some of the "
                f"{len(self.pool_abnormal)} pool abnormals for the unlabeled mixture"
            )
        keep, held = holdout_indices(len(self.known_normal), val_fraction, seed)
        val_normal = [self.known_normal[i] for i in held]
        if groups is None:
            taken = set(self.pool_abnormal[-num_abnormal:])
        else:
            taken = _balanced_tail(
                [groups.get(n, "") for n in val_normal],
                [(n, groups.get(n, "")) for n in self.pool_abnormal[reserve:]],
                num_abnormal,
            )
        return MedADSplit(
            known_normal=[self.known_normal[i] for i in keep],
            pool_normal=list(self.pool_normal),
            pool_abnormal=[n for n in self.pool_abnormal if n not in taken],
            test_normal=list(self.test_normal),
            test_abnormal=list(self.test_abnormal),
            val_normal=val_normal,
            val_abnormal=[n for n in self.pool_abnormal if n in taken],
        )


def _balanced_tail(
    reference: Sequence[str], candidates: Sequence[tuple[str, str]], count: int
) -> set[str]:
    """``count`` candidate names, taken from the end, whose groups follow the shares of the
    ``reference`` groups (largest-remainder quotas)."""
    shares = Counter(reference)
    exact = {g: count * n / len(reference) for g, n in shares.items()}
    quota = {g: math.floor(q) for g, q in exact.items()}
    by_remainder = sorted(exact, key=lambda g: (quota[g] - exact[g], g))
    for g in by_remainder[: count - sum(quota.values())]:
        quota[g] += 1
    taken: set[str] = set()
    have: Counter[str] = Counter()
    for name, group in reversed(candidates):
        if have[group] < quota.get(group, 0):
            taken.add(name)
            have[group] += 1
    short = {g: (q, have[g]) for g, q in sorted(quota.items()) if have[g] < q}
    if short:
        detail = ", ".join(f"{q} {g!r} but only {h} are available" for g, (q, h) in short.items())
        raise SplitError(
            f"cannot balance the {count} validation abnormals by group like the "
            f"{len(reference)} held-out normals: need {detail} outside the unlabeled mixture; "
            "lower val_abnormal or drop the balancing"
        )
    return taken


def _names(node: object, where: str, path: Path) -> list[str]:
    if not isinstance(node, list) or not all(isinstance(n, str) for n in node):
        raise SplitError(f"{path}: {where} must be a list of file names")
    return list(node)


def _child(node: object, key: str, where: str, path: Path, required: bool = True) -> object:
    if not isinstance(node, Mapping):
        raise SplitError(f"{path}: {where} must be an object")
    if key not in node:
        if not required:
            return None
        raise SplitError(
            f"{path}: missing key {where}.{key!r}; a Med-AD data.json has "
            '{"train": {"0": [...], "unlabeled": {"0": [...], "1": [...]}}, '
            '"test": {"0": [...], "1": [...]}}'
        )
    return node[key]


def read_medad_split(path: str | os.PathLike) -> MedADSplit:
    """Parse and validate a Med-AD ``data.json``.

    ``train."0"`` is required; the unlabeled pools and the test set may be empty or absent (then
    there is no unlabeled data or no test set); ``val`` is optional.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "data.json"
        >>> _ = p.write_text('{"train": {"0": ["a.png"]}}')
        >>> read_medad_split(p).known_normal
        ['a.png']
    """
    path = Path(path)
    if not path.is_file():
        raise SplitError(
            f"{path} does not exist: a Med-AD dataset folder holds images/ and data.json "
            "(see the README, 'Your own data')"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SplitError(f"{path} is not valid JSON: {err}") from err
    train = _child(data, "train", "", path)
    known = _names(_child(train, "0", "train", path), 'train."0"', path)
    if not known:
        raise SplitError(f'{path}: train."0" is empty: training needs known normal images')
    pools: dict[str, list[str]] = {"0": [], "1": []}
    unlabeled = _child(train, "unlabeled", "train", path, required=False)
    if unlabeled is not None:
        for label in pools:
            node = _child(unlabeled, label, "train.unlabeled", path, required=False)
            pools[label] = [] if node is None else _names(node, f"train.unlabeled.{label!r}", path)
    sets: dict[str, dict[str, list[str]]] = {}
    for part in ("test", "val"):
        node = _child(data, part, "", path, required=False)
        sets[part] = {"0": [], "1": []}
        if node is not None:
            for label in ("0", "1"):
                sets[part][label] = _names(
                    _child(node, label, part, path), f"{part}.{label!r}", path
                )
    split = MedADSplit(
        known_normal=known,
        pool_normal=pools["0"],
        pool_abnormal=pools["1"],
        test_normal=sets["test"]["0"],
        test_abnormal=sets["test"]["1"],
        val_normal=sets["val"]["0"],
        val_abnormal=sets["val"]["1"],
    )
    check_disjoint(
        {
            'train."0"': split.known_normal,
            'train.unlabeled."0"': split.pool_normal,
            'train.unlabeled."1"': split.pool_abnormal,
            'test."0"': split.test_normal,
            'test."1"': split.test_abnormal,
            'val."0"': split.val_normal,
            'val."1"': split.val_abnormal,
        },
        source=str(path),
    )
    return split


def check_disjoint(groups: Mapping[str, Sequence[str]], source: str = "split") -> None:
    """Raise `SplitError` if a name is repeated inside a group or shared by two groups.

    A file in both training and test data leaks the answer into training; a duplicate inside a
    group silently re-weights the data.

    Examples:
        >>> check_disjoint({"train": ["a", "b"], "test": ["c"]})
        >>> check_disjoint({"train": ["a"], "test": ["a"]})
        Traceback (most recent call last):
        ...
        sagan_ad.data.split.SplitError: split: 'a' is in both train and test ...
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


def unlabeled_counts(size: int, anomaly_ratio: float) -> tuple[int, int]:
    """Abnormal and normal counts of an unlabeled set: ``floor(size * ratio)`` and the rest.

    Examples:
        >>> unlabeled_counts(170, 0.6)
        (102, 68)
    """
    if not 0.0 <= anomaly_ratio <= 1.0:
        raise SplitError(f"anomaly_ratio={anomaly_ratio}: must be in [0, 1]")
    if size < 0:
        raise SplitError(f"unlabeled_size={size}: must be >= 0")
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
            f"an unlabeled set of {size} images at anomaly_ratio={anomaly_ratio} needs "
            + " and ".join(short)
            + ": lower unlabeled_size, or choose an anomaly_ratio the pools can supply"
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
        raise SplitError(f"val_fraction={fraction}: must be in [0, 1)")
    if fraction == 0.0:
        return np.arange(count), np.arange(0)
    n_held = max(2, round(count * fraction))
    if count - n_held < 2:
        raise SplitError(
            f"val_fraction={fraction} of {count} known normals leaves {count - n_held} for "
            "training: add known normals or lower val_fraction"
        )
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[n_held:]), np.sort(order[:n_held])


SPLIT_PARTS = ("known_normal", "pool_normal", "pool_abnormal", "test_normal", "test_abnormal")
"""The counts a protocol split takes (the columns of the Med-AD table)."""


def protocol_split(
    normal: Sequence[str],
    abnormal: Sequence[str],
    counts: Mapping[str, int],
    seed: int,
    source: str = "data set",
) -> MedADSplit:
    """Draw a Med-AD split from labelled names: seeded, deterministic and disjoint.

    The names are sorted, then shuffled by ``seed``; the known normals, the unlabeled normal pool
    and the normal test images are consecutive runs of the shuffled normals (likewise the
    abnormal pool and the abnormal test images), so no name is in two parts and the same names
    and seed always give the same split.

    Args:
        normal: names of the normal images.
        abnormal: names of the abnormal images.
        counts: images per part, keys `SPLIT_PARTS`.
        seed: seed of the shuffle.
        source: what the names come from, for error messages.

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
            f"split_counts={dict(counts)}: give exactly the keys {', '.join(SPLIT_PARTS)}"
        )
    if any(int(n) < 0 for n in counts.values()):
        raise SplitError(f"split_counts={dict(counts)}: counts must be >= 0")
    if counts["known_normal"] < 1:
        raise SplitError("split_counts.known_normal must be >= 1: training needs known normals")
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
            f"{source}: split_counts={dict(counts)} needs " + " and ".join(short) + ": set "
            "split_counts to what the data hold (the defaults are the Med-AD counts of the full "
            "release)"
        )
    rng = np.random.default_rng(seed)
    normal = sorted(normal)
    normal = [normal[i] for i in rng.permutation(len(normal))]
    abnormal = sorted(abnormal)
    abnormal = [abnormal[i] for i in rng.permutation(len(abnormal))]
    a, b = counts["known_normal"], counts["known_normal"] + counts["pool_normal"]
    c = b + counts["test_normal"]
    d = counts["pool_abnormal"]
    e = d + counts["test_abnormal"]
    return MedADSplit(
        known_normal=normal[:a],
        pool_normal=normal[a:b],
        pool_abnormal=abnormal[:d],
        test_normal=normal[b:c],
        test_abnormal=abnormal[d:e],
    )
