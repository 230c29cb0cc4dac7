"""WGAN-GP and restoration losses of the SAGAN objective, and the objective as a component."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from sagan_ad.errors import InputError


def critic_wasserstein_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Critic's Wasserstein term ``-E[D(real)] + E[D(fake)]`` (to be minimised).

    Examples:
        >>> critic_wasserstein_loss(torch.tensor([2.0]), torch.tensor([1.0])).item()
        -1.0
    """
    return fake_scores.mean() - real_scores.mean()


def generator_adversarial_loss(fake_scores: Tensor) -> Tensor:
    """Generator's adversarial term ``-E[D(G(x_u))]``.

    Examples:
        >>> generator_adversarial_loss(torch.tensor([0.5, 1.5])).item()
        -1.0
    """
    return -fake_scores.mean()


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP penalty ``E[(||grad D(x_hat)||_2 - 1)^2]`` at random interpolates, computed in fp32.

    ``x_hat = e * real + (1 - e) * fake`` with one ``e ~ U(0, 1)`` per sample. The critic runs with
    autocast disabled: the penalty differentiates through a gradient, where half precision
    underflows, so ``bf16-mixed`` and ``16-mixed`` training stay correct.

    Args:
        critic: maps ``(B, C, H, W)`` to ``(B,)``.
        real: known-normal images.
        fake: generator outputs (gradients do not flow into the generator).
        generator: random source for ``e``.

    Examples:
        >>> from sagan_ad.networks.critic import Critic
        >>> critic = Critic(base_channels=2, num_downsamples=5)
        >>> x = torch.randn(2, 1, 32, 32)
        >>> gradient_penalty(critic, x, x).ndim
        0
    """
    b = real.shape[0]
    eps = torch.rand(b, 1, 1, 1, generator=generator, device=real.device, dtype=torch.float32)
    x_hat = (eps * real.float() + (1 - eps) * fake.detach().float()).requires_grad_(True)
    with torch.autocast(device_type=real.device.type, enabled=False):
        out = critic(x_hat)
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
        return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def identity_loss(normal: Tensor, restored_normal: Tensor) -> Tensor:
    """Mean absolute error ``mean |x_n - G(x_n)|``: normals must pass through unchanged.

    Examples:
        >>> identity_loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)).item()
        1.0
    """
    return (normal - restored_normal).abs().mean()


def restoration_loss(normal: Tensor, restored_corrupted: Tensor) -> Tensor:
    """Mean squared error ``mean (x_n - G(x~_n))^2``: pseudo anomalies must be restored.

    Examples:
        >>> restoration_loss(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)).item()
        4.0
    """
    return (normal - restored_corrupted).pow(2).mean()


class SAGANLoss(nn.Module):
    """The SAGAN objective: its terms and their weights, as a component of `sagan_ad.SAGAN`.

    - critic: ``-E[D(x_n)] + E[D(G(x_u))] + lambda_gp * GP``;
    - generator: ``-E[D(G(x_u))] + lambda_identity * mean|x_n - G(x_n)|``
      ``+ lambda_restoration * mean (x_n - G(x~_n))^2``.

    Subclass it and override `identity` or `restoration` (which also gets the masks of the
    pixels the synthesizer changed) to change a term without touching the training step; give
    the subclass as the model's ``loss`` (YAML: ``loss: {class_path: my_module.MyLoss}``).

    Args:
        lambda_gp: gradient-penalty weight (10).
        lambda_identity: weight of the identity L1 on known normals (1).
        lambda_restoration: weight of the restoration MSE on pseudo anomalies (1).

    Examples:
        >>> loss = SAGANLoss(lambda_gp=10.0)
        >>> terms = loss.critic(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor(0.5))
        >>> terms["loss"].item(), sorted(terms)
        (4.0, ['gradient_penalty', 'loss', 'wasserstein'])
    """

    def __init__(
        self, lambda_gp: float = 10.0, lambda_identity: float = 1.0, lambda_restoration: float = 1.0
    ) -> None:
        super().__init__()
        if min(lambda_gp, lambda_identity, lambda_restoration) < 0:
            raise InputError(
                f"loss weights lambda_gp={lambda_gp}, lambda_identity={lambda_identity} and "
                f"lambda_restoration={lambda_restoration} must be >= 0"
            )
        self.lambda_gp = lambda_gp
        self.lambda_identity = lambda_identity
        self.lambda_restoration = lambda_restoration

    def critic(
        self, real_scores: Tensor, fake_scores: Tensor, penalty: Tensor
    ) -> dict[str, Tensor]:
        """The critic's terms and their weighted sum under ``"loss"``."""
        wasserstein = critic_wasserstein_loss(real_scores, fake_scores)
        return {
            "loss": wasserstein + self.lambda_gp * penalty,
            "wasserstein": wasserstein,
            "gradient_penalty": penalty,
        }

    def generator(
        self, fake_scores: Tensor, identity: Tensor, restoration: Tensor
    ) -> dict[str, Tensor]:
        """The generator's terms and their weighted sum under ``"loss"``."""
        adversarial = generator_adversarial_loss(fake_scores)
        return {
            "loss": adversarial
            + self.lambda_identity * identity
            + self.lambda_restoration * restoration,
            "adversarial": adversarial,
            "identity": identity,
            "restoration": restoration,
        }

    def identity(self, normal: Tensor, restored_normal: Tensor) -> Tensor:
        """Known normals must pass through unchanged (`identity_loss`, L1)."""
        return identity_loss(normal, restored_normal)

    def restoration(self, normal: Tensor, restored_corrupted: Tensor, masks: Tensor) -> Tensor:
        """Pseudo anomalies must be restored to the clean image (`restoration_loss`, MSE;
        ``masks``, where the synthesizer changed pixels, is unused here)."""
        return restoration_loss(normal, restored_corrupted)

    def extra_repr(self) -> str:
        return (
            f"lambda_gp={self.lambda_gp}, lambda_identity={self.lambda_identity}, "
            f"lambda_restoration={self.lambda_restoration}"
        )
