"""DICOM reading: the standard display pipeline, the benchmark mode, odd files, real films."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import DICOM_ROOT, chest_phantom, lung_contrast, requires_dicom_samples, write_dicom
from pydicom.encaps import encapsulate

from sagan_ad.data import DicomOptions, ImageReadError, load_image, read_dicom

HIGH = 4095  # 12-bit


def linear_window(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    # DICOM PS3.3 C.11.2.1.2.1, scaled to [0, 1].
    return np.clip((x - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def test_monochrome1_is_inverted_to_look_like_monochrome2(tmp_path):
    chest = chest_phantom()
    mono2 = read_dicom(write_dicom(tmp_path / "m2.dcm", chest, bits_stored=12))
    mono1 = read_dicom(
        write_dicom(tmp_path / "m1.dcm", HIGH - chest, "MONOCHROME1", bits_stored=12)
    )
    assert mono2.dtype == np.float32 and mono2.min() == 0.0 and mono2.max() == 1.0
    assert lung_contrast(mono2) > 0.5
    np.testing.assert_allclose(mono1, mono2, atol=1e-6)


def test_rescale_then_window_then_inversion(tmp_path):
    chest = chest_phantom()
    slope, intercept, centre, width = 2.0, -1000.0, 3000.0, 4000.0
    path = write_dicom(
        tmp_path / "w.dcm",
        HIGH - chest,
        "MONOCHROME1",
        bits_stored=12,
        RescaleSlope=slope,
        RescaleIntercept=intercept,
        WindowCenter=centre,
        WindowWidth=width,
    )
    modality = (HIGH - chest) * slope + intercept
    expected = 1.0 - linear_window(modality, centre, width)
    np.testing.assert_allclose(read_dicom(path), expected, atol=1e-5)
    # The window clips: lungs and spine saturate at opposite ends.
    assert lung_contrast(read_dicom(path)) > 0


def test_voi_lut_sequence_is_applied_and_scaled_by_its_output_range(tmp_path):
    from pydicom.dataset import Dataset

    chest = chest_phantom()
    # A gamma-like 12-bit -> 10-bit LUT: display = round(1023 * (x / 4095) ** 0.5).
    lut = np.round(1023 * np.sqrt(np.arange(4096) / 4095)).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 10]
    item.LUTData = lut.tobytes()
    item["LUTData"].VR = "OW"
    path = write_dicom(tmp_path / "lut.dcm", chest, bits_stored=12, VOILUTSequence=[item])
    np.testing.assert_allclose(read_dicom(path), lut[chest] / 1023.0, atol=1e-6)


def test_presentation_lut_shape_inverse_inverts_monochrome2(tmp_path):
    chest = chest_phantom()
    plain = read_dicom(write_dicom(tmp_path / "a.dcm", chest, bits_stored=12))
    inverse = read_dicom(
        write_dicom(tmp_path / "b.dcm", chest, bits_stored=12, PresentationLUTShape="INVERSE")
    )
    np.testing.assert_allclose(inverse, 1.0 - plain, atol=1e-6)


def test_percentile_window_ignores_a_hot_pixel(tmp_path):
    chest = chest_phantom(high=2000)
    chest[0, 0] = HIGH  # one saturated detector pixel
    path = write_dicom(tmp_path / "hot.dcm", chest, bits_stored=12)
    minmax = read_dicom(path)
    percentile = read_dicom(path, DicomOptions(window="percentile", percentiles=(1, 99)))
    fallback = read_dicom(path, DicomOptions(fallback_window="percentile", percentiles=(1, 99)))
    assert lung_contrast(percentile) > lung_contrast(minmax) + 0.2
    np.testing.assert_array_equal(fallback, percentile)


def test_benchmark_mode_is_minmax_of_stored_values_inverted(tmp_path):
    stored = HIGH - chest_phantom()
    path = write_dicom(
        tmp_path / "b.dcm",
        stored,
        "MONOCHROME1",
        bits_stored=12,
        RescaleSlope=3.0,
        RescaleIntercept=-50.0,
        WindowCenter=100.0,
        WindowWidth=10.0,
    )
    out = read_dicom(path, DicomOptions(mode="benchmark"))
    scaled = np.round((stored - stored.min()) / np.ptp(stored) * 255.0)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, (255 - scaled).astype(np.uint8))


def test_rle_no_meta_and_extensionless_files_read_the_same(tmp_path):
    chest = chest_phantom()
    reference = read_dicom(write_dicom(tmp_path / "plain.dcm", chest, bits_stored=12))
    rle = write_dicom(tmp_path / "rle.dcm", chest, bits_stored=12, rle=True)
    no_meta = write_dicom(tmp_path / "old.dcm", chest, bits_stored=12, file_meta=False)
    bare = write_dicom(tmp_path / "IMG0001", chest, bits_stored=12)
    bare_no_meta = write_dicom(tmp_path / "IMG0002", chest, bits_stored=12, file_meta=False)
    for path in (rle, no_meta):
        np.testing.assert_array_equal(read_dicom(path), reference)
    expected = load_image(tmp_path / "plain.dcm", 16)
    np.testing.assert_array_equal(load_image(bare, 16), expected)  # found by the DICM magic
    np.testing.assert_array_equal(load_image(bare_no_meta, 16, force_dicom=True), expected)


def test_colour_dicom_gives_rgb(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, :4, 0] = 200  # red beside black: a film of one colour is refused as blank
    path = write_dicom(tmp_path / "c.dcm", rgb, "RGB")
    image = load_image(path, 8, in_channels=3)
    assert image.shape == (3, 8, 8) and image[0, :, :4].min() == 200 and image[1:].max() == 0


def test_missing_pixel_data_is_named(tmp_path):
    path = write_dicom(tmp_path / "report.dcm", None)
    with pytest.raises(ImageReadError, match="no pixel data") as info:
        load_image(path, 16)
    assert "report.dcm" in str(info.value)


def test_unsupported_photometric_interpretation_is_named(tmp_path):
    path = write_dicom(tmp_path / "pal.dcm", chest_phantom().astype(np.uint8), "PALETTE COLOR")
    with pytest.raises(ImageReadError, match="'PALETTE COLOR' is not supported"):
        load_image(path, 16)


def test_undecodable_compressed_syntax_names_syntax_and_extra(tmp_path):
    path = write_dicom(tmp_path / "mpeg.dcm", chest_phantom().astype(np.uint8))
    import pydicom

    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no plugin decodes it
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    with pytest.raises(ImageReadError, match=r"MPEG2.*pip install 'sagan-ad\[dicom\]'"):
        load_image(path, 16)


def test_compressed_file_without_decoder_plugins_names_syntax_and_extra(tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import RLELossless

    path = write_dicom(tmp_path / "rle.dcm", chest_phantom(), bits_stored=12, rle=True)
    # As on a machine where no plugin for the syntax is installed.
    monkeypatch.setattr(get_decoder(RLELossless), "_available", {})
    with pytest.raises(ImageReadError) as info:
        load_image(path, 16)
    message = str(info.value)
    assert "rle.dcm" in message and "RLE Lossless" in message
    assert "pip install 'sagan-ad[dicom]'" in message


def test_truncated_and_empty_dicom_files_are_named(tmp_path):
    path = write_dicom(tmp_path / "cut.dcm", chest_phantom(), bits_stored=12)
    path.write_bytes(path.read_bytes()[:-500])
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(ImageReadError, match="cut.dcm"):
        load_image(path, 16)
    with pytest.raises(ImageReadError, match="empty.dcm"):
        load_image(tmp_path / "empty.dcm", 16)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="mode"):
        DicomOptions(mode="fast")
    with pytest.raises(ValueError, match="percentiles"):
        DicomOptions(percentiles=(99, 1))


REAL_FILES = [
    "nih_cxr14_google_nofinding_DX.dcm",
    "fuji_CR-MONO1-10-chest_no_meta.dcm",
    "nema_wg04_RG1_UNCR_explicitLE.dcm",
    "nema_wg04_RG1_J2KR_jpeg2000_lossless.dcm",
    "nema_wg04_RG1_J2KI_jpeg2000_lossy.dcm",
]
requires_openjpeg = pytest.mark.skipif(
    importlib.util.find_spec("openjpeg") is None,
    reason="JPEG 2000 needs pylibjpeg-openjpeg: pip install 'sagan-ad[dicom]'",
)


@requires_dicom_samples
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=requires_openjpeg) if "jpeg2000" in n else n for n in REAL_FILES],
)
@pytest.mark.parametrize("mode", ["standard", "benchmark"])
def test_every_real_film_looks_like_a_chest_radiograph(name, mode):
    image = load_image(DICOM_ROOT / name, 128, dicom=DicomOptions(mode=mode))
    # Mediastinum and spine brighter than both lung fields, by a clear margin in 8 bit.
    assert lung_contrast(image) > 40, name
    assert image.max() > 200 and image.min() < 60


@requires_dicom_samples
@requires_openjpeg
def test_real_jpeg2000_lossless_equals_uncompressed_and_lossy_is_close():
    plain = read_dicom(DICOM_ROOT / "nema_wg04_RG1_UNCR_explicitLE.dcm")
    lossless = read_dicom(DICOM_ROOT / "nema_wg04_RG1_J2KR_jpeg2000_lossless.dcm")
    lossy = read_dicom(DICOM_ROOT / "nema_wg04_RG1_J2KI_jpeg2000_lossy.dcm")
    np.testing.assert_array_equal(lossless, plain)
    assert not np.array_equal(lossy, plain)
    assert np.abs(lossy - plain).mean() < 0.01
    assert np.corrcoef(lossy.ravel(), plain.ravel())[0, 1] > 0.99


# ---------------------------------------------------------------- display per stored value


def _modality_lut(descriptor: list[int], data: np.ndarray):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = descriptor
    item.LUTData = data.astype(np.uint16).tobytes()
    item["LUTData"].VR = "OW"
    return [item]


def _display_cases():
    rng = np.random.default_rng(3)
    chest = chest_phantom()
    noisy = np.clip(chest + rng.integers(-40, 40, chest.shape), 0, HIGH).astype(np.uint16)
    signed = (noisy.astype(np.int16) - 2048).astype(np.int16)
    padded = noisy.copy()
    padded[:5] = 0
    # Not monotonic: the stored values' order is not the modality values' order, and the
    # values an image lacks map beyond those it holds.
    zigzag = (np.arange(4096) * 7919) % 4096
    sparse = np.array([100, 2000, 3000], np.uint16)[rng.integers(0, 3, chest.shape)]
    return {
        "rescale-negative-slope-window": (
            noisy,
            {
                "RescaleSlope": -1.5,
                "RescaleIntercept": 5000,
                "WindowCenter": 1500,
                "WindowWidth": 3000,
            },
            DicomOptions(),
        ),
        "signed-sigmoid": (
            signed,
            {"WindowCenter": 0, "WindowWidth": 2500, "VOILUTFunction": "SIGMOID"},
            DicomOptions(),
        ),
        "padding-percentile-monochrome1": (
            padded,
            {"PixelPaddingValue": 0, "PhotometricInterpretation": "MONOCHROME1"},
            DicomOptions(window="percentile", percentiles=(2.0, 97.0)),
        ),
        "modality-lut-not-monotonic-minmax": (
            sparse,
            {"ModalityLUTSequence": _modality_lut([4096, 0, 16], zigzag * 16)},
            DicomOptions(window="minmax"),
        ),
        "eight-bit-fallback-percentile": (
            (noisy // 16).astype(np.uint8),
            {},
            DicomOptions(fallback_window="percentile"),
        ),
    }


@pytest.mark.parametrize("case", list(_display_cases()))
def test_the_display_computed_per_stored_value_equals_the_display_of_every_pixel(tmp_path, case):
    """read_dicom maps each stored value once (a table); the per-pixel pipeline is the
    reference, percentiles, padding and LUTs that are not monotonic included."""
    from sagan_ad.data.reading import dicom

    pixels, tags, options = _display_cases()[case]
    photometric = tags.pop("PhotometricInterpretation", "MONOCHROME2")
    bits = 12 if pixels.dtype.itemsize == 2 else None
    path = write_dicom(tmp_path / "x.dcm", pixels, photometric, bits_stored=bits, **tags)
    ds = dicom.read_dataset(path)
    stored = ds.pixel_array
    invert = photometric == "MONOCHROME1"
    reference = dicom._display(ds, stored, None, options, invert, path)
    np.testing.assert_array_equal(read_dicom(path, options), reference)


@pytest.mark.parametrize(
    ("dtype", "bits", "garbage"),
    [(np.uint16, 12, True), (np.int16, 12, False), (np.uint8, 8, False), (np.uint16, 16, False)],
)
def test_native_pixel_data_read_directly_equal_pydicom(tmp_path, dtype, bits, garbage):
    """Uncompressed pixels are read without pydicom's decoder: bits above Bits Stored are
    cleared (unsigned) or repeat the sign (signed), as pydicom does."""
    import pydicom

    from sagan_ad.data.reading import dicom

    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    pixels = rng.integers(info.min, info.max, (9, 7), endpoint=True).astype(dtype)
    if not garbage and bits < info.bits:
        pixels = (pixels << (info.bits - bits)) >> (info.bits - bits)
    path = write_dicom(tmp_path / "n.dcm", pixels, bits_stored=bits)
    ds = dicom.read_dataset(path)
    direct = dicom._native_pixels(ds)
    assert direct is not None
    expected = pydicom.dcmread(path).pixel_array
    assert direct.dtype == expected.dtype
    np.testing.assert_array_equal(direct, expected)
