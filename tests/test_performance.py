"""Performance options: device-resident data, channels_last, torch.compile, bf16 numerics."""

from __future__ import annotations

import sys

import lightning as L
import pytest
import torch
from conftest import tiny_networks

from sagan_ad import SAGAN, Generator, Performance, SyntheticCXRDataModule
from sagan_ad.data import DeviceTrainingStream, TrainingStream
from sagan_ad.training.run_state import TrainingRandomness


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        **kwargs,
    )


def _data(**kwargs) -> SyntheticCXRDataModule:
    return SyntheticCXRDataModule(
        num_known_normal=10,
        num_test=0,
        image_size=32,
        batch_size=4,
        split={"val_fraction": 0.0},
        **kwargs,
    )


def _model(performance: Performance | None = None, **generator_args) -> SAGAN:
    torch.manual_seed(0)  # the same initial weights and residual masks in every run
    return SAGAN(**tiny_networks(**generator_args), max_iterations=2, performance=performance)


def _train(model: SAGAN, data: SyntheticCXRDataModule) -> dict[str, float]:
    trainer = _trainer()
    trainer.fit(model, datamodule=data)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}


def test_device_stream_yields_the_batches_of_the_host_stream() -> None:
    # 5 images and batches of 4: batches straddle the reshuffles between passes.
    normal = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1)
    unlabeled = torch.arange(100, 107, dtype=torch.uint8).view(7, 1, 1, 1)
    host = TrainingStream(normal, unlabeled, batch_size=4, seed=3).batches(rank=1)
    device = DeviceTrainingStream(normal, unlabeled, batch_size=4, seed=3).batches(rank=1)
    for _ in range(9):
        ours, theirs = next(device), next(host)
        assert torch.equal(ours["normal"], theirs["normal"])
        assert torch.equal(ours["unlabeled"], theirs["unlabeled"])


def test_data_on_device_trains_like_host_data() -> None:
    data = _data(data_on_device=True)
    data.setup()
    assert isinstance(data.train_dataloader().dataset, DeviceTrainingStream)
    host = _train(_model(), _data())
    on_device = _train(_model(), _data(data_on_device=True))
    assert host and on_device == pytest.approx(host)


def test_data_on_device_refuses_workers() -> None:
    with pytest.raises(ValueError, match="num_workers=0"):
        _data(data_on_device=True, num_workers=1)


