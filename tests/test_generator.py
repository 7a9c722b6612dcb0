"""The convex ReLU generator fit: CVXPY's optimum, the recovered network's own objective, and
reproduction of the closed-form G*."""
import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from convexgan import fit_relu_generator, sample_patterns, svt
from cvxpy_reference import reference_optimum


@pytest.mark.parametrize("activation", ["relu", "gated"])
def test_fit_matches_cvxpy_and_its_own_network(activation):
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((12, 3))
    G, _ = svt(rng.standard_normal((12, 4)), rank=2)
    lam = 0.02
    network = fit_relu_generator(Z, G, lam=lam, n_patterns=6, activation=activation, tol=1e-8, max_iter=200000)
    masks, _ = sample_patterns(Z, 6, seed=0)  # the patterns every column's program uses
    expected = sum(reference_optimum(Z, G[:, [k]], masks, lam, "squared", activation, True, vector=False)
                   for k in range(G.shape[1]))
    fit = network.certificate
    assert isinstance(network, torch.nn.Module)
    assert fit.objective == pytest.approx(expected, rel=1e-5)
    assert fit.dual_objective <= expected * (1 + 1e-7)
    # the returned torch module's own non-convex objective is the certified optimum
    residual = network(torch.as_tensor(Z)).numpy() - G
    own = (residual ** 2).sum() / (2 * len(Z)) + lam * float(network.weight_penalty())
    assert own == pytest.approx(fit.objective, rel=1e-6)


def test_small_lam_reproduces_the_closed_form_generator():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 6))
    G, _ = svt(X - X.mean(0), rank=3)
    Z = rng.standard_normal((30, 4))
    network = fit_relu_generator(Z, G, lam=1e-4, n_patterns=32, activation="gated", tol=1e-2, max_iter=20000)
    fitted = network(torch.as_tensor(Z)).numpy()
    assert np.linalg.norm(fitted - G) <= 1e-2 * np.linalg.norm(G)
    # G*^T G* is what the GAN constraint sees: the fit keeps it
    assert np.linalg.norm(fitted.T @ fitted - G.T @ G, 2) <= 1e-2 * np.linalg.norm(G.T @ G, 2)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="NaN"):
        fit_relu_generator(np.full((5, 2), np.nan), np.zeros((5, 1)))
    with pytest.raises(ValueError):
        fit_relu_generator(np.zeros((5, 2)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="lam"):
        fit_relu_generator(np.ones((5, 2)), np.ones((5, 1)), lam=0)


@pytest.mark.parametrize("activation", ["relu", "gated"])
def test_a_fit_stopped_by_max_iter_warns_once(activation):
    rng = np.random.default_rng(1)
    Z, G = rng.standard_normal((12, 3)), rng.standard_normal((12, 3))
    with pytest.warns(ConvergenceWarning, match="generator fit stopped") as caught:
        network = fit_relu_generator(Z, G, lam=1e-3, n_patterns=6, activation=activation, tol=1e-12, max_iter=2)
    assert len([w for w in caught if issubclass(w.category, ConvergenceWarning)]) == 1
    assert network.certificate.gap > 1e-12
