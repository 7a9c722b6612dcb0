"""Three-layer ReLU networks by double hyperplane arrangements (Ergen & Pilanci, ICML 2021,
"Global optimality beyond two layers: training deep ReLU networks via convex programs").

The parallel architecture of K sub-networks, each with m1 first-layer neurons,

    f(x) = sum_k a_k ( (x^T W_k)_+ b_k )_+,     W_k (d, m1), b_k (m1,), a_k scalar,

with the squared loss ``1/(2n) ||f(X) - y||^2`` and the regularization under which the program
below is exact: each first layer of unit Frobenius norm at most, ``||W_k||_F <= 1``, and weight
decay ``lam/2 (||b_k||^2 + a_k^2)`` on the other two; by the rescalings of the ReLU the same
optimum as ``lam sum_k ||W_k||_F ||b_k|| |a_k|`` unconstrained (``ParallelThreeLayer.penalty``).

A neuron of the first layer has a pattern D1_i of X and the sign s of its b; a sub-network has a
second-layer pattern D2_j and the sign sigma of its a. With one vector ``u_{j sigma i s}`` per
combination, the program

    min  1/(2n) ||sum_{j, sigma} sigma D2_j z_{j sigma} - y||^2 + lam sum ||u_{j sigma i s}||
    s.t. z_{j sigma} = sum_{i, s} s D1_i X u_{j sigma i s},   (2 D1_i - I) X u_{j sigma i s} >= 0,
         (2 D2_j - I) z_{j sigma} >= 0

has the global optimum of the network over every K and m1 when the D1 are every pattern of X and
the D2 every subset of the rows (``n_patterns="all"``, ``n_patterns_second="all"``: tiny data);
with sampled patterns it is the optimum of the networks that use them. A group lasso whose
second-layer cone couples the groups of a sub-network: solved by CVXPY (the ``cvxpy`` extra).
An optimum spread over many blocks (an interior-point solution of a program whose optimum is
not unique) is moved, predictions and penalty kept, to at most n blocks (``caratheodory_scales``).
Each nonzero block (j, sigma) is one sub-network: ``w_l = u_l / ||u_l|| sqrt(||u_l|| / t)``,
``b_l = s_l sqrt(||u_l||)``, ``a = sigma sqrt(t)`` with t the block's sum of norms.
"""
import itertools

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from .conic import cvxpy, solve
from .optimal_set import caratheodory_scales
from .patterns import select_patterns, unique_columns
from .validation import check_positive, check_positive_int

MAX_ROWS_ALL_SUBSETS = 10  # n_patterns_second="all" enumerates 2^n - 1 subsets
SUPPORT_RTOL = 1e-6  # group norms below this fraction of the largest are the solver's residue


class ParallelThreeLayer(nn.Module):
    """``f(x) = sum_k a_k ((x^T W_k)_+ b_k)_+``: W (K, d, m1), b (K, m1), a (K,). Input (n, d),
    output (n, 1)."""

    def __init__(self, W, b, a):
        super().__init__()
        self.W, self.b, self.a = nn.Parameter(W), nn.Parameter(b), nn.Parameter(a)

    def forward(self, x):
        hidden = torch.relu(torch.einsum("nd,kdm->nkm", x, self.W))
        return (torch.relu(torch.einsum("nkm,km->nk", hidden, self.b)) @ self.a)[:, None]

    def penalty(self):
        """``sum_k ||W_k||_F ||b_k|| |a_k|``: the regularization (times lam) of the exact program."""
        return (torch.linalg.vector_norm(self.W, dim=(1, 2)) * torch.linalg.vector_norm(self.b, dim=1)
                * self.a.abs()).sum()


