"""The throughput benchmark's compute figures: the analytic FLOPs of one training iteration
(convolutions and linear layers) and the device's dense bf16 peak (see throughput.py)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sagan_ad import SAGAN

# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from NVIDIA's data sheets; matched
# against torch.cuda.get_device_name in order, so the PCIe H100 comes before the generic one.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200", 989.0),
    ("H100", 989.0),
    ("A100", 312.0),
)


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    """The device's dense bf16 peak: ``given``, else from `PEAK_BF16_TFLOPS`, else unknown."""
    if given is not None:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def forward_flops(module: nn.Module, images: Tensor) -> float:
    """FLOPs (2 per multiply-add) of the convolutions and linear layers in one forward."""
    total = 0.0

    def count(layer: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            per_output = layer.in_channels // layer.groups * layer.kernel_size[0]
            per_output *= layer.kernel_size[1]
            total += 2.0 * output.numel() * per_output
        elif isinstance(layer, nn.ConvTranspose2d):
            per_input = layer.out_channels // layer.groups * layer.kernel_size[0]
            per_input *= layer.kernel_size[1]
            total += 2.0 * inputs[0].numel() * per_input
        elif isinstance(layer, nn.Linear):
            total += 2.0 * output.numel() * layer.in_features

    hooks = [m.register_forward_hook(count) for m in module.modules()]
    try:
        with torch.no_grad():
            module(images)
    finally:
        for hook in hooks:
            hook.remove()
    return total


def iteration_flops(model: SAGAN, batch_size: int) -> float:
    """Analytic FLOPs of one training iteration, averaged over a cycle of ``n_critic``.

    Counting a forward as 1 and a backward as 2 (input and weight gradients): the critic step
    runs the critic forward and backward on ``2B`` images (3 units) and the gradient penalty on
    ``B`` (forward 1, input gradient 1, backward through both 4: 6 units); every iteration but
    the generator's runs the generator forward on ``B`` (no graph). The generator iteration runs
    the generator forward and backward on ``3B`` (3 units) and the critic forward and input
    gradient on ``B`` (2 units; the critic's weights take no gradient there).
    """
    size, channels = model.generator.image_size, model.generator.in_channels
    one = torch.zeros(1, channels, size, size)
    model.eval()
    generator, critic = forward_flops(model.generator, one), forward_flops(model.critic, one)
    model.train()
    b, n = batch_size, model.n_critic
    critic_step = 3 * critic * 2 * b + 6 * critic * b
    plain = generator * b + critic_step
    with_generator = 3 * generator * 3 * b + critic_step + 2 * critic * b
    return ((n - 1) * plain + with_generator) / n


def percent_of_peak(flops: float, its: float, peak: float | None) -> str:
    """``flops * its`` as a percentage of ``peak`` TFLOP/s (``"unknown"`` without a peak)."""
    return "unknown" if peak is None else f"{100 * flops * its / peak / 1e12:.2f}%"
