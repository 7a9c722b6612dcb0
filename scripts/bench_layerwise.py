"""Layerwise convex classifier against the same architecture trained by SGD, on the same data.

    python scripts/bench_layerwise.py --dataset cifar10 --limit-per-class 1000 --widths 32,64

Trains ours (train_layerwise.py's options), then, with --budget-factor times our wall time:
- greedy SGD (Belilovsky et al. 2019): the same blocks as ReLU 3 x 3 convolutions, each trained
  with a one-hidden-layer auxiliary head (2 x 2 average pooling, Linear, ReLU, Linear) by Adam,
  frozen, then the next; stage k gets the share of the budget that our stage k took;
- end to end SGD: the whole stack (the same blocks and pooling, our 2 x 2-pooled linear head) by
  Adam on the whole budget.
The SGD blocks have --widths channels; our last block keeps every neuron its convex program
chose (the count is printed), so it is wider than theirs.
Prints test accuracy against wall time for all three (evaluation time is not charged) and the
ratios; --metrics-out writes the same as JSON. With --mirror-tta (the default for cifar10) all
three score every test image with its mirror image too.
"""
import logging
import sys
import time

import numpy as np
import torch
from torch import nn

from convexgan.cli import common
from convexgan.data import labelled_images
from convexgan.validation import as_images
from layerwise.classifier import LayerwiseConvexClassifier, MirrorAverage, Standardize

log = logging.getLogger("bench_layerwise")


@torch.no_grad()
def accuracy(network, x, y, batch=500, mirror_tta=False):
    network.eval()
    scorer = MirrorAverage(network) if mirror_tta else network
    scores = torch.cat([scorer(chunk) for chunk in x.split(batch)])
    network.train()
    return float((scores.argmax(1) == y).float().mean())


def train_for(network, params, x, y, seconds, evaluate, batch=128, lr=1e-3, seed=0):
    """Adam on cross-entropy over shuffled mini-batches for ``seconds`` of training time;
    ``evaluate()`` after every epoch and at the end (not charged). Returns [(seconds, value)]."""
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    spent, curve = 0.0, []
    while spent < seconds:
        start = time.perf_counter()
        for idx in torch.randperm(len(x), generator=generator).split(batch):
            loss = nn.functional.cross_entropy(network(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if spent + time.perf_counter() - start >= seconds:
                break
        spent += time.perf_counter() - start
        curve.append((spent, evaluate()))
    return curve


def greedy_sgd(x, y, x_test, y_test, widths, downsample, stage_seconds, hidden, seed, mirror_tta=False):
    """Belilovsky et al.'s greedy training of the blocks; per stage (seconds, test accuracy)."""
    torch.manual_seed(seed)
    frozen, inputs, records, total = [], x, [], 0.0
    for k, (width, seconds) in enumerate(zip(widths, stage_seconds)):
        norm = Standardize.fitted(inputs)
        block = nn.Sequential(norm, nn.Conv2d(inputs.shape[1], width, 3, padding=1), nn.ReLU())
        head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, hidden), nn.ReLU(),
                             nn.Linear(hidden, int(y.max()) + 1))
        stage = nn.Sequential(block, head)
        network = nn.Sequential(*frozen, stage)
        evaluate = lambda: accuracy(network, x_test, y_test, mirror_tta=mirror_tta)  # noqa: E731
        curve = train_for(stage, list(block[1:].parameters()) + list(head.parameters()), inputs, y, seconds,
                          evaluate, seed=seed + k)
        total += curve[-1][0]
        records.append({"stage": k + 1, "seconds": total, "test_accuracy": curve[-1][1],
                        "train_accuracy": accuracy(network, x, y, mirror_tta=mirror_tta)})
        log.info("greedy SGD stage %d: %.1f s, test %.4f", k + 1, total, curve[-1][1])
        block.requires_grad_(False)
        added = [block] + ([nn.AvgPool2d(2)] if downsample and k < len(widths) - 1 else [])
        frozen += added
        with torch.no_grad():
            inputs = torch.cat([nn.Sequential(*added)(chunk) for chunk in inputs.split(500)])
    return records


def end_to_end_sgd(x, y, x_test, y_test, widths, seconds, seed, mirror_tta=False):
    """The same stack trained jointly; its (seconds, test accuracy) curve."""
    torch.manual_seed(seed)
    layers, channels = [Standardize.fitted(x)], x.shape[1]
    for k, width in enumerate(widths):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        layers += [nn.AvgPool2d(2)] if k < len(widths) - 1 else []
        channels = width
    network = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, int(y.max()) + 1))
    curve = train_for(network, [p for p in network.parameters() if p.requires_grad], x, y, seconds,
                      lambda: accuracy(network, x_test, y_test, mirror_tta=mirror_tta), seed=seed)
    return curve, accuracy(network, x, y, mirror_tta=mirror_tta)


