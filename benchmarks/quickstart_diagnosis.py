"""How much of each lesion the quickstart's generator removes, and what limits its AUROC.

The defaults are the paper's optimizers and subtle lesions (the first quickstart's setting,
which reached a test AUROC of only about 0.56); ``--lr-critic``, ``--critic-downsamples 4`` and
``--generator-ema`` give the current quickstart's faster, shallower critic and weight-averaged
generator.

Usage (from the project root; each run trains the quickstart's network for a few minutes):

    python benchmarks/quickstart_diagnosis.py
    python benchmarks/quickstart_diagnosis.py --lr 2e-4 --lesion-radius 0.1 0.25 \\
        --lesion-contrast 50 110
    python benchmarks/quickstart_diagnosis.py --generator-only --synthesizer perlin --lr 1e-3 \\
        --lambda-restoration 10 --lesion-radius 0.08 0.2 --lesion-contrast 40 100

It trains SAGAN with the network of ``examples/quickstart.yaml`` on `SyntheticCXRDataModule`
(``--generator-only`` instead trains the generator alone on the identity and restoration losses,
an upper bound on what the restoration loss can teach), then scores 100 fresh normal phantoms
and the *same* phantoms with lesions added, and prints:

- the test AUROC of the DataModule's own test set;
- the mean and spread of the score on normal phantoms (the generator's reconstruction noise);
- the fraction of the lesions' added brightness that the generator removes;
- the AUROC on the paired set, and the ceiling: the AUROC if the generator removed every lesion
  completely while keeping its reconstruction noise on normals.
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import numpy as np
import torch
from harness import adam, describe, training_only_trainer
from torch import Tensor

from sagan_ad import SAGAN, Critic, Evaluator, Generator, SAGANLoss, SyntheticCXRDataModule
from sagan_ad.data.images.lesions import add_lesions
from sagan_ad.data.images.phantoms import make_chest_phantoms
from sagan_ad.evaluation.metrics import auroc
from sagan_ad.synthesis import PatchBlendSynthesizer, PerlinBlobSynthesizer

SIZE = 32


def to_float(images: np.ndarray) -> Tensor:
    return torch.from_numpy(images).float().div(127.5).sub(1.0).unsqueeze(1)


def train_generator_only(model: SAGAN, data: SyntheticCXRDataModule, args) -> None:
    """Identity + restoration losses only: no critic, no unlabeled data."""
    data.setup("fit")
    normals = to_float(data.known_normal.images[:, 0].numpy())
    optimizer = adam(args.lr)(model.generator.parameters())
    generator = torch.Generator().manual_seed(args.seed)
    for _ in range(args.iterations):
        x = normals[torch.randint(len(normals), (args.batch_size,), generator=generator)]
        corrupted, _ = model.synthesizer(x, generator)
        restored, restored_corrupted = model.generator(torch.cat([x, corrupted])).chunk(2)
        loss = args.lambda_identity * (restored - x).abs().mean()
        loss = loss + args.lambda_restoration * (restored_corrupted - x).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    # Trained outside the training step, which is what counts iterations (and what test checks).
    model.iteration = args.iterations


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--lr", type=float, default=5e-5, help="Adam lr of the generator")
    parser.add_argument("--lr-critic", type=float, help="Adam lr of the critic (default: --lr)")
    parser.add_argument("--generator-ema", type=float, default=0.0)
    parser.add_argument("--critic-downsamples", type=int, default=5)
    parser.add_argument("--lambda-identity", type=float, default=1.0)
    parser.add_argument("--lambda-restoration", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lesion-radius", type=float, nargs=2, default=(0.04, 0.15))
    parser.add_argument("--lesion-contrast", type=float, nargs=2, default=(25.0, 90.0))
    parser.add_argument("--synthesizer", choices=("patch", "perlin"), default="patch")
    parser.add_argument("--generator-only", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.generator_only and args.generator_ema:
        parser.error("--generator-ema needs adversarial training (drop --generator-only)")

    lesions = {"radius": tuple(args.lesion_radius), "contrast": tuple(args.lesion_contrast)}
    data = SyntheticCXRDataModule(
        num_known_normal=400,
        num_test=200,
        image_size=SIZE,
        batch_size=args.batch_size,
        seed=args.seed,
        lesion_radius=lesions["radius"],
        lesion_contrast=lesions["contrast"],
    )

    L.seed_everything(args.seed, verbose=False)
    synthesizer = PerlinBlobSynthesizer() if args.synthesizer == "perlin" else None
    model = SAGAN(
        # The network of examples/quickstart.yaml.
        generator=Generator(image_size=SIZE, base_channels=8, num_res_blocks=1),
        critic=Critic(base_channels=16, num_downsamples=args.critic_downsamples),
        max_iterations=args.iterations,
        loss=SAGANLoss(
            lambda_identity=args.lambda_identity, lambda_restoration=args.lambda_restoration
        ),
        synthesizer=synthesizer or PatchBlendSynthesizer(),
        optimizer_g=adam(args.lr),
        optimizer_d=adam(args.lr_critic or args.lr),
        generator_ema=args.generator_ema,
        evaluator=Evaluator(bootstrap_resamples=0),
        seed=args.seed,
    )
    start = time.perf_counter()
    trainer = training_only_trainer()
    if args.generator_only:
        train_generator_only(model, data, args)
    else:
        trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - start
    model.eval()
    test_auroc = trainer.test(model, datamodule=data, verbose=False)[0]["test/AUROC"]

    rng = np.random.default_rng(123)
    normal = make_chest_phantoms(100, SIZE, rng)
    abnormal, masks = add_lesions(normal, rng, **lesions)
    x_n, x_a = to_float(normal), to_float(abnormal)
    inside = torch.from_numpy(masks)[:, None]
    with torch.no_grad():
        s_n, s_a = model.score(x_n), model.score(x_a)
        # What of the lesion passes through G: G(lesioned) - G(same phantom without it).
        restored_a = model.infer(x_a, with_restored=True)["restored"]
        restored_n = model.infer(x_n, with_restored=True)["restored"]
        passed = ((restored_a - restored_n) * inside).sum()
    added = ((x_a - x_n) * inside).sum()
    oracle = (x_a - x_n).abs().mean((1, 2, 3)) / 2
    labels = torch.tensor([0] * 100 + [1] * 100)

    print(f"machine: {describe()}")
    print(f"settings: {vars(args)}")
    print(f"training: {seconds:.0f} s")
    print(f"test AUROC (DataModule test set): {test_auroc:.3f}")
    print(f"score on normal phantoms: mean {s_n.mean():.4f}, std {s_n.std():.4f}")
    print(f"lesion contribution to the score if removed: mean {oracle.mean():.4f}")
    print(f"fraction of lesion brightness removed: {1 - passed / added:.3f}")
    print(f"paired AUROC: {auroc(torch.cat([s_n, s_a]), labels):.3f}")
    print(f"ceiling (every lesion removed): {auroc(torch.cat([s_n, s_n + oracle]), labels):.3f}")


if __name__ == "__main__":
    main()
