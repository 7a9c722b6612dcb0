"""max_margin against the closed form on orthogonally separable data (two one-class SVMs, solved
here by CVXPY), its dual certificate, and gradient flow from random starts."""
import cvxpy as cp
import numpy as np
import pytest
import torch

from convexgan.cli.figure_gradient_flow import orthogonal_data, ring_data
from convexgan.max_margin import gradient_flow, max_margin, normalized_margin


def one_class_svm_norm(A):
    """min ||w|| s.t. A w >= 1: the hard-margin SVM without bias of one class."""
    w = cp.Variable(A.shape[1])
    cp.Problem(cp.Minimize(cp.norm(w)), [A @ w >= 1]).solve(solver="CLARABEL")
    return float(np.linalg.norm(w.value))


def test_orthogonally_separable_data_give_the_two_one_class_svms():
    X, y = orthogonal_data(30, seed=3)
    same = np.outer(y, y) > 0  # the premise: positive inner products within a class, none across
    assert ((X @ X.T)[same] > 0).all() and ((X @ X.T)[~same] <= 0).all()
    best = max_margin(X, y, n_patterns="all")
    closed_form = one_class_svm_norm(X[y > 0]) + one_class_svm_norm(-X[y < 0])
    assert best.objective_ == pytest.approx(closed_form, rel=1e-6)
    assert best.gap_ <= 1e-6 and best.margin_ == pytest.approx(1 / best.objective_)
    assert normalized_margin(best.network_, X, y) == pytest.approx(best.margin_, rel=1e-6)
    with torch.no_grad():
        assert (y * best.network_(torch.from_numpy(X))[:, 0].numpy()).min() >= 1 - 1e-6
    assert best.network_.hidden.weight.shape[0] == 2  # one neuron per class
    assert best.dual_.sum() == pytest.approx(best.objective_, rel=1e-6)  # strong duality


@pytest.mark.slow  # 10 runs of 3,000 steps: about 11 s
def test_gradient_flow_reaches_the_optimum_on_orthogonal_data_and_never_exceeds_it():
    X, y = orthogonal_data(24, seed=0)
    best = max_margin(X, y, n_patterns="all")
    for seed in range(10):
        network, _, margins = gradient_flow(X, y, width=30, steps=3000, seed=seed)
        assert margins.max() <= best.margin_ * (1 + 1e-6)
        assert normalized_margin(network, X, y) >= 0.95 * best.margin_  # the theorem, within 5 %


@pytest.mark.parametrize("activation", [pytest.param("relu", marks=pytest.mark.slow), "gated"])
def test_no_gradient_trained_network_beats_the_certified_margin(activation):
    X, y = ring_data(16, seed=1)
    best = max_margin(X, y, n_patterns="all", activation=activation)
    assert best.gap_ <= 1e-6  # the dual multipliers, checked by the library's own dual norms
    assert normalized_margin(best.network_, X, y) == pytest.approx(best.margin_, rel=1e-6)
    if activation == "relu":  # the optimum over every ReLU network of any width: gradient training included
        for seed in range(10):
            _, _, margins = gradient_flow(X, y, width=20, steps=1000, seed=seed)
            assert margins.max() <= best.margin_ * (1 + 1e-6)


def test_bad_input_is_refused_with_the_fix():
    X, y = orthogonal_data(10, seed=0)
    with pytest.raises(ValueError, match="separates"):
        max_margin(np.vstack([X, X[:1]]), np.r_[y, -y[:1]])  # one point with both labels
    with pytest.raises(ValueError, match="-1 and \\+1"):
        max_margin(X, (y > 0).astype(float))
    with pytest.raises(ValueError, match="samples"):
        max_margin(X, y[:5])
    with pytest.raises(ValueError, match="NaN"):
        max_margin(np.where(X > 1, np.inf, X), y)
    with pytest.raises(ValueError, match="activation"):
        max_margin(X, y, activation="tanh")
    with pytest.raises(ValueError, match="gates"):
        max_margin(X, y, gates=np.ones((3, 4)))
    with pytest.raises(ValueError, match="width"):
        gradient_flow(X, y, width=0)
    with pytest.raises(ValueError, match="-1 and \\+1"):
        gradient_flow(X, 2 * y)
