"""Multi-process training: DDP on 2 CPU processes (gloo) trains and validates consistently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import tiny_networks
from ddp_fit import data

from sagan_ad import SAGAN, Evaluator

TESTS = Path(__file__).resolve().parent


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is missing")
def test_plain_ddp_on_two_cpu_processes_trains_and_matches_single_process_validation(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]),
        "OMP_NUM_THREADS": "1",
    }
    # strategy="ddp", not "ddp_find_unused_parameters_true": SAGAN.setup configures DDP for the
    # alternating steps itself.
    result = subprocess.run(
        [sys.executable, str(TESTS / "ddp_fit.py"), str(tmp_path), "ddp"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((tmp_path / "metrics.json").read_text())
    assert run["iteration"] == 4
    assert run["ranks_agree"], "DDP ranks ended with different weights"

    # The same weights validated in one process: DistributedSampler's split (and any padding)
    # must not change the metrics.
    model = SAGAN(**tiny_networks(), evaluator=Evaluator(bootstrap_resamples=0), max_iterations=4)
    model.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    single = trainer.validate(model, data(), verbose=False)[0]
    for name in ("val/AUROC", "val/AP", "val/num_normal", "val/num_abnormal", "val/threshold"):
        assert run["metrics"][name] == pytest.approx(single[name], abs=1e-6), name
