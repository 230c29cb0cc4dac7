"""`MedADSplit`, the file lists of a Med-AD ``data.json``, and the labelled validation set
carved from its training data."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from sagan_ad.data.splits.split import (
    SplitError,
    group_of,
    groups_in_order,
    holdout_indices,
    holdout_target,
)


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
        pool_unknown: ``train.unlabeled."unknown"``, unlabeled images whose labels nobody
            knows (what `sagan_ad.data.FolderDataModule` writes for its unlabeled source).
    """

    known_normal: list[str]
    pool_normal: list[str] = field(default_factory=list)
    pool_abnormal: list[str] = field(default_factory=list)
    test_normal: list[str] = field(default_factory=list)
    test_abnormal: list[str] = field(default_factory=list)
    val_normal: list[str] = field(default_factory=list)
    val_abnormal: list[str] = field(default_factory=list)
    pool_unknown: list[str] = field(default_factory=list)

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
        if self.pool_unknown:
            data["train"]["unlabeled"]["unknown"] = self.pool_unknown
        if self.has_validation:
            data["val"] = {"0": self.val_normal, "1": self.val_abnormal}
        return data

    def parts(self) -> dict[str, list[str]]:
        """Every list of the split by its place in ``data.json`` (for checks and messages).

        Examples:
            >>> list(MedADSplit(known_normal=["a"]).parts())[:2]
            ['train."0"', 'train.unlabeled."0"']
        """
        return {
            'train."0"': self.known_normal,
            'train.unlabeled."0"': self.pool_normal,
            'train.unlabeled."1"': self.pool_abnormal,
            'train.unlabeled."unknown"': self.pool_unknown,
            'test."0"': self.test_normal,
            'test."1"': self.test_abnormal,
            'val."0"': self.val_normal,
            'val."1"': self.val_abnormal,
        }

    def with_labelled_validation(
        self,
        val_fraction: float,
        num_abnormal: int,
        seed: int = 0,
        groups: Mapping[str, str] | None = None,
        reserve: int = 0,
        together: Mapping[str, str] | None = None,
        reserve_normal: int = 0,
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

        With ``together`` (the group each name shares its side with, for example its patient:
        the DataModule's ``group_by``; names without one are groups of their own) no group is
        on both sides. The pools lose every image of a validation group, so that the mixture
        (their first names) takes none; a group is therefore held out only while the pools keep
        ``reserve`` abnormals and ``reserve_normal`` normals outside the validation groups (the
        mixture's counts). The known normals are held out by whole groups
        (`normals_held_apart`), and the abnormals are taken from the end of the whole pool,
        only where their group has no kept known normal and no test image.

        Args:
            val_fraction: fraction of the known normals held out, in ``(0, 1)``.
            num_abnormal: abnormal validation images taken from the end of the abnormal pool.
            seed: seed of the known-normal hold-out (the DataModule's ``seed``).
            groups: optional group of each name, to balance the abnormals by.
            reserve: with ``groups``: leading pool abnormals that are never taken; with
                ``together``: pool abnormals the mixture needs outside the validation groups.
            together: optional group of each name that must stay on one side.
            reserve_normal: with ``together``: pool normals the mixture needs outside the
                validation groups.

        Raises:
            SplitError: if the split already has a validation set, or the pool or the known
                normals are too small (with ``together``: too few abnormals of groups apart
                from training and test, or too few pool images left for the mixture).

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
            sagan_ad.data.splits.split.SplitError: cannot balance the 2 validation abnormals ...
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
        if together is not None:
            return self._carved_apart(
                val_fraction, num_abnormal, seed, together, groups, reserve, reserve_normal
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
            pool_unknown=list(self.pool_unknown),
        )

    def normals_held_apart(
        self,
        val_fraction: float,
        seed: int,
        together: Mapping[str, str],
        reserve: int = 0,
        reserve_normal: int = 0,
    ) -> tuple[list[str], MedADSplit]:
        """The known normals a validation hold-out takes by whole groups of ``together``, and
        this split with the pools apart from them (`apart_from`; its known normals unchanged).

        Groups are held out in the seeded order of `holdout_groups` until ``val_fraction`` of
        the known normals is held, passing over a group whose pool images would leave the
        pools fewer than ``reserve`` abnormals or ``reserve_normal`` normals (the counts of the
        unlabeled mixture, which skips them).

        Examples:
            >>> split = MedADSplit(known_normal=list("abcdef"), pool_normal=["n1", "n2"])
            >>> patients = {"a": "P", "b": "P", "n1": "P"}
            >>> held, apart = split.normals_held_apart(0.3, 1, patients)
            >>> held, apart.pool_normal
            (['a', 'b'], ['n2'])
            >>> held, apart = split.normals_held_apart(0.3, 1, patients, reserve_normal=2)
            >>> held, apart.pool_normal  # the mixture needs n1: P is passed over
            (['d', 'e'], ['n1', 'n2'])
        """
        room = _MixtureRoom(self, together, reserve, reserve_normal)
        _, held = self._hold_out_groups(val_fraction, seed, room)
        names = [self.known_normal[i] for i in held]
        return names, self.apart_from(names, together)

    def _hold_out_groups(
        self, val_fraction: float, seed: int, room: _MixtureRoom
    ) -> tuple[np.ndarray, np.ndarray]:
        """`holdout_groups` of the known normals, passing over the groups ``room`` cannot
        spare."""
        count = len(self.known_normal)
        target = holdout_target(count, val_fraction)
        held: list[int] = []
        values = [room.together.get(n, "") for n in self.known_normal]
        for members in groups_in_order(values, seed):
            if len(held) >= target:
                break
            if room.hold(room.group(self.known_normal[members[0]])):
                held += members
        if len(held) < target:
            raise SplitError(
                f"val_fraction={val_fraction} holds out {target} of the {count} known normals, "
                f"but only {len(held)} are in groups without pool images that "
                f"{room.mixture()} needs: lower split.val_fraction or split.unlabeled_size"
            )
        if count - len(held) < 2:
            raise SplitError(
                f"val_fraction={val_fraction} of {count} known normals leaves "
                f"{count - len(held)} for training: add known normals or lower split.val_fraction"
            )
        return np.setdiff1d(np.arange(count), held), np.sort(np.array(held, dtype=np.int64))

    def _carved_apart(
        self,
        val_fraction: float,
        count: int,
        seed: int,
        together: Mapping[str, str],
        groups: Mapping[str, str] | None,
        reserve: int,
        reserve_normal: int,
    ) -> MedADSplit:
        """`with_labelled_validation` with ``together``: no group on both sides."""
        room = _MixtureRoom(self, together, reserve, reserve_normal)
        keep, held = self._hold_out_groups(val_fraction, seed, room)
        known = [self.known_normal[i] for i in keep]
        val_normal = [self.known_normal[i] for i in held]
        barred = {room.group(n) for n in known + self.test_normal + self.test_abnormal}
        balance = {} if groups is None else groups
        quota = _quotas([balance.get(n, "") for n in val_normal], count)
        taken, have = _take_tail(
            [(n, balance.get(n, "")) for n in self.pool_abnormal],
            quota,
            lambda name: room.group(name) not in barred and room.hold(room.group(name)),
        )
        short = {g: (q, have[g]) for g, q in sorted(quota.items()) if have[g] < q}
        if short:
            found = (
                ", ".join(f"{q} {g!r} but found {h}" for g, (q, h) in short.items())
                if groups is not None
                else f"found {sum(have.values())}"
            )
            apart = sum(1 for n in self.pool_abnormal if room.group(n) in barred)
            raise SplitError(
                f"cannot take {count} validation abnormals whose group has no image in "
                f"training or test ({found}): of the {len(self.pool_abnormal)} pool abnormals, "
                f"{apart} share a group with the kept known normals or the test set, and "
                f"{room.passed_over} were passed over because their groups hold pool images "
                f"that {room.mixture()} needs; lower split.val_abnormal or split.unlabeled_size"
                + (", or drop the balancing" if groups is not None else "")
            )
        val_abnormal = [n for n in self.pool_abnormal if n in taken]
        return replace(
            self.apart_from(val_normal + val_abnormal, together),
            known_normal=known,
            val_normal=val_normal,
            val_abnormal=val_abnormal,
        )

    def apart_from(self, names: Sequence[str], together: Mapping[str, str]) -> MedADSplit:
        """This split without the pool images that share a group (``together``) with
        ``names`` (the validation images), so that the unlabeled mixture, the first names of
        each pool, takes none of them.

        Examples:
            >>> split = MedADSplit(known_normal=["k"], pool_normal=["n1", "n2"])
            >>> split.apart_from(["k"], {"k": "P1", "n1": "P1"}).pool_normal
            ['n2']
        """
        held = {group_of(n, together) for n in names}

        def apart(pool: list[str]) -> list[str]:
            return [n for n in pool if group_of(n, together) not in held]

        return replace(
            self,
            pool_normal=apart(self.pool_normal),
            pool_abnormal=apart(self.pool_abnormal),
            pool_unknown=apart(self.pool_unknown),
        )


class _MixtureRoom:
    """The pool images left to the unlabeled mixture while validation groups leave the pools:
    a group is held out only while ``reserve`` abnormals and ``reserve_normal`` normals stay."""

    def __init__(
        self, split: MedADSplit, together: Mapping[str, str], reserve: int, reserve_normal: int
    ) -> None:
        self.together = together
        self.reserve = reserve
        self.reserve_normal = reserve_normal
        self.normals_of = Counter(self.group(n) for n in split.pool_normal)
        self.abnormals_of = Counter(self.group(n) for n in split.pool_abnormal)
        self.free_normal = len(split.pool_normal)
        self.free_abnormal = len(split.pool_abnormal)
        self.held: set[str] = set()
        self.passed_over = 0

    def group(self, name: str) -> str:
        """The key of the group of ``name`` (itself where it has none)."""
        return group_of(name, self.together)

    def hold(self, group: str) -> bool:
        """Take ``group`` (a `group` key) out of the pools, unless the mixture needs its
        images."""
        if group in self.held:
            return True
        normals, abnormals = self.normals_of[group], self.abnormals_of[group]
        if (
            self.free_normal - normals < self.reserve_normal
            or self.free_abnormal - abnormals < self.reserve
        ):
            self.passed_over += 1
            return False
        self.free_normal -= normals
        self.free_abnormal -= abnormals
        self.held.add(group)
        return True

    def mixture(self) -> str:
        """The mixture's needs, for messages."""
        return f"the unlabeled mixture ({self.reserve} abnormals, {self.reserve_normal} normals)"


def _quotas(reference: Sequence[str], count: int) -> dict[str, int]:
    """``count`` shared among the groups of ``reference`` by their shares (largest
    remainders)."""
    shares = Counter(reference)
    exact = {g: count * n / len(reference) for g, n in shares.items()}
    quota = {g: math.floor(q) for g, q in exact.items()}
    by_remainder = sorted(exact, key=lambda g: (quota[g] - exact[g], g))
    for g in by_remainder[: count - sum(quota.values())]:
        quota[g] += 1
    return quota


def _take_tail(
    candidates: Sequence[tuple[str, str]],
    quota: Mapping[str, int],
    accept: Callable[[str], bool] = lambda name: True,
) -> tuple[set[str], Counter[str]]:
    """Candidate names taken from the end while their group is under its ``quota`` and
    ``accept`` agrees, and how many each group got."""
    taken: set[str] = set()
    have: Counter[str] = Counter()
    for name, group in reversed(candidates):
        if have[group] < quota.get(group, 0) and accept(name):
            taken.add(name)
            have[group] += 1
    return taken, have


def _balanced_tail(
    reference: Sequence[str], candidates: Sequence[tuple[str, str]], count: int
) -> set[str]:
    """``count`` candidate names, taken from the end, whose groups follow the shares of the
    ``reference`` groups (largest-remainder quotas)."""
    quota = _quotas(reference, count)
    taken, have = _take_tail(candidates, quota)
    short = {g: (q, have[g]) for g, q in sorted(quota.items()) if have[g] < q}
    if short:
        detail = ", ".join(f"{q} {g!r} but only {h} are available" for g, (q, h) in short.items())
        raise SplitError(
            f"cannot balance the {count} validation abnormals by group like the "
            f"{len(reference)} held-out normals: need {detail} outside the unlabeled mixture; "
            "lower split.val_abnormal or drop the balancing"
        )
    return taken
