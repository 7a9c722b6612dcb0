"""Evaluate a trained generator against held-out real faces.

    python scripts/eval_gan.py --checkpoint checkpoints/celeba.pt

Compares samples with the held-out images of the split train_celeba.py used (same --dataset,
--data-root, --holdout; whole identities held out where they are known), next to the best
rank-k linear generators (Gaussians on the top k principal directions of the training faces, k
from --baseline-ranks) and the training faces themselves:
- the multi-scale sliced Wasserstein distance (MS-SWD x 1e3, Karras et al. 2018; lower is
  better) with ProGAN's per-set normalization, which cannot see a band with too little or too
  much energy, and with joint normalization of the real and generated patches, which can;
- every Laplacian band's standard deviation over the held-out faces' (1 is right);
- the median nearest-neighbour distance to the training set, of samples and of held-out faces
  (samples much closer than held-out faces are memorized);
- how much a 2 x 2 block grid shows (neighbour differences across block borders over within
  blocks, along columns and rows; real faces: about 1).
Figures are the mean (and standard deviation) over --repeats sample seeds.
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
    parser.add_argument("--baseline-ranks", type=common.integers, default=[64, 175, 400],
                        help="ranks of the linear Gaussian baselines, comma-separated")
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
    generators = {"convex progressive GAN": generator}
    generators.update({f"linear rank-{k} Gaussian": pca_generator(data.train, k) for k in args.baseline_ranks})
    nn_test = float(nearest_neighbour_distance(test, train).median())  # the same for every row and seed
    runs = {name: [] for name in [*generators, "training faces (floor)"]}
    for seed in range(args.seed, args.seed + args.repeats):  # fresh samples and projections each time
        shuffled = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        samples = [g.sample(n, seed=seed) for g in generators.values()] + [train[shuffled[:n]]]
        for name, images in zip(runs, samples):
            runs[name].append(evaluate_samples(images, train, test, seed=seed))

    def mean(rs, key):
        return np.mean([r[key] for r in rs], 0).tolist()

    def std(rs, key):
        return float(np.std([r[key] for r in rs], ddof=1)) if len(rs) > 1 else 0.0
    results = {name: {**{key: mean(rs, key) for key in rs[0]}, "ms_swd_std": std(rs, "ms_swd"),
                      "ms_swd_joint_std": std(rs, "ms_swd_joint"), "nn_test": nn_test, "runs": rs}
               for name, rs in runs.items()}
    print(f"{n} held-out images of {data.description}; mean (std) over {args.repeats} sample seeds")
    print(f"{'generator':30s} {'MS-SWD per set':>15s} {'MS-SWD joint':>15s}  {'band energy / real':>20s} "
          f"{'NN dist':>8s} {'2x2 blocks':>11s}")
    for name, r in results.items():
        energy = " ".join(f"{v:5.2f}" for v in r["band_energy_ratio"])
        blocks = " ".join(f"{v:5.2f}" for v in r["block_structure"])
        print(f"{name:30s} {r['ms_swd']:7.1f} ({r['ms_swd_std']:5.1f}) {r['ms_swd_joint']:7.1f} ({r['ms_swd_joint_std']:5.1f})"
              f"  {energy:>20s} {r['nn_samples']:8.4f} {blocks:>11s}")
    print("per level, fine -> coarse (per set | joint):")
    for name, r in results.items():
        print(f"  {name:28s} " + " ".join(f"{v:6.1f}" for v in r["ms_swd_levels"]) + "  | "
              + " ".join(f"{v:6.1f}" for v in r["ms_swd_joint_levels"]))
    print(f"held-out faces' median NN distance to the training set: {nn_test:.4f}")
    common.write_metrics(args.metrics_out, results)


def main(argv=None):
    return common.run(build_parser(), evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
