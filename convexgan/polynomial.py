"""Two-layer networks with a quadratic activation, trained by a semidefinite program.

Bartan & Pilanci ("Neural spectrahedra and semidefinite lifts"): the network

    f(x) = sum_j alpha_j sigma(x^T u_j),   sigma(t) = a t^2 + b t + c,   ||u_j|| = 1,

with the objective ``1/(2n) ||f(X) - y||^2 + lam ||alpha||_1``, is linear in the lifted matrices
``Z = sum_j alpha_j [u_j; 1][u_j; 1]^T`` of its positive (Z+) and negative (Z-) neurons:
``f(x) = a x^T (Z1+ - Z1-) x + b x^T (z2+ - z2-) + c (z4+ - z4-)`` with ``Z = [[Z1, z2], [z2^T, z4]]``,
``||alpha||_1 = z4+ + z4-``, and ``trace(Z1) = z4`` because the u_j are unit vectors. The convex
program over ``Z+, Z- >= 0`` (PSD) with those trace constraints is exact: every such matrix splits
back into at most rank(Z) <= d + 1 unit-norm neurons (the neural decomposition, by Sturm & Zhang's
rank-one reduction), so at most 2 (d + 1) neurons in all. The SDP is solved by CVXPY with
Clarabel (the ``cvxpy`` extra): meant for d up to a few dozen.
"""
import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from .conic import cvxpy, solve
from .validation import check_positive

PSD_RTOL = 1e-7  # eigenvalues below this fraction of the largest are the SDP solver's residue


class QuadraticActivation(nn.Module):
    """``sigma(t) = a t^2 + b t + c`` elementwise."""

    def __init__(self, a, b, c):
        super().__init__()
        self.a, self.b, self.c = float(a), float(b), float(c)

    def forward(self, t):
        return self.a * t * t + self.b * t + self.c


