"""Evaluate a trained generator against held-out real faces.

    python scripts/eval_gan.py --checkpoint checkpoints/celeba.pt

Prints the multi-scale sliced Wasserstein distance (MS-SWD x 1e3, Karras et al. 2018; lower is
better) between samples and the held-out images of the same split train_celeba.py used (same
--dataset, --data-root, --holdout), next to the best rank-k linear generator (a Gaussian on the
top --baseline-rank principal directions of the training faces) and the training faces
themselves; and the median nearest-neighbour distance to the training set of samples and of
held-out faces (samples much closer than held-out faces are memorized). Figures are the mean
(and standard deviation) over --repeats sample seeds: one seed's MS-SWD moves by about 1.
"""
import sys

import numpy as np
import torch

from convexgan.cli import common
from convexgan.data import face_dataset
from convexgan.metrics import evaluate_samples, nearest_neighbour_distance
from convexgan.validation import as_images
from layerwise.progressive import load_checkpoint, pca_generator


def build_parser():
    parser = common.parser(__doc__)
    parser.add_argument("--checkpoint", default="checkpoints/celeba.pt")
    parser.add_argument("--dataset", default="celeba", choices=["celeba", "olivetti", "folder", "lfw"])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--holdout", type=float, default=0.1)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--baseline-rank", type=int, default=175)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="sample seeds to average over (seed, seed + 1, ...)")
    parser.add_argument("--metrics-out", default=None, help="also write the figures to this JSON file")
    return parser


def evaluate(args):
    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}.")
    generator, config, _ = load_checkpoint(args.checkpoint)
    data = face_dataset(args.dataset, args.data_root, generator.resolution, args.holdout, args.limit)
    if data.description != config["data"]:
        print(f"warning: the checkpoint was trained on {config['data']}, evaluating on {data.description}")
    if len(data.test) == 0:
        raise ValueError("no held-out images: use --holdout > 0.")
    train, test = as_images(data.train), as_images(data.test)
    n = len(test)
    baseline = pca_generator(data.train, args.baseline_rank)
    nn_test = float(nearest_neighbour_distance(test, train).median())  # the same for every row and seed
    names = ["convex progressive GAN", f"linear rank-{args.baseline_rank} Gaussian", "training faces (floor)"]
    runs = {name: [] for name in names}
    for seed in range(args.seed, args.seed + args.repeats):  # fresh samples and projections each time
        shuffled = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        samples = [generator.sample(n, seed=seed), baseline.sample(n, seed=seed), train[shuffled[:n]]]
        for name, images in zip(names, samples):
            runs[name].append(evaluate_samples(images, train, test, seed=seed))
    results = {name: {"ms_swd": float(np.mean([r["ms_swd"] for r in rs])),
                      "ms_swd_std": float(np.std([r["ms_swd"] for r in rs], ddof=1)) if len(rs) > 1 else 0.0,
                      "ms_swd_levels": np.mean([r["ms_swd_levels"] for r in rs], 0).tolist(),
                      "nn_samples": float(np.mean([r["nn_samples"] for r in rs])), "nn_test": nn_test,
                      "runs": rs}
               for name, rs in runs.items()}
    print(f"{n} held-out images of {data.description}; mean (std) over {args.repeats} sample seeds")
    print(f"{'generator':32s} {'MS-SWD':>15s}  {'per level (fine -> coarse)':28s} {'NN dist':>8s}")
    for name, r in results.items():
        levels = " ".join(f"{v:6.1f}" for v in r["ms_swd_levels"])
        print(f"{name:32s} {r['ms_swd']:7.2f} ({r['ms_swd_std']:5.2f})  {levels:28s} {r['nn_samples']:8.4f}")
    print(f"held-out faces' median NN distance to the training set: {nn_test:.4f}")
    common.write_metrics(args.metrics_out, results)


def main(argv=None):
    return common.run(build_parser(), evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
