"""ConvexQuadraticNet against an independent solver of its pure-quadratic case (proximal gradient
on the nuclear norm), the neural decomposition against the matrices it decomposes, and gradient
training of the same network from random starts."""
import numpy as np
import pytest
import torch

from convexgan import ConvexQuadraticNet
from convexgan.polynomial import neural_decomposition

LAM = 1e-2


def data(n=40, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, X[:, 0] * X[:, 1] + 0.5 * X[:, 2] ** 2 + X[:, 3] + 0.1 * rng.standard_normal(n)


def nuclear_norm_regression(X, y, lam, iterations=20000):
    """min_Q 1/(2n) sum_i (x_i^T Q x_i - y_i)^2 + lam ||Q||_* over symmetric Q, by FISTA with the
    eigenvalue soft-threshold: the program of a = 1, b = c = 0 (Q = Z1+ - Z1-)."""
    n, d = X.shape
    outer = np.einsum("ni,nj->nij", X, X).reshape(n, -1)
    step = n / np.linalg.norm(outer, 2) ** 2
    Q = previous = np.zeros((d, d))
    for k in range(iterations):
        Y = Q + (k - 1) / (k + 2) * (Q - previous) if k else Q
        grad = (outer.T @ (outer @ Y.ravel() - y) / n).reshape(d, d)
        values, vectors = np.linalg.eigh(Y - step * grad)
        previous, Q = Q, (vectors * (np.sign(values) * np.maximum(np.abs(values) - step * lam, 0))) @ vectors.T
    residual = np.einsum("ni,ij,nj->n", X, Q, X) - y
    return 0.5 * np.mean(residual ** 2) + lam * np.abs(np.linalg.eigvalsh(Q)).sum()


def test_the_pure_quadratic_case_matches_an_independent_nuclear_norm_solver():
    X, y = data()
    model = ConvexQuadraticNet(a=1.0, b=0.0, c=0.0, lam=LAM).fit(X, y)
    assert model.objective_ == pytest.approx(nuclear_norm_regression(X, y, LAM), rel=1e-6)
    assert model.network_objective(X, y) == pytest.approx(model.objective_, rel=1e-6)


@pytest.mark.slow  # 10 Adam runs: about 12 s
def test_the_recovered_network_has_the_optimum_and_no_adam_start_beats_it():
    X, y = data(seed=1)
    a, b, c = 0.09, 0.5, 0.47  # the default: a quadratic close to the ReLU on [-4, 4]
    model = ConvexQuadraticNet(a, b, c, lam=LAM).fit(X, y)
    assert model.network_objective(X, y) == pytest.approx(model.objective_, rel=1e-6)
    assert model.n_neurons_ <= 2 * (X.shape[1] + 1)
    np.testing.assert_allclose(np.linalg.norm(model.hidden_, axis=1), 1.0, rtol=1e-12)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for seed in range(10):
        torch.manual_seed(seed)
        direction = torch.randn(12, X.shape[1], dtype=torch.float64, requires_grad=True)
        alpha = (0.1 * torch.randn(12, dtype=torch.float64)).requires_grad_()
        optimizer = torch.optim.Adam([direction, alpha], lr=1e-2)

        def objective():
            t = Xt @ (direction / direction.norm(dim=1, keepdim=True)).T  # unit first-layer weights
            pred = (a * t ** 2 + b * t + c) @ alpha
            return 0.5 * ((pred - yt) ** 2).mean() + LAM * alpha.abs().sum()
        for _ in range(1500):
            optimizer.zero_grad()
            objective().backward()
            optimizer.step()
        with torch.no_grad():
            assert float(objective()) >= model.objective_ * (1 - 1e-6)


def test_the_neural_decomposition_rebuilds_the_matrix_from_unit_neurons():
    rng = np.random.default_rng(2)
    d = 5
    U = rng.standard_normal((9, d))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    lifted = np.c_[U, np.ones(9)]
    Z = lifted.T @ (rng.uniform(0.1, 2, 9)[:, None] * lifted)  # sum alpha_j [u; 1][u; 1]^T, rank d + 1
    neurons = neural_decomposition(Z)
    assert len(neurons) <= d + 1
    rebuilt = sum(alpha * np.outer(np.r_[u, 1], np.r_[u, 1]) for u, alpha in neurons)
    np.testing.assert_allclose(rebuilt, Z, rtol=0, atol=1e-10 * np.abs(Z).max())
    assert all(alpha > 0 and np.linalg.norm(u) == pytest.approx(1) for u, alpha in neurons)


def test_bad_input_is_refused_with_the_fix():
    X, y = data(n=10)
    for lam in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="lam"):
            ConvexQuadraticNet(a=1.0, b=0.0, c=0.0, lam=lam).fit(X, y)
    with pytest.raises(ValueError, match="a = b = 0"):
        ConvexQuadraticNet(a=0, b=0, c=1).fit(X, y)
    with pytest.raises(ValueError, match="finite"):
        ConvexQuadraticNet(a=float("nan")).fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        ConvexQuadraticNet().fit(np.where(X > 1, np.nan, X), y)
    with pytest.raises(ValueError):
        ConvexQuadraticNet().fit(X, y[:4])
    model = ConvexQuadraticNet().fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :2])
