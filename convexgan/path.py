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
    """The solutions of a regularization path, one entry per lam, in decreasing order of lam.

    Parameters
    ----------
    lams : ndarray of shape (L,)
        The weight decays, decreasing.
    objectives : ndarray of shape (L,)
        The convex optimum at each lam (the estimator's ``objective_``).
    gaps : ndarray of shape (L,)
        The certified relative duality gap of each solve (``gap_``).
    cone_violations : ndarray of shape (L,)
        The relative cone violation of each solve (``cone_violation_``; 0 for gated programs).
    n_neurons : ndarray of shape (L,)
        The width of the recovered network at each lam (``n_neurons_``).
    n_iters : ndarray of shape (L,)
        The solver's iterations at each lam (``n_iter_``).
    coefs : list of ndarray
        The solution ``coef_`` at each lam.
    """
    lams: np.ndarray
    objectives: np.ndarray
    gaps: np.ndarray
    cone_violations: np.ndarray
    n_neurons: np.ndarray
    n_iters: np.ndarray
    coefs: list


def regularization_path(X, y, lams=None, estimator=None, n_lams=20, lam_min_ratio=1e-3, progress=True):
    """Fit an estimator at every lam of a decreasing grid, each solve warm-started from the last.

    The patterns and the prepared program (its reduction to the row space of X) stay fixed along
    the path, and each solve starts from the previous solution's primal and dual points.

    Parameters
    ----------
    X : array-like of shape (n, d)
        The data.
    y : array-like of shape (n,) or (n, c)
        The targets (class labels for a classifier).
    lams : array-like of shape (L,), optional
        Positive weight decays, solved in decreasing order. Default: ``n_lams`` values
        log-spaced from ``estimator.lam_max(X, y)`` down to ``lam_min_ratio`` times it.
    estimator : ConvexReLU or ConvexReLUClassifier, optional
        The estimator whose program is solved (default ``ConvexReLU()``); it is cloned, not
        modified.
    n_lams : int, default 20
        The grid's length when ``lams`` is not given.
    lam_min_ratio : float, default 1e-3
        The smallest lam of the default grid, relative to ``lam_max``.
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    RegularizationPath
        The objective, certified gap, width and solution at every lam.
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


def plot_regularization_path(path, filename=None):
    """Draw the width, the objective and the certificate against lam (log scale).

    Parameters
    ----------
    path : RegularizationPath
        A path from ``regularization_path``.
    filename : str or path-like, optional
        Where to write the figure (PNG by its suffix); the figure is then closed.

    Returns
    -------
    matplotlib.figure.Figure or str or path-like
        ``filename`` when given, else the open figure (three panels).
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plot_regularization_path needs matplotlib: pip install 'convexgan[plot]'.") from None

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
    if filename is None:
        return fig
    fig.savefig(filename, dpi=120)
    plt.close(fig)
    return filename