def build_parser():
    parser = common.parser(__doc__)
    parser.add_argument("--dataset", default="digits", choices=["digits", "cifar10", "folder"])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--limit-per-class", type=int, default=None)
    parser.add_argument("--test-limit-per-class", type=int, default=None)
    parser.add_argument("--widths", type=common.integers, default=[32, 64])
    parser.add_argument("--lam", type=float, default=1e-2)
    parser.add_argument("--max-iter", type=int, default=2000,
                        help="FISTA iterations per block (and per subspace round) at most")
    parser.add_argument("--hidden", type=int, default=256, help="greedy SGD: auxiliary head's hidden width")
    parser.add_argument("--budget-factor", type=float, default=1.0, help="SGD time as a multiple of ours")
    parser.add_argument("--seed", type=int, default=0)
    common.add_mirror_tta(parser)
    parser.add_argument("--metrics-out", default=None, help="also write the figures to this JSON file")
    return parser


def bench(args):
    if args.budget_factor <= 0:
        raise ValueError(f"--budget-factor must be positive, got {args.budget_factor}.")
    data = labelled_images(args.dataset, args.data_root, args.limit_per_class, args.test_limit_per_class,
                           args.seed, args.size)
    x, x_test = as_images(data.X_train), as_images(data.X_test)
    y, y_test = torch.as_tensor(data.y_train), torch.as_tensor(data.y_test)
    tta = common.mirror_tta(args)
    log.info("%s: %d train / %d test images of %s; blocks %s; mirror TTA %s; %d threads", args.dataset, len(x),
             len(x_test), "x".join(map(str, data.X_train.shape[1:])), args.widths, "on" if tta else "off",
             torch.get_num_threads())

    ours = LayerwiseConvexClassifier(widths=args.widths, lam=args.lam, max_iter=args.max_iter, seed=args.seed,
                                     mirror_tta=tta)
    ours.fit(data.X_train, data.y_train, data.X_test, data.y_test)
    convex = [{"stage": s["stage"], "seconds": float(np.sum([r["seconds"] for r in ours.stages_[:i + 1]])),
               "train_accuracy": s["train_accuracy"], "test_accuracy": s["test_accuracy"],
               "gap": s["certificate"]["gap"]} for i, s in enumerate(ours.stages_)]
    budget = [s["seconds"] * args.budget_factor for s in ours.stages_]
    greedy = greedy_sgd(x, y, x_test, y_test, args.widths, True, budget, args.hidden, args.seed, tta)
    curve, e2e_train = end_to_end_sgd(x, y, x_test, y_test, args.widths, sum(budget), args.seed, tta)

    print(f"\n{'method':<22s} {'stage':>5s} {'seconds':>8s} {'train':>7s} {'test':>7s}")
    print(f"(our last block has {ours.stages_[-1]['neurons']} neurons; the SGD stacks' last block {args.widths[-1]})")
    for s in convex:
        print(f"{'convex (ours)':<22s} {s['stage']:5d} {s['seconds']:8.1f} {s['train_accuracy']:7.4f} "
              f"{s['test_accuracy']:7.4f}   gap {s['gap']:.1e}")
    for s in greedy:
        print(f"{'greedy SGD':<22s} {s['stage']:5d} {s['seconds']:8.1f} {s['train_accuracy']:7.4f} "
              f"{s['test_accuracy']:7.4f}")
    for seconds, acc in curve[::max(1, len(curve) // 8)] + curve[-1:]:  # about eight points of the curve
        print(f"{'end-to-end SGD':<22s} {'':5s} {seconds:8.1f} {'':7s} {acc:7.4f}")
    final = {"convex": convex[-1]["test_accuracy"], "greedy_sgd": greedy[-1]["test_accuracy"],
             "end_to_end_sgd": curve[-1][1]}
    print(f"\ntest accuracy at {args.budget_factor:g}x our time: ours {final['convex']:.4f}, greedy SGD "
          f"{final['greedy_sgd']:.4f} (ours/greedy {final['convex'] / final['greedy_sgd']:.3f}), end-to-end SGD "
          f"{final['end_to_end_sgd']:.4f} (ours/end-to-end {final['convex'] / final['end_to_end_sgd']:.3f}; "
          f"its train accuracy {e2e_train:.4f})")
    common.write_metrics(args.metrics_out, {"args": vars(args), "convex": convex, "greedy_sgd": greedy,
                                            "end_to_end_sgd": [{"seconds": t, "test_accuracy": a} for t, a in curve],
                                            "final": final})


def main(argv=None):
    return common.run(build_parser(), bench, argv)


if __name__ == "__main__":
    sys.exit(main())
