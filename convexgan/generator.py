"""Convex fit of a two-layer ReLU generator to a target, such as the closed-form ``G*`` of ``svt``.

``fit_relu_generator(Z, G)`` finds ``(Z W1)_+ W2 + b ~= G`` with the least weight norm through
the vector-output convex program of ``ConvexReLU`` in which every output has its own neurons:

    min  1/(2n) ||sum_i D_i Z V_i + b - G||_F^2 + lam sum_{i,k} ||V_i[:, k]||

``"gated"`` fixes each neuron's gate to its sampled pattern (unconstrained; what the progressive
trainer uses): all outputs are one program over the same patterns, solved by the Newton solver
(``ssnal``; for a stage's patch fit, n >> d P, its Newton systems live in the space of the active
groups and come from one Gram matrix of the masked design), or by FISTA where that does not
apply. ``activation="relu"`` is the exact ReLU program (cone constraints; fine for small
problems), which separates over the output columns and is solved one column at a time. As
``lam -> 0`` the solution tends to the minimum-norm interpolant
``min sum ||V_i[:, k]|| s.t. sum_i D_i Z V_i + b = G`` when the patterns can represent G.
"""
import logging
import warnings
from contextlib import nullcontext
from typing import NamedTuple

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from tqdm.auto import tqdm

from . import losses, solvers, ssnal
from .distributed import agree, is_distributed, total_rows
from .models import DTYPES, ConvexReLU
from .networks import network_from_neurons
from .patterns import sample_patterns
from .penalties import GroupL2
from .recovery import separate_neurons
from .validation import check_choice, check_positive, check_positive_int, check_X_y

log = logging.getLogger(__name__)


class GeneratorFit(NamedTuple):
    """The certificate of a generator fit, summed over output columns.

    Parameters
    ----------
    objective : float
        The convex program's primal objective.
    dual_objective : float
        A proven lower bound on its optimum.
    gap : float
        ``(objective - dual_objective) / objective``.
    cone_violation : float
        The worst relative cone violation (relu; 0 for gated).
    n_neurons : int
        Neurons of the recovered generator.
    n_iter : int
        Solver iterations (Newton steps for gated fits, FISTA steps otherwise).
    """
    objective: float
    dual_objective: float
    gap: float
    cone_violation: float
    n_neurons: int
    n_iter: int


def fit_relu_generator(Z, G, lam=1e-4, n_patterns=64, activation="relu", tol=1e-4, max_iter=20000,
                       seed=0, device="cpu", dtype="float64", progress=False, distributed=False):
    """Fit a two-layer (gated) ReLU generator from inputs Z to targets G by its convex program.

    The program is the one of ``ConvexReLU`` with the squared loss and vector outputs, every
    output with its own neurons: ``min 1/(2n) ||sum_i D_i Z W_i - G||^2 + lam sum_ik ||W_ik||``
    (with cones for relu), certified by its duality gap.

    Parameters
    ----------
    Z : array-like of shape (n, m)
        Inputs: noise, or image patches.
    G : array-like of shape (n, c)
        Targets, e.g. the rows of ``svt``'s G*.
    lam : float, default 1e-4
        Weight decay, > 0.
    n_patterns : int, default 64
        Sampled gates.
    activation : {"relu", "gated"}, default "relu"
        The exact cone-constrained program, or the gated one (second order, faster).
    tol : float, default 1e-4
        The relative duality gap at which the fit stops.
    max_iter : int, default 20000
        Newton steps for the gated program, gradient steps where FISTA solves it.
    seed : int, default 0
        Seed of the gates.
    device : str, default "cpu"
        Where the solver runs.
    dtype : {"float64", "float32"}, default "float64"
        Precision of the first-order solvers.
    progress : bool, default False
        Show a progress bar.
    distributed : bool, default False
        Gated only: under a process group, Z and G are this rank's rows and the fit is the one
        of all ranks' rows, the same network on every rank.

    Returns
    -------
    TwoLayerReLU or TwoLayerGatedReLU
        The recovered generator, a ``torch.nn.Module`` in float64 on the CPU mapping (n, m) to
        (n, c); its ``certificate`` attribute is the fit's ``GeneratorFit``.
    """
    check_choice(activation, "activation", {"relu", "gated"})
    sharded = bool(distributed) and is_distributed()
    if sharded and activation == "relu":
        raise ValueError("a distributed generator fit needs activation='gated': the ReLU cones are not sharded.")
    with agree("checking its rows") if sharded else nullcontext():
        Z, G = check_X_y(Z, G, min_rows=0 if sharded else 1)
    G = G.reshape(len(G), int(np.prod(G.shape[1:])))
    check_positive(lam, "lam")
    if activation == "gated":
        return _fit_gated(Z, G, lam, check_positive_int(n_patterns, "n_patterns"), tol, max_iter, seed, device,
                          dtype, sharded)
    models = []
    with warnings.catch_warnings():  # one warning for the whole fit (_finish), not one per output
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in tqdm(range(G.shape[1]), desc="fitting generator outputs", unit="output", disable=not progress):
            models.append(ConvexReLU(lam=lam, n_patterns=n_patterns, activation=activation, tol=tol,
                                     max_iter=max_iter, seed=seed, device=device, dtype=dtype).fit(Z, G[:, k]))
    network = _stack([model.network_ for model in models], activation)
    primal = sum(model.objective_ for model in models)
    dual = sum(model.dual_objective_ for model in models)
    fit = GeneratorFit(primal, dual, (primal - dual) / max(abs(primal), 1e-300),
                       max(model.cone_violation_ for model in models), network.hidden.weight.shape[0],
                       sum(model.n_iter_ for model in models))
    return _finish(network, fit, all(model.converged_ for model in models), G.shape[1], max_iter, tol)