def test_channels_last_trains_like_the_default_layout() -> None:
    model = _model(Performance(channels_last=True))
    weight = model.generator.stem[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert _train(model, _data()) == pytest.approx(_train(_model(), _data()), rel=1e-4, abs=1e-6)


def test_compiled_model_trains_like_eager() -> None:
    # The residual mask would draw different random numbers in compiled code: keep it off.
    # The "aot_eager" backend traces and differentiates exactly as the default inductor does but
    # skips code generation: inductor took 5 minutes on this test's 2-core CPU machine.
    options = {"backend": "aot_eager"}
    eager_model = _model(residual_keep_prob=1.0)
    eager = _train(eager_model, _data())
    compiled_model = _model(
        Performance(compile=True, compile_options=options), residual_keep_prob=1.0
    )
    compiled = _train(compiled_model, _data())
    # Same parameter names as eager, so checkpoints are interchangeable.
    assert list(compiled_model.state_dict()) == list(eager_model.state_dict())
    assert set(compiled) == set(eager) and len(eager) == 7
    assert compiled == pytest.approx(eager, rel=1e-3, abs=1e-5)


def _one_iteration(model: SAGAN, normal: torch.Tensor, unlabeled: torch.Tensor, bf16: bool):
    """A generator iteration's losses and both networks' gradients, as `training_step` does."""
    model.randomness = TrainingRandomness(model.seed)  # the same draws in both runs
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        corrupted, masks = model.synthesize(normal)
        b = normal.shape[0]
        fake, restored_normal, restored_corrupted = model.generator(
            torch.cat([unlabeled, normal, corrupted])
        ).split([b, b, b])
        critic = model.critic_loss(normal, fake.detach())
        critic_grads = torch.autograd.grad(critic["loss"], list(model.critic.parameters()))
        generator = model.generator_loss(fake, normal, restored_normal, restored_corrupted, masks)
        generator_grads = torch.autograd.grad(generator["loss"], list(model.generator.parameters()))
    losses = {f"critic/{k}": float(v.detach()) for k, v in critic.items()}
    losses.update({f"generator/{k}": float(v.detach()) for k, v in generator.items()})
    flat = [
        torch.cat([g.float().flatten() for g in grads]) for grads in (critic_grads, generator_grads)
    ]
    return losses, flat


def test_bf16_autocast_iteration_matches_fp32() -> None:
    """One iteration under bf16 autocast against fp32 on CPU.

    Tolerances: losses within 1% (0.001 absolute for the near-zero Wasserstein terms of an
    untrained critic); gradient directions (cosine similarity) at least 0.99 for the critic,
    whose penalty runs in fp32, and 0.9 for the generator, whose gradients pass through
    instance norms over few pixels where bf16's 8-bit mantissa shows. A 64 px input keeps the
    bottleneck's maps 4x4 as in the paper (at 32 px they are 2x2 and the comparison is noise).
    """
    torch.manual_seed(0)
    model = SAGAN(
        generator=Generator(
            image_size=64, base_channels=8, num_res_blocks=1, residual_keep_prob=1.0
        )
    )
    normal, unlabeled = torch.rand(2, 4, 1, 64, 64) * 2 - 1
    fp32_losses, fp32_grads = _one_iteration(model, normal, unlabeled, bf16=False)
    bf16_losses, bf16_grads = _one_iteration(model, normal, unlabeled, bf16=True)
    assert bf16_losses == pytest.approx(fp32_losses, rel=1e-2, abs=1e-3)
    cosine = [
        float(torch.cosine_similarity(a, b, dim=0))
        for a, b in zip(fp32_grads, bf16_grads, strict=True)
    ]
    assert cosine[0] >= 0.99 and cosine[1] >= 0.9, cosine


class CountsHostReads(SAGAN):
    """Counts tensor reads on the host (the operations that sync with a GPU) per training step."""

    def training_step(self, batch, batch_idx):
        reads = 0
        originals = {name: getattr(torch.Tensor, name) for name in _HOST_READS}

        def counting(name):
            def read(*args, **kwargs):
                nonlocal reads
                # torch.optim keeps Adam's step counter on the host (unless capturable or
                # fused), so its reads never wait for the device.
                if "torch/optim/" not in sys._getframe(1).f_code.co_filename.replace("\\", "/"):
                    reads += 1
                return originals[name](*args, **kwargs)

            return read

        for name in _HOST_READS:
            setattr(torch.Tensor, name, counting(name))
        try:
            super().training_step(batch, batch_idx)
        finally:
            for name, original in originals.items():
                setattr(torch.Tensor, name, original)
        self.reads_per_step.append(reads)


_HOST_READS = ("__bool__", "__int__", "__float__", "item", "tolist", "numpy")


@pytest.mark.parametrize(
    ("interval", "expected"), [(1, [1, 2, 1, 2, 1, 2]), (3, [0, 0, 2, 0, 0, 2])]
)
def test_training_step_reads_the_host_only_at_divergence_checks(interval, expected) -> None:
    torch.manual_seed(0)
    model = CountsHostReads(
        **tiny_networks(),
        performance=Performance(divergence_check_interval=interval),
        max_iterations=6,
    )
    model.reads_per_step = []
    _trainer().fit(model, datamodule=_data(data_on_device=True))
    # Interval 1: one read per optimizer step (critic every iteration, generator every 2nd).
    # Interval 3: none in the step except one read per network at each scheduled check.
    assert model.reads_per_step == expected
