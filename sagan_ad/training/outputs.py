"""Files a run leaves behind: per-image CSVs, a metrics JSON, ROC / PR plots and overlays.

`EvaluationWriter` writes, under ``dirpath`` (default: the run's own folder,
`sagan_ad.training.runs.run_dir`, e.g. ``runs/<name>/version_N/``, never a folder another run
shares):

- after ``test``: ``test/predictions.csv`` (one row per image: name, score, label, prediction,
  threshold, metadata columns), ``test/metrics.json`` (with the shortcut audit's summary and the
  matched subset's), ``test/matched_data.json`` (the matched subset as a Med-AD ``data.json``,
  see `matched_split`) and ``test/roc.png`` / ``test/pr.png`` (the operating point marked); a
  W&B run gets the curves as images, the table, and the files;
- after ``predict``: ``predict/predictions.csv`` (name, path, score, prediction, threshold,
  overlay, and the label where known) and one overlay per image in ``predict/overlays/``: the
  heat map on the original film at its own resolution, with the name, score, prediction,
  threshold and colour scale written on it
  (`sagan_ad.evaluation.visualization.overlay_picture`). Overlays
  keep the input's relative path (``sub/c.dcm`` gives ``overlays/sub/c.dcm.png``), so every
  overlay maps back to one input and no two inputs share one. Files the DataModule skipped
  (``on_error="skip"``) are listed with their reasons in ``predict/skipped.csv``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from sagan_ad.atomic import atomic_path
from sagan_ad.data.reading.decoding import DecodeSettings
from sagan_ad.data.reading.image_io import decode_image
from sagan_ad.errors import InputError
from sagan_ad.evaluation.audit import best_trivial, describe_trivial
from sagan_ad.evaluation.report import EvaluationReport
from sagan_ad.evaluation.visualization import (
    OVERLAY_STYLES,
    film_to_rgb,
    overlay_picture,
    plot_roc_pr,
    save_png,
    to_uint8_image,
)
from sagan_ad.protected import mark_output_folder
from sagan_ad.training.runs import RUN_FOLDER_SETTING, run_dir
from sagan_ad.training.tracking import log_pictures, log_table, save_run_files


def _plain(value: Any) -> Any:
    """JSON-safe value: NaN and infinities become ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of dictionaries as a CSV file; the header is the union of the keys in first-seen order.

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "t.csv"
        >>> write_csv(p, [{"name": "a", "score": 0.5}, {"name": "b", "view": "AP"}])
        >>> p.read_text().splitlines()[0]
        'name,score,view'
    """
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def audit_summary(report: EvaluationReport) -> dict[str, Any] | None:
    """The shortcut audit of a report in words: the best trivial shortcut, its AUROC and the
    model's margin over it, and the matched subset's size and AUROC; None without an audit.

    Examples:
        >>> from sagan_ad.evaluation.report import build_report
        >>> stats = torch.tensor([[0.1, 0.2], [0.9, 0.2], [0.4, 0.2], [0.6, 0.3]])
        >>> r = build_report("test", torch.tensor([0.1, 0.9, 0.2, 0.8]), torch.tensor([0, 1, 0, 1]),
        ...                  list("abcd"), bootstrap_resamples=0, statistics=stats)
        >>> audit_summary(r)["best_trivial"], audit_summary(r)["margin"]
        ('mean_intensity', 0.0)
    """
    best = best_trivial(report.metrics)
    if best is None:
        return None
    summary: dict[str, Any] = {
        "best_trivial": best[0],
        "best_trivial_auroc": best[1],
        "best_trivial_described": describe_trivial(best[0], report.metrics),
        "margin": report.metrics.get("audit/AUROC_margin"),
        "shortcut_warning": bool(report.metrics.get("audit/shortcut_warning")),
    }
    if report.matched is not None:
        summary["matched_pairs"] = report.matched.pairs
        summary["matched_auroc"] = report.metrics.get("matched/AUROC")
    return {k: _plain(v) for k, v in summary.items()}


def matched_split(
    report: EvaluationReport, split: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The report's matched subset as a Med-AD ``data.json``: ``split`` (the data set's own,
    as `sagan_ad.data.AnomalyDataModule.split_manifest` records it) with its ``test`` replaced by
    the matched pairs, or the ``test`` entry alone; None without a matched subset. A
    `sagan_ad.MedADDataModule` given it as ``split.file`` tests on the matched subset.
    """
    if report.matched is None or not report.matched.pairs:
        return None
    names = [str(row["name"]) for row in report.rows]
    return {**(split or {}), **report.matched.split(names)}


