"""Convex fit of a two-layer ReLU generator to a target, such as the closed-form ``G*`` of ``svt``.

``fit_relu_generator(Z, G)`` finds ``(Z W1)_+ W2 + b ~= G`` with the least weight norm through
the vector-output convex program of ``ConvexReLU`` in which every output has its own neurons:

    min  1/(2n) ||sum_i D_i Z V_i + b - G||_F^2 + lam sum_{i,k} ||V_i[:, k]||

That program separates over the output columns, so it is solved one column at a time (each a
scalar program; gated ones are preconditioned) and the networks are stacked. As ``lam -> 0`` the
solution tends to the minimum-norm interpolant ``min sum ||V_i[:, k]|| s.t. sum_i D_i Z V_i + b = G``
when the patterns can represent G. ``activation="relu"`` is the exact ReLU program (cone
constraints; fine for small problems), ``"gated"`` fixes each neuron's gate to its sampled
pattern (unconstrained, fast; what the progressive trainer uses).
"""
import logging
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .models import ConvexReLU
from .networks import TwoLayerGatedReLU, TwoLayerReLU
from .validation import check_X_y

log = logging.getLogger(__name__)


class GeneratorFit(NamedTuple):
    """Certificate of a generator fit, summed over output columns: primal and dual objectives,
    relative duality gap, the worst relative cone violation (relu), neurons, FISTA iterations."""
    objective: float
    dual_objective: float
    gap: float
    cone_violation: float
    n_neurons: int
    n_iter: int


def fit_relu_generator(Z, G, lam=1e-4, n_patterns=64, activation="relu", tol=1e-4, max_iter=20000,
                       seed=0, device="cpu", dtype="float64", progress=False):
    """Two-layer (gated) ReLU generator from inputs Z (n, m) (noise, or image patches) to
    targets G (n, c), e.g. the rows of ``svt``'s G*. Returns the recovered ``TwoLayerReLU``
    (``TwoLayerGatedReLU`` for "gated"), a ``torch.nn.Module`` in float64 on the CPU mapping
    (n, m) to (n, c); its ``certificate`` attribute is the fit's ``GeneratorFit``."""
    Z, G = check_X_y(Z, G)
    G = G.reshape(len(G), -1)
    models = []
    for k in tqdm(range(G.shape[1]), desc="fitting generator outputs", unit="output", disable=not progress):
        models.append(ConvexReLU(lam=lam, n_patterns=n_patterns, activation=activation, tol=tol,
                                 max_iter=max_iter, seed=seed, device=device, dtype=dtype).fit(Z, G[:, k]))
    network = _stack([model.network_ for model in models], activation)
    primal = sum(model.objective_ for model in models)
    dual = sum(model.dual_objective_ for model in models)
    fit = GeneratorFit(primal, dual, (primal - dual) / max(abs(primal), 1e-300),
                       max(model.cone_violation_ for model in models), network.hidden.weight.shape[0],
                       sum(model.n_iter_ for model in models))
    log.info("generator fit: %d outputs, %d neurons, objective %.4g, relative gap %.2g, %d iterations",
             G.shape[1], fit.n_neurons, fit.objective, fit.gap, fit.n_iter)
    if not all(model.converged_ for model in models):
        log.warning("generator fit stopped at max_iter=%d above tol=%.2g (gap %.2g, cone violation %.2g): "
                    "raise max_iter or lam.", max_iter, tol, fit.gap, fit.cone_violation)
    network.certificate = fit
    return network


def _stack(networks, activation):
    """One network from per-output networks (n, m) -> (n, 1): neurons side by side, each
    feeding its own output."""
    d, c = networks[0].hidden.weight.shape[1], len(networks)
    sizes = [net.hidden.weight.shape[0] for net in networks]
    network = (TwoLayerGatedReLU if activation == "gated" else TwoLayerReLU)(d, sum(sizes), c).double()
    output = torch.zeros(c, sum(sizes), dtype=torch.float64)
    start = np.cumsum([0] + sizes)
    for k, net in enumerate(networks):
        output[k, start[k]:start[k + 1]] = net.output.weight[0]
    with torch.no_grad():
        network.hidden.weight.copy_(torch.cat([net.hidden.weight for net in networks]))
        network.output.weight.copy_(output)
        network.output.bias.copy_(torch.cat([net.output.bias for net in networks]))
        if activation == "gated":
            network.gates.copy_(torch.cat([net.gates for net in networks], 1))
    return network.requires_grad_(False)