class ConvexThreeLayer(RegressorMixin, BaseEstimator):
    """Parallel three-layer ReLU regression trained to its global optimum by a convex program.

    Parameters
    ----------
    lam : float > 0
        Weight decay.
    n_patterns : int or "all"
        First-layer patterns: sampled (Gaussian gates), or every pattern of X (enumerated).
    n_patterns_second : int or "all"
        Second-layer patterns: sampled from random three-layer networks on the first-layer gates,
        or every nonempty subset of the rows (n <= 10).
    seed : int
        Seed of the sampled patterns.

    Attributes
    ----------
    objective_ : float
    network_ : ParallelThreeLayer
        float64; its objective ``1/(2n) ||f(X) - y||^2 + lam network_.penalty()`` equals ``objective_``.
    n_subnetworks_ : int
    coef_ : array (d, G)
        The group weights u, in the order of ``groups_``.
    groups_ : array (G, 4)
        (j, sigma, i, s) of each group: second-layer pattern, sign of a, first-layer pattern, sign of b.
    masks_, masks_second_ : arrays (n, P1), (n, P2)
    """

    def __init__(self, lam=1e-2, n_patterns="all", n_patterns_second="all", seed=0):
        self.lam = lam
        self.n_patterns = n_patterns
        self.n_patterns_second = n_patterns_second
        self.seed = seed

    def fit(self, X, y):
        """Solve the convex program on (X, y) and recover the three-layer network.

        No intercept is fitted: append a constant column to X for biases.

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.
        y : array-like of shape (n,)
            The targets.

        Returns
        -------
        ConvexThreeLayer
            The fitted estimator.
        """
        check_positive(self.lam, "lam")
        for name in ("n_patterns", "n_patterns_second"):
            if getattr(self, name) != "all":
                check_positive_int(getattr(self, name), f"{name} (or 'all')")
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        first, gates = select_patterns(X, self.n_patterns, seed=self.seed)
        second = self._second_patterns(X, gates)
        self.masks_, self.masks_second_ = first, second
        self.groups_ = np.array(list(itertools.product(range(second.shape[1]), (1, -1), range(first.shape[1]), (1, -1))))
        coef, self.objective_ = _solve(X, y, first, second, self.groups_, self.lam)
        self.coef_ = _fewest_subnetworks(X, coef, first, second, self.groups_)
        self.network_ = self._recover()
        self.n_subnetworks_ = self.network_.a.shape[0]
        return self

    def _second_patterns(self, X, gates):
        n = X.shape[0]
        if self.n_patterns_second == "all":
            if n > MAX_ROWS_ALL_SUBSETS:
                raise ValueError(f"n_patterns_second='all' enumerates 2^n - 1 row subsets, for n <= "
                                 f"{MAX_ROWS_ALL_SUBSETS}; X has {n} rows: pass a number of sampled patterns.")
            subsets = (np.arange(1, 2 ** n)[None, :] >> np.arange(n)[:, None]) & 1
            return subsets.astype(bool)
        rng = np.random.default_rng(self.seed + 1)
        hidden = np.maximum(X @ gates, 0)  # the first layer of random networks on the first-layer gates
        weights = rng.standard_normal((gates.shape[1], self.n_patterns_second))
        masks, _ = unique_columns(hidden @ weights >= 0, np.arange(self.n_patterns_second))
        return masks

    def _recover(self):
        """One sub-network per nonzero block (j, sigma)."""
        norms = np.linalg.norm(self.coef_, axis=0)
        used = norms > 0
        blocks = {}
        for g in np.flatnonzero(used):
            blocks.setdefault(tuple(self.groups_[g, :2]), []).append(g)
        d, width = self.coef_.shape[0], max((len(v) for v in blocks.values()), default=0)
        W, b, a = np.zeros((len(blocks), d, width)), np.zeros((len(blocks), width)), np.zeros(len(blocks))
        for k, ((_, sigma), groups) in enumerate(blocks.items()):
            total = norms[groups].sum()
            for l, g in enumerate(groups):
                W[k, :, l] = self.coef_[:, g] / norms[g] * np.sqrt(norms[g] / total)
                b[k, l] = self.groups_[g, 3] * np.sqrt(norms[g])
            a[k] = sigma * np.sqrt(total)
        return ParallelThreeLayer(*(torch.from_numpy(v) for v in (W, b, a))).double().requires_grad_(False)

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

    def to_torch(self):
        """A trainable copy of the recovered network.

        Returns
        -------
        ParallelThreeLayer
            W (K, d, m1), b (K, m1), a (K,), float64.
        """
        check_is_fitted(self)
        return ParallelThreeLayer(*(p.detach().clone() for p in (self.network_.W, self.network_.b, self.network_.a)))

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
            ``1/(2n) ||f(X) - y||^2 + lam sum_k ||W_k||_F ||b_k|| |a_k|``; on the training data it equals ``objective_``.
        """
        check_is_fitted(self)
        X, y = validate_data(self, X, y, reset=False, dtype=np.float64, y_numeric=True)
        with torch.no_grad():
            return float(0.5 * np.mean((self.predict(X) - y) ** 2) + self.lam * self.network_.penalty())


def _blocks(groups):
    """The sub-networks (j, sigma) of the groups (G, 4): blocks (B, 2), and the membership matrix
    (G, B) whose products sum a block's groups."""
    blocks, block_of = np.unique(groups[:, :2], axis=0, return_inverse=True)
    membership = np.zeros((len(groups), len(blocks)))
    membership[np.arange(len(groups)), block_of.ravel()] = 1.0
    return blocks, membership


def _fewest_subnetworks(X, coef, first, second, groups):
    """The same predictions on X by at most n sub-networks, penalty not larger: an interior-point
    solution spreads an optimum that is not unique over many blocks. A block's predictions
    ``sigma D2_j z`` and its penalty are both linear in a positive scale of its u's, which keeps
    every cone constraint, so ``caratheodory_scales`` over the blocks applies."""
    blocks, membership = _blocks(groups)
    _, _, i, s = groups.T
    z = (first[:, i] * s * (X @ coef)) @ membership  # (n, B)
    predictions = second[:, blocks[:, 0]] * blocks[:, 1] * z
    scale = caratheodory_scales(predictions, np.linalg.norm(coef, axis=0) @ membership, rtol=1e-9)
    return coef * (membership @ scale)


def _solve(X, y, first, second, groups, lam):
    """The program by CVXPY over the groups (j, sigma, i, s): u (d, G) and the optimal value. The
    groups below ``SUPPORT_RTOL`` of the largest are solved away (a second solve over the others)."""
    _, _, i, s = groups.T
    n = X.shape[0]
    blocks, membership = _blocks(groups)
    second_masks = second[:, blocks[:, 0]]

    def program(keep):
        cp = cvxpy("ConvexThreeLayer")
        U = cp.Variable((X.shape[1], int(keep.sum())))
        XU = X @ U
        Z = cp.multiply(first[:, i[keep]] * s[keep], XU) @ membership[keep]  # z of every block, (n, B)
        constraints = [cp.multiply(2.0 * first[:, i[keep]] - 1, XU) >= 0, cp.multiply(2.0 * second_masks - 1, Z) >= 0]
        pred = cp.sum(cp.multiply(second_masks * blocks[:, 1], Z), axis=1)
        objective = cp.sum_squares(pred - y) / (2 * n) + lam * cp.sum(cp.norm(U, 2, axis=0))
        value = solve(cp.Problem(cp.Minimize(objective), constraints), "the three-layer program")
        coef = np.zeros((X.shape[1], len(groups)))
        coef[:, keep] = U.value
        return coef, value
    coef, _ = program(np.ones(len(groups), dtype=bool))
    norms = np.linalg.norm(coef, axis=0)
    return program(norms > SUPPORT_RTOL * max(norms.max(), 1e-300))