def write_report(
    report: EvaluationReport,
    directory: str | os.PathLike,
    split: dict[str, Any] | None = None,
    **context: Any,
) -> Path:
    """Write ``predictions.csv``, ``metrics.json``, ``roc.png`` and ``pr.png`` into
    ``directory``, and ``matched_data.json`` when the report has a matched subset
    (`matched_split` of ``split``).

    ``context`` (for example the checkpoint, the iteration and the threshold policy) is stored in
    the JSON beside the metrics. Returns the directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_csv(directory / "predictions.csv", report.rows)
    payload = {
        "stage": report.stage,
        **{k: _plain(v) for k, v in context.items()},
        "metrics": {k: _plain(v) for k, v in report.metrics.items()},
        "audit": audit_summary(report),
        "warnings": list(report.warnings),
        "notes": list(report.notes),
    }
    matched = matched_split(report, split)
    if matched is not None:
        with atomic_path(directory / "matched_data.json") as tmp:
            tmp.write_text(json.dumps(matched, indent=1))
    with atomic_path(directory / "metrics.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False))
    if report.labels.numel() and 0 < int(report.labels.sum()) < report.labels.numel():
        plot_roc_pr(
            report.scores,
            report.labels,
            directory / "roc.png",
            directory / "pr.png",
            title=f"({report.stage}, n={report.labels.numel()})",
            threshold=report.metrics.get("threshold"),
        )
    return directory


def overlay_name(name: str) -> str:
    """Relative path of an image's overlay: the image's own relative path plus ``.png``.

    Folders are kept (not flattened), so two inputs never map to one name; ``.`` and empty parts
    are dropped and ``..`` is spelt ``%2E%2E``, so an overlay stays inside the overlays folder.

    Examples:
        >>> overlay_name("patient1/view 2.dcm"), overlay_name("patient1__view 2.dcm")
        ('patient1/view 2.dcm.png', 'patient1__view 2.dcm.png')
        >>> overlay_name("../x.png")
        '%2E%2E/x.png.png'
    """
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join("%2E%2E" if p == ".." else p for p in parts) + ".png"


def read_film(path: str, datamodule: object = None) -> np.ndarray:
    """The original image file at its own resolution as ``uint8`` RGB, read as the DataModule
    reads it (its DICOM options and ``force_dicom`` flag: `sagan_ad.data.DecodeSettings.of`).

    Examples:
        >>> read_film("scans/a.dcm", trainer.datamodule).shape  # doctest: +SKIP
        (2048, 2500, 3)
    """
    decode = DecodeSettings.of(datamodule) or DecodeSettings()
    return film_to_rgb(decode_image(path, decode.dicom, force_dicom=decode.force_dicom))


class EvaluationWriter(Callback):
    """Write test reports and prediction files into the run's folder (see the module docstring).

    Args:
        dirpath: output folder; default the run's own folder (`sagan_ad.training.runs.run_dir`).
        overlays: write one overlay PNG per predicted image.
        overlay_vmax: top of the overlays' colour scale, the same for every image so that they
            compare; default each map's own maximum (the picture says which).
        overlay_style: ``"blend"`` (the heat map on the film) or ``"panels"`` (film | restored |
            heat map side by side).
        overlay_alpha: opacity of the heat map at the top of its scale (``"blend"``).

    Examples:
        >>> trainer = L.Trainer(callbacks=[EvaluationWriter()])  # doctest: +SKIP
        >>> trainer.test(model, datamodule=data)  # doctest: +SKIP
    """

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        overlays: bool = True,
        overlay_vmax: float | None = None,
        overlay_style: str = "blend",
        overlay_alpha: float = 0.6,
    ) -> None:
        if overlay_style not in OVERLAY_STYLES:
            raise InputError(f"overlay_style={overlay_style!r}: choose one of {OVERLAY_STYLES}")
        if overlay_vmax is not None and not overlay_vmax > 0:
            raise InputError(f"overlay_vmax={overlay_vmax}: must be > 0 (or None: per image)")
        if not 0.0 < overlay_alpha <= 1.0:
            raise InputError(f"overlay_alpha={overlay_alpha}: must be in (0, 1]")
        self.dirpath = dirpath
        self.overlays = overlays
        self.overlay_vmax = overlay_vmax
        self.overlay_style = overlay_style
        self.overlay_alpha = overlay_alpha
        self._rows: list[dict[str, Any]] = []
        self._skipped: list[dict[str, Any]] = []
        self._taken: set[str] = set()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Decided here, on every rank: the rank-zero-only hooks below only read it.
        if self.dirpath is None:
            run_dir(trainer)
        # The outputs folder is marked (or refused, when it holds the data the DataModule has
        # just registered) before the stage runs, not when its files are first written after
        # every image was scored; every rank refuses alike.
        self.output_dir(trainer, stage)

    def output_dir(self, trainer: L.Trainer, stage: str) -> Path:
        """Where ``stage``'s files go: ``<dirpath or the run's folder>/<stage>``; that folder
        is marked as sagan-ad's outputs, so that image discovery never reads them as data."""
        base = Path(self.dirpath or run_dir(trainer))
        setting = "dirpath of the EvaluationWriter" if self.dirpath else RUN_FOLDER_SETTING
        mark_output_folder(base, setting)
        return base / stage

    def _suffix(self, trainer: L.Trainer) -> str:
        # Each process of a multi-device predict writes its own part of the table.
        return f"_rank{trainer.global_rank}" if trainer.world_size > 1 else ""

    @rank_zero_only
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        report = getattr(pl_module, "reports", {}).get("test")
        if report is None:
            return
        manifest = getattr(trainer.datamodule, "split_manifest", lambda: None)()
        directory = write_report(
            report,
            self.output_dir(trainer, "test"),
            split=(manifest or {}).get("split"),
            checkpoint=str(trainer.ckpt_path) if trainer.ckpt_path else None,
            iteration=getattr(pl_module, "iteration", None),
            threshold_policy=getattr(
                getattr(pl_module, "evaluator", None), "threshold_policy", None
            ),
        )
        log_pictures(trainer, {"test/roc": directory / "roc.png", "test/pr": directory / "pr.png"})
        log_table(trainer, "test/predictions", report.rows)
        files = [p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")]
        save_run_files(trainer, sorted(files))

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []
        self._skipped = []
        self._taken = set()
        threshold = getattr(pl_module, "threshold", None)
        if isinstance(threshold, torch.Tensor) and bool(threshold.isnan()):
            rank_zero_warn(
                "the model has no threshold (it was never validated): predictions are -1; "
                "validate a checkpoint with labelled data to choose one"
            )
        directory = self.output_dir(trainer, "predict")
        (directory / "overlays" if self.overlays else directory).mkdir(parents=True, exist_ok=True)

    def _unique(self, name: str) -> str:
        """``overlay_name(name)``, numbered ``~2``, ``~3``, ... if another image of this predict
        already has that name (compared case-insensitively, as macOS and Windows folders do)."""
        relative = overlay_name(name)
        stem, count = relative[: -len(".png")], 1
        while relative.casefold() in self._taken:
            count += 1
            relative = f"{stem}~{count}.png"
        self._taken.add(relative.casefold())
        return relative

    def _overlay(
        self, trainer: L.Trainer, outputs: dict[str, Any], i: int, name: str, path: str
    ) -> np.ndarray:
        if path:
            film = read_film(path, trainer.datamodule)
        else:
            # No file behind the image (an in-memory set): the model input is all there is.
            film = to_uint8_image(outputs["image"][i])
            name = f"{name} (model input, no file)"
        return overlay_picture(
            film,
            outputs["anomaly_map"][i],
            title=name,
            score=float(outputs["score"][i]),
            threshold=float(outputs["threshold"][i]),
            vmax=self.overlay_vmax,
            style=self.overlay_style,
            restored=outputs["restored"][i],
            alpha=self.overlay_alpha,
        )

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        directory = self.output_dir(trainer, "predict")
        if isinstance(batch, dict):
            self._skipped += batch.get("skipped") or []
        count = len(outputs["score"])
        names = outputs.get("name") or [str(int(i)) for i in outputs["index"]]
        paths = outputs.get("path") or [""] * count
        labels = outputs.get("label", torch.full((count,), -1)).tolist()
        scores = outputs["score"].tolist()
        predictions = outputs["prediction"].tolist()
        thresholds = outputs["threshold"].tolist()
        for i in range(count):
            row = {"name": names[i], "path": paths[i], "score": scores[i]}
            row.update(prediction=predictions[i], threshold=thresholds[i])
            if labels[i] >= 0:
                row["label"] = labels[i]
            if self.overlays:
                relative = self._unique(names[i])
                overlay = directory / "overlays" / relative
                overlay.parent.mkdir(parents=True, exist_ok=True)
                save_png(overlay, self._overlay(trainer, outputs, i, names[i], paths[i]))
                row["overlay"] = f"overlays/{relative}"
            self._rows.append(row)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        directory = self.output_dir(trainer, "predict")
        table = directory / f"predictions{self._suffix(trainer)}.csv"
        write_csv(table, self._rows)
        log_table(trainer, "predict/predictions", self._rows)
        written = [table]
        if self._skipped:
            # Beside the predictions: a file missing from the table is never missing silently.
            skipped = directory / f"skipped{self._suffix(trainer)}.csv"
            write_csv(skipped, self._skipped)
            written.append(skipped)
            shown = "; ".join(f"{row['name']}: {row['reason']}" for row in self._skipped[:5])
            rank_zero_warn(
                f"predict skipped {len(self._skipped)} unreadable file(s) (on_error='skip'), "
                f"listed with their reasons in {skipped}: {shown}"
            )
        save_run_files(trainer, written)
