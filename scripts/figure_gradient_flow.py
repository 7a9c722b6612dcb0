"""Gradient flow's normalized margin against the convex max-margin optimum, as a PNG.

    python scripts/figure_gradient_flow.py --out samples/gradient_flow.png

Two data sets of n points: "orthogonal", two classes in opposite cones of the plane (x_i^T x_j > 0
within a class, <= 0 across: orthogonally separable, where Wang & Pilanci prove that gradient
flow from a small start reaches the max-margin network), and "rings", an inner and an outer ring
with a constant feature (not orthogonally separable: the theorem says nothing). For each, the
convex optimum over every pattern (``max_margin``, certified by its dual) and gradient descent
on the unregularized logistic loss from ``--starts`` small random starts (``gradient_flow``):
normalized margin / optimum against the step.
"""
import sys

import numpy as np
from tqdm.auto import tqdm

from convexgan.cli import common
from convexgan.max_margin import gradient_flow, max_margin


def build_parser():
    parser = common.parser(__doc__)
    parser.add_argument("--points", type=int, default=24, help="data points per data set")
    parser.add_argument("--starts", type=int, default=3, help="gradient-flow runs per data set")
    parser.add_argument("--width", type=int, default=50, help="hidden neurons of the gradient-flow networks")
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="samples/gradient_flow.png", help="the plot (PNG)")
    return parser


def orthogonal_data(n, seed):
    """Two classes at angles in [0, 70] and [180, 250] degrees, radii in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    angle = np.deg2rad(np.r_[rng.uniform(0, 70, n - n // 2), rng.uniform(180, 250, n // 2)])
    radius = rng.uniform(0.5, 2, n)
    return np.c_[radius * np.cos(angle), radius * np.sin(angle)], np.r_[np.ones(n - n // 2), -np.ones(n // 2)]


def ring_data(n, seed):
    """An inner ring (radius 0.5, +1) and an outer one (radius 1.5, -1), with a constant feature."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, n)
    y = np.where(np.arange(n) < n - n // 2, 1.0, -1.0)
    radius = np.where(y > 0, 0.5, 1.5)
    return np.c_[radius * np.cos(angle), radius * np.sin(angle), np.ones(n)], y


def draw(args):
    for name in ("points", "starts", "width", "steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}.")
    if args.points < 2:
        raise ValueError(f"--points must be at least 2 (one per class), got {args.points}.")
    curves = {}
    print(f"{'data':>10} {'optimum margin':>15} {'certified gap':>14} {'start':>5} {'final margin / optimum':>23}")
    for name, data in (("orthogonal", orthogonal_data), ("rings", ring_data)):
        X, y = data(args.points, args.seed)
        best = max_margin(X, y, n_patterns="all")
        curves[name] = []
        for start in tqdm(range(args.starts), desc=f"gradient flow, {name}", unit="run"):
            _, steps, margins = gradient_flow(X, y, width=args.width, steps=args.steps, seed=args.seed + start)
            curves[name].append((steps, margins / best.margin_))
            print(f"{name:>10} {best.margin_:15.6f} {best.gap_:14.1e} {start:5d} {margins[-1] / best.margin_:23.4f}")
    print("wrote", plot(curves, args.out))


def plot(curves, filename):
    fig, ax = common.curves_axes()
    for (name, runs), color in zip(curves.items(), ("tab:blue", "tab:orange")):
        for k, (steps, ratio) in enumerate(runs):
            ax.plot(steps[1:], ratio[1:], color=color, lw=1, alpha=0.8, label=f"gradient flow, {name}" if k == 0 else None)
    ax.axhline(1.0, color="k", ls="--", lw=1.5, label="convex max-margin optimum (certified)")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("gradient step")
    ax.set_ylabel("normalized margin / optimum")
    return common.save_figure(fig, ax, filename, legend_loc="lower right")


def main(argv=None):
    return common.run(build_parser(), draw, argv)


if __name__ == "__main__":
    sys.exit(main())
