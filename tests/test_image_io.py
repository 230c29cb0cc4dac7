"""Image reading at native depth, and the preprocessing cache."""

from __future__ import annotations

import json
import logging
import os

import cv2
import numpy as np
import pytest
import torch
from conftest import chest_phantom, write_dicom
from PIL import Image

from sagan_ad.data import (
    DicomOptions,
    ImageCache,
    ImageReadError,
    PreprocessSettings,
    content_digest,
    decode_image,
    load_image,
    load_images,
)
from sagan_ad.data.splits.leakage import SAME_BYTES


def test_sixteen_bit_grayscale_png_and_tiff_keep_their_depth(tmp_path):
    # Values that 8-bit quantization before resizing would merge (all round to 0 or 1).
    pixels = np.tile(np.array([0, 200], np.uint16), (16, 8))
    Image.fromarray(pixels).save(tmp_path / "a.png")
    cv2.imwrite(str(tmp_path / "a.tif"), pixels)
    for name in ("a.png", "a.tif"):
        decoded = decode_image(tmp_path / name)
        assert decoded.dtype == np.uint16
        np.testing.assert_array_equal(decoded, pixels)
    # White beside black (a uniform film is refused as blank): 65535 is white at 16 bits.
    full = np.zeros((16, 16), np.uint16)
    full[:, :8] = 65535
    Image.fromarray(full).save(tmp_path / "white.png")
    assert load_image(tmp_path / "white.png", 16)[0, :, :8].min() == 255


def test_sixteen_bit_rgb_is_read_in_rgb_order(tmp_path):
    bgr = np.zeros((8, 8, 3), np.uint16)
    bgr[:, :4, 2] = 65535  # red beside black, in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    decoded = decode_image(tmp_path / "red.png")
    assert decoded.dtype == np.uint16 and decoded[:, :4, 0].min() == 65535
    image = load_image(tmp_path / "red.png", 8, in_channels=3)
    assert image[0, :, :4].min() == 255 and image[1:].max() == 0
    assert load_image(tmp_path / "red.png", 8)[0, 0, 0] == round(0.299 * 255)


