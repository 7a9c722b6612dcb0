"""The optimal set of two-layer ReLU networks: certify any network, prune it to at most n neurons.

For a network ``f(x) = sum_j a_j (w_j^T x)_+ + b`` (``TwoLayerReLU``, any width, trained any way)
and data X (n, d), y, the objective is the one ``ConvexReLU`` minimizes,

    F(f(X), y) + lam/2 (||W1||_F^2 + ||W2||_F^2),

whose global optimum over all widths is the optimum of the convex program over every activation
pattern of X (Pilanci & Ergen 2020). ``certify_network`` bounds it from below by the dual of that
program (Wang, Lacotte & Pilanci, ICLR 2022; Mishkin & Pilanci, ICML 2023): at the network's
predictions (intercept re-fitted), Theta = grad F is scaled into the dual ball, each pattern's
dual norm taken under its cone exactly (non-negative least squares); the patterns are all those
of X, enumerated exactly (small data), so the bound holds against every network. The pattern and
direction with the largest dual norm is the neuron that would most improve the network: when
that norm exceeds lam, adding it with a small weight lowers the objective.

``optimal_set`` describes every optimum of a fitted ``ConvexReLU``'s program (one output): the
optimal predictions are unique (the loss is strictly convex in them), so is the dual point Theta,
and every optimal group weight is ``alpha_g d_g`` with ``alpha_g >= 0`` on the groups whose dual
norm reaches lam (the equicorrelation set E) and the direction ``d_g`` that attains it. The
optimal set is the polytope ``{alpha >= 0 : sum_g alpha_g s_g D_g X d_g + b 1 = yhat*}`` over E: a
single point exactly when no nonzero move c of it keeps the predictions (``V c = 0``) and stays
non-negative where alpha is zero (a linear program).

``prune`` removes neurons without changing the predictions on X and without raising the
objective (Caratheodory's theorem): while the neurons' contributions to the predictions are
linearly dependent, a combination c of them that sums to zero is subtracted, scaled so that one
neuron vanishes, with the sign that does not raise the weight penalty. At most n c neurons stay
(n rows, c outputs), each balanced (``||w_j|| = ||a_j||``, where the penalty equals
``lam sum_j ||w_j|| ||a_j||``): an optimal network stays optimal, with at most n neurons.
"""
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linprog
from sklearn.utils.validation import check_is_fitted

from .losses import LOSSES, LogisticLoss
from .networks import TwoLayerReLU, network_from_neurons
from .patterns import enumerate_patterns
from .penalties import GroupL2
from .solvers import ConvexProgram
from .validation import check_array, check_choice, check_positive, check_X_y


@dataclass
class NetworkCertificate:
    """``certify_network``'s result: a network's objective against the global optimum.

    Parameters
    ----------
    objective : float
        The network's own objective on (X, y).
    lower_bound : float
        A proven lower bound on the objective of every two-layer ReLU network (any width) on (X, y).
    gap : float
        ``(objective - lower_bound) / |objective|``: at most this far from the global optimum.
    best_neuron : numpy.ndarray
        (d,) unit first-layer weights of the neuron that most lowers the objective when added.
    best_sign : float
        The sign of its output weight.
    improvement : float
        Its dual norm minus lam: > 0 means adding it (small weight) lowers the objective.
    """
    objective: float
    lower_bound: float
    gap: float
    best_neuron: np.ndarray
    best_sign: float
    improvement: float


