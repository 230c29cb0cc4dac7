"""LAG glaucoma fundus release (class folders) as a protocol DataModule."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import ClassVar

from sagan_ad.data.messages import log_once
from sagan_ad.data.modules.raw import RawDataModule, Record
from sagan_ad.data.reading.discovery import Discovery, discover_images
from sagan_ad.errors import MissingFileError

CLASS_FOLDERS = {"non_glaucoma": 0, "suspicious_glaucoma": 1}
ATTENTION = "attention"


def _is_attention(path: Path, top: Path) -> bool:
    return any(ATTENTION in part.lower() for part in path.relative_to(top).parts[:-1])


class LAGDataModule(RawDataModule):
    """LAG (Li et al., CVPR 2019) from its release folders, split as in Med-AD.

    The class comes from the top folder (``non_glaucoma/`` normal, ``suspicious_glaucoma/``
    abnormal); images are found recursively beneath it (hidden and system files, such as the
    ``._name.jpg`` files a macOS copy leaves, are skipped and counted in one warning), except
    in folders whose name contains ``attention`` (the attention maps). An attention map with the
    same file stem as an image is recorded in the image's metadata as ``attention_map`` (a
    path), for localization; a stem shared by several maps or several images of one class
    folder gets none (which map is whose cannot be told), and a warning counts them.
    1 channel by default, as in the paper; ``in_channels=3`` keeps colour. Default counts
    (Med-AD): 1500 known normals, pools of 832 normal / 900 abnormal, test 811 / 811.
    Arguments: those of
    [`RawDataModule`][sagan_ad.data.modules.raw.RawDataModule], `FileDataModule` and
    `AnomalyDataModule`.

    Examples:
        >>> dm = LAGDataModule("LAG", image_size=64)  # doctest: +SKIP
        >>> dm.setup(); dm.summary()["train/unlabeled"]  # doctest: +SKIP
        1500
    """

    default_counts: ClassVar[dict[str, int]] = {
        "known_normal": 1500,
        "pool_normal": 832,
        "pool_abnormal": 900,
        "test_normal": 811,
        "test_abnormal": 811,
    }

    def records(self) -> list[Record]:
        self.require_root()
        records, empty, ambiguous = [], [], []
        skipped = Discovery([])
        for folder_name, label in CLASS_FOLDERS.items():
            folder = self.root / folder_name
            if not folder.is_dir():
                raise MissingFileError(
                    f"{folder} does not exist: the LAG release has the class folders "
                    f"{', '.join(CLASS_FOLDERS)} under data.root"
                )
            found = discover_images(folder, force_dicom=self.settings.force_dicom)
            skipped.junk += found.junk
            skipped.other += found.other
            files = found.images
            stems = Counter(p.stem for p in files if _is_attention(p, folder))
            images = [p for p in files if not _is_attention(p, folder)]
            # A stem with several maps (or several images) cannot say which map is whose.
            stems.update(p.stem for p in images)
            maps = {p.stem: p for p in files if _is_attention(p, folder) and stems[p.stem] == 2}
            ambiguous += [stem for stem, n in stems.items() if n > 2]
            if not images:
                empty.append(f"{folder} has no images (outside attention-map folders)")
            for path in images:
                metadata = {"attention_map": str(maps[path.stem])} if path.stem in maps else {}
                records.append(
                    Record(
                        name=path.relative_to(self.root).as_posix(),
                        path=path,
                        label=label,
                        metadata=metadata,
                    )
                )
        if ambiguous:
            log_once(
                f"{self.root}: {len(ambiguous)} file stem(s) name several images or attention "
                f"maps ({', '.join(sorted(ambiguous)[:3])}, ...): their images get no "
                "attention_map"
            )
        skipped.images = [r.path for r in records]
        skipped.log_skipped(self.root)
        self._fail_or_skip(empty, "empty class folder(s)")
        return records
