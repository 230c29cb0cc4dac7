"""Files a run leaves behind: per-image CSVs, a metrics JSON, ROC / PR plots and overlays.

`EvaluationWriter` writes, under ``dirpath`` (default: the Trainer's ``log_dir``, e.g.
``runs/<name>/version_N/``):

- after ``test``: ``test/predictions.csv`` (one row per image: name, score, label, prediction,
  threshold, metadata columns), ``test/metrics.json`` and ``test/roc.png`` / ``test/pr.png``;
- after ``predict``: ``predict/predictions.csv`` (name, path, score, prediction, threshold, and the
  label where known) and ``predict/overlays/<name>.png``, one ``input | restored | heat map``
  panel with a colour bar per image at its original size, named after the input file (its path
  relative to the predicted folder, with ``/`` turned into ``__``).
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
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from sagan_ad.atomic import atomic_path
from sagan_ad.evaluation import EvaluationReport
from sagan_ad.visualization import comparison_panel, plot_roc_pr, save_png


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


def write_report(report: EvaluationReport, directory: str | os.PathLike, **context: Any) -> Path:
    """Write ``predictions.csv``, ``metrics.json``, ``roc.png`` and ``pr.png`` into ``directory``.

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
        "warnings": list(report.warnings),
    }
    with atomic_path(directory / "metrics.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False))
    if report.labels.numel() and 0 < int(report.labels.sum()) < report.labels.numel():
        plot_roc_pr(
            report.scores,
            report.labels,
            directory / "roc.png",
            directory / "pr.png",
            title=f"({report.stage}, n={report.labels.numel()})",
        )
    return directory


def overlay_name(name: str) -> str:
    """File name of an image's overlay: its relative path with separators flattened, plus
    ``.png``, so every overlay maps back to exactly one input file.

    Examples:
        >>> overlay_name("patient1/view 2.dcm")
        'patient1__view 2.dcm.png'
    """
    return name.replace("\\", "/").strip("/").replace("/", "__") + ".png"


class EvaluationWriter(Callback):
    """Write test reports and prediction files to disk (see the module docstring for the files).

    Args:
        dirpath: output folder; default the Trainer's ``log_dir``.
        overlays: write one overlay PNG per predicted image.
        overlay_vmax: top of the overlays' colour scale; default each map's own maximum (the
            colour bar shows the values either way).

    Examples:
        >>> trainer = L.Trainer(callbacks=[EvaluationWriter()])  # doctest: +SKIP
        >>> trainer.test(model, datamodule=data)  # doctest: +SKIP
    """

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        overlays: bool = True,
        overlay_vmax: float | None = None,
    ) -> None:
        self.dirpath = dirpath
        self.overlays = overlays
        self.overlay_vmax = overlay_vmax
        self._rows: list[dict[str, Any]] = []

    def output_dir(self, trainer: L.Trainer, stage: str) -> Path:
        """Where ``stage``'s files go: ``<dirpath or trainer.log_dir>/<stage>``."""
        root = self.dirpath or trainer.log_dir or trainer.default_root_dir
        return Path(root) / stage

    def _suffix(self, trainer: L.Trainer) -> str:
        # Each process of a multi-device predict writes its own part of the table.
        return f"_rank{trainer.global_rank}" if trainer.world_size > 1 else ""

    @rank_zero_only
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        report = getattr(pl_module, "reports", {}).get("test")
        if report is None:
            return
        write_report(
            report,
            self.output_dir(trainer, "test"),
            checkpoint=str(trainer.ckpt_path) if trainer.ckpt_path else None,
            iteration=getattr(pl_module, "iteration", None),
            threshold_policy=getattr(pl_module, "threshold_policy", None),
        )

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []
        threshold = getattr(pl_module, "threshold", None)
        if isinstance(threshold, torch.Tensor) and bool(threshold.isnan()):
            rank_zero_warn(
                "the model has no threshold (it was never validated): predictions are -1; "
                "validate a checkpoint with labelled data to choose one"
            )
        directory = self.output_dir(trainer, "predict")
        (directory / "overlays" if self.overlays else directory).mkdir(parents=True, exist_ok=True)

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
        count = len(outputs["score"])
        names = outputs.get("name") or [str(int(i)) for i in outputs["index"]]
        paths = outputs.get("path") or [""] * count
        sizes = outputs.get("original_size") or [None] * count
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
                panel = comparison_panel(
                    outputs["image"][i],
                    outputs["restored"][i],
                    outputs["anomaly_map"][i],
                    size=tuple(sizes[i]) if sizes[i] is not None else None,
                    vmax=self.overlay_vmax,
                )
                overlay = directory / "overlays" / overlay_name(names[i])
                save_png(overlay, panel)
                row["overlay"] = str(overlay.relative_to(directory))
            self._rows.append(row)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        directory = self.output_dir(trainer, "predict")
        write_csv(directory / f"predictions{self._suffix(trainer)}.csv", self._rows)
