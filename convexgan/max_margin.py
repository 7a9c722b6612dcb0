"""The max-margin two-layer ReLU network, the limit of gradient flow on the logistic loss.

Wang & Pilanci (ICLR 2022, "The convex geometry of backpropagation"): gradient flow on an
unregularized logistic loss from a small start converges in direction to a KKT point of the
max-margin problem of the network; for two-layer ReLU networks that problem is the convex program

    min  sum_g ||w_g||   s.t.   y_i (sum_g s_g D_g X w_g)_i >= 1,   (2 D_g - I) X w_g >= 0,

over the patterns D_g (each with both signs s_g = +1, -1): an SOCP, solved here by CVXPY with
Clarabel (the ``cvxpy`` extra). The optimum is ``sum_j ||w_j|| |a_j|`` of the network with the
largest normalized margin ``min_i y_i f(x_i) / sum_j ||w_j|| |a_j|`` = 1 / objective. Its dual,
``max 1^T lam  s.t.  lam >= 0`` and every group's cone dual norm of ``X^T s_g D_g (y * lam)`` at
most 1, is re-checked with the library's own exact dual norms (non-negative least squares): the
certificate does not rest on the SOCP solver's word.

For orthogonally separable data (``x_i^T x_j > 0`` within a class, ``<= 0`` across) the optimum is
``(w_+^T x)_+ - (w_-^T x)_+`` with w_+ and w_- the hard-margin SVMs (no bias) of each class alone.
"""
from dataclasses import dataclass

import numpy as np
import torch

from .conic import cvxpy, solve
from .losses import SquaredLoss
from .networks import TwoLayerReLU, network_from_neurons
from .patterns import select_patterns
from .penalties import GroupL2
from .recovery import separate_neurons
from .solvers import ConvexProgram
from .validation import check_choice, check_positive, check_positive_int, check_X_y

SUPPORT_RTOL = 1e-6  # groups below this fraction of the largest are the SOCP solver's residue


@dataclass
class MaxMargin:
    """``max_margin``'s result: the max-margin network and its certificate.

    Parameters
    ----------
    objective_ : float
        ``min sum_g ||w_g||``: the smallest ``sum_j ||w_j|| |a_j|`` of a network with margins >= 1.
    margin_ : float
        ``1 / objective_``: the best normalized margin over all such networks.
    dual_objective_ : float
        A lower bound on ``objective_`` from the SOCP's dual multipliers, scaled into the dual
        feasible set by the library's exact dual norms.
    gap_ : float
        ``(objective_ - dual_objective_) / objective_``.
    dual_ : numpy.ndarray
        (n,) the dual multipliers of the margin constraints (nonzero on the support vectors).
    coef_ : numpy.ndarray
        (d, G) the group weights (relu: the P groups with sign +1, then the P with sign -1).
    gates_ : numpy.ndarray
        (d, P) gates of the patterns.
    network_ : TwoLayerReLU
        The max-margin network (no intercept, neurons balanced), float64.
    """
    objective_: float
    margin_: float
    dual_objective_: float
    gap_: float
    dual_: np.ndarray
    coef_: np.ndarray
    gates_: np.ndarray
    network_: TwoLayerReLU


def max_margin(X, y, n_patterns=100, gates=None, activation="relu", seed=0):
    """The max-margin two-layer (gated) ReLU network over the patterns of X.

    Parameters
    ----------
    X : array (n, d)
        No intercept is fitted: append a constant column for a bias in the hidden layer.
    y : array (n,)
        Labels -1 and +1.
    n_patterns : int or "all"
        Sampled patterns (Gaussian gates, from ``seed``), or "all": every pattern of X, enumerated
        exactly (small data), so that the margin is the best of every network of any width.
    gates : array (d, P) or None
        Gates of the patterns, instead of sampling.
    activation : {"relu", "gated"}
        ReLU networks (patterns both signs, cone constraints), or gated ReLU (fixed gates).
    seed : int
        Seed of the sampled gates.

    Returns
    -------
    MaxMargin
        The margin, its certificate (dual objective and gap), the weights and the network.

    Raises
    ------
    ValueError
        When no network of these patterns separates the data.
    """
    X, y = _labelled(X, y)
    check_choice(activation, "activation", {"relu", "gated"})
    masks, gates = select_patterns(X, n_patterns, gates, seed)
    P = masks.shape[1]
    relu = activation == "relu"
    signs = np.r_[np.ones(P), -np.ones(P)] if relu else np.ones(P)
    masks = np.concatenate([masks, masks], 1) if relu else masks
    mask_weights, cone_signs = masks * signs, 2.0 * masks - 1 if relu else None
    W, multipliers = _solve(X, y, mask_weights, cone_signs)
    # an interior-point solution leaves every unused group at about the solver's tolerance: solve
    # again over the groups it uses, so that the others are exactly zero (the certificate below
    # still checks every group)
    used = np.linalg.norm(W, axis=0) > SUPPORT_RTOL * np.linalg.norm(W, axis=0).max()
    W = np.zeros_like(W)
    W[:, used], multipliers = _solve(X, y, mask_weights[:, used], None if cone_signs is None else cone_signs[:, used])
    program = ConvexProgram.from_arrays(X, masks, signs, y[:, None], SquaredLoss(), GroupL2(1.0), False, relu,
                                        torch.float64, "cpu")
    norms = np.array([norm for norm, _ in program.group_duals(torch.from_numpy(-(y * multipliers))[:, None])])
    objective = float(np.linalg.norm(W, axis=0).sum())
    dual = float(multipliers.sum() / max(1.0, norms.max()))
    group, hidden, output = separate_neurons(torch.from_numpy(W)[:, :, None])
    output *= torch.from_numpy(signs)[group][:, None]
    network = network_from_neurons(hidden, output, None, None if relu else torch.from_numpy(gates[:, group]))
    return MaxMargin(objective, 1.0 / objective, dual, (objective - dual) / objective, multipliers, W, gates, network)


