"""The non-convex two-layer networks that the convex programs solve, as ``torch.nn`` modules."""
import torch
from torch import nn


class TwoLayerReLU(nn.Module):
    """``f(x) = W2 relu(W1 x) + b``: hidden (m, d) -> output (c, m). Input (n, d), output (n, c)."""

    def __init__(self, d, m, c, bias=True):
        super().__init__()
        self.hidden = nn.Linear(d, m, bias=False)
        self.output = nn.Linear(m, c, bias=bias)

    def activation(self, x):
        return torch.relu(self.hidden(x))

    def forward(self, x):
        return self.output(self.activation(x))

    def weight_penalty(self):
        """``1/2 (||W1||_F^2 + ||W2||_F^2)``; the intercept is not penalized."""
        return 0.5 * (self.hidden.weight.pow(2).sum() + self.output.weight.pow(2).sum())


class TwoLayerGatedReLU(TwoLayerReLU):
    """``f(x) = W2 ((W1 x) * 1[gates^T x >= 0]) + b``. gates (d, m) is a buffer, not trained."""

    def __init__(self, d, m, c, bias=True):
        super().__init__(d, m, c, bias)
        self.register_buffer("gates", torch.zeros(d, m))

    def activation(self, x):
        # in place on the fresh hidden output: one pass less over an (n, m) tensor
        return self.hidden(x).masked_fill_(x @ self.gates < 0, 0)