def test_eight_bit_reading_is_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    expected = np.asarray(Image.fromarray(rgb).convert("L").resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(load_image(tmp_path / "x.png", 32)[0], expected)
    # The positional call signature other code uses.
    assert load_images([tmp_path / "x.png"], 32, 3, 1).shape == (1, 3, 32, 32)


def test_truncated_and_zero_byte_images_are_named(tmp_path):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "ok.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes()[:100])
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="zero.png \\(the file is empty\\)"):
        load_image(tmp_path / "zero.png", 8)
    with pytest.raises(ImageReadError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg", 8)


def dicom_files(folder, n=4):
    return [
        write_dicom(folder / f"{i}.dcm", chest_phantom() // (i + 1), bits_stored=12)
        for i in range(n)
    ]


def test_cache_decodes_once_and_is_keyed_by_settings_and_file(tmp_path, monkeypatch):
    paths = dicom_files(tmp_path / "raw")
    cache = ImageCache(tmp_path / "cache", PreprocessSettings(16), num_workers=1, progress=False)
    first = cache.load(paths)
    assert first.images.shape == (4, 1, 16, 16) and first.original_sizes == [(48, 40)] * 4
    np.testing.assert_array_equal(first.images[2], load_image(paths[2], 16))

    calls = []
    import sagan_ad.data.caching.cache as cache_module

    real = cache_module.read_image
    monkeypatch.setattr(
        cache_module, "read_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k)
    )
    again = ImageCache(tmp_path / "cache", PreprocessSettings(16), num_workers=1, progress=False)
    np.testing.assert_array_equal(again.load(paths).images, first.images)
    assert calls == []  # everything came from the cache
    # A changed file is decoded again; the others are not.
    write_dicom(paths[1], chest_phantom()[::-1].copy(), bits_stored=12)
    os.utime(paths[1], ns=(1, 1))
    changed = again.load(paths)
    assert calls == [str(paths[1])]
    np.testing.assert_array_equal(changed.images[1], load_image(paths[1], 16))
    # Any changed setting is a different cache entry.
    settings = PreprocessSettings(16, dicom=DicomOptions(mode="benchmark"))
    ImageCache(tmp_path / "cache", settings, num_workers=1, progress=False).load(paths)
    assert len(calls) == 5
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 2


def test_cache_builds_in_parallel_with_tags_and_shards(tmp_path):
    paths = dicom_files(tmp_path / "raw", 6)
    settings = PreprocessSettings(8, dicom_tags=("Modality", "PatientSex"))
    cache = ImageCache(tmp_path / "c", settings, num_workers=2, progress=False, shard_size=4)
    result = cache.load(paths)
    assert result.tags == [{"Modality": "DX", "PatientSex": ""}] * 6
    assert len(list(cache.folder.glob("shard-*.npy"))) == 2
    index = json.loads(cache.index_path.read_text())
    assert len(index) == 6
    serial = ImageCache(tmp_path / "s", settings, num_workers=1, progress=False).load(paths)
    np.testing.assert_array_equal(result.images, serial.images)


def test_cache_errors_list_everything_or_skip_with_a_log(tmp_path, caplog):
    paths = dicom_files(tmp_path / "raw", 3)
    (tmp_path / "raw" / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 10)
    paths += [tmp_path / "raw" / "bad.dcm", tmp_path / "raw" / "gone.dcm"]
    cache = ImageCache(tmp_path / "c", PreprocessSettings(8), num_workers=1, progress=False)
    with pytest.raises(ImageReadError, match="2 image file") as info:
        cache.load(paths)
    assert "bad.dcm" in str(info.value) and "gone.dcm" in str(info.value)
    with caplog.at_level(logging.WARNING):
        result = cache.load(paths, on_error="skip")
    assert result.kept == [0, 1, 2] and len(result.skipped) == 2
    assert "bad.dcm" in caplog.text and "gone.dcm" in caplog.text


def test_a_crash_while_writing_leaves_no_partial_cache(tmp_path, monkeypatch):
    paths = dicom_files(tmp_path / "raw", 3)
    cache = ImageCache(tmp_path / "c", PreprocessSettings(8), num_workers=1, progress=False)
    import sagan_ad.data.caching.cache as cache_module

    def crash(path, array):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module, "_save_array", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.load(paths)
    assert not cache.index_path.exists()
    assert sorted(p.name for p in cache.folder.iterdir()) == ["settings.json"]
    monkeypatch.undo()
    assert cache.load(paths).images.shape == (3, 1, 8, 8)


def test_medad_datamodule_reads_through_the_cache_identically(medad_root, tmp_path):
    from sagan_ad import MedADDataModule

    plain = MedADDataModule(medad_root, image_size=16, split={"val_fraction": 0.0})
    cached = MedADDataModule(
        medad_root, image_size=16, split={"val_fraction": 0.0}, cache={"dir": tmp_path / "c"}
    )
    plain.setup()
    cached.setup()
    assert torch.equal(plain.test.images, cached.test.images)
    assert torch.equal(plain.known_normal.images, cached.known_normal.images)
    assert any((tmp_path / "c").glob("*/shard-*.npy"))


# ---------------------------------------------------------------- one read per file


def opened_sources(monkeypatch, paths) -> list[str]:
    """Every opening of one of ``paths`` from now on (by any reader in this process)."""
    import builtins

    watched, opened = {str(p) for p in paths}, []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if str(file) in watched:
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    return opened


def mixed_files(folder) -> list:
    paths = [
        write_dicom(
            folder / f"{i}.dcm", chest_phantom() // (i + 1), bits_stored=12, PatientID=f"P{i}"
        )
        for i in range(3)
    ]
    for i in range(2):
        paths.append(folder / f"{i}.png")
        # Not uniform: a blank film is refused.
        pixels = np.full((12, 10), 50 * (i + 1), np.uint8) + np.arange(10, dtype=np.uint8)
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_a_cache_build_reads_each_file_once_and_a_hit_opens_none(tmp_path, monkeypatch):
    """Pixels, header values and the digest of the bytes come from one read; a later run
    compares size and modification time only."""
    import sagan_ad.data.caching.cache_index as index_module

    paths = mixed_files(tmp_path / "raw")
    opened = opened_sources(monkeypatch, paths)
    cache = ImageCache(tmp_path / "c", PreprocessSettings(8), num_workers=1, progress=False)
    first = cache.load(paths, keywords=("PatientID",))
    assert sorted(opened) == sorted(map(str, paths))
    assert first.headers == [{"PatientID": f"P{i}"} for i in range(3)] + [{}, {}]
    assert [i[SAME_BYTES] for i in first.identities] == [content_digest(p) for p in paths]
    assert [i.get("SOPInstanceUID", "") != "" for i in first.identities] == [True] * 3 + [False] * 2
    opened.clear()
    monkeypatch.setattr(index_module, "content_digest", lambda *a: pytest.fail("hashed"))
    again = ImageCache(tmp_path / "c", PreprocessSettings(8), num_workers=1, progress=False)
    hit = again.load(paths, keywords=("PatientID",))
    assert opened == []
    np.testing.assert_array_equal(hit.images, first.images)
    assert hit.headers == first.headers and hit.identities == first.identities


def test_header_values_asked_for_later_are_read_once_and_kept(tmp_path, monkeypatch):
    import sagan_ad.data.caching.cache_index as index_module

    paths = mixed_files(tmp_path / "raw")
    settings = PreprocessSettings(8)
    ImageCache(tmp_path / "c", settings, num_workers=1, progress=False).load(paths)
    read = []
    real = index_module.read_tags
    monkeypatch.setattr(
        index_module, "read_tags", lambda path, keys: read.append(path) or real(path, keys)
    )
    cache = ImageCache(tmp_path / "c", settings, num_workers=1, progress=False)
    result = cache.load(paths, keywords=("PatientID", "Modality"))
    assert sorted(read) == sorted(str(p) for p in paths[:3])  # the DICOMs, not the PNGs
    assert result.headers[:3] == [{"PatientID": f"P{i}", "Modality": "DX"} for i in range(3)]
    read.clear()
    ImageCache(tmp_path / "c", settings, num_workers=1, progress=False).load(
        paths, keywords=("PatientID",)
    )
    assert read == []


def test_a_plain_png_with_a_colour_key_is_refused_like_transparency(tmp_path):
    Image.fromarray(np.full((6, 6), 120, np.uint8)).save(tmp_path / "k.png", transparency=120)
    with pytest.raises(ImageReadError, match="36 pixel\\(s\\) are transparent"):
        load_image(tmp_path / "k.png", 4)


@pytest.mark.parametrize("kind", ["grey16", "rgb", "grey8"])
def test_plain_pngs_decode_to_the_pixels_pil_gives(tmp_path, kind):
    from sagan_ad.data.reading.pixels import pil_pixels

    rng = np.random.default_rng(1)
    shape = {"grey16": (13, 11), "rgb": (13, 11, 3), "grey8": (13, 11)}[kind]
    top = 65535 if kind == "grey16" else 255
    pixels = rng.integers(0, top, shape, endpoint=True).astype(np.uint16 if top > 255 else np.uint8)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as img:
        expected = pil_pixels(img)
    decoded = decode_image(tmp_path / "p.png")
    assert decoded.dtype == expected.dtype
    np.testing.assert_array_equal(decoded, expected)
