"""The CPU kernels compute the networks' functions: the same outputs and gradients as PyTorch's
operators, the same parameters, and the layouts that make them fast."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_networks
from torch import nn

import sagan_ad.networks.cpu_kernels as cpu_kernels
import sagan_ad.networks.generator as generator_module
from sagan_ad import SAGAN, paper_adam
from sagan_ad.networks.cpu_kernels import (
    InstanceNorm2d,
    SingleWindowConv2d,
    instance_norm,
    pytorch_kernels,
    to_channels_last,
    uses_cpu_kernels,
)


def _kernels(monkeypatch: pytest.MonkeyPatch, rule) -> None:
    """Decide for every network where the CPU kernels run (the generator imports the rule)."""
    monkeypatch.setattr(cpu_kernels, "uses_cpu_kernels", rule)
    monkeypatch.setattr(generator_module, "uses_cpu_kernels", rule)


def _kernels_in_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    _kernels(monkeypatch, lambda x: x.device.type == "cpu" and x.is_floating_point())


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_matches_pytorch_in_values_gradients_and_layout(channels_last, affine):
    torch.manual_seed(0)
    # An offset and a spread per channel, so that the centring matters.
    x = torch.randn(3, 5, 6, 7, dtype=torch.float64) * torch.rand(1, 5, 1, 1) * 3 + 2
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(5, dtype=torch.float64) if affine else None
    bias = torch.randn(5, dtype=torch.float64) if affine else None
    dy = torch.randn(3, 5, 6, 7, dtype=torch.float64)

    def run(norm):
        inputs = [t.clone().requires_grad_(True) for t in (x, weight, bias) if t is not None]
        y = norm(*inputs) if affine else norm(inputs[0])
        grads = torch.autograd.grad(y, inputs, dy)
        return y, grads

    ours, our_grads = run(lambda x, w=None, b=None: instance_norm(x, w, b, 1e-5))
    theirs, their_grads = run(lambda x, w=None, b=None: F.instance_norm(x, weight=w, bias=b))
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    for mine, reference in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-9, atol=1e-9)
    assert ours.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert ours.is_contiguous() != channels_last


def test_instance_norm_module_keeps_the_parameters_of_pytorchs_and_falls_back_off_the_cpu_path():
    ours, theirs = InstanceNorm2d(6, affine=True), nn.InstanceNorm2d(6, affine=True)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 5, 5).contiguous(memory_format=torch.channels_last)
    # float32 on the CPU takes the kernel (the layout is kept), bfloat16 PyTorch's module.
    assert uses_cpu_kernels(x) and ours(x).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    half = x.bfloat16()
    assert not uses_cpu_kernels(half)
    torch.testing.assert_close(ours.bfloat16()(half), theirs.bfloat16()(half))
    # A 3-D (unbatched) input is PyTorch's case too.
    torch.testing.assert_close(ours.float()(x[0]), theirs.float()(x[0]))


def test_to_channels_last_gives_channels_last_strides_for_one_channel_too():
    for channels in (1, 3):
        x = torch.randn(2, channels, 4, 5)
        y = to_channels_last(x)
        assert torch.equal(x, y)
        assert y.stride() == (20 * channels, 1, 5 * channels, channels)
    # One channel: a view of the same memory, no copy.
    x = torch.randn(2, 1, 4, 5)
    assert to_channels_last(x).data_ptr() == x.data_ptr()


@pytest.mark.parametrize(
    ("conv", "size", "window"),
    [
        ((16, 32, 4, 2, 1), (2, 2), True),  # the critic's last 4x4 stride-2 layer at 64 px
        ((32, 1, 3, 1, 1), (1, 1), True),  # the critic's head
        ((3, 5, 5, 3, 2), (3, 2), True),  # asymmetric padding of the window
        ((2, 3, (4, 3), (2, 1), (1, 0)), (2, 3), True),
        ((16, 32, 4, 2, 1), (4, 4), False),  # 2x2 outputs: PyTorch's convolution
    ],
)
def test_single_window_convolution_equals_the_convolution_with_double_backward(
    monkeypatch, conv, size, window
):
    _kernels_in_float64(monkeypatch)
    torch.manual_seed(0)
    ours = SingleWindowConv2d(*conv).double()
    x = torch.randn(4, conv[0], *size, dtype=torch.float64, requires_grad=True)
    assert (ours._window_padding(x) is not None) == window

    def penalty_and_grads(forward):
        y = forward(x)
        (dx,) = torch.autograd.grad((y * y).sum(), x, create_graph=True)
        penalty = (dx * dx).sum() + y.sum()
        return [y, *torch.autograd.grad(penalty, [x, ours.weight, ours.bias])]

    mine = penalty_and_grads(ours)
    reference = penalty_and_grads(lambda t: ours._conv_forward(t, ours.weight, ours.bias))
    for a, b in zip(mine, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert ours.state_dict().keys() == nn.Conv2d(*conv).state_dict().keys()


def _outputs_and_gradients(model: SAGAN, images: torch.Tensor, fake: torch.Tensor):
    """The generator's restorations and the critic's scores and gradient penalty (the terms of
    the training step), with the gradients of both networks' parameters."""
    generator, critic = model.generator.train(), model.critic
    model.zero_grad()
    restored = generator(images, residual_mask=False)
    weights = torch.linspace(-1, 1, restored.numel(), dtype=restored.dtype).view_as(restored)
    (restored * weights).sum().backward()
    scores = critic(torch.cat([images, fake]))
    eps = torch.linspace(0.1, 0.9, len(images), dtype=images.dtype)[:, None, None, None]
    between = (eps * images + (1 - eps) * fake).requires_grad_(True)
    (slope,) = torch.autograd.grad(critic(between).sum(), between, create_graph=True)
    penalty = ((slope.flatten(1).norm(dim=1) - 1) ** 2).mean()
    (scores.mean() + 10 * penalty).backward()
    outputs = torch.cat([restored.flatten(), scores, penalty.reshape(1)]).detach()
    return outputs, {name: p.grad.clone() for name, p in model.named_parameters()}


