"""The non-convex two-layer networks that the convex programs solve, as ``torch.nn`` modules."""
import warnings

import torch
from torch import nn


class TwoLayerReLU(nn.Module):
    """The two-layer ReLU network ``f(x) = W2 relu(W1 x) + b``.

    Parameters
    ----------
    d : int
        Input features.
    m : int
        Hidden neurons: ``hidden`` is ``nn.Linear(d, m)`` without bias (W1, shape (m, d)).
    c : int
        Outputs: ``output`` is ``nn.Linear(m, c)`` (W2, shape (c, m), and b).
    bias : bool, default True
        Whether the output layer has the intercept b.
    """

    def __init__(self, d, m, c, bias=True):
        super().__init__()
        self.hidden = nn.Linear(d, m, bias=False)
        self.output = nn.Linear(m, c, bias=bias)

    def activation(self, x):
        """The hidden layer's output.

        Parameters
        ----------
        x : torch.Tensor of shape (..., d)
            Inputs.

        Returns
        -------
        torch.Tensor of shape (..., m)
            ``relu(W1 x)``.
        """
        return torch.relu(self.hidden(x))

    def forward(self, x):
        """The network's output.

        Parameters
        ----------
        x : torch.Tensor of shape (..., d)
            Inputs.

        Returns
        -------
        torch.Tensor of shape (..., c)
            ``f(x)``.
        """
        return self.output(self.activation(x))

    def weight_penalty(self):
        """The weight decay term, without lam; the intercept is not penalized.

        Returns
        -------
        torch.Tensor
            The scalar ``1/2 (||W1||_F^2 + ||W2||_F^2)``.
        """
        return 0.5 * (self.hidden.weight.pow(2).sum() + self.output.weight.pow(2).sum())


class TwoLayerGatedReLU(TwoLayerReLU):
    """The two-layer gated ReLU network ``f(x) = W2 ((W1 x) * 1[gates^T x >= 0]) + b``.

    Parameters
    ----------
    d : int
        Input features.
    m : int
        Hidden neurons; ``gates`` (d, m) is a buffer, not trained.
    c : int
        Outputs.
    bias : bool, default True
        Whether the output layer has the intercept b.
    """

    def __init__(self, d, m, c, bias=True):
        super().__init__(d, m, c, bias)
        self.register_buffer("gates", torch.zeros(d, m))

    def activation(self, x):
        """The hidden layer's output.

        Parameters
        ----------
        x : torch.Tensor of shape (..., d)
            Inputs.

        Returns
        -------
        torch.Tensor of shape (..., m)
            ``(W1 x) * 1[gates^T x >= 0]``.
        """
        # in place on the fresh hidden output: one pass less over an (n, m) tensor
        return self.hidden(x).masked_fill_(x @ self.gates < 0, 0)

    def forward(self, x):
        """The network's output.

        Neurons that share a gate act on its half-space as one linear map, ``x -> x^T sum_i w_i a_i^T``
        (d, c): with fewer distinct gates J than neurons m (a convex solution has up to min(d, c)
        neurons per gate), the output is one product of the gated inputs ``[x 1[x^T g_j >= 0]]_j``
        (n, J d) with the J stacked maps, ``J d (c + 2)`` multiply-adds per row instead of
        ``m (2 d + c)``, and no (n, m) hidden tensor.

        Parameters
        ----------
        x : torch.Tensor of shape (..., d)
            Inputs.

        Returns
        -------
        torch.Tensor of shape (..., c)
            ``f(x)``.
        """
        (m, d), c = self.hidden.weight.shape, self.output.weight.shape[0]
        if x.shape[-1] != d:  # the rows are read by reshape, which would not notice
            raise ValueError(f"x must have {d} features in its last axis, got shape {tuple(x.shape)}.")
        gates, which = torch.unique(self.gates, dim=1, return_inverse=True)
        J = gates.shape[1]
        if J * d * (c + 2) >= m * (2 * d + c):
            return super().forward(x)
        neurons = self.hidden.weight[:, :, None] * self.output.weight.T[:, None, :]  # (m, d, c)
        maps = torch.zeros(J, d, c, dtype=neurons.dtype, device=neurons.device).index_add(0, which, neurons)
        rows = x.reshape(-1, d)
        gated = rows[:, None, :] * (rows @ gates >= 0).to(x.dtype)[:, :, None]  # (n, J, d)
        out = (gated.reshape(len(rows), J * d) @ maps.reshape(J * d, c)).reshape(*x.shape[:-1], c)
        return out if self.output.bias is None else out + self.output.bias


def network_from_neurons(hidden, output, bias=None, gates=None):
    """The frozen float64 network with neurons ``hidden`` (m, d), output weights ``output`` (m, c),
    intercept ``bias`` (c,) or None, and for a gated network the ``gates`` (d, m)."""
    (m, d), c = hidden.shape, output.shape[1]
    network_class = TwoLayerReLU if gates is None else TwoLayerGatedReLU
    with warnings.catch_warnings():  # a network with no neurons is legitimate: lam >= lam_max
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")
        network = network_class(d, m, c, bias=bias is not None).double()
    with torch.no_grad():
        network.hidden.weight.copy_(hidden)
        network.output.weight.copy_(output.T)
        if bias is not None:
            network.output.bias.copy_(torch.as_tensor(bias))
        if gates is not None:
            network.gates.copy_(torch.as_tensor(gates))
    return network.requires_grad_(False)
