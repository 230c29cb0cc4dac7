"""WGAN-GP and restoration losses of the SAGAN objective."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


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
