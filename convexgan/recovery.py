"""Neurons of a convex program's solution: one recovery for the estimators, the convolutional blocks
and the generator fits.

Group weights W (d, G, c), G groups (patterns), c outputs. Two penalties, two readings:

- nuclear norm (gated networks whose neurons share their group's gate): the SVD of each group,
  ``W_g = sum_k s_k u_k v_k^T``, gives neurons ``w = sqrt(s_k) u_k`` with output weights
  ``sqrt(s_k) v_k`` (``shared_neurons``);
- l2 per group and output (every neuron feeds one output): each nonzero column ``W[:, g, k]`` is
  the neuron ``w = W_gk / sqrt(||W_gk||)`` with output weight ``sqrt(||W_gk||)`` on output k
  (``separate_neurons``).

Either way ``lam/2 (||w||^2 + ||a||^2)`` summed over the neurons equals the penalty of W, so the
recovered network's objective is the convex optimum. A solve in a given precision leaves
rounding-sized singular values or norms where the exact solution has zeros; those below
``NEURON_RTOL * eps(dtype)`` times the largest are not neurons, so a float32 and a float64 solve
of the same program recover the same width.
"""
import torch

NEURON_RTOL = 10.0  # in units of the solve's machine epsilon, relative to the largest singular value


def threshold(values, dtype):
    """The smallest value (of singular values or norms ``values``) that counts as a neuron for a
    solve computed in ``dtype``."""
    return NEURON_RTOL * torch.finfo(dtype).eps * values.max().clamp_min(torch.finfo(torch.float64).tiny)


def shared_neurons(W, dtype=torch.float64):
    """Neurons of W (d, G, c) under the nuclear norm, strongest first.
    Returns ``(group (m,), hidden (m, d), output (m, c), singular values (m,))``, float64."""
    if W.shape[2] == 1:  # one output: each group's singular value is its norm
        group, hidden, output = separate_neurons(W, dtype)
        order = torch.argsort(output[:, 0], descending=True)
        return group[order], hidden[order], output[order], output[order, 0] ** 2
    U, s, Vh = torch.linalg.svd(W.double().transpose(0, 1), full_matrices=False)  # (G, d, r) (G, r) (G, r, c)
    group, k = torch.nonzero(s > threshold(s, dtype), as_tuple=True)
    order = torch.argsort(s[group, k], descending=True)
    group, k = group[order], k[order]
    root = s[group, k].sqrt()
    return group, U[group, :, k] * root[:, None], Vh[group, k, :] * root[:, None], s[group, k]


def separate_neurons(W, dtype=torch.float64):
    """Neurons of W (d, G, c) under the l2 penalty per group and output, in (group, output) order.
    Returns ``(group (m,), hidden (m, d), output (m, c))``, float64: each neuron's output weight
    sits in its own output's column."""
    W = W.double()
    norms = torch.linalg.vector_norm(W, dim=0)  # (G, c)
    group, k = torch.nonzero(norms > threshold(norms, dtype), as_tuple=True)
    root = norms[group, k].sqrt()
    output = torch.zeros(len(group), W.shape[2], dtype=torch.float64, device=W.device)
    output[torch.arange(len(group)), k] = root
    return group, W[:, group, k].T / root[:, None], output