def normalized_margin(net, X, y):
    """The normalized margin of a two-layer network with one output and no intercept.

    Parameters
    ----------
    net : TwoLayerReLU or TwoLayerGatedReLU
        The network.
    X : array (n, d)
        The data.
    y : array (n,)
        Labels -1 and +1.

    Returns
    -------
    float
        ``min_i y_i f(x_i) / sum_j ||w_j|| |a_j|``, invariant to rescaling the network.
    """
    with torch.no_grad():
        f = net(torch.as_tensor(X, dtype=net.hidden.weight.dtype))[:, 0]
        size = (torch.linalg.vector_norm(net.hidden.weight, dim=1) * net.output.weight[0].abs()).sum()
        return float((torch.as_tensor(y, dtype=f.dtype) * f).min() / size)


def gradient_flow(X, y, width=50, steps=4000, init_scale=1e-3, step_size=0.1, seed=0, record_every=10):
    """Gradient descent on the unregularized logistic loss of a two-layer ReLU network.

    The loss is ``mean log(1 + exp(-y f(X)))`` of ``f(x) = sum_j a_j (w_j^T x)_+`` (no intercept),
    from a small random start: the dynamics whose direction Wang & Pilanci relate to
    ``max_margin``. Steps are ``0.5`` while the loss is above 0.5, then ``step_size / loss``
    (at most 1e6): along a gradient flow that only changes the speed (normalized gradient
    descent, Nacson et al. 2019), without which the margin grows like 1 / log t.

    Parameters
    ----------
    X : array (n, d)
        The data.
    y : array (n,)
        Labels -1 and +1.
    width : int, default 50
        Hidden neurons.
    steps : int, default 4000
        Gradient steps.
    init_scale : float, default 1e-3
        The start's entries are N(0, init_scale^2).
    step_size : float, default 0.1
        The normalized step, once the loss is below 0.5.
    seed : int, default 0
        Seed of the start.
    record_every : int, default 10
        Steps between two recorded margins.

    Returns
    -------
    network : TwoLayerReLU
        The final network, float64.
    iterations : ndarray of int
        The steps at which margins were recorded.
    margins : ndarray of float
        The normalized margin ``min_i y_i f(x_i) / sum_j ||w_j|| |a_j|`` at those steps.
    """
    X, y = _labelled(X, y)
    width, steps, record_every = (check_positive_int(v, name) for v, name in
                                  ((width, "width"), (steps, "steps"), (record_every, "record_every")))
    init_scale, step_size = check_positive(init_scale, "init_scale"), check_positive(step_size, "step_size")
    generator = torch.Generator().manual_seed(seed)
    W = (init_scale * torch.randn(width, X.shape[1], generator=generator, dtype=torch.float64)).requires_grad_()
    a = (init_scale * torch.randn(width, generator=generator, dtype=torch.float64)).requires_grad_()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    iterations, margins = [], []
    for step in range(steps + 1):
        f = torch.relu(Xt @ W.T) @ a
        loss = torch.nn.functional.softplus(-yt * f).mean()
        if step % record_every == 0:
            with torch.no_grad():
                iterations.append(step)
                margins.append(float((yt * f).min() / (torch.linalg.vector_norm(W, dim=1) * a.abs()).sum()))
        if step == steps:
            break
        grad_W, grad_a = torch.autograd.grad(loss, [W, a])
        rate = 0.5 if loss.item() > 0.5 else min(step_size / max(loss.item(), 1e-300), 1e6)
        with torch.no_grad():
            W -= rate * grad_W
            a -= rate * grad_a
    network = network_from_neurons(W.detach(), a.detach()[:, None])
    return network, np.array(iterations), np.array(margins)


def _labelled(X, y):
    """X (n, d) and labels y (n,) of -1 and +1, checked."""
    X, y = check_X_y(X, y)
    if y.ndim != 1 or not np.isin(y, (-1.0, 1.0)).all():
        raise ValueError("y must be labels -1 and +1, shape (n,): map your two classes to them.")
    return X, y


def _solve(X, y, mask_weights, cone_signs):
    """The SOCP by CVXPY: group weights W (d, G) and the margin constraints' multipliers (n,)."""
    cp = cvxpy("max_margin")
    W = cp.Variable((X.shape[1], mask_weights.shape[1]))
    XW = X @ W
    margins = cp.multiply(y, cp.sum(cp.multiply(mask_weights, XW), axis=1)) >= 1
    constraints = [margins] if cone_signs is None else [margins, cp.multiply(cone_signs, XW) >= 0]
    solve(cp.Problem(cp.Minimize(cp.sum(cp.norm(W, 2, axis=0))), constraints), "the max-margin SOCP",
          infeasible="no network of these patterns separates the data (y_i f(x_i) >= 1 is infeasible): use "
                     "more patterns (n_patterns, or 'all'), add a constant column to X for a bias, or check "
                     "the labels.")
    return np.asarray(W.value), np.clip(np.asarray(margins.dual_value).ravel(), 0, None)
