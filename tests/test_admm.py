"""ADMM for the exact ReLU program: against CVXPY, its linear system against the explicit matrix,
its stopping rule on the cone violation, and the inputs it refuses."""
import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from convexgan import ConvexReLU, ConvexReLUClassifier, admm, losses, solvers
from convexgan.penalties import GroupL2
from cvxpy_reference import reference_optimum


def random_problem(seed, outputs):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(12, 30)), int(rng.integers(2, 6))
    X = rng.standard_normal((n, d))
    y = rng.standard_normal((n, outputs)) if outputs > 1 else rng.standard_normal(n)
    return X, y, float(rng.uniform(0.01, 0.1)), bool(seed % 2)


@pytest.mark.parametrize("outputs", [1, 2])
def test_matches_cvxpy_with_and_without_intercept(outputs):
    for seed in range(4):
        X, y, lam, fit_intercept = random_problem(seed, outputs)
        model = ConvexReLU(lam=lam, n_patterns=6, solver="admm", tol=1e-7, max_iter=100000,
                           fit_intercept=fit_intercept, seed=seed).fit(X, y)
        assert model.solver_ == "admm" and model.converged_, (seed, model.gap_, model.cone_violation_)
        masks = X @ model.gates_ >= 0
        expected = reference_optimum(X, y.reshape(len(y), -1), masks, lam, "squared", "relu", fit_intercept,
                                     vector=outputs > 1)
        assert model.objective_ == pytest.approx(expected, rel=1e-6), seed
        assert model.dual_objective_ <= expected * (1 + 1e-7) + 1e-12, seed
        assert model.cone_violation_ <= 1e-7
        # the recovered ReLU network (hidden neurons on their cones) has the certified objective
        assert model.network_objective(X, y) == pytest.approx(model.objective_, rel=1e-4)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_weight_step_solves_the_normal_equations(fit_intercept):
    """The Woodbury solve of ``(E + A^T P A / n) W = rhs`` against the explicit (d G c) matrix."""
    rng = np.random.default_rng(1)
    n, d, G, c = 15, 3, 4, 2
    X = torch.as_tensor(rng.standard_normal((n, d)))
    masks = X @ torch.as_tensor(rng.standard_normal((d, G))) >= 0
    program = solvers.ConvexProgram(X, masks, torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=X.dtype),
                                    torch.as_tensor(rng.standard_normal((n, c))), losses.SquaredLoss(), GroupL2(0.1),
                                    fit_intercept, cone=True)
    program, _, _ = solvers.singular_basis(program, always=True)
    step = admm._WeightStep(program, 0.3, 0.02)
    rhs = torch.as_tensor(rng.standard_normal((d, G, c)))
    W, XW = step.solve(rhs)
    torch.testing.assert_close(XW, program.image(W), rtol=1e-10, atol=1e-12)
    center = torch.eye(n, dtype=X.dtype) - (1.0 / n if fit_intercept else 0.0)
    A = (program.mask_weights[:, :, None] * program.X[:, None, :]).reshape(n, G * d)  # columns group-major
    E = torch.diag((0.3 + 0.02 * program.X.square().sum(0)).repeat(G))
    for k in range(c):
        matrix = E + A.T @ center @ A / n
        torch.testing.assert_close(matrix @ W[:, :, k].T.reshape(-1), rhs[:, :, k].T.reshape(-1), rtol=1e-10,
                                   atol=1e-10)


def test_cone_tol_holds_the_violation_below_the_gap_tolerance():
    X, y, lam, _ = random_problem(2, 1)
    loose = ConvexReLU(lam=lam, n_patterns=8, solver="admm", tol=1e-3, fit_intercept=False).fit(X, y)
    tight = ConvexReLU(lam=lam, n_patterns=8, solver="admm", tol=1e-3, cone_tol=1e-9, max_iter=100000,
                       fit_intercept=False).fit(X, y)
    assert loose.converged_ and tight.converged_
    assert tight.cone_violation_ <= 1e-9 and tight.gap_ <= 1e-3
    assert tight.n_iter_ >= loose.n_iter_
    with pytest.raises(ValueError, match="cone_tol"):
        ConvexReLU(cone_tol=0.0).fit(X, y)


def test_all_zero_data_gives_the_intercept_alone():
    y = np.random.default_rng(0).standard_normal(25)
    model = ConvexReLU(lam=0.1, n_patterns=4, solver="admm").fit(np.zeros((25, 3)), y)
    assert model.converged_ and model.n_neurons_ == 0
    assert model.objective_ == pytest.approx(0.5 * np.var(y), rel=1e-12)
    np.testing.assert_allclose(model.predict(np.ones((2, 3))), y.mean(), rtol=1e-12)


def test_auto_picks_admm_for_large_squared_relu_programs_on_wide_data():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 40))
    y = np.maximum(X @ rng.standard_normal(40), 0) - np.maximum(X @ rng.standard_normal(40), 0)
    model = ConvexReLU(lam=0.05, n_patterns=40, tol=1e-5).fit(X, y)  # n d G = 384,000 > PROJECTION_SIZE
    assert model.solver_ == "admm" and model.converged_
    # the recovered network clips what is left outside the cones: its objective to about the violation
    assert model.network_objective(X, y) == pytest.approx(model.objective_, rel=1e-4)
    narrow = ConvexReLU(lam=0.05, n_patterns=20, max_iter=20)  # d < n / 4: the augmented Lagrangian
    with pytest.warns(ConvergenceWarning):
        assert narrow.fit(rng.standard_normal((600, 12)), rng.standard_normal(600)).solver_ == "augmented_lagrangian"


def test_refuses_other_losses_and_programs_outside_the_singular_basis():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, 3)), rng.integers(0, 2, 20)
    with pytest.raises(ValueError, match="solver='admm'.*squared loss"):
        ConvexReLUClassifier(solver="admm").fit(X, y)
    X = torch.as_tensor(X) @ torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    program = solvers.ConvexProgram(X, X @ torch.ones(3, 2, dtype=X.dtype) >= 0, torch.ones(2, dtype=X.dtype),
                                    torch.as_tensor(rng.standard_normal((20, 1))), losses.SquaredLoss(),
                                    GroupL2(0.1), True, cone=True)
    with pytest.raises(ValueError, match="singular basis"):
        admm.solve_cone_admm(program, *program.zeros(), 1e-6, 10)
    gated = solvers.ConvexProgram(X, program.mask_weights > 0, torch.ones(2, dtype=X.dtype), program.Y,
                                  losses.SquaredLoss(), GroupL2(0.1), True, cone=False)
    with pytest.raises(ValueError, match="cones"):
        admm.solve_cone_admm(gated, *gated.zeros(), 1e-6, 10)
