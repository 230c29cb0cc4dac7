"""The SAGAN LightningModule: WGAN-GP training of the restoring generator, scoring, metrics."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor
from torch.optim import Adam, Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

from sagan_ad import losses
from sagan_ad.critic import Critic
from sagan_ad.generator import Generator
from sagan_ad.layers import PositionEncoding
from sagan_ad.scoring import anomaly_map, map_to_score
from sagan_ad.synthesis import PatchBlendSynthesizer, Synthesizer

OptimizerFactory = Callable[[Iterable], Optimizer]
SchedulerFactory = Callable[[Optimizer], LRScheduler]

PAPER_LR = 5e-5
PAPER_BETAS = (0.5, 0.999)


def paper_adam(params: Iterable) -> Optimizer:
    """The paper's optimizer for both networks: ``Adam(lr=5e-5, betas=(0.5, 0.999))``."""
    return Adam(params, lr=PAPER_LR, betas=PAPER_BETAS)


class SAGAN(L.LightningModule):
    """SAGAN for semi-supervised anomaly detection (Zhang et al., MICCAI 2024).

    Training alternates a critic step every iteration with a generator step every ``n_critic``-th
    iteration (manual optimization). With ``x_n`` known normals, ``x_u`` unlabeled images and
    ``x~_n`` pseudo anomalies made from ``x_n`` by ``synthesizer``:

    - critic: ``-E[D(x_n)] + E[D(G(x_u))] + lambda_gp * GP``;
    - generator: ``-E[D(G(x_u))] + lambda_identity * mean|x_n - G(x_n)|``
      ``+ lambda_restoration * mean (x_n - G(x~_n))^2``.

    The score of an image is ``mean |x - G(x)| / 2``; the anomaly map is ``|x - G(x)| / 2``.

    One *iteration* is one critic step (and, every ``n_critic`` iterations, one generator step);
    `iteration` counts them and is saved in checkpoints, because Lightning's
    ``global_step`` counts the steps of both optimizers. Training stops after
    ``max_iterations``; leave the Trainer's ``max_steps`` at -1 and set ``max_epochs=-1`` (the
    training data are an endless stream). Validation runs every ``val_check_interval``
    iterations (set ``check_val_every_n_epoch=None`` on the Trainer). Metrics are logged to the
    Trainer's loggers with the iteration as step (logged as the metric ``"step"``).

    Subclass to change a part without copying the training step: override
    `synthesize`, `critic_loss`, `generator_loss` (or the single terms
    `identity_loss`, `restoration_loss`), `anomaly_map` or `score`.

    Args:
        in_channels: image channels (must match the data).
        image_size: image side (must match the data).
        base_channels: generator width (64 in the paper).
        num_res_blocks: generator bottleneck blocks (6).
        patch_grid: generator patches per side (2).
        position_encoding: ``"film"`` (default, position matters), ``"reference"`` (the released
            no-op codes) or ``"none"``.
        attention_gates: use the decoder attention gates.
        multi_level_fusion: fuse the three decoder levels before the head.
        residual_keep_prob: training-time keep probability of the generator residual (0.95).
        critic_base_channels: critic width (default: ``base_channels``).
        critic_downsamples: critic stride-2 stages (6; images must be at least ``2**6`` px).
        n_critic: critic steps per generator step (2).
        lambda_gp: gradient-penalty weight (10).
        lambda_identity: weight of the identity L1 on known normals (1).
        lambda_restoration: weight of the restoration MSE on pseudo anomalies (1).
        max_iterations: training length in iterations (100,000 in the paper).
        synthesizer: pseudo-anomaly synthesizer (default: SAGAN's patch blend).
        optimizer_g: factory of the generator optimizer (default `paper_adam`).
        optimizer_d: factory of the critic optimizer (default `paper_adam`).
        scheduler_g: optional factory of a generator LR scheduler, stepped per generator step.
        scheduler_d: optional factory of a critic LR scheduler, stepped per critic step.
        inference: ``"deterministic"`` (default) or ``"reference"``: the released code's random
            inference, which keeps the training-time residual mask on while scoring.
        seed: seed of the synthesizer and gradient-penalty random draws.

    Examples:
        >>> model = SAGAN(image_size=32, base_channels=8, num_res_blocks=1,
        ...               critic_downsamples=5, max_iterations=10)
        >>> model.score(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 64,
        base_channels: int = 64,
        num_res_blocks: int = 6,
        patch_grid: int = 2,
        position_encoding: PositionEncoding = "film",
        attention_gates: bool = True,
        multi_level_fusion: bool = True,
        residual_keep_prob: float = 0.95,
        critic_base_channels: int | None = None,
        critic_downsamples: int = 6,
        n_critic: int = 2,
        lambda_gp: float = 10.0,
        lambda_identity: float = 1.0,
        lambda_restoration: float = 1.0,
        max_iterations: int = 100_000,
        synthesizer: Synthesizer | None = None,
        optimizer_g: OptimizerFactory = paper_adam,
        optimizer_d: OptimizerFactory = paper_adam,
        scheduler_g: SchedulerFactory | None = None,
        scheduler_d: SchedulerFactory | None = None,
        inference: Literal["deterministic", "reference"] = "deterministic",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if n_critic < 1:
            raise ValueError(f"n_critic={n_critic}: must be >= 1")
        if max_iterations < 1:
            raise ValueError(f"max_iterations={max_iterations}: must be >= 1")
        if min(lambda_gp, lambda_identity, lambda_restoration) < 0:
            raise ValueError("lambda_gp, lambda_identity and lambda_restoration must be >= 0")
        if inference not in ("deterministic", "reference"):
            raise ValueError(f"inference={inference!r}: choose 'deterministic' or 'reference'")
        if image_size < 2**critic_downsamples:
            raise ValueError(
                f"image_size={image_size} is smaller than the critic's 2**critic_downsamples = "
                f"{2**critic_downsamples}: lower critic_downsamples"
            )
        self.save_hyperparameters(
            ignore=["synthesizer", "optimizer_g", "optimizer_d", "scheduler_g", "scheduler_d"]
        )
        self.automatic_optimization = False
        self.generator = Generator(
            in_channels=in_channels,
            image_size=image_size,
            base_channels=base_channels,
            num_res_blocks=num_res_blocks,
            patch_grid=patch_grid,
            position_encoding=position_encoding,
            attention_gates=attention_gates,
            multi_level_fusion=multi_level_fusion,
            residual_keep_prob=residual_keep_prob,
        )
        self.critic = Critic(
            in_channels=in_channels,
            base_channels=critic_base_channels or base_channels,
            num_downsamples=critic_downsamples,
        )
        self.synthesizer = synthesizer or PatchBlendSynthesizer()
        self.optimizer_g = optimizer_g
        self.optimizer_d = optimizer_d
        self.scheduler_g = scheduler_g
        self.scheduler_d = scheduler_d
        self.n_critic = n_critic
        self.lambda_gp = lambda_gp
        self.lambda_identity = lambda_identity
        self.lambda_restoration = lambda_restoration
        self.max_iterations = max_iterations
        self.inference = inference
        self.seed = seed
        self.iteration = 0
        self._rng: torch.Generator | None = None
        self._rng_state: tuple[str, Tensor] | None = None
        self._generator_logs: dict[str, Tensor] = {}
        self.val_auroc, self.val_ap = BinaryAUROC(), BinaryAveragePrecision()
        self.test_auroc, self.test_ap = BinaryAUROC(), BinaryAveragePrecision()

    # ----------------------------------------------------------------------------- inference
    def restore(self, images: Tensor) -> Tensor:
        """``G(images)``: the normal-looking restoration, deterministic unless ``inference`` is
        ``"reference"``."""
        return self.generator(images, residual_mask=self.inference == "reference")

    def anomaly_map(self, images: Tensor) -> Tensor:
        """Per-pixel anomaly map ``|x - G(x)| / 2`` in ``[0, 1]``, shape ``(B, 1, H, W)``.

        Examples:
            >>> model = SAGAN(image_size=32, base_channels=4, critic_downsamples=5)
            >>> model.anomaly_map(torch.zeros(1, 1, 32, 32)).shape
            torch.Size([1, 1, 32, 32])
        """
        return anomaly_map(images, self.restore(images))

    def score(self, images: Tensor) -> Tensor:
        """Image anomaly score in ``[0, 1]``, shape ``(B,)``; higher means more abnormal."""
        return map_to_score(self.anomaly_map(images))

    def forward(self, images: Tensor) -> Tensor:
        """Anomaly scores of ``images`` (``(B, C, H, W)`` in ``[-1, 1]``)."""
        return self.score(images)

    # ----------------------------------------------------------------------------- losses
    @property
    def rng(self) -> torch.Generator:
        """Generator of the training-time random draws (pseudo anomalies, GP interpolation)."""
        if self._rng is None or self._rng.device != self.device:
            self._rng = torch.Generator(device=self.device).manual_seed(self.seed)
            if self._rng_state is not None and self._rng_state[0] == self.device.type:
                self._rng.set_state(self._rng_state[1])
            self._rng_state = None
        return self._rng

    def synthesize(self, normal: Tensor) -> tuple[Tensor, Tensor]:
        """Pseudo anomalies of a batch of known normals: ``(corrupted, masks)``."""
        return self.synthesizer(normal, self.rng)

    def gradient_penalty(self, real: Tensor, fake: Tensor) -> Tensor:
        """WGAN-GP penalty of the critic between ``real`` and ``fake`` (fp32)."""
        return losses.gradient_penalty(self.critic, real, fake, self.rng)

    def critic_loss(self, normal: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """Critic objective; returns the terms and their weighted sum under ``"loss"``."""
        # The critic has no normalisation, so one pass over both batches is exact.
        real_scores, fake_scores = self.critic(torch.cat([normal, fake])).split(
            [normal.shape[0], fake.shape[0]]
        )
        wasserstein = losses.critic_wasserstein_loss(real_scores, fake_scores)
        penalty = self.gradient_penalty(normal, fake)
        return {
            "loss": wasserstein + self.lambda_gp * penalty,
            "wasserstein": wasserstein,
            "gradient_penalty": penalty,
        }

    def identity_loss(self, normal: Tensor, restored_normal: Tensor) -> Tensor:
        """Known normals must pass through unchanged (L1)."""
        return losses.identity_loss(normal, restored_normal)

    def restoration_loss(self, normal: Tensor, restored_corrupted: Tensor, masks: Tensor) -> Tensor:
        """Pseudo anomalies must be restored to the clean image (MSE; ``masks`` unused here)."""
        return losses.restoration_loss(normal, restored_corrupted)

    def generator_loss(
        self,
        fake: Tensor,
        normal: Tensor,
        restored_normal: Tensor,
        restored_corrupted: Tensor,
        masks: Tensor,
    ) -> dict[str, Tensor]:
        """Generator objective; returns the terms and their weighted sum under ``"loss"``."""
        adversarial = losses.generator_adversarial_loss(self.critic(fake))
        identity = self.identity_loss(normal, restored_normal)
        restoration = self.restoration_loss(normal, restored_corrupted, masks)
        return {
            "loss": adversarial
            + self.lambda_identity * identity
            + self.lambda_restoration * restoration,
            "adversarial": adversarial,
            "identity": identity,
            "restoration": restoration,
        }

    # ----------------------------------------------------------------------------- training
    def configure_optimizers(self) -> list[dict[str, Any]]:
        configs = []
        for factory, scheduler, params in (
            (self.optimizer_g, self.scheduler_g, self.generator.parameters()),
            (self.optimizer_d, self.scheduler_d, self.critic.parameters()),
        ):
            optimizer = factory(params)
            config: dict[str, Any] = {"optimizer": optimizer}
            if scheduler is not None:
                config["lr_scheduler"] = {"scheduler": scheduler(optimizer), "interval": "step"}
            configs.append(config)
        return configs

    def _step_scheduler(self, index: int) -> None:
        factories = (self.scheduler_g, self.scheduler_d)
        if factories[index] is None:
            return
        schedulers = self.lr_schedulers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        # Schedulers are listed in optimizer order, skipping optimizers without one.
        schedulers[sum(f is not None for f in factories[:index])].step()

    def is_generator_iteration(self) -> bool:
        """Whether the current iteration also updates the generator (every ``n_critic``-th)."""
        return (self.iteration + 1) % self.n_critic == 0

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        normal, unlabeled = batch["normal"], batch["unlabeled"]
        opt_g, opt_d = self.optimizers()
        update_g = self.is_generator_iteration()

        if update_g:
            # One generator pass over all inputs: instance norm keeps samples independent, and
            # the generator is unchanged by the critic step, so G(x_u) is reused for both losses.
            corrupted, masks = self.synthesize(normal)
            b = normal.shape[0]
            restored = self.generator(torch.cat([unlabeled, normal, corrupted]))
            fake, restored_normal, restored_corrupted = restored.split([unlabeled.shape[0], b, b])
        else:
            with torch.no_grad():
                fake = self.generator(unlabeled)

        self.critic.requires_grad_(True)
        critic_terms = self.critic_loss(normal, fake.detach())
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(critic_terms["loss"])
        opt_d.step()
        self._step_scheduler(1)
        logs = {f"train/critic/{k}": v.detach() for k, v in critic_terms.items()}

        if update_g:
            # The critic's weights are not trained by this loss: skip their gradients.
            self.critic.requires_grad_(False)
            generator_terms = self.generator_loss(
                fake, normal, restored_normal, restored_corrupted, masks
            )
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(generator_terms["loss"])
            opt_g.step()
            self._step_scheduler(0)
            self.critic.requires_grad_(True)
            logs.update({f"train/generator/{k}": v.detach() for k, v in generator_terms.items()})
        self._log_training(logs)

    def _log_training(self, logs: dict[str, Tensor]) -> None:
        if "train/generator/loss" in logs:
            self._generator_logs = {k: v for k, v in logs.items() if "/generator/" in k}
        # Lightning converts logged tensors to numbers (a device sync) only every
        # `log_every_n_steps` iterations; a metric named "step" sets the loggers' x-axis.
        self.log_dict({**logs, **self._generator_logs}, on_step=True, on_epoch=False)
        self.log("step", float(self.iteration), on_step=True, on_epoch=False)
        bar = {"loss_d": logs["train/critic/loss"]}
        if self._generator_logs:
            bar["loss_g"] = self._generator_logs["train/generator/loss"]
        self.log_dict(bar, prog_bar=True, logger=False, on_step=True, on_epoch=False)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        if self.iteration >= self.max_iterations:
            self.trainer.should_stop = True
            return -1
        return None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.iteration += 1
        if self.iteration >= self.max_iterations:
            self.trainer.should_stop = True

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        for name in ("image_size", "in_channels"):
            theirs = getattr(datamodule, name, None)
            ours = self.hparams[name]
            if theirs is not None and theirs != ours:
                raise ValueError(
                    f"model.{name}={ours} but data.{name}={theirs}: set both to the same value"
                )
        if self.trainer.max_steps != -1:
            warnings.warn(
                f"Trainer(max_steps={self.trainer.max_steps}) counts the steps of both optimizers;"
                f" SAGAN stops after max_iterations={self.max_iterations} iterations, set that "
                "instead",
                stacklevel=1,
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["sagan_iteration"] = self.iteration
        checkpoint["sagan_rng_state"] = (self.rng.device.type, self.rng.get_state())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.iteration = int(checkpoint.get("sagan_iteration", 0))
        # Restored lazily by `rng`, once the module is on its device; a state saved on another
        # device type cannot be transplanted and the seed is used instead.
        self._rng, self._rng_state = None, checkpoint.get("sagan_rng_state")

    # ----------------------------------------------------------------------------- evaluation
    def _evaluate(self, batch: dict[str, Tensor], auroc: BinaryAUROC, ap: BinaryAveragePrecision):
        scores = self.score(batch["image"])
        labels = batch["label"]
        if (labels < 0).any():
            raise ValueError("evaluation batches need labels 0 (normal) or 1 (abnormal)")
        auroc.update(scores.float(), labels)
        ap.update(scores.float(), labels)
        return scores

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, self.val_auroc, self.val_ap)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, self.test_auroc, self.test_ap)

    def _finish_evaluation(self, stage: str, auroc: BinaryAUROC, ap: BinaryAveragePrecision):
        metrics = {f"{stage}/AUROC": auroc.compute(), f"{stage}/AP": ap.compute()}
        auroc.reset()
        ap.reset()
        self.log_dict(metrics, prog_bar=True)
        self.log_dict({"iteration": float(self.iteration), "step": float(self.iteration)})

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val", self.val_auroc, self.val_ap)

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test", self.test_auroc, self.test_ap)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        maps = self.anomaly_map(batch["image"])
        out = {"score": map_to_score(maps), "anomaly_map": maps}
        out.update({k: v for k, v in batch.items() if k in ("label", "index", "name")})
        return out
