"""Train a VGG-style classifier two layers at a time, every block a certified convex program.

    python scripts/train_layerwise.py                       # scikit-learn's digits, embedded (8 x 8)
    python scripts/train_layerwise.py --size 28             # the same digits at MNIST's 28 x 28
    python scripts/train_layerwise.py --dataset cifar10 --limit-per-class 1000 --widths 32,64

--dataset cifar10 reads an ImageFolder layout (default data/cifar10, then $CONVEXGAN_DATA/cifar10) or a torchvision
CIFAR10 root; --dataset folder any ImageFolder layout with train/ and test/ (grey or RGB, any
size). Prints a per-stage table of train and test accuracy, writes it to --metrics-out as JSON,
and checkpoints every stage atomically to --checkpoint; a rerun with the same options resumes.

Across processes, each rank training on its share of the images and rank 0 writing the files:

    torchrun --standalone --nproc-per-node 2 scripts/train_layerwise.py --dataset cifar10
"""
import logging
import sys

import numpy as np

from convexgan.cli import common
from convexgan.data import labelled_images
from layerwise.classifier import LayerwiseConvexClassifier

log = logging.getLogger("train_layerwise")


def build_parser():
    parser = common.parser(__doc__)
    parser.add_argument("--dataset", default="digits", choices=["digits", "cifar10", "folder"])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--size", type=int, default=None, help="resize every image to SIZE x SIZE pixels")
    parser.add_argument("--stages", type=int, default=None, help="number of blocks (default: as many as --widths)")
    parser.add_argument("--widths", type=common.integers, default=[32, 64], help="neurons each block passes on")
    parser.add_argument("--n-patterns", type=common.integers, default=None,
                        help="sampled gates per block (default: widths)")
    parser.add_argument("--lam", type=float, default=1e-2, help="weight decay (on the whitened filters)")
    parser.add_argument("--whiten-eps", type=float, default=1e-3,
                        help="ZCA regularizer of the 3 x 3 patch whitening; 0 turns whitening off")
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--max-iter", type=int, default=2000,
                        help="FISTA iterations per block at most (a block stops once certified to --tol)")
    parser.add_argument("--limit-per-class", type=int, default=None, help="training images per class")
    parser.add_argument("--test-limit-per-class", type=int, default=None)
    parser.add_argument("--augment", choices=["none", "flip"], default="none",
                        help="flip: add the mirror image of every training image")
    common.add_mirror_tta(parser)
    common.add_device(parser)
    parser.add_argument("--checkpoint", default=None, help="default: checkpoints/layerwise_<dataset>.pt")
    parser.add_argument("--metrics-out", default=None, help="JSON file for the per-stage table")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def train(args):
    with common.process_group() as (rank, world):
        _train(args, rank, world)


def _train(args, rank, world):
    stages = args.stages or len(args.widths)
    widths = args.widths if len(args.widths) == stages else (args.widths + [args.widths[-1]] * stages)[:stages]
    device = common.device(args.device)
    data = labelled_images(args.dataset, args.data_root, args.limit_per_class, args.test_limit_per_class, args.seed,
                           args.size)
    X_train, y_train = data.X_train, data.y_train
    if args.augment == "flip":
        X_train, y_train = np.concatenate([X_train, X_train[:, :, ::-1]]), np.concatenate([y_train, y_train])
    model = LayerwiseConvexClassifier(widths=widths, n_patterns=args.n_patterns, lam=args.lam, tol=args.tol,
                                      whiten_eps=args.whiten_eps or None,
                                      max_iter=args.max_iter, seed=args.seed, device=device, distributed=world > 1,
                                      mirror_tta=common.mirror_tta(args))
    log.info("%s: %d train / %d test images of %s, %d classes; blocks %s; %d process%s", args.dataset, len(X_train),
             len(data.X_test), "x".join(map(str, data.X_train.shape[1:])), len(data.classes), widths, world,
             "es" if world > 1 else "")
    checkpoint = args.checkpoint or f"checkpoints/layerwise_{args.dataset}.pt"
    model.fit(*map(common.this_rank_rows, (X_train, y_train, data.X_test, data.y_test)), checkpoint=checkpoint)
    if rank > 0:
        return
    print(f"\n{'stage':>5s} {'neurons':>8s} {'kept':>6s} {'gap':>9s} {'train':>7s} {'test':>7s} {'seconds':>8s}")
    for s in model.stages_:
        print(f"{s['stage']:5d} {s['neurons']:8d} {s['kept']:6d} {s['certificate']['gap']:9.2e} "
              f"{s['train_accuracy']:7.4f} {s['test_accuracy']:7.4f} {s['seconds']:8.1f}")
    common.write_metrics(args.metrics_out, {"dataset": args.dataset, "stages": model.stages_})


def main(argv=None):
    return common.run(build_parser(), train, argv)


if __name__ == "__main__":
    sys.exit(main())