def _fit_gated(Z, G, lam, n_patterns, tol, max_iter, seed, device, dtype, sharded=False):
    """The gated program of all outputs at once: ``GroupL2`` over every (pattern, output); with
    ``sharded``, of every rank's rows."""
    loss = losses.SquaredLoss()
    if sharded:
        loss = loss.sharded(total_rows(len(Z), (Z.shape[1], G.shape[1])))
    masks, gates = sample_patterns(Z, n_patterns, seed=seed, across_ranks=sharded)
    program = solvers.ConvexProgram.from_arrays(Z, masks, np.ones(masks.shape[1]), G, loss,
                                                GroupL2(lam), True, False, DTYPES[dtype], device)
    if ssnal.supports(program):  # it works in float64: on the data, not on their rounding
        precision = torch.float64
        W, b, cert, n_iter = ssnal.solve_ssnal(program, *program.zeros(), tol, max_iter)
    else:
        precision = DTYPES[dtype]
        W, b, cert, n_iter = solvers.solve_gated(program, *program.zeros(), tol, max_iter)
    group, hidden, output = separate_neurons(W.cpu(), precision)
    network = network_from_neurons(hidden, output, b.double().cpu(), torch.as_tensor(gates)[:, group])
    fit = GeneratorFit(cert.primal, cert.dual, cert.gap, 0.0, len(group), n_iter)
    return _finish(network, fit, cert.gap <= tol, G.shape[1], max_iter, tol)


def _finish(network, fit, converged, n_outputs, max_iter, tol):
    log.info("generator fit: %d outputs, %d neurons, objective %.4g, relative gap %.2g, %d iterations",
             n_outputs, fit.n_neurons, fit.objective, fit.gap, fit.n_iter)
    if not converged:
        warnings.warn(f"generator fit stopped at max_iter={max_iter} above tol={tol:.2g} (gap {fit.gap:.2g}, cone "
                      f"violation {fit.cone_violation:.2g}): raise max_iter or lam.", ConvergenceWarning, stacklevel=3)
    network.certificate = fit
    return network


def _stack(networks, activation):
    """One network from per-output networks (n, m) -> (n, 1): neurons side by side, each
    feeding its own output."""
    output = torch.block_diag(*(net.output.weight.T for net in networks))  # (sum m, c)
    return network_from_neurons(torch.cat([net.hidden.weight for net in networks]), output,
                                torch.cat([net.output.bias for net in networks]),
                                torch.cat([net.gates for net in networks], 1) if activation == "gated" else None)
