"""The benchmark scripts run end to end at a tiny size (their numbers are not asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "inference (scores + maps" in out


@pytest.mark.parametrize("extra", [[], ["--generator-only", "--synthesizer", "perlin"]])
def test_quickstart_diagnosis_reports_removal_and_ceiling(extra):
    out = run("quickstart_diagnosis.py", "--iterations", "2", *extra)
    for line in ("test AUROC", "fraction of lesion brightness removed", "ceiling"):
        assert line in out
