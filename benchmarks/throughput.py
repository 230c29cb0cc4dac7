"""Training and inference throughput of SAGAN: our optimized path against the released code's.

Usage (from the project root):

    python benchmarks/throughput.py                       # CPU: narrow network, a few minutes
    python benchmarks/throughput.py --preset nih_cpu --skip-released --repeats 3
                                                          # CPU: examples/nih_cpu.yaml's step
    python benchmarks/throughput.py --device cuda --base-channels 64 --image-size 64 \\
        --batch-size 32 --iterations 300                  # the issue's GPU targets
    python benchmarks/throughput.py --device cuda --scale-batch --scale-image

Both paths train the same `sagan_ad.SAGAN` through a Lightning Trainer on data from the real
`sagan_ad.SyntheticCXRDataModule`:

- (a) optimized: ``bf16-mixed`` on GPU (fp32 on CPU), training images resident on the device
  (``data_on_device``), pseudo anomalies synthesized there in batches, no host-device syncs in
  the step, ``channels_last`` on GPU, ``torch.compile`` with ``--compile``.
- (b) released-like: fp32, eager, training pairs built by a one-worker ``DataLoader`` whose
  ``__getitem__`` synthesizes one pseudo anomaly at a time on the CPU, and separate generator
  forwards for the unlabeled, normal and corrupted images.
- (c) PyTorch kernels, on CPU only: path (a) with PyTorch's own operators for the networks
  (`sagan_ad.networks.cpu_kernels.pytorch_kernels`) and Adam's default implementation, that is the
  CPU
  training step before the CPU kernels; ``--skip-pytorch-kernels`` leaves it out.

``--repeats N`` runs the paths N times in turn (a, c, b, a, c, b, ...) and reports the median
iterations/s of each with the range, so that a shared machine's drift hits every path alike.
``--preset nih_cpu`` sets the networks, batch and image size of ``examples/nih_cpu.yaml`` on the
CPU; ``--threads`` sets torch's intra-op threads.

It prints iterations/s and images/s (known normals + unlabeled images per second) of both, their
ratio, the analytic FLOPs of one iteration (convolutions only; see `iteration_flops`), the
fraction of the device's peak bf16 throughput, peak GPU memory, host-device synchronizations
per timed iteration (CUDA only, counted with ``torch.cuda.set_sync_debug_mode``), optional
scaling with batch size and image size, batched inference images/s (scores + maps), and the
machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import adam, describe, training_only_trainer
from throughput_flops import iteration_flops, peak_tflops, percent_of_peak
from throughput_released import ReleasedLikeData, ReleasedLikeSAGAN

from sagan_ad import SAGAN, Critic, Generator, Performance, SyntheticCXRDataModule
from sagan_ad.data.modules.datasets import to_model_range
from sagan_ad.networks.cpu_kernels import pytorch_kernels


def machine(device: torch.device) -> str:
    """The CPU, or the GPU, and the software versions, in one line."""
    return describe(torch.cuda.get_device_name(device) if device.type == "cuda" else None)


class Timer(L.Callback):
    """Wall time of the iterations after ``warmup`` (synchronizing the device at both ends).

    On CUDA it also turns on ``torch.cuda.set_sync_debug_mode("warn")`` for the timed
    iterations, so that every host-device synchronization there issues a warning to count.
    """

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.batches = 0
        self.start: float | None = None
        self.seconds = 0.0

    @staticmethod
    def _now(module: L.LightningModule) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        self.batches += 1
        if self.batches == self.warmup:
            self.start = self._now(module)
            if module.device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")

    def on_train_end(self, trainer: L.Trainer, module: Any) -> None:
        if module.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
        self.seconds = self._now(module) - self.start


# Settings of the shipped configs, applied as defaults that explicit flags override.
PRESETS: dict[str, dict[str, Any]] = {
    "nih_cpu": {
        "device": "cpu",
        "base_channels": 8,
        "res_blocks": 2,
        "critic_base_channels": 16,
        "image_size": 64,
        "batch_size": 16,
    },
}


def model_options(args: argparse.Namespace, image_size: int) -> dict[str, Any]:
    """The networks and training length of every model of the benchmark, as `SAGAN` takes them."""
    return {
        "generator": Generator(
            image_size=image_size, base_channels=args.base_channels, num_res_blocks=args.res_blocks
        ),
        "critic": Critic(base_channels=args.critic_base_channels),
        "max_iterations": args.warmup + args.iterations,
    }


def train_throughput(
    args: argparse.Namespace,
    optimized: bool,
    batch_size: int,
    image_size: int,
    cpu_kernels: bool = True,
) -> dict[str, float]:
    """Iterations/s, images/s and peak memory of one path at one batch and image size.

    ``cpu_kernels=False`` runs the optimized path on PyTorch's own operators with Adam's
    default implementation (path (c)).
    """
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    data_options = {
        "num_known_normal": args.num_images,
        "num_test": 0,
        "image_size": image_size,
        "batch_size": batch_size,
        "split": {"val_fraction": 0.0},
    }
    torch.manual_seed(0)
    if optimized:
        data = SyntheticCXRDataModule(**data_options, data_on_device=True)
        optimizers = {} if cpu_kernels else {"optimizer_g": adam(5e-5), "optimizer_d": adam(5e-5)}
        performance = Performance(
            channels_last=cuda if args.channels_last is None else args.channels_last,
            compile=args.compile,
            divergence_check_interval=50,
        )
        model = SAGAN(**model_options(args, image_size), performance=performance, **optimizers)
        precision = "bf16-mixed" if cuda else "32-true"
    else:
        data = ReleasedLikeData(**data_options)
        # The divergence guard reads the device once, after the last iteration: a check every
        # step would add a host-device sync per step that the released code did not have.
        performance = Performance(divergence_check_interval=args.warmup + args.iterations)
        model = ReleasedLikeSAGAN(**model_options(args, image_size), performance=performance)
        precision = "32-true"
    timer = Timer(args.warmup)
    trainer = training_only_trainer(
        device.type, precision=precision, log_every_n_steps=50, callbacks=[timer]
    )
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = optimized
        torch.backends.cudnn.allow_tf32 = optimized
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cpu_kernels:
            trainer.fit(model, datamodule=data)
        else:
            with pytorch_kernels():
                trainer.fit(model, datamodule=data)
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    its = args.iterations / timer.seconds
    return {
        "syncs/it": syncs / args.iterations if cuda else float("nan"),
        "it/s": its,
        "img/s": its * 2 * batch_size,
        "peak GiB": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan"),
        "precision": precision,
    }


def inference_throughput(args: argparse.Namespace) -> float:
    """Images/s of batched scoring with anomaly maps (`SAGAN.infer`) on the device."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    performance = Performance(channels_last=cuda, compile=args.compile)
    model = SAGAN(**model_options(args, args.image_size), performance=performance)
    model = model.to(device).eval()
    data = SyntheticCXRDataModule(
        num_known_normal=2,
        num_test=args.inference_batch_size,
        image_size=args.image_size,
        split={"val_fraction": 0.0},
    )
    data.setup()
    images = to_model_range(data.test.images.to(device))
    if cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    batches = max(1, args.inference_images // args.inference_batch_size)
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda),
    ):
        for _ in range(3):
            model.infer(images)
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(batches):
            out = model.infer(images)
        out["score"].sum().item()  # waits for the device: the timing covers all batches
        seconds = time.perf_counter() - start
    return batches * len(images) / seconds


