"""Where the quickstart's time goes, measured against the 90 s it is asked to fit in.

Usage (from the project root; about a minute):

    python benchmarks/quickstart_budget.py
    python benchmarks/quickstart_budget.py --layers      # also each convolution of the generator

It builds the networks of ``examples/quickstart.yaml`` (read from the file, so the numbers follow
the config) and times, on this machine, the parts of one training iteration in isolation:

- a generator iteration (every ``n_critic``-th): one generator forward and backward over the
  unlabeled, known-normal and pseudo-anomalous batches together, and one critic step;
- a critic iteration: one generator forward without gradients, and one critic step (the critic on
  both batches and the gradient penalty, forward and backward).

It then prints the training time those parts add up to for the config's ``max_iterations``, the
time the whole budget leaves for imports, set-up, validation and the test, and, with
``--layers``, each convolution's forward and backward (input gradient included except for the
first layer's, as in training), largest first. These are lower bounds on the fit: the Trainer's
own work per iteration, logging and validation come on top.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from harness import describe
from torch import nn

from sagan_ad import Critic, Generator
from sagan_ad.training.losses import gradient_penalty

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml"


def median_ms(step: Callable[[], None], repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``step`` in milliseconds."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def quickstart_networks() -> tuple[Generator, Critic, dict]:
    """The generator and critic ``examples/quickstart.yaml`` trains, and its settings."""
    config = yaml.safe_load(CONFIG.read_text())
    model = config["model"]["init_args"]
    generator = Generator(**model["generator"]["init_args"])
    critic = Critic(**model["critic"]["init_args"])
    return generator, critic, config


def conv_layers(generator: Generator, images: torch.Tensor, repeats: int) -> list[tuple]:
    """Each convolution of ``generator``: (ms forward + backward, name, input shape)."""
    inputs: dict[str, torch.Tensor] = {}

    def keep_input(name: str) -> Callable[..., None]:
        # A forward hook that returns a value would replace the layer's output.
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            inputs.setdefault(name, args[0].detach())

        return hook

    hooks = [
        module.register_forward_hook(keep_input(name))
        for name, module in generator.named_modules()
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d)
    ]
    with torch.no_grad():
        generator(images)
    for hook in hooks:
        hook.remove()
    modules = dict(generator.named_modules())
    rows = []
    for name, x in inputs.items():
        # The first layer sees the images, which need no gradient in training.
        x = x.clone().requires_grad_(name != "stem.0")
        layer = modules[name]

        def step(layer: nn.Module = layer, x: torch.Tensor = x) -> None:
            layer(x).sum().backward()

        rows.append((median_ms(step, repeats), name, tuple(x.shape)))
    return sorted(rows, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--budget", type=float, default=90.0, help="seconds for the whole run")
    parser.add_argument("--layers", action="store_true", help="time each convolution too")
    args = parser.parse_args()

    torch.manual_seed(0)
    generator, critic, config = quickstart_networks()
    model = config["model"]["init_args"]
    data = config["data"]["init_args"]
    batch, size = data["batch_size"], data["image_size"]
    iterations, n_critic = model["max_iterations"], model.get("n_critic", 2)
    images = torch.rand(3 * batch, 1, size, size) * 2 - 1
    normal, fake = images[:batch], images[batch : 2 * batch]

    def critic_step() -> None:
        scores = critic(torch.cat([normal, fake]))
        penalty = gradient_penalty(critic, normal, fake)
        (scores[batch:].mean() - scores[:batch].mean() + 10 * penalty).backward()

    def generator_pass() -> None:
        generator(images).mean().backward()

    def generator_without_gradients() -> None:
        with torch.no_grad():
            generator(images[:batch])

    parts = {
        "generator forward + backward (3 batches)": median_ms(generator_pass, args.repeats),
        "critic step (both batches + penalty)": median_ms(critic_step, args.repeats),
        "generator forward, no gradients (1 batch)": median_ms(
            generator_without_gradients, args.repeats
        ),
    }
    g_pass, c_step, g_plain = parts.values()
    generator_iterations = iterations // n_critic
    training = (generator_iterations * (g_pass + c_step)) / 1000
    training += ((iterations - generator_iterations) * (g_plain + c_step)) / 1000

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {describe()}")
    print(f"load average {load} (other work on the machine inflates every number)")
    print(f"{CONFIG.name}: {iterations} iterations, n_critic {n_critic}, batch {batch}, {size} px")
    for name, ms in parts.items():
        print(f"{name:45s} {ms:8.1f} ms")
    print(f"{'training, these parts alone':45s} {training:8.1f} s")
    print(f"{'left of the ' + str(int(args.budget)) + ' s budget for the rest':45s} ", end="")
    print(f"{args.budget - training:8.1f} s")
    if args.layers:
        rows = conv_layers(generator, images, max(5, args.repeats // 3))
        total = sum(row[0] for row in rows)
        print(f"\ngenerator convolutions, forward + backward ({total:.1f} ms in all):")
        for ms, name, shape in rows:
            print(f"  {ms:7.2f} ms  {name:24s} input {shape}")


if __name__ == "__main__":
    main()
