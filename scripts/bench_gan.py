"""Convex progressive GAN against progressive WGAN-GP (gradient descent-ascent) on the same data.

    python scripts/bench_gan.py --layers 4 --budget-factor 10

Trains our generator (train_celeba.py's defaults), then a generator of the same shape (the same
stages, patch networks with the same number of neurons and the same noise dimensions) by
progressive WGAN-GP (Gulrajani et al. 2017; Adam, 5 critic steps per generator step, gradient
penalty 10), with --budget-factor times our wall time split evenly over the stages. Prints
MS-SWD (x 1e3, against the held-out faces of the same split as train_celeba.py: whole identities
where they are known; at the final resolution; both normalizations, per set as in ProGAN and
joint) against wall time for both, and for the rank-64, 175 and 400 linear Gaussians.
"""
import logging
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import save_image

from convexgan.cli import common
from convexgan.data import face_dataset
from convexgan.metrics import NORMALIZATIONS, ms_swd
from convexgan.validation import as_images
from layerwise.progressive import (QUANTILE_LEVELS, ProgressiveGenerator, ProgressiveTrainer, pca_generator,
                                   stage_resolution)

log = logging.getLogger("bench_gan")


def critic(channels, resolution, width=64):
    """DCGAN-style critic for (N, C, r, r) images: strided convolutions down to 4 x 4, then linear."""
    layers, ch, r = [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2)], width, resolution
    while r > 4:
        layers += [nn.Conv2d(ch, min(2 * ch, 256), 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        ch, r = min(2 * ch, 256), r // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(ch * 16, 1))


def trainable(generator, seed):
    """The generator's weights (buffers too: stage means, noise factors, the residuals' local
    scales and marginal maps), re-initialized and set to require gradients; the gates stay fixed,
    as in ours. A refine stage starts with a unit scale and the identity marginal map (the
    Gaussian quantile function), both learned."""
    torch.manual_seed(seed)
    params = []
    for stage in generator.stages:
        stage.mean.fill_(0.5 if stage is generator.stages[0] else 0.0)
        nn.init.normal_(stage.factor, std=0.1 * stage.n_train ** 0.5 / stage.factor.shape[1] ** 0.5)
        params += [stage.mean.requires_grad_(), stage.factor.requires_grad_()]
        if hasattr(stage, "network"):
            stage.scale_coef.zero_()[:, 0] = 1.0
            stage.scale_floor.zero_()
            stage.noise_std.fill_(1.0)
            stage.residual_std.fill_(1.0)
            stage.quantiles.copy_(torch.distributions.Normal(0.0, 1.0).icdf(QUANTILE_LEVELS).expand_as(stage.quantiles))
            params += [stage.scale_coef.requires_grad_(), stage.quantiles.requires_grad_()]
            stage.network.hidden.reset_parameters()
            stage.network.output.reset_parameters()
            if hasattr(stage.network, "gates"):  # same gating role: gates read the same features
                params += [stage.network.hidden.weight.requires_grad_(), stage.network.output.weight.requires_grad_(),
                           stage.network.output.bias.requires_grad_()]
            else:
                params += list(stage.network.parameters())
    return params


def swd(samples, test, seed):
    """(per-set, joint) MS-SWD of samples against the held-out images."""
    return tuple(ms_swd(samples, test, seed=seed, normalize=normalize)[1] for normalize in NORMALIZATIONS)


def swd_at_final(generator, stages, test, final, seed):
    """MS-SWD (per set, joint) of the first ``stages`` stages' samples, upsampled to the final resolution."""
    partial = ProgressiveGenerator(list(generator.stages[:stages]))
    with torch.no_grad():
        samples = partial.sample(len(test), seed=seed)
    samples = F.interpolate(samples, size=final, mode="bilinear", align_corners=False) if samples.shape[-1] < final else samples
    return swd(samples, test, seed)


def wgan_gp(generator, reals, test, seconds_per_stage, batch, seed, evals_per_stage=4):
    """Progressive WGAN-GP on the stages of ``generator`` (trained in place).
    Returns [(seconds, (per-set MS-SWD, joint MS-SWD))]."""
    params = trainable(generator, seed)
    optimizer_g = torch.optim.Adam(params, lr=1e-3, betas=(0.0, 0.99))
    final, curve, clock, gen = test.shape[-1], [], 0.0, torch.Generator().manual_seed(seed)
    for k, real in enumerate(reals, start=1):
        partial = ProgressiveGenerator(list(generator.stages[:k]))
        D = critic(real.shape[1], real.shape[-1])
        optimizer_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99))
        start, next_eval, step, paused = time.perf_counter(), seconds_per_stage / evals_per_stage, 0, 0.0
        while (elapsed := time.perf_counter() - start - paused) < seconds_per_stage:
            for _ in range(5):
                x = real[torch.randint(len(real), (batch,), generator=gen)]
                with torch.no_grad():
                    fake = partial([torch.randn(batch, s.noise_dim) for s in partial.stages])
                eps = torch.rand(batch, 1, 1, 1)
                mix = (eps * x + (1 - eps) * fake).requires_grad_()
                grad, = torch.autograd.grad(D(mix).sum(), mix, create_graph=True)
                loss_d = D(fake).mean() - D(x).mean() + 10 * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
                optimizer_d.zero_grad()
                loss_d.backward()
                optimizer_d.step()
            fake = partial([torch.randn(batch, s.noise_dim) for s in partial.stages])
            loss_g = -D(fake).mean()
            optimizer_g.zero_grad()
            loss_g.backward()
            optimizer_g.step()
            step += 1
            if elapsed >= next_eval:  # evaluations stop the clock: the budget is training time
                next_eval += seconds_per_stage / evals_per_stage
                evaluating = time.perf_counter()
                curve.append((clock + elapsed, swd_at_final(generator, k, test, final, seed)))
                paused += time.perf_counter() - evaluating
                log.info("WGAN-GP stage %d, %.0f s, %d steps: MS-SWD %.1f per set, %.1f joint", k, clock + elapsed,
                         step, *curve[-1][1])
        clock += seconds_per_stage
    curve.append((clock, swd_at_final(generator, len(reals), test, final, seed)))
    return curve


