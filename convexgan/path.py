"""Regularization paths: warm-started solves along a decreasing grid of lam.

As lam decreases from ``lam_max`` (where the zero network is optimal) more groups become
nonzero: the path lists the optimal networks with 1, 2, ... neurons.
"""
import logging
from dataclasses import dataclass

import numpy as np
from sklearn.base import clone
from tqdm.auto import tqdm

from .models import ConvexReLU
from .validation import check_array, check_positive, check_positive_int

log = logging.getLogger(__name__)


@dataclass
class RegularizationPath:
    """One entry per lam, in decreasing order of lam."""
    lams: np.ndarray
    objectives: np.ndarray
    gaps: np.ndarray
    cone_violations: np.ndarray
    n_neurons: np.ndarray
    n_iters: np.ndarray
    coefs: list


def regularization_path(X, y, lams=None, estimator=None, n_lams=20, lam_min_ratio=1e-3, progress=True):
    """Fit ``estimator`` (default ``ConvexReLU()``, cloned, not modified) at every lam.

    lams: positive values, solved in decreasing order; default ``n_lams`` values log-spaced from
    ``estimator.lam_max(X, y)`` down to ``lam_min_ratio`` times it. The patterns and the prepared
    program (its reduction to the row space of X) stay fixed along the path, and each solve
    starts from the previous solution.
    """
    estimator = clone(estimator if estimator is not None else ConvexReLU())
    if lams is None:
        check_positive_int(n_lams, "n_lams")
        check_positive(lam_min_ratio, "lam_min_ratio")
        top = estimator.lam_max(X, y)
        lams = np.geomspace(top, top * lam_min_ratio, n_lams)
    lams = np.sort(check_array(lams, "lams", ndim=1))[::-1]
    if lams[-1] <= 0:
        raise ValueError(f"every lam must be > 0, got {lams[-1]}.")
    rows = []
    for estimator in tqdm(estimator._path(X, y, lams), total=len(lams), desc="regularization path",
                          disable=not progress):
        lam = estimator.lam
        log.info("lam=%.3g objective=%.6g gap=%.2g neurons=%d iterations=%d", lam,
                 estimator.objective_, estimator.gap_, estimator.n_neurons_, estimator.n_iter_)
        rows.append((estimator.objective_, estimator.gap_, estimator.cone_violation_,
                     estimator.n_neurons_, estimator.n_iter_, estimator.coef_.copy()))
    objectives, gaps, violations, neurons, iters, coefs = zip(*rows)
    return RegularizationPath(lams, np.array(objectives), np.array(gaps), np.array(violations),
                              np.array(neurons), np.array(iters), list(coefs))


def plot_regularization_path(path, filename):
    """Write a PNG: neurons, objective and certificate against lam (log scale)."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plot_regularization_path needs matplotlib: pip install 'convexgan[plot]'.") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].step(path.lams, path.n_neurons, where="post")
    axes[0].set_ylabel("neurons (nonzero groups)")
    axes[1].plot(path.lams, path.objectives, marker=".")
    axes[1].set_ylabel("convex objective")
    axes[2].semilogy(path.lams, np.maximum(path.gaps, 1e-17), marker=".", label="relative duality gap")
    if path.cone_violations.max() > 0:
        axes[2].semilogy(path.lams, np.maximum(path.cone_violations, 1e-17), marker=".", label="cone violation")
    axes[2].legend()
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("lam")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(filename, dpi=120)
    plt.close(fig)
    return filename