class ConvexQuadraticNet(RegressorMixin, BaseEstimator):
    """``f(x) = sum_j alpha_j (a (x^T u_j)^2 + b x^T u_j + c)``, ``||u_j|| = 1``, squared loss and
    ``lam ||alpha||_1``, trained to its global optimum by the SDP lift.

    Parameters
    ----------
    a, b, c : float
        The activation's coefficients (a != 0 or b != 0); the default 0.09 t^2 + 0.5 t + 0.47 is a
        quadratic close to the ReLU on [-4, 4] (Bartan & Pilanci's).
    lam : float > 0
        The l1 penalty on the output weights alpha.

    Attributes
    ----------
    objective_ : float
        The SDP's optimum: the smallest objective of any such network, any width.
    hidden_ : array (m, d)
        Unit first-layer weights u_j, m <= 2 (d + 1).
    alpha_ : array (m,)
        Output weights.
    lifted_ : tuple of arrays ((d + 1, d + 1), (d + 1, d + 1))
        Z+ and Z-.
    network_ : torch.nn.Sequential
        Linear (no bias, rows u_j) -> QuadraticActivation -> Linear (no bias, alpha), float64.
    n_neurons_ : int
    """

    def __init__(self, a=0.09, b=0.5, c=0.47, lam=1e-2):
        self.a = a
        self.b = b
        self.c = c
        self.lam = lam

    def fit(self, X, y):
        """Solve the semidefinite program on (X, y) and recover its neurons.

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.
        y : array-like of shape (n,)
            The targets.

        Returns
        -------
        ConvexQuadraticNet
            The fitted estimator.
        """
        check_positive(self.lam, "lam")
        for name in ("a", "b", "c"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
        if self.a == 0 and self.b == 0:
            raise ValueError("a = b = 0 makes every neuron the constant c: give the activation a t^2 or t term.")
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        positive, negative, self.objective_ = _solve(X, y, self.a, self.b, self.c, self.lam)
        self.lifted_ = (positive, negative)
        hidden, alpha = [], []
        for Z, sign in ((positive, 1.0), (negative, -1.0)):
            for u, weight in neural_decomposition(Z):
                hidden.append(u)
                alpha.append(sign * weight)
        d = X.shape[1]
        self.hidden_ = np.array(hidden).reshape(-1, d)
        self.alpha_ = np.array(alpha)
        self.n_neurons_ = len(self.alpha_)
        self.network_ = self._network()
        return self

    def _network(self):
        m, d = self.hidden_.shape
        network = nn.Sequential(nn.Linear(d, m, bias=False), QuadraticActivation(self.a, self.b, self.c),
                                nn.Linear(m, 1, bias=False)).double()
        with torch.no_grad():
            network[0].weight.copy_(torch.from_numpy(self.hidden_))
            network[2].weight.copy_(torch.from_numpy(self.alpha_)[None])
        return network.requires_grad_(False)

    def predict(self, X):
        """The recovered network's predictions.

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.

        Returns
        -------
        ndarray of shape (n,)
            ``f(X)``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        with torch.no_grad():
            return self.network_(torch.from_numpy(X))[:, 0].numpy()

    def network_objective(self, X, y):
        """The recovered network's own objective.

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.
        y : array-like of shape (n,)
            The targets.

        Returns
        -------
        float
            ``1/(2n) ||f(X) - y||^2 + lam ||alpha||_1``; on the training data it equals ``objective_``.
        """
        check_is_fitted(self)
        X, y = validate_data(self, X, y, reset=False, dtype=np.float64, y_numeric=True)
        return float(0.5 * np.mean((self.predict(X) - y) ** 2) + self.lam * np.abs(self.alpha_).sum())


def neural_decomposition(Z, rtol=PSD_RTOL):
    """Unit neurons of a lifted matrix: Z (d + 1, d + 1) PSD with ``trace(Z[:d, :d]) = Z[d, d]``
    equals ``sum_j alpha_j [u_j; 1][u_j; 1]^T`` with alpha_j > 0, ||u_j|| = 1, at most rank(Z)
    terms. Returns a list of ``(u (d,), alpha)``.

    From a factor Z = P P^T (columns p_i, eigenvalues below ``rtol`` of the largest dropped), with
    ``E = diag(I, -1)``: while some p_i has ``p_i^T E p_i > 0`` and another ``p_j^T E p_j < 0``, a
    root t of ``(p_i + t p_j)^T E (p_i + t p_j) = 0`` gives the term ``y = (p_i + t p_j) /
    sqrt(1 + t^2)`` with ``y^T E y = 0``, and ``(p_j - t p_i) / sqrt(1 + t^2)`` replaces both
    (``y y^T`` plus its square is ``p_i p_i^T + p_j p_j^T``).
    """
    eigenvalues, vectors = np.linalg.eigh((Z + Z.T) / 2)
    if eigenvalues[-1] <= 0:
        return []
    keep = eigenvalues > rtol * eigenvalues[-1]
    columns = list((vectors[:, keep] * np.sqrt(eigenvalues[keep])).T)
    d = Z.shape[0] - 1
    metric = np.r_[np.ones(d), -1.0]

    def form(p):
        return float(p @ (metric * p))
    terms = []
    while columns:
        scale = max(float(p @ p) for p in columns)
        terms.extend(p for p in columns if abs(form(p)) <= 1e-12 * scale)
        columns = [p for p in columns if abs(form(p)) > 1e-12 * scale]
        if not columns:
            break
        above = [p for p in columns if form(p) > 0]
        below = [p for p in columns if form(p) < 0]
        if not above or not below:  # what the solver's tolerance left of the trace constraint
            terms.extend(columns)
            break
        p, q = above[0], below[0]
        # (p + t q)^T E (p + t q) = form(q) t^2 + 2 p^T E q t + form(p) = 0: a real root, as form(p) form(q) < 0
        cross = float(p @ (metric * q))
        t = (-cross + np.sqrt(cross ** 2 - form(p) * form(q))) / form(q)
        norm = np.sqrt(1 + t * t)
        columns = [r for r in columns if r is not p and r is not q]
        terms.append((p + t * q) / norm)
        columns.append((q - t * p) / norm)
    # y y^T = y_d^2 [u; 1][u; 1]^T with u = y[:d] / y[d], a unit vector up to the solver's tolerance
    return [(np.sign(y[d]) * y[:d] / np.linalg.norm(y[:d]), float(y[d] ** 2)) for y in terms
            if y[d] != 0 and np.linalg.norm(y[:d]) > 0]


def _solve(X, y, a, b, c, lam):
    """The SDP by CVXPY: (Z+, Z-) and the optimal value."""
    cp = cvxpy("ConvexQuadraticNet")
    n, d = X.shape
    positive, negative = cp.Variable((d + 1, d + 1), PSD=True), cp.Variable((d + 1, d + 1), PSD=True)
    Z = positive - negative
    pred = (a * cp.sum(cp.multiply(X @ Z[:d, :d], X), axis=1) + b * (X @ Z[:d, d]) + c * Z[d, d])
    constraints = [cp.trace(M[:d, :d]) == M[d, d] for M in (positive, negative)]
    objective = cp.sum_squares(pred - y) / (2 * n) + lam * (positive[d, d] + negative[d, d])
    value = solve(cp.Problem(cp.Minimize(objective), constraints), "the quadratic network's SDP")
    return positive.value, negative.value, float(value)
