"""The talk's example: the convex optimum is the global optimum of the non-convex network."""
import numpy as np
import pytest
import torch

from convexgan import ConvexReLU, TwoLayerGatedReLU, TwoLayerReLU, enumerate_patterns
from cvxpy_reference import reference_optimum

X = np.array([[2.0, 2.0], [3.0, 3.0], [1.0, 0.0]])
y = np.array([1.0, 2.0, -1.0])
LAM = 0.05


def nonconvex_objective(net, lam):
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)[:, None]
    return 0.5 * ((net(Xt) - yt) ** 2).sum() / len(X) + lam * net.weight_penalty()


@pytest.fixture(scope="module")
def convex():
    _, gates = enumerate_patterns(X)
    return ConvexReLU(lam=LAM, gates=gates, fit_intercept=False, tol=1e-10, max_iter=100000).fit(X, y)


def test_convex_optimum_and_recovered_network(convex):
    masks = X @ convex.gates_ >= 0
    expected = reference_optimum(X, y[:, None], masks, LAM, "squared", "relu", False, False)
    assert convex.converged_ and convex.objective_ == pytest.approx(expected, rel=1e-6)
    net = convex.to_torch()
    assert float(nonconvex_objective(net, LAM).detach()) == pytest.approx(convex.objective_, rel=1e-9)


@pytest.mark.slow
def test_adam_never_beats_the_convex_optimum(convex):
    width = max(convex.n_neurons_, 1)
    finals = []
    for seed in range(10):
        torch.manual_seed(seed)
        net = TwoLayerReLU(2, width, 1, bias=False).double()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(3000):
            optimizer.zero_grad()
            objective = nonconvex_objective(net, LAM)
            objective.backward()
            optimizer.step()
        finals.append(float(nonconvex_objective(net, LAM).detach()))
    assert min(finals) >= convex.objective_ * (1 - 1e-6)
    # and Adam does reach it from some start: the convex optimum is attained, not just a bound
    assert min(finals) <= convex.objective_ * (1 + 1e-3)


def test_gated_network_with_shared_gates_computes_every_neuron():
    """Neurons sharing gates take the per-gate path of ``TwoLayerGatedReLU.forward``: the same
    outputs and gradients as the neuron-by-neuron sum, for inputs with extra leading axes."""
    generator = torch.Generator().manual_seed(0)
    d, n_gates, per_gate, c = 7, 3, 9, 5
    net = TwoLayerGatedReLU(d, n_gates * per_gate, c).double()
    torch.nn.init.normal_(net.output.bias, generator=generator)
    net.gates.copy_(torch.randn(d, n_gates, dtype=torch.float64, generator=generator).repeat_interleave(per_gate, 1))
    x = torch.randn(4, 6, d, dtype=torch.float64, generator=generator)
    by_neuron = net.output.bias + sum(
        ((x @ net.gates[:, i] >= 0).double() * (x @ net.hidden.weight[i]))[..., None] * net.output.weight[:, i]
        for i in range(n_gates * per_gate))
    out = net(x)
    assert out.shape == (4, 6, c)
    torch.testing.assert_close(out, by_neuron, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="7 features"):
        net(torch.randn(4, 14, dtype=torch.float64))  # 56 entries would reshape into rows of 7
    weights = [net.hidden.weight, net.output.weight]
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(
        torch.autograd.grad(out.square().sum(), weights), torch.autograd.grad(by_neuron.square().sum(), weights)))
