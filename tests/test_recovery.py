import torch

from convexgan.recovery import shared_neurons


def _network(group, hidden, output, G, d, c):
    """The group weights (d, G, c) that the neurons sum to: sum over neurons of w a^T in their group."""
    W = torch.zeros(d, G, c, dtype=torch.float64)
    for g, w, a in zip(group.tolist(), hidden, output):
        W[:, g] += torch.outer(w, a)
    return W


def test_one_output_neurons_match_the_singular_value_decomposition():
    """With one output the recovery skips the SVD (a column's singular value is its norm): same
    neurons, order, strengths and products as the SVD of each group, zero groups left out."""
    W = torch.randn(6, 5, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    W[:, 2] = 0
    group, hidden, output, s = shared_neurons(W)
    U, S, Vh = torch.linalg.svd(W.transpose(0, 1), full_matrices=False)
    expected = torch.argsort(S[:, 0], descending=True)[:4]  # four nonzero groups, strongest first
    assert torch.equal(group, expected)
    torch.testing.assert_close(s, S[expected, 0], rtol=1e-12, atol=0)
    torch.testing.assert_close(_network(group, hidden, output, 5, 6, 1), W, rtol=1e-12, atol=1e-14)
    # the balanced split: ||w|| = |a| = sqrt(s), so lam/2 (||w||^2 + a^2) is lam times the group norm
    torch.testing.assert_close(hidden.norm(dim=1) ** 2, s, rtol=1e-12, atol=0)
    torch.testing.assert_close(output[:, 0].abs() ** 2, s, rtol=1e-12, atol=0)
