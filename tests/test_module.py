"""The SAGAN LightningModule: objective, alternation, iteration counter, scoring, subclassing."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import tiny_networks, tiny_trainer

from sagan_ad import (
    SAGAN,
    Critic,
    Evaluator,
    MedADDataModule,
    SAGANLoss,
    Scorer,
    best_and_last_checkpoints,
)
from sagan_ad.training.losses import gradient_penalty


def datamodule(root, **kwargs) -> MedADDataModule:
    return MedADDataModule(
        root, image_size=32, batch_size=4, split={"val_fraction": 0.25}, **kwargs
    )


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


def test_critic_steps_every_iteration_generator_every_n_critic(medad_root, tmp_path):
    L.seed_everything(0)
    model = SAGAN(**tiny_networks(), max_iterations=1, n_critic=2)
    g0, d0 = flat(model.generator), flat(model.critic)
    t = tiny_trainer(tmp_path, enable_checkpointing=False, limit_val_batches=0)
    t.fit(model, datamodule(medad_root))
    assert model.iteration == 1
    assert torch.equal(flat(model.generator), g0)
    d1 = flat(model.critic)
    assert not torch.equal(d1, d0)

    model.max_iterations = 2
    t = tiny_trainer(tmp_path, enable_checkpointing=False, limit_val_batches=0)
    t.fit(model, datamodule(medad_root))
    assert model.iteration == 2
    assert not torch.equal(flat(model.generator), g0)
    # Lightning's global_step counts both optimizers' steps; the iteration counter does not.
    assert t.global_step == 2


def test_fit_validates_tests_and_checkpoints_the_iteration(medad_root, tmp_path):
    L.seed_everything(0)
    model = SAGAN(**tiny_networks(), max_iterations=4)
    dm = datamodule(medad_root)
    t = tiny_trainer(tmp_path, callbacks=best_and_last_checkpoints())
    t.fit(model, dm)
    assert model.iteration == 4
    assert 0.0 <= float(t.callback_metrics["val/AUROC"]) <= 1.0
    checkpoint = torch.load(t.checkpoint_callback.best_model_path, weights_only=False)
    assert checkpoint["sagan_iteration"] in (2, 4)
    results = t.test(model, dm, verbose=False)[0]
    assert set(results) >= {"test/AUROC", "test/AP"}

    restored = SAGAN.load_from_checkpoint(t.checkpoint_callbacks[1].best_model_path)
    assert restored.iteration == 4
    images = dm.test.images[:4].float() / 127.5 - 1
    restored.eval()
    model.eval()
    assert torch.allclose(restored.score(images), model.score(images))


def test_losses_follow_the_paper_formulas():
    torch.manual_seed(0)
    model = SAGAN(**tiny_networks())
    normal = torch.rand(4, 1, 32, 32) * 2 - 1
    fake = torch.rand(4, 1, 32, 32) * 2 - 1
    terms = model.critic_loss(normal, fake)
    expected_w = model.critic(fake).mean() - model.critic(normal).mean()
    assert torch.allclose(terms["wasserstein"], expected_w, atol=1e-6)
    assert torch.allclose(terms["loss"], terms["wasserstein"] + 10 * terms["gradient_penalty"])

    restored_n = torch.rand(4, 1, 32, 32) * 2 - 1
    restored_c = torch.rand(4, 1, 32, 32) * 2 - 1
    masks = torch.zeros(4, 1, 32, 32, dtype=torch.bool)
    g = model.generator_loss(fake, normal, restored_n, restored_c, masks)
    assert torch.allclose(g["adversarial"], -model.critic(fake).mean(), atol=1e-6)
    assert torch.allclose(g["identity"], (normal - restored_n).abs().mean())
    assert torch.allclose(g["restoration"], ((normal - restored_c) ** 2).mean())
    assert torch.allclose(g["loss"], g["adversarial"] + g["identity"] + g["restoration"])


def test_gradient_penalty_is_fp32_under_bf16_autocast():
    model = SAGAN(**tiny_networks())
    real = torch.rand(4, 1, 32, 32) * 2 - 1
    fake = torch.rand(4, 1, 32, 32) * 2 - 1
    reference = gradient_penalty(model.critic, real, fake, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = gradient_penalty(
            model.critic, real.bfloat16(), fake.bfloat16(), torch.Generator().manual_seed(0)
        )
    assert mixed.dtype == torch.float32
    # Inputs were rounded to bf16; the penalty itself is computed in fp32.
    assert torch.allclose(mixed, reference, rtol=0.05)


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic():
    class Linear(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1).sum(1) / x[0].numel() ** 0.5

    x = torch.randn(3, 1, 8, 8)
    assert gradient_penalty(Linear(), x, -x).item() == pytest.approx(0.0, abs=1e-10)


def test_score_and_map_are_deterministic_and_bounded():
    model = SAGAN(**tiny_networks())  # left in train mode on purpose
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    maps = model.anomaly_map(x)
    assert maps.shape == (3, 1, 32, 32)
    assert maps.min() >= 0 and maps.max() <= 1
    assert torch.equal(model.anomaly_map(x), maps)
    assert torch.allclose(model.score(x), maps.mean(dim=(1, 2, 3)))
    assert torch.equal(model(x), model.score(x))
    reference = SAGAN(**tiny_networks(), scorer=Scorer(inference="reference"))
    reference.load_state_dict(model.state_dict())
    assert not torch.equal(reference.anomaly_map(x), reference.anomaly_map(x))


def test_top_fraction_score_averages_the_largest_map_values():
    torch.manual_seed(0)
    model = SAGAN(**tiny_networks(), scorer=Scorer(map_sigma=1.0, top_fraction=0.05)).eval()
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    maps = model.anomaly_map(x).flatten(1)
    k = 52  # ceil(0.05 * 1024)
    expected = maps.sort(dim=1, descending=True).values[:, :k].mean(1)
    assert torch.allclose(model.score(x), expected)
    assert torch.allclose(model.infer(x)["score"], expected)
    # The top of a map can only exceed its mean, and the one-pass and two-pass paths agree.
    assert (model.score(x) > maps.mean(1)).all()
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="top_fraction"):
            SAGAN(**tiny_networks(), scorer=Scorer(top_fraction=bad))


def test_bf16_mixed_precision_trains(medad_root, tmp_path):
    L.seed_everything(0)
    model = SAGAN(**tiny_networks(), max_iterations=2)
    t = tiny_trainer(
        tmp_path, precision="bf16-mixed", enable_checkpointing=False, limit_val_batches=0
    )
    t.fit(model, datamodule(medad_root))
    assert model.iteration == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_subclass_overrides_a_loss_without_copying_the_step(medad_root, tmp_path):
    class Weighted(SAGAN):
        calls = 0

        def restoration_loss(self, normal, restored_corrupted, masks):
            type(self).calls += 1
            weight = 1 + 4 * masks.float()
            return (weight * (normal - restored_corrupted) ** 2).mean()

    model = Weighted(**tiny_networks(), max_iterations=4)
    tiny_trainer(tmp_path, enable_checkpointing=False, limit_val_batches=0).fit(
        model, datamodule(medad_root)
    )
    assert Weighted.calls == 2  # once per generator step


def test_model_and_data_sizes_must_agree(medad_root, tmp_path):
    model = SAGAN(**tiny_networks())
    dm = MedADDataModule(medad_root, image_size=64, batch_size=4)
    with pytest.raises(ValueError, match="model.generator.image_size=32 but data.image_size=64"):
        tiny_trainer(tmp_path).fit(model, dm)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (lambda: {"n_critic": 0}, "n_critic"),
        (lambda: {"max_iterations": 0}, "max_iterations"),
        (lambda: {"generator_ema": 1.0}, "generator_ema"),
        (lambda: {"scorer": Scorer(inference="random")}, "inference"),
        (lambda: {"critic": Critic(num_downsamples=6)}, "num_downsamples"),
        (lambda: {"critic": Critic(in_channels=3)}, "critic in_channels=3"),
        (lambda: {"loss": SAGANLoss(lambda_gp=-1.0)}, "lambda_gp"),
        (lambda: {"evaluator": Evaluator(threshold_policy="best")}, "threshold_policy"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        SAGAN(**{**tiny_networks(), **settings()})


def test_generator_weight_average_follows_the_trained_generator(medad_root, tmp_path):
    L.seed_everything(0)
    model = SAGAN(**tiny_networks(), max_iterations=6, generator_ema=0.9)
    assert model.generator_ema is not None and model.inference_generator is model.generator_ema
    assert not any(p.requires_grad for p in model.generator_ema.parameters())
    averaged, trained = [flat(model.generator)], [flat(model.generator)]
    steps = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            if module.iteration % module.n_critic == 0:  # a generator step just ran
                averaged.append(flat(module.generator_ema))
                trained.append(flat(module.generator))
                steps.append(module.iteration // module.n_critic)

    tiny_trainer(tmp_path, callbacks=[Record()], enable_checkpointing=False).fit(
        model, datamodule(medad_root)
    )
    assert steps == [1, 2, 3]
    # After k generator steps: average <- average + (1 - d) (trained - average), with the
    # warm-up decay d = min(0.9, (1 + k) / (10 + k)).
    for k in steps:
        decay = min(0.9, (1 + k) / (10 + k))
        expected = averaged[k - 1] + (1 - decay) * (trained[k] - averaged[k - 1])
        assert torch.allclose(averaged[k], expected, atol=1e-6)
        assert not torch.equal(averaged[k], trained[k])
    # Scoring and export use the average; the trained weights stay what they are.
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    model.eval()
    with torch.no_grad():
        restored = model.infer(x, with_restored=True)["restored"]
        assert torch.equal(restored, model.generator_ema(x))
        assert not torch.equal(restored, model.generator(x))


def test_generator_weight_average_is_checkpointed_and_optional(tmp_path):
    model = SAGAN(**tiny_networks(), generator_ema=0.99)
    assert any(k.startswith("generator_ema.") for k in model.state_dict())
    plain = SAGAN(**tiny_networks())
    assert plain.generator_ema is None and plain.inference_generator is plain.generator
    assert not any(k.startswith("generator_ema.") for k in plain.state_dict())
    with pytest.raises(ValueError, match="generator_ema=1.0"):
        SAGAN(**tiny_networks(), generator_ema=1.0)