def certify_network(net, X, y, lam, loss="squared", max_patterns=20000):
    """Certify a two-layer ReLU network with one output against the global optimum.

    Parameters
    ----------
    net : TwoLayerReLU
        ``f(x) = W2 relu(W1 x) + b`` with W1 (m, d), W2 (1, m), with or without an intercept.
    X : array (n, d)
        The data; every pattern of it is enumerated (small data).
    y : array (n,)
        Targets (squared loss) or labels -1/+1 (logistic loss).
    lam : float > 0
        The weight decay of the objective.
    loss : {"squared", "logistic"}
        ``1/(2n) ||f(X) - y||^2`` or ``mean log(1 + exp(-y f(X)))``.
    max_patterns : int
        The exact enumeration of X's patterns stops with an error beyond this many.

    Returns
    -------
    NetworkCertificate
        The objective, the lower bound, the relative gap and the best neuron to add.
    """
    X, y = check_X_y(X, y)
    check_positive(lam, "lam")
    check_choice(loss, "loss", {"squared", "logistic"})
    _check_network(net, X.shape[1])
    if type(net) is not TwoLayerReLU:
        raise ValueError("certify_network takes ReLU networks (TwoLayerReLU); a gated network's optimum is "
                         "the gated program's: use ConvexReLU(activation='gated').certify.")
    if net.output.weight.shape[0] != 1:
        raise ValueError(f"certify_network takes networks with one output, got {net.output.weight.shape[0]}: "
                         "with shared neurons the vector-output program is copositive (no exact dual bound).")
    if y.ndim != 1:
        raise ValueError(f"y must be (n,) for a network with one output, got shape {y.shape}.")
    loss_function = LOSSES[loss]()
    if isinstance(loss_function, LogisticLoss) and not np.isin(y, (-1.0, 1.0)).all():
        raise ValueError("the logistic loss needs labels -1 and +1 in y.")
    W1, a = _neurons(net)
    masks, _ = enumerate_patterns(X, max_patterns=max_patterns)
    own = X @ W1.T >= 0  # the network's patterns, among the cells' (ties included)
    masks = np.unique(np.concatenate([masks, own], 1), axis=1)
    masks = masks[:, masks.any(0)]
    P = masks.shape[1]
    index = {column.tobytes(): p for p, column in enumerate(masks.T)}
    W = torch.zeros(X.shape[1], 2 * P, 1, dtype=torch.float64)
    for j in np.flatnonzero(own.any(0)):  # neurons never active contribute nothing
        group = index[own[:, j].tobytes()] + (P if a[j] < 0 else 0)
        W[:, group, 0] += torch.from_numpy(W1[j] * abs(a[j]))
    fit_intercept = net.output.bias is not None
    program = ConvexProgram.from_arrays(X, np.concatenate([masks, masks], 1), np.r_[np.ones(P), -np.ones(P)],
                                        y[:, None], loss_function, GroupL2(lam), fit_intercept, True,
                                        torch.float64, "cpu")
    b = net.output.bias.detach().double().reshape(1) if fit_intercept else torch.zeros(1, dtype=torch.float64)
    XW = program.image(W)
    b = program.intercept(XW, b)  # the best intercept: its gradient 1^T Theta = 0 is a dual constraint
    Theta = loss_function.grad(program.predict(XW, b), program.Y)
    rates = program.group_duals(Theta)
    norms = torch.tensor([[rate] for rate, _ in rates], dtype=torch.float64)
    best = int(norms.argmax())
    with torch.no_grad():
        prediction = net(torch.as_tensor(X, dtype=net.hidden.weight.dtype)).double()
        objective = float(loss_function.value(prediction, program.Y) + lam * net.weight_penalty().double())
    cert = program.scaled_certificate(objective, Theta, norms)
    return NetworkCertificate(objective, cert.dual, cert.gap, rates[best][1], 1.0 if best < P else -1.0,
                              float(norms[best]) - lam)


@dataclass
class OptimalSet:
    """``optimal_set``'s result: every optimum of a fitted model's program.

    Parameters
    ----------
    unique : bool
        Whether the program has one solution (its fitted one).
    groups : numpy.ndarray
        (k,) the groups (indices into ``coef_``'s second axis) whose dual norm reaches lam: the
        only ones any optimum uses (relu: of groups whose cones share that direction, the first).
    directions : numpy.ndarray
        (k, d) the unit first-layer direction every optimum gives each of those groups.
    weights : numpy.ndarray
        (k,) the fitted model's ``alpha_g`` (its group norms along those directions).
    other : TwoLayerReLU or None
        When not unique, a second optimal network: the fitted one moved along the optimal set to
        the point where one of its neurons vanishes (or one more is added).
    """
    unique: bool
    groups: np.ndarray
    directions: np.ndarray
    weights: np.ndarray
    other: TwoLayerReLU = None


