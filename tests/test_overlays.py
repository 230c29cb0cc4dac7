"""Pictures a radiologist reads: heat maps on the original film with the verdict written on
them, unique overlay names, and ROC / PR plots that mark the operating point."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DICOM_ROOT, requires_dicom_samples, tiny_networks, tiny_trainer
from matplotlib.colors import to_rgb
from PIL import Image

from sagan_ad import SAGAN, EvaluationWriter, Evaluator, FolderPredictDataModule
from sagan_ad.data import decode_image
from sagan_ad.evaluation.visualization import (
    MIN_OVERLAY_SIDE,
    OPERATING_POINT_COLOUR,
    colorize,
    film_to_rgb,
    overlay_picture,
    pr_figure,
    roc_figure,
)
from sagan_ad.training.outputs import overlay_name, read_film


def random_film(height: int, width: int, seed: int = 0) -> np.ndarray:
    grey = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def test_the_film_keeps_its_own_resolution_and_the_map_is_resized_up():
    film = random_film(600, 520)
    amap = torch.zeros(1, 32, 32)
    amap[0, 8:16, 20:28] = 0.5
    picture = overlay_picture(film, amap, "a.png", score=0.2, threshold=0.1)
    height, width = film.shape[:2]
    below = picture[-height:, :width]
    # Where the map is zero the film is untouched, pixel for pixel, at full resolution.
    assert np.array_equal(below[:200, :250], film[:200, :250])
    # Where it is high, the heat colour is blended in: the top of the scale at 60 % opacity.
    hot = colorize(np.array([[0.5]]), 0.5)[0, 0].astype(float)
    expected = np.round(film[290, 400] * 0.4 + hot * 0.6)
    assert np.abs(below[290, 400].astype(float) - expected).max() <= 1
    # A header with the text above the film, a colour bar on the right.
    assert picture.shape[0] > height and picture.shape[1] > width
    header = picture[: picture.shape[0] - height]
    assert (header < 128).any() and (header == 255).mean() > 0.5


def test_small_films_are_enlarged_by_whole_pixel_blocks_for_legible_text():
    film = random_film(40, 56)
    picture = overlay_picture(film, torch.zeros(1, 32, 32), "tiny.png", 0.1, 0.5)
    factor = -(-MIN_OVERLAY_SIDE // 56)
    below = picture[-40 * factor :, : 56 * factor]
    assert np.array_equal(below[::factor, ::factor], film)
    assert np.array_equal(below, np.repeat(np.repeat(film, factor, 0), factor, 1))


def test_panels_show_film_restored_and_heat_map_side_by_side():
    film = random_film(520, 600)
    restored = torch.zeros(1, 32, 32)
    blend = overlay_picture(film, torch.zeros(1, 32, 32), "x", 0.3, 0.2)
    panels = overlay_picture(
        film, torch.zeros(1, 32, 32), "x", 0.3, 0.2, style="panels", restored=restored
    )
    assert panels.shape[1] - blend.shape[1] == 2 * 600
    below = panels[-520:]
    assert np.array_equal(below[:, :600], film)
    assert (below[:, 600:1200] == 128).all()  # the restored image: 0 in [-1, 1] is mid grey
    with pytest.raises(ValueError, match="'panels' overlay style needs the restored image"):
        overlay_picture(film, torch.zeros(1, 8, 8), "x", 0.3, 0.2, style="panels")
    with pytest.raises(ValueError, match="overlay style 'side': choose one of"):
        overlay_picture(film, torch.zeros(1, 8, 8), "x", 0.3, 0.2, style="side")


def test_a_fixed_scale_makes_maps_comparable_and_the_per_image_scale_stretches():
    film = np.zeros((512, 512, 3), np.uint8)
    amap = torch.full((1, 8, 8), 0.1)
    own = overlay_picture(film, amap, "x", 0.1, 0.2, alpha=1.0)[-512:, :512]
    fixed = overlay_picture(film, amap, "x", 0.1, 0.2, vmax=1.0, alpha=1.0)[-512:, :512]
    # Per image, 0.1 is the top of the scale (bright); on a fixed 0-1 scale it is dark.
    assert own.mean() > 5 * fixed.mean()


def test_film_to_rgb_uses_the_bit_depth_in_use():
    twelve_bit = np.array([[0, 4095]], np.uint16)
    assert film_to_rgb(twelve_bit)[0, :, 0].tolist() == [0, 255]
    sixteen_bit = np.array([[0, 65535]], np.uint16)
    assert film_to_rgb(sixteen_bit)[0, :, 0].tolist() == [0, 255]
    assert film_to_rgb(np.array([[0.0, 0.5, 1.0]], np.float32))[0, :, 0].tolist() == [0, 128, 255]
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[..., 0] = 200
    assert np.array_equal(film_to_rgb(colour), colour)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a/b.png", "a/b.png.png"),
        ("a__b.png", "a__b.png.png"),
        ("./a//b.png", "a/b.png.png"),
        ("../../etc/x.png", "%2E%2E/%2E%2E/etc/x.png.png"),
        ("a\\b.png", "a/b.png.png"),
    ],
)
def test_overlay_names_keep_folders_and_stay_inside(name, expected):
    assert overlay_name(name) == expected


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> SAGAN:
    from sagan_ad import SyntheticCXRDataModule

    # Untrained on purpose: these tests are about the pictures, not the scores.
    model = SAGAN(**tiny_networks(), evaluator=Evaluator(bootstrap_resamples=0))
    model.allow_untrained = True
    data = SyntheticCXRDataModule(num_known_normal=16, num_test=8, image_size=32, batch_size=4)
    tiny_trainer(tmp_path_factory.mktemp("val")).validate(model, data)
    assert torch.isfinite(model.threshold)
    return model


def predict_folder(model: SAGAN, root: Path, out: Path, **writer) -> list[dict[str, str]]:
    trainer = tiny_trainer(out, callbacks=[EvaluationWriter(**writer)])
    data = FolderPredictDataModule(root, image_size=32, batch_size=2)
    trainer.predict(model, datamodule=data)
    [table] = out.rglob("predict/predictions.csv")
    with table.open() as f:
        return list(csv.DictReader(f))


def test_colliding_names_get_one_overlay_each(validated, tmp_path):
    names = ["a/b.png", "a__b.png", "A.png", "a.png", "a.png~2.png"]
    for seed, name in enumerate(names):
        path = tmp_path / "scans" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(random_film(40, 40, seed)[..., 0]).save(path)
    rows = predict_folder(validated, tmp_path / "scans", tmp_path / "run")
    table = next((tmp_path / "run").rglob("predict"))
    overlays = [row["overlay"] for row in rows]
    assert sorted(row["name"] for row in rows) == sorted(names)
    assert len({o.casefold() for o in overlays}) == len(names)
    files = sorted(table.rglob("*.png"))
    assert len(files) == len(names)
    # Every overlay holds its own image's film (the films differ, so do the pictures).
    for row in rows:
        picture = np.asarray(Image.open(table / row["overlay"]).convert("RGB"))
        film = film_to_rgb(decode_image(row["path"]))
        factor = -(-MIN_OVERLAY_SIDE // 40)
        corner = picture[-40 * factor :, : 40 * factor][::factor, ::factor]
        assert np.corrcoef(corner[..., 1].ravel(), film[..., 1].ravel())[0, 1] > 0.8, row


NO_FILE_META = "fuji_CR-MONO1-10-chest_no_meta.dcm"


@requires_dicom_samples
def test_predict_on_real_dicoms_draws_each_film_at_its_own_resolution(validated, tmp_path):
    # The ACR-NEMA file without file meta included: the predict reader and the film reader of
    # the overlays must both read it.
    files = sorted(DICOM_ROOT.glob("*.dcm"))
    assert NO_FILE_META in [p.name for p in files]
    scans = tmp_path / "scans"
    scans.mkdir()
    for path in files:
        shutil.copy(path, scans / path.name)
    rows = predict_folder(validated, scans, tmp_path / "run")
    out = next((tmp_path / "run").rglob("predict"))
    assert sorted(row["name"] for row in rows) == [p.name for p in files]
    for row in rows:
        film = read_film(row["path"])
        picture = np.asarray(Image.open(out / row["overlay"]).convert("RGB"))
        height, width = film.shape[:2]
        factor = -(-MIN_OVERLAY_SIDE // max(height, width))
        below = picture[-height * factor :, : width * factor][::factor, ::factor]
        # The film at its full resolution, under a heat map that only tints it.
        assert np.corrcoef(below[..., 1].ravel(), film[..., 1].ravel())[0, 1] > 0.8, row["name"]
    film = read_film(str(DICOM_ROOT / NO_FILE_META))
    assert film.shape == (440, 440, 3) and 0 < film.mean() < 255


def legend_clear_of_axes(figure) -> bool:
    figure.draw_without_rendering()  # runs the constrained layout
    [legend] = figure.legends
    legend_box = legend.get_window_extent()
    axes_box = figure.axes[0].get_window_extent()
    return legend_box.y1 <= axes_box.y0


def test_roc_and_pr_mark_the_operating_point_and_keep_legends_off_the_curves():
    scores = torch.tensor([0.1, 0.2, 0.35, 0.4, 0.6, 0.7, 0.8, 0.9])
    labels = torch.tensor([0, 0, 1, 0, 1, 0, 1, 1])
    roc = roc_figure(scores, labels, threshold=0.5)
    marker = roc.axes[0].lines[-1]
    # score >= 0.5: 3 of 4 abnormal found (sensitivity 0.75), 1 of 4 normal flagged (FPR 0.25).
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == (0.25, 0.75)
    assert to_rgb(marker.get_color()) == to_rgb(OPERATING_POINT_COLOUR)
    assert "sensitivity 0.75, specificity 0.75" in marker.get_label()
    pr = pr_figure(scores, labels, threshold=0.5)
    marker = pr.axes[0].lines[-1]
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == (0.75, 0.75)
    assert legend_clear_of_axes(roc) and legend_clear_of_axes(pr)
    # No threshold (never validated): no marker.
    assert len(roc_figure(scores, labels, threshold=float("nan")).axes[0].lines) == 2
