"""MedADDataModule and SyntheticCXRDataModule: split, batches, seeding, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import NIH_ROOT, requires_nih, write_medad_tree

from sagan_ad import ImageReadError, MedADDataModule, SplitError, SyntheticCXRDataModule


def first_batches(dm, n=3):
    dm.setup("fit")
    iterator = iter(dm.train_dataloader())
    return [next(iterator) for _ in range(n)]


def test_medad_split_counts_and_validation(medad_root):
    dm = MedADDataModule(
        medad_root, image_size=32, batch_size=4, seed=0, split={"val_fraction": 0.25}
    )
    dm.setup()
    counts = dm.summary()
    # 12 known normals: 3 held out -> validation of 3 normals + 3 pseudo anomalies.
    assert counts["train/known_normal"] == 9
    assert counts["val/normal"] == 3 and counts["val/abnormal"] == 3
    # Unlabeled N = 12 at ratio 0.6: 7 abnormal, 5 normal.
    assert counts["train/unlabeled"] == 12 and counts["train/unlabeled_abnormal"] == 7
    assert counts["test/normal"] == 6 and counts["test/abnormal"] == 6
    assert dm.known_normal.images.dtype == torch.uint8
    assert dm.known_normal.images.shape[1:] == (1, 32, 32)
    assert not set(dm.known_normal.names) & {n.split("#")[0] for n in dm.val.names}
    # Pseudo anomalies differ from their normal inside the mask only.
    normals, anomalies = dm.val.images[:3], dm.val.images[3:]
    masks = dm.val_masks[3:]
    assert torch.equal(normals[~masks.expand_as(normals)], anomalies[~masks.expand_as(normals)])


def test_training_batches_are_float_independent_and_seeded(medad_root):
    dm = MedADDataModule(medad_root, image_size=32, batch_size=4, seed=0)
    batches = first_batches(dm)
    converted = dm.on_after_batch_transfer(dict(batches[0]), 0)
    assert converted["normal"].dtype == torch.float32
    assert converted["normal"].min() >= -1 and converted["normal"].max() <= 1
    again = first_batches(MedADDataModule(medad_root, image_size=32, batch_size=4, seed=0))
    other = first_batches(MedADDataModule(medad_root, image_size=32, batch_size=4, seed=1))
    assert all(torch.equal(a["normal"], b["normal"]) for a, b in zip(batches, again, strict=True))
    assert not all(
        torch.equal(a["normal"], b["normal"]) for a, b in zip(batches, other, strict=True)
    )


def test_stream_order_does_not_depend_on_worker_count(medad_root):
    single = first_batches(MedADDataModule(medad_root, image_size=32, batch_size=4), 4)
    workers = first_batches(
        MedADDataModule(medad_root, image_size=32, batch_size=4, num_workers=2), 4
    )
    for a, b in zip(single, workers, strict=True):
        assert torch.equal(a["normal"], b["normal"]) and torch.equal(a["unlabeled"], b["unlabeled"])


def test_every_image_is_drawn_once_per_pass(medad_root):
    dm = MedADDataModule(medad_root, image_size=32, batch_size=3, split={"val_fraction": 0.0})
    dm.setup()
    stream = dm.train_dataloader().dataset
    seen = next(iter(stream.batches()))["normal"]
    batches = stream.batches()
    normals = torch.cat([next(batches)["normal"] for _ in range(4)])  # 12 = one pass
    keys = sorted(img.flatten().tolist() for img in normals)
    assert keys == sorted(img.flatten().tolist() for img in dm.known_normal.images)
    assert seen.shape[0] == 3


def test_labelled_validation_in_data_json_is_used(tmp_path):
    root = write_medad_tree(tmp_path / "d")
    split = json.loads((root / "data.json").read_text())
    split["val"] = {"0": split["train"]["0"][-2:], "1": split["train"]["unlabeled"]["1"][-2:]}
    split["train"]["0"] = split["train"]["0"][:-2]
    split["train"]["unlabeled"]["1"] = split["train"]["unlabeled"]["1"][:-2]
    (root / "data.json").write_text(json.dumps(split))
    dm = MedADDataModule(root, image_size=32, split={"unlabeled_size": 6})
    dm.setup()
    assert dm.val.names == split["val"]["0"] + split["val"]["1"]
    assert dm.val.labels == [0, 0, 1, 1]
    assert len(dm.known_normal) == 10


def test_missing_files_are_all_listed(medad_root):
    for name in ("known_000.png", "test1_005.png", "pool1_000.png"):
        (medad_root / "images" / name).unlink()
    with pytest.raises(ImageReadError) as info:
        MedADDataModule(medad_root, image_size=32).setup()
    message = str(info.value)
    assert "3 image file(s) do not exist" in message
    for name in ("known_000.png", "test1_005.png", "pool1_000.png"):
        assert name in message


def test_unreadable_image_is_named(medad_root):
    (medad_root / "images" / "test0_001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (medad_root / "images" / "known_003.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="could not be decoded") as info:
        MedADDataModule(medad_root, image_size=32).setup()
    assert "test0_001.png" in str(info.value) and "known_003.png" in str(info.value)


def test_missing_root_or_split_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        MedADDataModule(tmp_path / "nope").setup()
    with pytest.raises(SplitError, match="data.json does not exist"):
        MedADDataModule(tmp_path).setup()


@pytest.mark.parametrize("ratio", [-0.5, 1.01])
def test_anomaly_ratio_is_checked_at_construction(medad_root, ratio):
    with pytest.raises(ValueError, match=rf"split\.anomaly_ratio={ratio}: must be in \[0, 1\]"):
        MedADDataModule(medad_root, split={"anomaly_ratio": ratio})


def test_pool_overflow_is_explained(medad_root):
    with pytest.raises(SplitError, match="needs 12 abnormal images but the abnormal pool has 10"):
        MedADDataModule(medad_root, split={"anomaly_ratio": 1.0}).setup()


def test_same_file_in_train_and_test_is_refused(medad_root):
    split = json.loads((medad_root / "data.json").read_text())
    split["test"]["0"].append(split["train"]["0"][0])
    (medad_root / "data.json").write_text(json.dumps(split))
    with pytest.raises(SplitError, match='in both train."0" and test."0"'):
        MedADDataModule(medad_root).setup()


def test_synthetic_datamodule_is_deterministic_and_labelled():
    dm = SyntheticCXRDataModule(num_known_normal=20, num_test=10, image_size=32, seed=3)
    dm.setup()
    counts = dm.summary()
    assert counts["train/unlabeled_abnormal"] == 12  # floor(20 * 0.6)
    assert counts["test/normal"] == 5 and counts["test/abnormal"] == 5
    again = SyntheticCXRDataModule(num_known_normal=20, num_test=10, image_size=32, seed=3)
    again.setup()
    assert torch.equal(dm.test.images, again.test.images)
    three = SyntheticCXRDataModule(num_known_normal=20, num_test=10, image_size=32, in_channels=3)
    three.setup()
    assert three.test.images.shape[1] == 3


@requires_nih
def test_real_nih_data_loads_with_the_protocol_counts():
    dm = MedADDataModule(NIH_ROOT, image_size=64, split={"val_fraction": 0.1})
    dm.setup()
    counts = dm.summary()
    assert counts["train/known_normal"] == 153 and counts["val/normal"] == 17
    assert counts["train/unlabeled"] == 170 and counts["train/unlabeled_abnormal"] == 102
    assert counts["test/normal"] == 78 and counts["test/abnormal"] == 78
    images = dm.test.images.float()
    # Real radiographs use the intensity range and are not blank.
    assert images.std() > 20 and images.max() > 200


def test_synthetic_lesion_ranges_reach_the_abnormal_images_and_are_checked():
    def lesion_energy(**kwargs):
        dm = SyntheticCXRDataModule(num_known_normal=4, num_test=40, image_size=32, **kwargs)
        dm.setup()
        test = dm.test
        abnormal = test.images[torch.tensor(test.labels) == 1].float()
        return abnormal.mean().item()

    # Same seed, same phantoms: larger and brighter lesions can only raise the mean intensity.
    subtle = lesion_energy(lesion_radius=(0.04, 0.05), lesion_contrast=(20.0, 30.0))
    obvious = lesion_energy(lesion_radius=(0.15, 0.2), lesion_contrast=(80.0, 100.0))
    assert obvious > subtle + 1.0
    with pytest.raises(ValueError, match=r"^lesion_radius must satisfy"):
        SyntheticCXRDataModule(lesion_radius=(0.1, 0.5))
    with pytest.raises(ValueError, match=r"^lesion_contrast must satisfy"):
        SyntheticCXRDataModule(lesion_contrast=(-1.0, 10.0))


def test_synthetic_validation_has_real_lesions_by_default():
    kwargs = {
        "num_known_normal": 20,
        "num_test": 10,
        "image_size": 32,
        "split": {"val_fraction": 0.2},
    }
    lesions = SyntheticCXRDataModule(**kwargs)
    pseudo = SyntheticCXRDataModule(validation="pseudo", **kwargs)
    lesions.setup()
    pseudo.setup()
    # Same known normals and the same held-out normals in both modes.
    assert torch.equal(lesions.known_normal.images, pseudo.known_normal.images)
    assert lesions.val.labels == pseudo.val.labels == [0] * 4 + [1] * 4
    assert torch.equal(lesions.val.images[:4], pseudo.val.images[:4])
    # Lesion validation images are fresh phantoms, in neither training nor test.
    abnormal = lesions.val.images[4:]
    for other in (lesions.known_normal, lesions.unlabeled, lesions.test):
        assert not (abnormal[:, None] == other.images[None]).flatten(2).all(2).any()
    assert all(name.startswith("val_") for name in lesions.val.names[4:])
    # Masks mark the lesions of the abnormal images only, for the pixel-level metrics.
    assert lesions.val_masks.shape == (8, 1, 32, 32) and lesions.val_masks.dtype == torch.bool
    assert lesions.test_masks.shape == (10, 1, 32, 32)
    labels = torch.tensor(lesions.test.labels)
    has_lesion = lesions.test_masks.flatten(1).any(1)
    assert torch.equal(has_lesion, labels == 1)
    assert not lesions.val_masks[:4].any() and lesions.val_masks[4:].flatten(1).any(1).all()
    with pytest.raises(ValueError, match="validation='labelled'"):
        SyntheticCXRDataModule(validation="labelled")
    no_val = SyntheticCXRDataModule(**{**kwargs, "split": {"val_fraction": 0.0}})
    no_val.setup()
    assert no_val.val is None and len(no_val.known_normal) == 20
