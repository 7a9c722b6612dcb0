"""Regularization path of a convex two-layer ReLU network on real data, written as a PNG.

    python scripts/regularization_path.py --out samples/regularization_path.png

Default data: scikit-learn's diabetes set (442 patients x 10 features, ships with scikit-learn),
features and target standardized. Prints one line per lam: neurons, objective, certificate.
"""
import sys

from sklearn.datasets import load_diabetes

from convexgan import ConvexReLU, plot_regularization_path, regularization_path
from convexgan.cli import common


def build_parser():
    parser = common.parser(__doc__)
    parser.add_argument("--activation", choices=["relu", "gated"], default="gated",
                        help="gated: seconds for the whole path; relu: exact cones, minutes")
    parser.add_argument("--n-patterns", type=int, default=64)
    parser.add_argument("--n-lams", type=int, default=12)
    parser.add_argument("--lam-min-ratio", type=float, default=1e-2)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-iter", type=int, default=20000, help="solver iterations per lam")
    parser.add_argument("--out", default="samples/regularization_path.png", help="the plot (PNG)")
    return parser


def draw(args):
    X, y = load_diabetes(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    y = (y - y.mean()) / y.std()
    estimator = ConvexReLU(n_patterns=args.n_patterns, activation=args.activation, tol=args.tol,
                           max_iter=args.max_iter, seed=args.seed)
    path = regularization_path(X, y, estimator=estimator, n_lams=args.n_lams, lam_min_ratio=args.lam_min_ratio)
    print(f"{'lam':>10} {'neurons':>8} {'objective':>12} {'gap':>9} {'violation':>9} {'iters':>6}")
    for row in zip(path.lams, path.n_neurons, path.objectives, path.gaps, path.cone_violations, path.n_iters):
        print("{:10.4g} {:8d} {:12.6g} {:9.1e} {:9.1e} {:6d}".format(*row))
    print("wrote", plot_regularization_path(path, args.out))


def main(argv=None):
    return common.run(build_parser(), draw, argv)


if __name__ == "__main__":
    sys.exit(main())
