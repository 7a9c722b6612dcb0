"""SGD from random starts against the convex optimum of the same two-layer ReLU objective, as a PNG.

    python scripts/figure_sgd_vs_convex.py --out samples/sgd_vs_convex.png

The talk's toy: n points x in [-2, 2] (d = 2 with a constant feature), y a noisy bump; the
objective ``1/(2n) ||f(X) - y||^2 + lam/2 (||W1||^2 + ||W2||^2)`` of ``f(x) = W2 relu(W1 x) + b``.
Its global optimum over all widths is the exact convex program over every pattern of X
(``ConvexReLU`` with ``enumerate_patterns``' gates, certified); each SGD run (mini-batches, from a
random start) is drawn against it, and ``certify_network`` says how far each run ended from it.
"""
import sys

import numpy as np
import torch
from tqdm.auto import tqdm

from convexgan import ConvexReLU, certify_network, enumerate_patterns
from convexgan.cli import common
from convexgan.networks import network_from_neurons


def build_parser():
    parser = common.parser(__doc__)
    parser.add_argument("--n", type=int, default=12, help="data points")
    parser.add_argument("--lam", type=float, default=1e-2)
    parser.add_argument("--starts", type=int, default=10, help="SGD runs from random starts")
    parser.add_argument("--width", type=int, default=20, help="hidden neurons of the SGD networks")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="samples/sgd_vs_convex.png", help="the plot (PNG)")
    return parser


def toy_data(n, seed):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-2, 2, n))
    y = np.exp(-2 * x ** 2) - 0.3 * x + 0.05 * rng.standard_normal(n)
    return np.stack([x, np.ones(n)], 1), y


def sgd_run(X, y, lam, width, steps, lr, batch, seed):
    """One SGD run; returns the network and its full objective after every step."""
    generator = torch.Generator().manual_seed(seed)
    net = network_from_neurons(torch.randn(width, X.shape[1], generator=generator, dtype=torch.float64),
                               torch.randn(width, 1, generator=generator, dtype=torch.float64) / width ** 0.5,
                               torch.zeros(1, dtype=torch.float64)).requires_grad_(True)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)

    def objective(rows):
        return 0.5 * ((net(Xt[rows])[:, 0] - yt[rows]) ** 2).mean() + lam * net.weight_penalty()
    curve = []
    for _ in range(steps):
        rows = torch.randperm(len(X), generator=generator)[:batch]
        optimizer.zero_grad()
        objective(rows).backward()
        optimizer.step()
        with torch.no_grad():
            curve.append(float(objective(slice(None))))
    return net.requires_grad_(False), np.array(curve)


def draw(args):
    for name in ("n", "starts", "width", "steps", "batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}.")
    X, y = toy_data(args.n, args.seed)
    _, gates = enumerate_patterns(X)
    convex = ConvexReLU(lam=args.lam, gates=gates, activation="relu", tol=1e-7, max_iter=100_000).fit(X, y)
    print(f"convex optimum: {convex.objective_:.6f} (certified gap {convex.gap_:.1e}, {convex.n_neurons_} neurons)")
    print(f"{'start':>5} {'SGD objective':>14} {'lower bound':>12} {'gap':>8} {'best neuron rate - lam':>22}")
    curves = []
    for start in tqdm(range(args.starts), desc="SGD runs", unit="run"):
        net, curve = sgd_run(X, y, args.lam, args.width, args.steps, args.lr, args.batch, args.seed + 1 + start)
        cert = certify_network(net, X, y, args.lam)
        curves.append(curve)
        print(f"{start:5d} {cert.objective:14.6f} {cert.lower_bound:12.6f} {cert.gap:8.2%} {cert.improvement:22.3g}")
    print("wrote", plot(curves, convex.objective_, args.out))


def plot(curves, optimum, filename):
    fig, ax = common.curves_axes()
    for k, curve in enumerate(curves):
        ax.plot(np.arange(1, len(curve) + 1), curve, lw=1, alpha=0.8, label=f"SGD, {len(curves)} random starts" if k == 0 else None)
    ax.axhline(optimum, color="k", ls="--", lw=1.5, label="convex optimum (certified)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("training objective")
    return common.save_figure(fig, ax, filename)


def main(argv=None):
    return common.run(build_parser(), draw, argv)


if __name__ == "__main__":
    sys.exit(main())
