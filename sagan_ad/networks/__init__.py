"""The plain torch networks of SAGAN: the restoring generator, the critic and their layers.

Nothing here knows about Lightning; `sagan_ad.SAGAN` takes these as its ``generator`` and
``critic``.
"""

from sagan_ad.networks.cpu_kernels import pytorch_kernels, uses_cpu_kernels
from sagan_ad.networks.critic import Critic
from sagan_ad.networks.generator import Generator
from sagan_ad.networks.layers import PositionEncoding

__all__ = ["Critic", "Generator", "PositionEncoding", "pytorch_kernels", "uses_cpu_kernels"]
