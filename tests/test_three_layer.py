"""ConvexThreeLayer: a reference of the program written group by group in CVXPY, the recovered
network's own objective, the two-layer optimum it must not exceed (two-layer networks are
three-layer ones with one neuron per sub-network), sampled patterns against every pattern, and
gradient training from random starts."""
import numpy as np
import pytest
import torch

from convexgan import ConvexReLU, ConvexThreeLayer, enumerate_patterns
from convexgan.three_layer import ParallelThreeLayer

LAM = 1e-2


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (6, 2))
    X, y = np.c_[x, np.ones(6)], np.sin(2 * x[:, 0]) * x[:, 1]
    return X, y, ConvexThreeLayer(lam=LAM).fit(X, y)


def test_the_recovered_network_attains_the_optimum(problem):
    X, y, model = problem
    assert model.network_objective(X, y) == pytest.approx(model.objective_, rel=1e-6)
    assert model.n_subnetworks_ <= len(X)  # the solver's spread optimum, moved to at most n sub-networks
    net = model.to_torch()
    with torch.no_grad():  # the objective written out with plain torch
        pred = net(torch.from_numpy(X))[:, 0].numpy()
        penalty = sum(np.linalg.norm(W) * np.linalg.norm(b) * abs(a) for W, b, a in zip(net.W, net.b, net.a))
        assert float(torch.linalg.vector_norm(net.W, dim=(1, 2)).max()) <= 1 + 1e-9  # ||W_k||_F <= 1
    assert 0.5 * np.mean((pred - y) ** 2) + LAM * float(penalty) == pytest.approx(model.objective_, rel=1e-6)


def test_the_optimum_is_at_most_the_two_layer_optimum_and_sampling_only_raises_it(problem):
    X, y, model = problem
    _, gates = enumerate_patterns(X)
    two_layer = ConvexReLU(lam=LAM, gates=gates, activation="relu", fit_intercept=False, tol=1e-8,
                           max_iter=100_000).fit(X, y)
    assert model.objective_ <= two_layer.objective_ * (1 + 1e-6)
    sampled = ConvexThreeLayer(lam=LAM, n_patterns=10, n_patterns_second=10, seed=1).fit(X, y)
    assert sampled.objective_ >= model.objective_ * (1 - 1e-6)
    assert sampled.network_objective(X, y) == pytest.approx(sampled.objective_, rel=1e-6)


def reference_optimum(X, y, first, second, lam):
    """The three-layer program written group by group in CVXPY, from the patterns alone."""
    import cvxpy as cp
    n, d = X.shape
    pred, penalty, constraints = 0, 0, []
    for j in range(second.shape[1]):
        D2 = second[:, j].astype(float)
        for sigma in (1, -1):
            z = 0
            for i in range(first.shape[1]):
                D1 = first[:, i].astype(float)
                for s in (1, -1):
                    u = cp.Variable(d)
                    constraints.append(cp.multiply(2 * D1 - 1, X @ u) >= 0)
                    z = z + s * cp.multiply(D1, X @ u)
                    penalty = penalty + cp.norm(u)
            constraints.append(cp.multiply(2 * D2 - 1, z) >= 0)
            pred = pred + sigma * cp.multiply(D2, z)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(pred - y) / (2 * n) + lam * penalty), constraints)
    problem.solve(solver="CLARABEL")
    assert problem.status == "optimal", problem.status
    return problem.value


def test_the_program_matches_a_reference_written_group_by_group(problem):
    X, y, _ = problem
    model = ConvexThreeLayer(lam=LAM, n_patterns=5, n_patterns_second=5, seed=2).fit(X, y)
    reference = reference_optimum(X, y, model.masks_, model.masks_second_, LAM)
    assert model.objective_ == pytest.approx(reference, rel=1e-6)


@pytest.mark.slow  # 10 Adam runs: about 15 s
def test_no_adam_start_beats_the_optimum(problem):
    X, y, model = problem
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for seed in range(10):
        generator = torch.Generator().manual_seed(seed)
        net = ParallelThreeLayer(*(0.5 * torch.randn(*shape, generator=generator, dtype=torch.float64)
                                   for shape in ((4, 3, 4), (4, 4), (4,))))
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(2000):
            optimizer.zero_grad()
            (0.5 * ((net(Xt)[:, 0] - yt) ** 2).mean() + LAM * net.penalty()).backward()
            optimizer.step()
        with torch.no_grad():
            assert float(0.5 * ((net(Xt)[:, 0] - yt) ** 2).mean() + LAM * net.penalty()) >= model.objective_ * (1 - 1e-6)


def test_bad_input_is_refused_with_the_fix():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((12, 2)), rng.standard_normal(12)
    with pytest.raises(ValueError, match="lam"):
        ConvexThreeLayer(lam=0).fit(X, y)
    with pytest.raises(ValueError, match="2\\^n - 1"):
        ConvexThreeLayer().fit(X, y)
    with pytest.raises(ValueError, match="n_patterns"):
        ConvexThreeLayer(n_patterns=0).fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        ConvexThreeLayer(n_patterns=5, n_patterns_second=5).fit(np.where(X > 1, np.nan, X), y)
    with pytest.raises(ValueError):
        ConvexThreeLayer(n_patterns=5, n_patterns_second=5).fit(X, y[:3])