def _tiny_model_and_batches(dtype: torch.dtype):
    torch.manual_seed(0)
    model = SAGAN(**tiny_networks(), max_iterations=10).to(dtype)
    images = (torch.rand(3, 1, 32, 32) * 2 - 1).to(dtype)
    fake = (torch.rand(3, 1, 32, 32) * 2 - 1).to(dtype)
    return model, images, fake


def test_networks_with_cpu_kernels_compute_the_plain_functions_exactly_in_float64(monkeypatch):
    model, images, fake = _tiny_model_and_batches(torch.float64)
    # float64 runs PyTorch's operators unless the kernels are let in.
    expected, expected_grads = _outputs_and_gradients(model, images, fake)
    _kernels_in_float64(monkeypatch)
    got, grads = _outputs_and_gradients(model, images, fake)

    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert grads.keys() == expected_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=1e-8, atol=1e-10)


def test_networks_with_cpu_kernels_are_as_accurate_in_float32_as_the_plain_networks():
    """Against the float64 networks, the float32 kernels err as little as PyTorch's own float32
    kernels (the instance norms of the 2x2 bottleneck amplify the rounding of both)."""
    model, images, fake = _tiny_model_and_batches(torch.float32)
    fast, fast_grads = _outputs_and_gradients(model, images, fake)
    with pytorch_kernels():
        plain, plain_grads = _outputs_and_gradients(model, images, fake)
    exact, exact_grads = _outputs_and_gradients(
        copy.deepcopy(model).double(), images.double(), fake.double()
    )

    def errors(outputs, grads):
        worst_grad = max(
            _relative_error(grads[name].double(), exact_grads[name])
            for name in exact_grads
            if exact_grads[name].norm() > 1e-3
        )
        return (outputs.double() - exact).abs().max().item(), worst_grad

    (fast_out, fast_grad), (plain_out, plain_grad) = (
        errors(fast, fast_grads),
        errors(plain, plain_grads),
    )
    assert fast_out < 3 * plain_out + 1e-6 and fast_out < 1e-3
    assert fast_grad < 3 * plain_grad + 1e-6 and fast_grad < 1e-2
    torch.testing.assert_close(fast, plain, rtol=1e-3, atol=1e-3)


def test_cpu_generator_runs_channels_last_and_the_critic_its_window_products():
    """The fast path is taken: every 4-D activation of the generator is channels-last (the
    one-channel input included), and the critic's deepest convolution and head run as matrix
    products."""
    torch.manual_seed(0)
    model = SAGAN(**tiny_networks(), max_iterations=10)
    layouts: list[tuple[str, bool]] = []
    stem = []
    model.generator.stem[0].register_forward_hook(lambda m, i, o: stem.append(o))
    for name, module in model.generator.named_modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | InstanceNorm2d):
            module.register_forward_hook(
                lambda m, i, o, name=name: layouts.append(
                    (
                        name,
                        i[0].shape[1] == 1 or i[0].is_contiguous(memory_format=torch.channels_last),
                    )
                )
            )
    model.generator(torch.rand(2, 1, 32, 32) * 2 - 1)
    assert layouts and [name for name, channels_last in layouts if not channels_last] == []
    assert stem[0].is_contiguous(memory_format=torch.channels_last) and not stem[0].is_contiguous()
    windows = []
    for name, module in model.critic.named_modules():
        if isinstance(module, SingleWindowConv2d):
            module.register_forward_pre_hook(
                lambda m, i, name=name: windows.append((name, m._window_padding(i[0]) is not None))
            )
    model.critic(torch.rand(2, 1, 32, 32))
    # 32 px and 5 stride-2 stages: the fifth convolution sees 2x2, the head 1x1.
    assert [name for name, used in windows if used] == ["features.8", "head"]


def test_paper_adam_is_fused_on_the_cpu_and_takes_the_same_steps():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1))
    twin = copy.deepcopy(net)
    fused = paper_adam(net.parameters())
    plain = torch.optim.Adam(twin.parameters(), lr=5e-5, betas=(0.5, 0.999))
    assert fused.defaults["fused"] is True and plain.defaults["fused"] is None
    x = torch.randn(8, 5)
    for _ in range(5):
        for model, optimizer in ((net, fused), (twin, plain)):
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # Parameter groups keep Adam's default implementation.
    groups = paper_adam([{"params": list(twin.parameters())}])
    assert groups.defaults["fused"] is None