def build_parser():
    parser = common.parser(__doc__)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dataset", default="celeba", choices=["celeba", "olivetti", "folder", "lfw"])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--budget-factor", type=float, default=10.0, help="WGAN-GP wall time / ours")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="samples", help="folder for both methods' sample grids")
    return parser


def bench(args):
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)  # before the hour of training, not after it
    torch.manual_seed(args.seed)
    data = face_dataset(args.dataset, args.data_root, stage_resolution(args.layers))
    test = as_images(data.test)
    trainer = ProgressiveTrainer(layers=args.layers, seed=args.seed, data=data.description)

    start = time.perf_counter()
    ours = trainer.fit(data.train)
    ours_seconds = time.perf_counter() - start
    ours_swd = swd(ours.sample(len(test), seed=args.seed + 1), test, args.seed)
    linear = {k: swd(pca_generator(data.train, k).sample(len(test), seed=args.seed + 1), test, args.seed)
              for k in (64, 175, 400)}

    baseline = ProgressiveGenerator.from_spec(ours.spec())
    reals = [r for r in trainer.real_pyramid(data.train)]
    budget = args.budget_factor * ours_seconds
    curve = wgan_gp(baseline, reals, test, budget / args.layers, args.batch, args.seed)
    save_image(baseline.sample(64, seed=args.seed).detach(), out / "bench_gan_wgan_gp.png", nrow=8)
    save_image(ours.sample(64, seed=args.seed), out / "bench_gan_convex.png", nrow=8)

    print(f"\n{data.description}, {len(data.train)} train / {len(test)} held-out images, {torch.get_num_threads()} threads")
    print(f"{'method':34s} {'seconds':>8s} {'MS-SWD per set':>15s} {'MS-SWD joint':>13s}")
    print(f"{'convex progressive (ours)':34s} {ours_seconds:8.1f} {ours_swd[0]:15.1f} {ours_swd[1]:13.1f}")
    for k, (per_set, joint) in linear.items():
        print(f"{f'linear rank-{k} Gaussian':34s} {'':8s} {per_set:15.1f} {joint:13.1f}")
    for seconds, (per_set, joint) in curve:
        print(f"{'WGAN-GP (same generator shape)':34s} {seconds:8.1f} {per_set:15.1f} {joint:13.1f}")
    for i, name in enumerate(NORMALIZATIONS):
        best = min(figures[i] for _, figures in curve)
        print(f"best WGAN-GP MS-SWD ({name}) in {budget:.0f} s ({args.budget_factor:g}x our time): {best:.1f}; "
              f"ours {ours_swd[i]:.1f} ({best / ours_swd[i]:.2f}x lower)")


def main(argv=None):
    return common.run(build_parser(), bench, argv)


if __name__ == "__main__":
    sys.exit(main())
