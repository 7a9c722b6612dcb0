"""ConvexBatchNormReLU against CVXPY, against torch's BatchNorm1d written out by hand, and against
gradient training of the same network from random starts."""
import numpy as np
import pytest
import torch
from torch import nn

from convexgan import ConvexBatchNormReLU
from convexgan.batch_norm import BN_EPS, batch_norm_objective
from tests.cvxpy_reference import reference_optimum

LAM = 1e-2


def by_hand(model, X):
    """The paper's layer, gamma (v - mean v) / ||v - mean v|| + alpha / sqrt(n), then ReLU and
    the output weights: (n, c)."""
    n = X.shape[0]
    V = X @ model.hidden_.T
    centred = V - V.mean(0)
    normalized = model.gamma_ * centred / np.linalg.norm(centred, axis=0) + model.alpha_ / np.sqrt(n)
    return np.maximum(normalized, 0) @ model.output_


def test_the_torch_network_is_the_papers_batch_norm_and_has_the_convex_objective():
    rng = np.random.default_rng(1)
    X, Y = 3 * rng.standard_normal((30, 4)) + 1, rng.standard_normal((30, 2))
    model = ConvexBatchNormReLU(lam=LAM, n_patterns=30, tol=1e-8, max_iter=50_000).fit(X, Y)
    assert model.converged_
    train = model.to_torch()
    with torch.no_grad():
        outputs = train(torch.from_numpy(X)).numpy()  # training mode: normalized over this batch
    np.testing.assert_allclose(outputs, by_hand(model, X), rtol=0, atol=1e-9 * np.abs(outputs).max())
    np.testing.assert_allclose(model.predict(X), outputs, rtol=0, atol=1e-9 * np.abs(outputs).max())
    n = len(X)
    penalty = (model.gamma_ ** 2 + model.alpha_ ** 2).sum() + (model.output_ ** 2).sum()
    by_hand_objective = 0.5 * ((by_hand(model, X) - Y) ** 2).sum() / n + 0.5 * LAM * penalty
    assert by_hand_objective == pytest.approx(model.objective_, rel=1e-6)
    assert model.network_objective(X, Y) == pytest.approx(model.objective_, rel=1e-6)
    bn = train[1]
    np.testing.assert_allclose(bn.weight.detach().numpy(), model.gamma_ / np.sqrt(n), rtol=1e-12)


@pytest.mark.slow  # the exact ReLU program over every pattern and 10 Adam runs: about 40 s
def test_the_optimum_matches_cvxpy_and_no_adam_start_beats_it():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 2))
    y = np.sin(2 * X[:, 0]) + X[:, 1] ** 2
    model = ConvexBatchNormReLU(lam=LAM, n_patterns="all", tol=1e-7, max_iter=100_000).fit(X, y)
    assert model.converged_
    # the reference: the program on the whitened features, written in CVXPY
    U, s, _ = np.linalg.svd(X - X.mean(0), full_matrices=False)
    features = np.hstack([U, np.full((8, 1), 8 ** -0.5)])
    masks = features @ model.convex_.gates_ >= 0
    reference = reference_optimum(features, y[:, None], masks, LAM, "squared", "relu", False, False)
    assert model.objective_ == pytest.approx(reference, rel=1e-6)
    assert model.network_objective(X, y) == pytest.approx(model.objective_, rel=1e-6)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for seed in range(10):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(2, 10, bias=False), nn.BatchNorm1d(10, eps=BN_EPS), nn.ReLU(),
                            nn.Linear(10, 1, bias=False)).double()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(1500):
            optimizer.zero_grad()
            objective = batch_norm_objective(net, Xt, yt, LAM)
            objective.backward()
            optimizer.step()
        with torch.no_grad():
            assert float(batch_norm_objective(net, Xt, yt, LAM)) >= model.dual_objective_  # never below the optimum


def test_bad_input_is_refused_with_the_fix():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((10, 3)), rng.standard_normal(10)
    for lam in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="lam"):
            ConvexBatchNormReLU(lam=lam).fit(X, y)
    with pytest.raises(ValueError, match="distinct rows"):
        ConvexBatchNormReLU().fit(np.ones((10, 3)), y)
    with pytest.raises(ValueError, match="NaN"):
        ConvexBatchNormReLU().fit(np.where(X > 1, np.nan, X), y)
    with pytest.raises(ValueError):
        ConvexBatchNormReLU().fit(X, y[:5])
    with pytest.raises(ValueError, match="n_patterns"):
        ConvexBatchNormReLU(n_patterns="some").fit(X, y)
    model = ConvexBatchNormReLU(n_patterns=10).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :2])
