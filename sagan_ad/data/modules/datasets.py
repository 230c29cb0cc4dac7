"""Torch datasets over in-memory uint8 image tensors."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, default_collate, get_worker_info

from sagan_ad.data.images.augmentation import stream_seed
from sagan_ad.errors import InputError


def to_model_range(images: Tensor) -> Tensor:
    """uint8 ``[0, 255]`` to float ``[-1, 1]`` (the models' input range).

    Examples:
        >>> to_model_range(torch.tensor([0, 255], dtype=torch.uint8)).tolist()
        [-1.0, 1.0]
    """
    return images.float().div_(127.5).sub_(1.0)


def permutation_stream(n: int, seed: int, start: int = 0) -> Iterator[int]:
    """Endless indices: a fresh seeded permutation of ``range(n)`` after every pass.

    ``start`` skips that many indices of the sequence (to resume it) without materialising
    them: only the permutations of the skipped passes are drawn.

    Examples:
        >>> it = permutation_stream(3, seed=0)
        >>> sorted(next(it) for _ in range(3))
        [0, 1, 2]
        >>> full, resumed = permutation_stream(3, seed=0), permutation_stream(3, seed=0, start=5)
        >>> [next(full) for _ in range(8)][5:] == [next(resumed) for _ in range(3)]
        True
    """
    generator = torch.Generator().manual_seed(seed)
    passes, offset = divmod(start, n)
    for _ in range(passes):
        torch.randperm(n, generator=generator)
    yield from torch.randperm(n, generator=generator).tolist()[offset:]
    while True:
        yield from torch.randperm(n, generator=generator).tolist()


class TrainingStream(IterableDataset):
    """Endless batches ``{"normal": ..., "unlabeled": ...}`` drawn from two image tensors.

    The known-normal and unlabeled streams are shuffled independently (the released code always
    paired unlabeled image ``i`` with normal image ``i``), each with its own seed, so the batches
    depend only on ``seed``. With ``DataLoader`` workers, worker ``w`` of ``W`` yields batches
    ``w, w + W, ...`` of the same sequence, so the order does not depend on the number of
    workers. Under ``torch.distributed`` each rank draws its own independently shuffled stream
    (derived from ``seed`` and the rank), so ranks see different batches.

    Batch ``i`` depends only on ``seed``, the rank and ``i``, so a resumed run continues the
    sequence exactly with ``start_batch`` set to the number of batches already trained on. An
    ``augment`` callable (`sagan_ad.data.Augmentation`) is applied to each stream's batch
    with a seed drawn from ``(seed, rank, stream, i)``, so augmented batches keep that property.

    Use with ``DataLoader(stream, batch_size=None)``.

    Args:
        normal: known-normal images, uint8 ``(N, C, H, W)``.
        unlabeled: unlabeled images, uint8 ``(M, C, H, W)``; must not be empty.
        batch_size: images per stream per batch.
        seed: base seed.
        start_batch: position of the first batch yielded (0 for a fresh run).
        augment: optional ``augment(images, seed) -> images`` on uint8 batches.

    Examples:
        >>> normal = torch.zeros(10, 1, 8, 8, dtype=torch.uint8)
        >>> batch = next(iter(TrainingStream(normal, normal, batch_size=4)))
        >>> batch["normal"].shape, batch["unlabeled"].shape
        (torch.Size([4, 1, 8, 8]), torch.Size([4, 1, 8, 8]))
    """

    def __init__(
        self,
        normal: Tensor,
        unlabeled: Tensor,
        batch_size: int,
        seed: int = 0,
        start_batch: int = 0,
        augment: Callable[[Tensor, int], Tensor] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise InputError(f"batch_size={batch_size}: must be >= 1")
        if start_batch < 0:
            raise InputError(f"start_batch={start_batch}: must be >= 0")
        if len(normal) == 0:
            raise InputError("the training stream has no known-normal images")
        if len(unlabeled) == 0:
            raise InputError(
                "the training stream has no unlabeled images; for normals-only training set "
                "split.anomaly_ratio=0 with unlabeled images taken from the normal pool"
            )
        self.normal = normal
        self.unlabeled = unlabeled
        self.batch_size = batch_size
        self.seed = seed
        self.start_batch = start_batch
        self.augment = augment

    def _indices(self, rank: int) -> Iterator[tuple[Tensor, Tensor]]:
        skip = self.start_batch * self.batch_size
        normal_ids = permutation_stream(len(self.normal), self.seed * 1000 + 2 * rank, skip)
        unlabeled_ids = permutation_stream(
            len(self.unlabeled), self.seed * 1000 + 2 * rank + 1, skip
        )
        while True:
            n = torch.tensor([next(normal_ids) for _ in range(self.batch_size)])
            u = torch.tensor([next(unlabeled_ids) for _ in range(self.batch_size)])
            yield n, u

    def _batch(self, n: Tensor, u: Tensor, rank: int, position: int) -> dict[str, Tensor]:
        batch = {"normal": self.normal[n], "unlabeled": self.unlabeled[u]}
        if self.augment is not None:
            for stream, key in enumerate(("normal", "unlabeled")):
                seed = stream_seed([self.seed, rank, stream, position])
                batch[key] = self.augment(batch[key], seed)
        return batch

    def batches(self, rank: int = 0) -> Iterator[dict[str, Tensor]]:
        """The endless batch sequence of one process from ``start_batch`` (no worker sharding)."""
        for i, (n, u) in enumerate(self._indices(rank)):
            yield self._batch(n, u, rank, self.start_batch + i)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for i, (n, u) in enumerate(self._indices(rank)):
            # Only this worker's batches are gathered; the others' indices are just drawn.
            if i % workers == worker:
                yield self._batch(n, u, rank, self.start_batch + i)


class DeviceTrainingStream(TrainingStream):
    """`TrainingStream` over image tensors that already live on the accelerator.

    Yields exactly the batches of `TrainingStream` (same seeds, same order), but gathers them on
    the tensors' device: each pass's permutation is drawn on the CPU as before and copied to the
    device once per pass (asynchronously from pinned memory on CUDA), so a training step costs
    no host-to-device copy and no host-device synchronisation. Use it in the main process only
    (``DataLoader(stream, batch_size=None, num_workers=0)``): worker processes cannot share
    accelerator tensors.

    Examples:
        >>> normal = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
        >>> ours = next(iter(DeviceTrainingStream(normal, normal, batch_size=4)))
        >>> theirs = next(iter(TrainingStream(normal, normal, batch_size=4)))
        >>> torch.equal(ours["normal"], theirs["normal"])
        True
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if self.augment is not None:
            raise InputError(
                "DeviceTrainingStream cannot augment: the augmentation runs on the CPU; use "
                "TrainingStream"
            )

    def _device_ids(self, n: int, seed: int, device: torch.device) -> Iterator[Tensor]:
        """Endless ``batch_size`` index tensors on ``device``, in `permutation_stream` order
        from ``start_batch``."""
        generator = torch.Generator().manual_seed(seed)
        passes, offset = divmod(self.start_batch * self.batch_size, n)
        for _ in range(passes):
            torch.randperm(n, generator=generator)
        pending = torch.randperm(n, generator=generator)[offset:].to(device)
        while True:
            while len(pending) < self.batch_size:
                order = torch.randperm(n, generator=generator)
                if device.type == "cuda":
                    # Pinned memory makes the copy asynchronous: no wait for queued kernels.
                    order = order.pin_memory()
                pending = torch.cat([pending, order.to(device, non_blocking=True)])
            yield pending[: self.batch_size]
            pending = pending[self.batch_size :]

    def _indices(self, rank: int) -> Iterator[tuple[Tensor, Tensor]]:
        normal_ids = self._device_ids(
            len(self.normal), self.seed * 1000 + 2 * rank, self.normal.device
        )
        unlabeled_ids = self._device_ids(
            len(self.unlabeled), self.seed * 1000 + 2 * rank + 1, self.unlabeled.device
        )
        while True:
            yield next(normal_ids), next(unlabeled_ids)


class LabelledImages(Dataset):
    """Images with labels and names for validation, test and prediction, and what evaluation
    needs to know of each image beyond its pixels.

    Items are ``{"image": uint8 (C, H, W), "label": int, "index": int, "name": str}``; labels are
    ``-1`` when unknown (prediction on unlabelled data). Each optional per-image field that is
    given adds its key to every item: ``statistics`` (the decoded image's mean and standard
    deviation, for the shortcut audit), ``mask`` (a ground-truth mask ``(1, H, W)``), ``boxes``
    (ground-truth boxes ``(k, 4)`` in original pixels), ``original_size`` (``(height, width)``)
    and ``metadata`` (the image's metadata columns). Batch them with `collate_evaluation`.

    Examples:
        >>> ds = LabelledImages(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), [0, 1], ["a", "b"],
        ...                     metadata=[{"view": "AP"}, {"view": "PA"}])
        >>> ds[1]["label"], ds[1]["name"], ds[1]["metadata"]
        (1, 'b', {'view': 'PA'})
    """

    def __init__(
        self,
        images: Tensor,
        labels: Sequence[int],
        names: Sequence[str],
        statistics: Tensor | None = None,
        masks: Tensor | None = None,
        boxes: Sequence[np.ndarray] | None = None,
        original_sizes: Sequence[tuple[int, int]] | None = None,
        metadata: Sequence[dict[str, str]] | None = None,
    ) -> None:
        if not len(images) == len(labels) == len(names):
            raise InputError(
                f"images ({len(images)}), labels ({len(labels)}) and names ({len(names)}) differ "
                "in length"
            )
        self.images = images
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.names = list(names)
        self.extras: dict[str, Sequence[Any]] = {}
        for key, values in (
            ("statistics", statistics),
            ("mask", masks),
            ("boxes", boxes),
            ("original_size", original_sizes),
            ("metadata", metadata),
        ):
            if values is None:
                continue
            if len(values) != len(images):
                raise InputError(f"{len(values)} {key} entries for {len(images)} images")
            self.extras[key] = values

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        item = {
            "image": self.images[index],
            "label": int(self.labels[index]),
            "index": index,
            "name": self.names[index],
        }
        item.update({key: values[index] for key, values in self.extras.items()})
        return item


def collate_evaluation(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch `LabelledImages` items: tensors and numbers are stacked; names, boxes, original
    sizes, paths and metadata stay per-image lists (boxes differ in number, metadata in keys,
    and the default collate would split the ``(height, width)`` pairs into two tensors).

    Examples:
        >>> ds = LabelledImages(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), [0, 1], ["a", "b"],
        ...                     original_sizes=[(10, 12), (8, 8)])
        >>> batch = collate_evaluation([ds[0], ds[1]])
        >>> batch["image"].shape, batch["label"].tolist(), batch["original_size"]
        (torch.Size([2, 1, 8, 8]), [0, 1], [(10, 12), (8, 8)])
    """
    listed = {"name", "boxes", "original_size", "metadata", "path"}
    return {
        key: [item[key] for item in items]
        if key in listed
        else default_collate([item[key] for item in items])
        for key in items[0]
    }