def load_average() -> str:
    """The machine's load averages, which say how shared the measured cores were."""
    try:
        return ", ".join(f"{load:.2f}" for load in os.getloadavg())
    except OSError:
        return "unknown"


def measure_paths(
    args: argparse.Namespace, paths: list[tuple[str, dict[str, Any]]]
) -> list[tuple[str, dict[str, Any]]]:
    """Train every path ``args.repeats`` times in turn; each row has the median it/s (and
    img/s), the range over the repeats and the last repeat's other figures."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in paths}
    for _ in range(args.repeats):
        for name, options in paths:
            runs[name].append(
                train_throughput(
                    args, batch_size=args.batch_size, image_size=args.image_size, **options
                )
            )
    rows = []
    for name, results in runs.items():
        its = [result["it/s"] for result in results]
        median = statistics.median(its)
        rows.append(
            (
                name,
                {
                    **results[-1],
                    "it/s": median,
                    "img/s": median * 2 * args.batch_size,
                    "range": f"{min(its):.2f}-{max(its):.2f}",
                },
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="settings of a shipped config")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--base-channels", type=int, help="network width (64 GPU / 8 CPU)")
    parser.add_argument(
        "--critic-base-channels", type=int, help="critic width (default: the network width)"
    )
    parser.add_argument("--res-blocks", type=int, default=6, help="generator bottleneck blocks")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iterations", type=int, help="timed iterations (300 GPU / 20 CPU)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations first")
    parser.add_argument(
        "--num-images", type=int, default=1000, help="known normals (unlabeled too)"
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each path, in turn")
    parser.add_argument("--compile", action="store_true", help="torch.compile both networks")
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last in the optimized path (default: on GPU only)",
    )
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak")
    parser.add_argument("--skip-released", action="store_true", help="leave out (b)")
    parser.add_argument("--skip-pytorch-kernels", action="store_true", help="leave out (c)")
    parser.add_argument("--scale-batch", action="store_true", help="(a) at batch 32..256")
    parser.add_argument("--scale-image", action="store_true", help="(a) at 64, 128, 256 px")
    parser.add_argument("--inference-images", type=int, help="images scored (20480 GPU / 512 CPU)")
    parser.add_argument("--inference-batch-size", type=int, default=512)
    preset = parser.parse_known_args()[0].preset
    if preset is not None:
        parser.set_defaults(**PRESETS[preset])
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: give at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cuda = torch.device(args.device).type == "cuda"
    args.base_channels = args.base_channels or (64 if cuda else 8)
    args.critic_base_channels = args.critic_base_channels or args.base_channels
    args.iterations = args.iterations or (300 if cuda else 20)
    args.inference_images = args.inference_images or (20480 if cuda else 512)
    device = torch.device(args.device)
    peak = peak_tflops(device, args.peak_tflops)

    print(f"machine: {machine(device)}")
    print(f"load average at start (1, 5, 15 min): {load_average()}")
    print(
        f"setting: {'preset ' + preset + ', ' if preset else ''}base width "
        f"{args.base_channels}, critic width {args.critic_base_channels}, {args.res_blocks} "
        f"residual blocks, {args.image_size} px, batch {args.batch_size}, {args.iterations} timed "
        f"iterations after {args.warmup}, {args.num_images} known normals, {args.repeats} "
        f"repeat(s) of each path; compile={args.compile}"
    )
    flops = iteration_flops(SAGAN(**model_options(args, args.image_size)), args.batch_size)
    print(f"analytic FLOPs per iteration: {flops / 1e12:.4f} TFLOP (convolutions, n_critic 2)")
    known = "unknown (give --peak-tflops)" if peak is None else f"{peak:g} TFLOP/s"
    print(f"peak bf16 throughput: {known}")

    paths: list[tuple[str, dict[str, Any]]] = [("(a) optimized", {"optimized": True})]
    if not args.skip_released:
        paths.append(("(b) released-like", {"optimized": False}))
    if not cuda and not args.skip_pytorch_kernels:
        paths.append(("(c) PyTorch kernels", {"optimized": True, "cpu_kernels": False}))
    rows = measure_paths(args, paths)
    print(
        f"\n{'path':<22}{'precision':>10}{'it/s':>10}{'range':>13}{'img/s':>10}{'% peak':>12}"
        f"{'peak GiB':>10}{'syncs/it':>10}"
    )
    for name, row in rows:
        print(
            f"{name:<22}{row['precision']:>10}{row['it/s']:>10.2f}{row['range']:>13}"
            f"{row['img/s']:>10.0f}{percent_of_peak(flops, row['it/s'], peak):>12}"
            f"{row['peak GiB']:>10.2f}{row['syncs/it']:>10.2f}"
        )
    ours = rows[0][1]
    for name, row in rows[1:]:
        print(f"ratio (a)/{name.split()[0]}: {ours['it/s'] / row['it/s']:.2f}x")
    print(f"load average at end (1, 5, 15 min): {load_average()}")

    scaling = [(b, args.image_size) for b in (32, 64, 128, 256)] if args.scale_batch else []
    scaling += [(args.batch_size, s) for s in (64, 128, 256)] if args.scale_image else []
    if scaling:
        print("\nscaling of (a)")
        print(f"{'batch':>6}{'px':>6}{'it/s':>10}{'img/s':>10}{'% peak':>12}{'peak GiB':>10}")
    for batch_size, size in scaling:
        row = train_throughput(args, True, batch_size, size)
        step_flops = iteration_flops(SAGAN(**model_options(args, size)), batch_size)
        print(
            f"{batch_size:>6}{size:>6}{row['it/s']:>10.2f}{row['img/s']:>10.0f}"
            f"{percent_of_peak(step_flops, row['it/s'], peak):>12}{row['peak GiB']:>10.2f}"
        )

    images_per_s = inference_throughput(args)
    print(
        f"\ninference (scores + maps, batch {args.inference_batch_size}, "
        f"{'bf16' if cuda else 'fp32'}): {images_per_s:.0f} images/s"
    )


if __name__ == "__main__":
    main()