def optimal_set(model, X, y, rtol=1e-6):
    """Every optimum of a fitted model's program on the data it was fitted on.

    The model is a fitted ``ConvexReLU`` or ``ConvexReLUClassifier`` with one output, relu or gated.

    The answer is read from the fitted solution, so solve to a tight ``tol`` first (say 1e-10;
    the Newton solver reaches it in seconds): groups count as equicorrelated when their dual norm
    is within ``rtol`` of lam, as used when their weight exceeds ``rtol`` of the largest, and moves
    as keeping the predictions when they change them by less than ``rtol`` (relative).

    Parameters
    ----------
    model : ConvexReLU or ConvexReLUClassifier
        The fitted model.
    X : array-like of shape (n, d)
        The data it was fitted on.
    y : array-like of shape (n,)
        Its targets.
    rtol : float, default 1e-6
        The relative tolerance of the three tests above.

    Returns
    -------
    OptimalSet
        The groups any optimum uses, their directions, whether the optimum is unique, and
        otherwise a second optimal network.
    """
    check_is_fitted(model)
    rtol = check_positive(rtol, "rtol")
    params = model.fitted_params_
    X, Y, loss = model._targets(X, y, "fitted")
    if Y.shape[1] != 1:
        raise ValueError(f"optimal_set takes models with one output, this one has {Y.shape[1]}: a group of "
                         "several outputs has no single direction (nuclear norm).")
    program = model._program(X, Y, loss, X @ model.gates_ >= 0, {**params, "dtype": "float64", "device": "cpu"})
    W = torch.as_tensor(model.coef_, dtype=torch.float64)
    b = torch.as_tensor(model.intercept_, dtype=torch.float64)
    XW = program.image(W)
    b = program.intercept(XW, b)
    Theta = loss.grad(program.predict(XW, b), program.Y)
    rates = program.group_duals(Theta)
    lam = params["lam"]
    groups = np.array([g for g, (norm, _) in enumerate(rates) if norm >= lam * (1 - rtol)], dtype=int)
    directions = np.array([rates[g][1] for g in groups]).reshape(len(groups), X.shape[1])
    weights = np.einsum("gd,dg->g", directions, model.coef_[:, groups, 0]).clip(0)
    signs = np.where(groups < program.shape[1] // 2, 1.0, -1.0) if program.cone else np.ones(len(groups))
    if program.cone:  # a direction on the face shared by two cones is one neuron, whichever group holds it
        first = [next(h for h in range(g + 1) if signs[h] == signs[g]
                      and np.linalg.norm(directions[h] - directions[g]) <= rtol) for g in range(len(groups))]
        weights = np.bincount(first, weights, minlength=len(groups))
        kept = np.unique(first)
        groups, directions, weights, signs = groups[kept], directions[kept], weights[kept], signs[kept]
    # each group's predictions per unit weight, and the intercept's: V (n, k + 1)
    V = program.mask_weights.numpy()[:, groups] * (X @ directions.T)
    if params["fit_intercept"]:
        V = np.hstack([V, np.ones((len(V), 1))])
    move = _move_within(V, weights, rtol)
    if move is None:
        return OptimalSet(True, groups, directions, weights)
    c = move[:len(groups)]
    shrinking = c < 0
    step = np.min(weights[shrinking] / -c[shrinking]) if shrinking.any() else 1.0
    alpha = weights + step * c
    used = alpha > rtol * alpha.max()  # the neuron the step zeroes is dropped, not kept at rounding size
    root = np.sqrt(alpha[used])
    gates = None if program.cone else torch.as_tensor(model.gates_[:, groups[used]])
    bias = torch.as_tensor(model.intercept_ + step * move[-1]) if params["fit_intercept"] else None
    other = network_from_neurons(torch.from_numpy(directions[used] * root[:, None]),
                                 torch.from_numpy((signs[used] * root)[:, None]), bias, gates)
    return OptimalSet(False, groups, directions, weights, other)


def is_unique(model, X, y, rtol=1e-6):
    """Whether a fitted model's program has a single solution.

    Parameters
    ----------
    model : ConvexReLU or ConvexReLUClassifier
        The fitted model, as for ``optimal_set``.
    X : array-like of shape (n, d)
        The data it was fitted on.
    y : array-like of shape (n,)
        Its targets.
    rtol : float, default 1e-6
        As for ``optimal_set``.

    Returns
    -------
    bool
        ``optimal_set(model, X, y, rtol).unique``.
    """
    return optimal_set(model, X, y, rtol).unique


def _move_within(V, weights, rtol):
    """A move c (k [+ 1 for the intercept]) with ``V c = 0`` that keeps ``weights + t c >= 0`` for
    some t > 0, or None when only c = 0 does: the columns of V (n, k [+ 1]) past ``len(weights)``
    are free (the intercept)."""
    null = _null_space(V, rtol)  # (k [+ 1], q): every c with V c = 0
    if null.shape[1] == 0:
        return None
    unused = np.flatnonzero(weights <= rtol * max(weights.max(initial=0), 1e-300))
    bound = null[unused]  # the rows whose move must be >= 0
    both_ways = _null_space(bound, rtol)  # moves that leave the unused groups at zero
    if both_ways.shape[1]:
        return null @ both_ways[:, 0]
    # a move that raises some unused groups and lowers none: bound z >= 0, sum(bound z) = 1
    result = linprog(np.zeros(null.shape[1]), A_ub=-bound, b_ub=np.zeros(len(unused)), A_eq=bound.sum(0)[None],
                     b_eq=[1.0], bounds=[(None, None)] * null.shape[1], method="highs")
    return null @ result.x if result.status == 0 else None


def _null_space(A, rtol):
    """An orthonormal basis (columns) of the null space of A (m, k), singular values below ``rtol``
    times the largest counting as zero."""
    if A.shape[0] == 0:
        return np.eye(A.shape[1])
    _, singular, Vt = np.linalg.svd(A, full_matrices=True)
    rank = int((singular > rtol * singular[0]).sum()) if singular.size and singular[0] > 0 else 0
    return Vt[rank:].T


def prune(net, X, rtol=1e-10):
    """Prune a network to at most n c neurons with the same predictions on X.

    The pruned network has an objective no larger, at most n c neurons (n rows of X, c outputs),
    and every neuron balanced.

    Parameters
    ----------
    net : TwoLayerReLU or TwoLayerGatedReLU
        The network to prune.
    X : array (n, d)
        The data whose predictions are kept.
    rtol : float
        Contributions whose singular values fall below ``rtol`` times the largest are dependent.

    Returns
    -------
    TwoLayerReLU or TwoLayerGatedReLU
        float64, a new module (``net`` is left as it is).
    """
    X = torch.as_tensor(check_array(X, "X", ndim=2), dtype=torch.float64)
    _check_network(net, X.shape[1])
    W1, a = _neurons(net, vector=True)
    gates = getattr(net, "gates", None)
    gates = None if gates is None else gates.detach().double().numpy()
    with torch.no_grad():  # the hidden units' outputs (n, m), in the network's precision
        activation = net.activation(X.to(net.hidden.weight.dtype)).double().numpy()
    # each neuron's contribution to the predictions, flattened: (n c, m)
    contributions = (activation[:, :, None] * a[None]).transpose(0, 2, 1).reshape(-1, len(W1))
    scale = caratheodory_scales(contributions, np.linalg.norm(W1, axis=1) * np.linalg.norm(a, axis=1), rtol)
    keep = np.flatnonzero((scale > 0) & (np.linalg.norm(W1, axis=1) > 0) & (np.linalg.norm(a, axis=1) > 0))
    w, out = W1[keep] * scale[keep, None], a[keep]
    ratio = np.sqrt(np.linalg.norm(out, axis=1) / np.linalg.norm(w, axis=1))[:, None]  # balance
    bias = None if net.output.bias is None else net.output.bias.detach().double()
    return network_from_neurons(torch.from_numpy(w * ratio), torch.from_numpy(out / ratio), bias,
                                None if gates is None else torch.from_numpy(gates[:, keep]))


def caratheodory_scales(contributions, costs, rtol=1e-10):
    """Scales ``s >= 0`` (m,) of m terms with ``sum_j s_j contributions[:, j] = sum_j contributions[:, j]``
    and ``sum_j s_j costs_j <= sum_j costs_j``, at most rank(contributions) of them nonzero
    (Caratheodory): while the scaled contributions (N, m) are dependent, a combination c of them
    that sums to zero is subtracted, scaled so that one term vanishes, with the sign that does
    not raise the cost. Singular values below ``rtol`` times the largest count as zero."""
    scale = np.ones(contributions.shape[1])
    while True:
        alive = np.flatnonzero(scale > 0)
        if len(alive) == 0:
            return scale
        null = _null_space(contributions[:, alive] * scale[alive], rtol)
        if null.shape[1] == 0:
            return scale
        cost = scale[alive] * costs[alive]
        if null.shape[1] > 1:  # moves that keep the cost exist: either direction, the longer reach
            level = null @ _null_space((null.T @ cost)[None], rtol)
            c = level @ level[np.argmax(np.linalg.norm(level, axis=1))]  # largest entry ~ 1 / sqrt(m)
            if -c.min() > c.max():
                c = -c
        else:  # the one move: the direction that does not raise the cost
            c = null[:, 0]
            if c @ cost < 0 or (c @ cost == 0 and c.max() <= 0):
                c = -c
        # sum_j c_j scale_j contribution_j = 0: the step removes one term, the cost falls by step * c @ cost
        step = 1 / c.max()
        scale[alive] *= 1 - step * c
        scale[alive[np.argmax(c)]] = 0.0  # the one that vanishes, exactly
        scale[np.abs(scale) < 1e-15] = 0.0


def _neurons(net, vector=False):
    """First-layer weights (m, d) and output weights: (m,) for one output, or (m, c) with ``vector``."""
    W1 = net.hidden.weight.detach().double().numpy()
    a = net.output.weight.detach().double().numpy().T
    return W1, a if vector else a[:, 0]


def _check_network(net, d):
    if not isinstance(net, TwoLayerReLU):
        raise ValueError(f"net must be a TwoLayerReLU (or TwoLayerGatedReLU) network, got {type(net).__name__}.")
    if net.hidden.weight.shape[1] != d:
        raise ValueError(f"net takes {net.hidden.weight.shape[1]} features, X has {d}.")
