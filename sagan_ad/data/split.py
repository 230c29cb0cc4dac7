"""The semi-supervised protocol split: unlabeled mixture, validation hold-out, leakage checks."""

from __future__ import annotations

import bisect
import difflib
import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from numbers import Integral
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)


LeakageCheck = Literal["raise", "warn", "ignore"]
SAME_BYTES = "identical bytes"
"""The identity under which `check_leakage` compares file contents (a digest of the bytes), so
that a copy of an image under another name or in another folder is caught like a link to it."""


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
        target = _holdout_target(count, val_fraction)
        held: list[int] = []
        values = [room.together.get(n, "") for n in self.known_normal]
        for members in _groups_in_order(values, seed):
            if len(held) >= target:
                break
            if room.hold(room.group(self.known_normal[members[0]])):
                held += members
        if len(held) < target:
            raise SplitError(
                f"val_fraction={val_fraction} holds out {target} of the {count} known normals, "
                f"but only {len(held)} are in groups without pool images that "
                f"{room.mixture()} needs: lower val_fraction or unlabeled_size"
            )
        if count - len(held) < 2:
            raise SplitError(
                f"val_fraction={val_fraction} of {count} known normals leaves "
                f"{count - len(held)} for training: add known normals or lower val_fraction"
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
                f"that {room.mixture()} needs; lower val_abnormal or unlabeled_size"
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
        held = {_group_of(n, together) for n in names}

        def apart(pool: list[str]) -> list[str]:
            return [n for n in pool if _group_of(n, together) not in held]

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
        return _group_of(name, self.together)

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
            "lower val_abnormal or drop the balancing"
        )
    return taken


def _names(node: object, where: str, path: Path) -> list[str]:
    if not isinstance(node, list) or not all(isinstance(n, str) for n in node):
        raise SplitError(f"{path}: {where} must be a list of file names")
    return list(node)


SPLIT_KEYS: dict[str, tuple[str, ...]] = {
    "": ("train", "test", "val"),
    "train": ("0", "unlabeled"),
    "train.unlabeled": ("0", "1", "unknown"),
    "test": ("0", "1"),
    "val": ("0", "1"),
}
"""The keys a ``data.json`` object may hold, by its place in the file (``""``: the top)."""


def _check_keys(node: Mapping, where: str, path: Path) -> None:
    allowed = SPLIT_KEYS[where]
    for key in node:
        if key in allowed:
            continue
        place = f"{where}.{key!r}" if where else repr(key)
        lower = str(key).lower()
        close = [k for k in allowed if len(k) > 1 and lower.startswith(k)]
        close = close or difflib.get_close_matches(lower, allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        inside = f"in {where}" if where else "at the top"
        raise SplitError(
            f"{path}: unknown key {place}{hint} (the keys allowed {inside} are "
            f"{', '.join(repr(k) for k in allowed)}); a Med-AD data.json has "
            '{"train": {"0": [...], "unlabeled": {"0": [...], "1": [...]}}, '
            '"test": {"0": [...], "1": [...]}, "val": {"0": [...], "1": [...]}}'
        )


def _child(node: object, key: str, where: str, path: Path, required: bool = True) -> object:
    if not isinstance(node, Mapping):
        raise SplitError(f"{path}: {where or 'the top level'} must be an object")
    _check_keys(node, where, path)
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
    if path.is_dir():
        raise SplitError(f"{path} is a folder: data.json must be the JSON split file")
    if not path.is_file():
        raise SplitError(
            f"{path} does not exist: a Med-AD dataset folder holds images/ and data.json "
            "(see the README, 'Your own data')"
        )
    data = _read_json(path)
    train = _child(data, "train", "", path)
    known = _names(_child(train, "0", "train", path), 'train."0"', path)
    if not known:
        raise SplitError(f'{path}: train."0" is empty: training needs known normal images')
    pools: dict[str, list[str]] = {"0": [], "1": []}
    unlabeled = _child(train, "unlabeled", "train", path, required=False)
    unknown: list[str] = []
    if unlabeled is not None:
        for label in pools:
            node = _child(unlabeled, label, "train.unlabeled", path, required=False)
            pools[label] = [] if node is None else _names(node, f"train.unlabeled.{label!r}", path)
        node = _child(unlabeled, "unknown", "train.unlabeled", path, required=False)
        unknown = [] if node is None else _names(node, 'train.unlabeled."unknown"', path)
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
        pool_unknown=unknown,
    )
    check_disjoint(split.parts(), source=str(path))
    return split


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise SplitError(
                f"key {key!r} appears twice in one object, and JSON keeps only the last: merge "
                "the two lists under one key"
            )
        seen.add(key)
    return dict(pairs)


