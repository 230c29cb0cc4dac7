"""The benchmark scripts run end to end at a tiny size (their numbers are not asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str) -> str:
    # A timeout turns a benchmark that never stops (e.g. an iteration counter that never
    # reaches max_iterations) into a failure instead of a hung test suite.
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_throughput_benchmark_compares_both_paths():
    out = run(
        "throughput.py",
        "--base-channels",
        "4",
        "--res-blocks",
        "1",
        "--batch-size",
        "4",
        "--iterations",
        "2",
        "--warmup",
        "1",
        "--num-images",
        "32",
        "--inference-images",
        "16",
        "--inference-batch-size",
        "8",
    )
    assert "(a) optimized" in out and "(b) released-like" in out
    assert "ratio (a)/(b):" in out and "machine: " in out
    # On the CPU the optimized path is also measured on PyTorch's kernels (the step before them).
    assert "(c) PyTorch kernels" in out and "ratio (a)/(c):" in out
    assert "inference (scores + maps" in out


def test_throughput_preset_threads_and_repeats():
    out = run(
        "throughput.py",
        "--preset",
        "nih_cpu",
        # Explicit flags override the preset's networks and batch.
        "--base-channels",
        "4",
        "--critic-base-channels",
        "4",
        "--res-blocks",
        "1",
        "--batch-size",
        "4",
        "--skip-released",
        "--repeats",
        "2",
        "--threads",
        "1",
        "--iterations",
        "1",
        "--warmup",
        "1",
        "--num-images",
        "32",
        "--inference-images",
        "8",
        "--inference-batch-size",
        "8",
    )
    assert "1 torch threads" in out and "load average at start" in out
    setting = next(line for line in out.splitlines() if line.startswith("setting:"))
    assert "preset nih_cpu, base width 4, critic width 4, 1 residual blocks, 64 px" in setting
    assert "batch 4" in setting and "2 repeat(s) of each path" in setting
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines() if line.startswith("(")}
    assert set(rows) == {"(a) optimized", "(c) PyTorch kernels"}
    # The range of the repeats: low-high.
    low, high = (float(v) for v in rows["(c) PyTorch kernels"][5].split("-"))
    assert 0 < low <= high
    assert "ratio (a)/(c):" in out and "(b)" not in out


@pytest.mark.parametrize("extra", [[], ["--generator-only", "--synthesizer", "perlin"]])
def test_quickstart_diagnosis_reports_removal_and_ceiling(extra):
    out = run("quickstart_diagnosis.py", "--iterations", "2", *extra)
    for line in ("test AUROC", "fraction of lesion brightness removed", "ceiling"):
        assert line in out


def test_quickstart_seeds_runs_the_command_line_with_each_variant(tmp_path):
    table = tmp_path / "quickstart.md"
    out = run(
        "quickstart_seeds.py",
        *("--iterations", "2", "--seeds", "0", "--threads", "1"),
        *("--variants", "quickstart", "paper_optimizers", "--output", str(table)),
    )
    assert "quickstart seed 0: test AUROC" in out and "paper_optimizers seed 0" in out
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| quickstart", "| paper_optimizers"]
    assert "1 torch threads" in table.read_text()


@pytest.mark.parametrize(
    "variant",
    [
        "paper_optimizers",
        "mean_score",
        "no_ema",
        "subtle_lesions",
        "critic_1x1",
        "sigma_2",
        "one_critic_step_batch_8",
    ],
)
def test_quickstart_variants_are_valid_settings(variant, tmp_path, capsys):
    sys.path.insert(0, str(BENCHMARKS))
    import quickstart_seeds
    import yaml

    from sagan_ad.cli import main

    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(quickstart_seeds.overlay(variant)))
    with pytest.raises(SystemExit) as info:
        quickstart = f"--config={quickstart_seeds.QUICKSTART}"
        main(["fit", quickstart, f"--config={overlay}", "--print_config"])
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)

    def contains(full, expected) -> bool:  # printed configs list every default as well
        if isinstance(expected, dict):
            return all(contains(full[key], value) for key, value in expected.items())
        return full == expected

    for part, settings in quickstart_seeds.VARIANTS[variant].items():
        assert contains(printed[part]["init_args"], settings)
    # A component's overrides merge into the quickstart's component (its width is kept).
    assert printed["model"]["init_args"]["critic"]["init_args"]["base_channels"] == 16


@pytest.mark.skipif(
    not (SHARED_DATA / "dicom" / "nema_wg04_RG1_UNCR_explicitLE.dcm").is_file()
    or not (SHARED_DATA / "nih-cxr14-pneumonia" / "images").is_dir(),
    reason="the real films of ../shared/data are absent",
)
def test_data_pipeline_parts_run_on_a_small_hospital_tree(tmp_path):
    """The tree generator, the hand-written loop, the first and second setup and the manifest
    check, in this process (the script runs each in its own; its numbers are not asserted)."""
    sys.path.insert(0, str(BENCHMARKS))
    import data_pipeline
    import hospital_tree
    import pydicom

    root = hospital_tree.build_tree(tmp_path / "tree", dicoms=6, pngs=4, patients=3)
    folder = root / "images"
    dicoms = sorted((folder / "dicom").iterdir())
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in dicoms]
    assert len({h.SOPInstanceUID for h in headers}) == 6
    assert sorted({h.PatientID for h in headers}) == ["PAT00000", "PAT00001", "PAT00002"]
    assert all((h.Rows, h.Columns) == (512, 512) for h in headers)
    assert len({p.read_bytes() for p in (folder / "png").iterdir()}) == 4
    assert hospital_tree.build_tree(root, dicoms=6, pngs=4, patients=3) == root  # kept
    assert data_pipeline.hand_written_loop(folder, 16) == 10
    assert data_pipeline.library_setup(folder, tmp_path / "cache", 16, 1) == 10
    assert data_pipeline.library_setup(folder, tmp_path / "cache", 16, 1) == 10
    assert data_pipeline.manifest_check(folder, tmp_path / "cache", 16)[0] == 10


def test_score_grid_chooses_on_validation_and_reproduces_the_test(tmp_path):
    import yaml
    from conftest import tiny_sagan, tiny_trainer, write_medad_tree

    from sagan_ad import Evaluator, MedADDataModule

    root = write_medad_tree(tmp_path / "medad")
    data_args = {
        "root": str(root),
        "image_size": 32,
        "batch_size": 4,
        "split": {"val_fraction": 0.25, "val_abnormal": 3},
    }
    model = tiny_sagan(max_iterations=4, evaluator=Evaluator(bootstrap_resamples=20))
    trainer = tiny_trainer(tmp_path, enable_checkpointing=False)
    data = MedADDataModule(**data_args)
    trainer.fit(model, data)
    trainer.test(model, data, verbose=False)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    trainer.save_checkpoint(run_dir / "checkpoints" / "best-iteration=4.ckpt")
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"data": {"init_args": data_args}}))

    printed = run(
        "score_grid.py", str(run_dir), "--residual-sigmas", "0", "1", "--borders", "0", "0.1"
    )
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "---" not in line]
    settings = [tuple(cell.strip() for cell in row.split("|")[1:3]) for row in rows[1:]]
    assert settings == [("0", "0"), ("0", "0.1"), ("1", "0"), ("1", "0.1")]
    # The model's own scorer (the paper's score) gives the test AUROC that trainer.test reported.
    test_auroc = float(rows[1].split("|")[5])
    assert test_auroc == pytest.approx(model.reports["test"].metrics["AUROC"], abs=1e-3)
    # The best mean validation AUROC chooses; a tie goes to the simplest setting.
    means = [float(row.split("|")[4].strip(" *")) for row in rows[1:]]
    chosen = settings[means.index(max(means))]
    line = next(line for line in printed.splitlines() if line.startswith("chosen on validation"))
    assert line.startswith(
        f"chosen on validation: residual_sigma {chosen[0]}, border {chosen[1]} ("
    )
    assert float(line.split("(")[1].rstrip(")")) == pytest.approx(max(means), abs=5e-4)
