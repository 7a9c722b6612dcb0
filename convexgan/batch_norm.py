"""Two-layer ReLU networks with batch normalization, trained by convex optimization.

The network (Ergen et al., ICLR 2022, "Demystifying batch normalization in ReLU networks") is

    f(X) = sum_j ( BN_{gamma_j, alpha_j}(X w_j) )_+ a_j,
    BN_{gamma, alpha}(v) = gamma (v - mean(v)) / ||v - mean(v)||_2 + alpha 1 / sqrt(n),

normalized over the n training rows, with the objective ``1/(2n) ||f(X) - y||^2 + lam/2 sum_j
(gamma_j^2 + alpha_j^2 + a_j^2)`` (the first layer is not penalized: batch norm removes its scale).
With the centred data ``X - 1 mean(X) = U S V^T`` (rank r), ``(X w - mean) / ||X w - mean||`` is a
unit vector of the column space of U, so the pre-activation is ``F z`` with the whitened features
``F = [U, 1 / sqrt(n)]`` (n, r + 1) and ``z = (gamma v, alpha)``, ``||v|| = 1``, ``||z||^2 = gamma^2
+ alpha^2``: the network is a plain two-layer ReLU network on F with weight decay and no intercept,
and its global optimum is ``ConvexReLU``'s program on F (exact over every pattern of F). Its
neurons z give back ``gamma = ||z[:r]||``, ``alpha = z[r]`` and ``w = V S^-1 z[:r] / gamma``.

In torch's ``BatchNorm1d`` (training mode) the same layer has ``weight = gamma / sqrt(n)`` and
``bias = alpha / sqrt(n)`` with ``eps = 0``, which torch refuses in training mode: the networks
here use ``eps = 1e-12`` with first-layer weights scaled to unit batch variance, which moves the
outputs by 5e-13 (relative). ``to_torch()`` returns the network with running statistics equal to
the training batch's, so evaluation mode applies the training normalization to new rows.
"""
import copy

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from .models import ConvexReLU
from .patterns import select_patterns
from .validation import check_positive, check_positive_int

BN_EPS = 1e-12  # torch's BatchNorm1d refuses eps = 0 in training mode; against unit variance, negligible