def _read_json(path: Path) -> object:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SplitError(f"{path} cannot be read ({err.strerror}): check its permissions") from err
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is harmless.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        utf16 = raw[:2] in (b"\xff\xfe", b"\xfe\xff")
        guess = " (it looks like UTF-16)" if utf16 else ""
        raise SplitError(
            f"{path} is not UTF-8 text{guess}: byte 0x{raw[err.start]:02x} at position "
            f"{err.start} cannot be decoded; save the file as UTF-8"
        ) from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise SplitError(f"{path} is not valid JSON: {err}") from err
    except SplitError as err:
        raise SplitError(f"{path}: {err}") from None


def file_identity(path: str | os.PathLike) -> tuple:
    """What makes two paths the same file: device and inode when the file exists (so symbolic
    and hard links and, on case-insensitive file systems, case variants match), else the
    normalised absolute path.

    Examples:
        >>> file_identity("/no/such/dir/./x.png") == file_identity("/no/such/x.png/../dir/x.png")
        True
    """
    written = os.path.normcase(os.path.normpath(os.path.abspath(path)))
    # As written first (links in the path count), then normalised (``missing/../x.png``).
    for candidate in (path, written):
        try:
            stat = os.stat(candidate)
        except (OSError, ValueError):
            continue
        return ("inode", stat.st_dev, stat.st_ino)
    return ("path", written)


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
        sagan_ad.data.split.SplitError: data.json: './x.png' (test."0") and 'x.png' ...
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
    n_held = _holdout_target(count, fraction)
    if count - n_held < 2:
        raise SplitError(
            f"val_fraction={fraction} of {count} known normals leaves {count - n_held} for "
            "training: add known normals or lower val_fraction"
        )
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[n_held:]), np.sort(order[:n_held])


SPLIT_PARTS = ("known_normal", "pool_normal", "pool_abnormal", "test_normal", "test_abnormal")
"""The counts a protocol split takes (the columns of the Med-AD table)."""


def hash_position(seed: int, key: str) -> float:
    """Where ``key`` falls in ``[0, 1)`` for ``seed``: a hash, so it depends on nothing else.

    Examples:
        >>> hash_position(0, "a.png") == hash_position(0, "a.png") != hash_position(1, "a.png")
        True
    """
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


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


