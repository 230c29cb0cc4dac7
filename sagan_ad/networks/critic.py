"""The SAGAN critic: a StarGAN-style convolutional Wasserstein critic."""

from __future__ import annotations

from torch import Tensor, nn

from sagan_ad.errors import InputError
from sagan_ad.networks.cpu_kernels import SingleWindowConv2d


class Critic(nn.Module):
    """WGAN critic of the paper: stride-2 4x4 convs with LeakyReLU, then a 3x3 conv.

    Channels double from ``base_channels`` at every one of ``num_downsamples`` stages; there is no
    normalisation (a gradient penalty and batch-coupling norms do not mix). For an image of side
    ``S`` the last conv sees a ``S / 2**num_downsamples`` map; the per-image critic value is its
    mean (one value at 64 px with 6 stages, as in the paper).

    Args:
        in_channels: image channels.
        base_channels: width of the first stage (64 in the paper).
        num_downsamples: stride-2 stages (6 in the paper); images must be at least
            ``2 ** num_downsamples`` pixels wide.

    Examples:
        >>> import torch
        >>> critic = Critic(base_channels=4, num_downsamples=5)
        >>> critic(torch.randn(3, 1, 32, 32)).shape
        torch.Size([3])
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 64, num_downsamples: int = 6):
        super().__init__()
        if in_channels < 1 or base_channels < 1 or num_downsamples < 1:
            raise InputError(
                f"Critic(in_channels={in_channels}, base_channels={base_channels}, "
                f"num_downsamples={num_downsamples}): all must be positive"
            )
        # Kept under their own names, so a SAGAN can record the critic (see Generator).
        self.in_channels = in_channels
        self.base_channels = base_channels
        self.num_downsamples = num_downsamples
        layers: list[nn.Module] = []
        channels_in, channels_out = in_channels, base_channels
        for _ in range(num_downsamples):
            # The deepest convolutions see maps that fit in one kernel window (see
            # sagan_ad.networks.cpu_kernels): a matrix product on the CPU.
            layers += [SingleWindowConv2d(channels_in, channels_out, 4, 2, 1), nn.LeakyReLU(0.01)]
            channels_in, channels_out = channels_out, channels_out * 2
        self.features = nn.Sequential(*layers)
        self.head = SingleWindowConv2d(channels_in, 1, 3, 1, 1, bias=False)

    def forward(self, images: Tensor) -> Tensor:
        """Critic value per image, shape ``(B,)``; higher means "looks like a known normal"."""
        min_side = 2**self.num_downsamples
        if (
            images.ndim != 4
            or images.shape[1] != self.in_channels
            or min(images.shape[-2:]) < min_side
        ):
            raise InputError(
                f"Critic expects (B, {self.in_channels}, H, W) with H, W >= {min_side} "
                f"(2 ** num_downsamples), got {tuple(images.shape)}"
            )
        return self.head(self.features(images)).mean(dim=(1, 2, 3))


def check_critic_fits(critic: Critic, generator: nn.Module) -> None:
    """The critic must take the generator's images: the same channels, and at least one pixel
    left after its downsampling.

    Examples:
        >>> from sagan_ad.networks.generator import Generator
        >>> check_critic_fits(Critic(num_downsamples=6), Generator(image_size=32, base_channels=4))
        Traceback (most recent call last):
        ...
        sagan_ad.errors.InputError: generator image_size=32 is smaller than the critic's ...
    """
    channels, size = generator.in_channels, generator.image_size
    if critic.in_channels != channels:
        raise InputError(
            f"critic in_channels={critic.in_channels} but generator in_channels={channels}: "
            "set both to the image channels"
        )
    if size < 2**critic.num_downsamples:
        raise InputError(
            f"generator image_size={size} is smaller than the critic's 2**num_downsamples = "
            f"{2**critic.num_downsamples}: lower the critic's num_downsamples"
        )