class ConvexBatchNormReLU(RegressorMixin, BaseEstimator):
    """Linear -> BatchNorm1d -> ReLU -> Linear, squared loss, trained to its global optimum.

    Parameters
    ----------
    lam : float > 0
        Weight decay on gamma, alpha and the output weights.
    n_patterns : int or "all"
        Sampled activation patterns of the whitened data, or "all": every pattern, enumerated
        exactly (small data), so that the optimum is the global optimum over all widths.
    tol, max_iter, seed, solver
        As for ``ConvexReLU(activation="relu")``.

    Attributes
    ----------
    objective_, dual_objective_, gap_, cone_violation_, converged_, n_iter_ :
        The certificate and iterations of the convex program (as ``ConvexReLU``).
    hidden_ : array (m, d)
        First-layer weights w_j (scaled to unit variance over the training rows, ``||X_c w_j||^2 = n``).
    gamma_, alpha_ : arrays (m,)
        Batch-norm scales and shifts in the paper's normalization.
    output_ : array (m, c)
        Output weights a_j.
    mean_ : array (d,)
        The training rows' mean.
    network_ : torch.nn.Sequential
        The recovered network (float64, evaluation mode); in training mode on the training rows
        its objective equals ``objective_``.
    n_neurons_ : int
    convex_ : ConvexReLU
        The convex program's fit on the whitened features.
    """

    def __init__(self, lam=1e-3, n_patterns=100, tol=1e-6, max_iter=10000, seed=0, solver="auto"):
        self.lam = lam
        self.n_patterns = n_patterns
        self.tol = tol
        self.max_iter = max_iter
        self.seed = seed
        self.solver = solver

    def fit(self, X, y):
        """Solve the convex program of the batch-norm network on (X, y).

        X needs n >= 2 rows and some variation.

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.
        y : array-like of shape (n,) or (n, c)
            The targets.

        Returns
        -------
        ConvexBatchNormReLU
            The fitted estimator.
        """
        check_positive(self.lam, "lam")
        if self.n_patterns != "all":
            check_positive_int(self.n_patterns, "n_patterns (or 'all')")
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        n = X.shape[0]
        if n < 2:
            raise ValueError(f"batch norm normalizes over the rows: X has n_samples = {n}; pass at least two "
                             "distinct rows.")
        self._y_ndim = y.ndim
        self.mean_ = X.mean(0)
        U, s, Vt = np.linalg.svd(X - self.mean_, full_matrices=False)
        rank = int((s > 1e-10 * s[0]).sum()) if s.size and s[0] > 0 else 0
        if rank == 0:
            raise ValueError("batch norm needs rows that differ (X minus its mean is zero): pass at least two "
                             "distinct rows.")
        U, s, V = U[:, :rank], s[:rank], Vt[:rank].T
        features = np.hstack([U, np.full((n, 1), n ** -0.5)])  # F = [U, 1/sqrt(n)], orthonormal columns
        _, gates = select_patterns(features, self.n_patterns, seed=self.seed)
        self.convex_ = ConvexReLU(lam=self.lam, gates=gates, activation="relu", fit_intercept=False, tol=self.tol,
                                  max_iter=self.max_iter, solver=self.solver).fit(features, y)
        for name in ("objective_", "dual_objective_", "gap_", "cone_violation_", "converged_", "n_iter_"):
            setattr(self, name, getattr(self.convex_, name))
        Z = self.convex_.network_.hidden.weight.numpy()  # (m, r + 1): (gamma v, alpha)
        self.output_ = self.convex_.network_.output.weight.numpy().T.copy()
        self.gamma_, self.alpha_ = np.linalg.norm(Z[:, :rank], axis=1), Z[:, rank].copy()
        # w = sqrt(n) V S^-1 v, so X_c w = sqrt(n) U v; a neuron with gamma = 0 is constant: any v serves
        v = np.where(self.gamma_[:, None] > 0, Z[:, :rank] / np.maximum(self.gamma_, 1e-300)[:, None], np.eye(1, rank))
        self.hidden_ = np.sqrt(n) * (v / s) @ V.T
        self.network_ = self._network(n).eval()
        self.n_neurons_ = len(self.gamma_)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _network(self, n):
        m, d = self.hidden_.shape
        network = nn.Sequential(nn.Linear(d, m, bias=False), nn.BatchNorm1d(m, eps=BN_EPS),
                                 nn.ReLU(), nn.Linear(m, self.output_.shape[1], bias=False)).double()
        with torch.no_grad():
            network[0].weight.copy_(torch.from_numpy(self.hidden_))
            network[1].weight.copy_(torch.from_numpy(self.gamma_ / np.sqrt(n)))
            network[1].bias.copy_(torch.from_numpy(self.alpha_ / np.sqrt(n)))
            network[1].running_mean.copy_(torch.from_numpy(self.hidden_ @ self.mean_))
            network[1].running_var.fill_(1.0)  # ||X_c w||^2 / n: the batch's (biased) variance
            network[3].weight.copy_(torch.from_numpy(self.output_.T))
        return network

    def predict(self, X):
        """The network's predictions in evaluation mode (batch norm with the training statistics).

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.

        Returns
        -------
        ndarray of shape (n,) or (n, c)
            Predictions, shaped like the fitted y.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        with torch.no_grad():
            pred = self.network_(torch.from_numpy(X)).numpy()
        return pred[:, 0] if self._y_ndim == 1 else pred

    def to_torch(self):
        """A trainable copy of the network.

        Returns
        -------
        torch.nn.Sequential
            Linear, BatchNorm1d, ReLU, Linear in float64, in training mode (batch norm over the batch).
        """
        check_is_fitted(self)
        return copy.deepcopy(self.network_).train().requires_grad_(True)

    def network_objective(self, X, y):
        """The network's own objective on its training rows, batch norm in training mode.

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.
        y : array-like of shape (n,) or (n, c)
            The targets.

        Returns
        -------
        float
            ``1/(2n) ||f(X) - y||^2 + lam/2 sum_j (gamma_j^2 + alpha_j^2 + a_j^2)``; equals ``objective_``.
        """
        check_is_fitted(self)
        X, y = validate_data(self, X, y, reset=False, dtype=np.float64, multi_output=True, y_numeric=True)
        with torch.no_grad():
            return float(batch_norm_objective(self.to_torch(), torch.from_numpy(X), torch.from_numpy(y), self.lam))


def batch_norm_objective(network, X, y, lam):
    """The objective of a Linear -> BatchNorm1d -> ReLU -> Linear network (training mode)
    on X (n, d), y (n,) or (n, c), in the paper's normalization (gamma = sqrt(n) weight,
    alpha = sqrt(n) bias). A tensor, differentiable."""
    n = X.shape[0]
    pred = network(X).reshape(y.shape)
    norm = network[1]
    penalty = n * (norm.weight.pow(2).sum() + norm.bias.pow(2).sum()) + network[3].weight.pow(2).sum()
    return 0.5 * (pred - y).pow(2).sum() / n + 0.5 * lam * penalty