def _group_of(name: str, groups: Mapping[str, str]) -> str:
    # Prefixed so that a group value can never equal another image's name.
    value = groups.get(name, "")
    return f"group:{value}" if value else f"image:{name}"


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
            f"split_counts={dict(counts)}: give exactly the keys {', '.join(SPLIT_PARTS)}"
        )
    # 3.7 would be floored, True counted as 1 and "3" compared with numbers: whole numbers only.
    odd = {k: n for k, n in counts.items() if isinstance(n, bool) or not isinstance(n, Integral)}
    if odd:
        raise SplitError(f"split_counts={dict(counts)}: {odd} are not whole numbers of images")
    if any(n < 0 for n in counts.values()):
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
    groups = groups or {}
    members: dict[str, dict[str, list[str]]] = {"normal": {}, "abnormal": {}}
    for label, names in (("normal", normal), ("abnormal", abnormal)):
        for name in names:
            members[label].setdefault(_group_of(name, groups), []).append(name)
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
        raise SplitError(f"val_fraction={fraction}: must be in [0, 1)")
    count = len(groups)
    if fraction == 0.0:
        return np.arange(count), np.arange(0)
    target = _holdout_target(count, fraction)
    held: list[int] = []
    ordered = _groups_in_order(groups, seed)
    for members in ordered:
        if len(held) >= target:
            break
        held += members
    if count - len(held) < 2:
        raise SplitError(
            f"val_fraction={fraction} of {count} known normals in {len(ordered)} groups leaves "
            f"{count - len(held)} for training: add known normals or lower val_fraction"
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


def _holdout_target(count: int, fraction: float) -> int:
    # At least two: a pseudo anomaly needs a second image as its source.
    return max(2, round(count * fraction))


def _groups_in_order(groups: Sequence[str], seed: int) -> list[list[int]]:
    """The indices of each group (an empty string: a group of its own) in the seeded order
    of its `hash_position`."""
    members: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(f"group:{group}" if group else f"index:{i}", []).append(i)
    return [members[k] for k in sorted(members, key=lambda k: (hash_position(seed, k), k))]


def check_leakage(
    sides: Mapping[str, Sequence[str]],
    identities: Mapping[str, Mapping[str, str]],
    mode: LeakageCheck = "raise",
    source: str = "split",
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
                if value:
                    found.setdefault((kind, value), {}).setdefault(side, []).append(name)
    problems, mild, twice = [], [], []
    for (kind, value), where in found.items():
        if len(where) < 2:
            names = next(iter(where.values()))
            if kind == SAME_BYTES and len(names) > 1:
                twice.append(", ".join(names[:3]))
            continue
        line = f"{_shown(kind, value, where)} in " + " and ".join(
            f"{side} ({len(names)})" for side, names in where.items()
        )
        # Two copies of one image inside the training data are no leak until the validation
        # hold-out (drawn by the DataModule, not by the user) separates them; it then only
        # sways the choice of checkpoint, so it is reported but does not stop a run.
        held_apart = kind == SAME_BYTES and set(where) == {"training", "validation"}
        (mild if held_apart else problems).append(line)
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
    message = (
        f"{source}: {len(problems)} patient(s) or image(s) are on two sides of the split: "
        f"{'; '.join(problems[:10])}{more}. A model validated or tested on a patient it "
        "trained on scores too well: set group_by='PatientID' (raw and folder data; for Med-AD "
        "data it keeps validation apart, while training against test is data.json's) to keep "
        "each patient on one side, or remove the duplicates (copies of one file count) from "
        "the split; leakage='warn' only reports this" + _placeholder_hint(found, identities)
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
        if kind != SAME_BYTES
        and len(where) > 1
        and sum(map(len, where.values())) >= max(3, having[kind] / 2)
    ]
    if not common:
        return ""
    return (
        f". Shared by most images: {', '.join(common[:3])}; if that is an anonymizer's "
        "placeholder rather than one patient or image, the check cannot tell patients apart: "
        "set leakage='warn' (or 'ignore') and keep the patients apart yourself"
    )


def _shown(kind: str, value: str, where: Mapping[str, list[str]]) -> str:
    if kind != SAME_BYTES:
        return f"{kind} {value!r}"
    # A digest means nothing to a reader: name the files instead.
    names = [name for side_names in where.values() for name in side_names]
    more = f", ... ({len(names)} files)" if len(names) > 4 else ""
    return f"{kind} ({', '.join(names[:4])}{more})"


def check_data_options(leakage: str, cache_identity: str, cache_save_interval: float) -> None:
    """Raise a `ValueError` naming the DataModule option that has no meaning.

    Examples:
        >>> check_data_options("warn", "stat", 60.0)
        >>> check_data_options("maybe", "stat", 60.0)
        Traceback (most recent call last):
        ...
        ValueError: leakage='maybe': must be 'raise', 'warn' or 'ignore'
    """
    if leakage not in ("raise", "warn", "ignore"):
        raise ValueError(f"leakage={leakage!r}: must be 'raise', 'warn' or 'ignore'")
    if cache_identity not in ("stat", "verify", "content"):
        raise ValueError(
            f"cache_identity={cache_identity!r}: must be 'stat', 'verify' or 'content'"
        )
    if not cache_save_interval > 0:
        raise ValueError(f"cache_save_interval={cache_save_interval}: must be > 0 seconds")
