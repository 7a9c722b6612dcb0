"""The Newton solver (SSNAL): CVXPY's optimum on random problems, its Newton systems against the
generalized Hessian built by hand, the width of float32 and float64 solves, and the estimators'
use of it."""
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from convexgan import ConvexReLU, ConvexReLUClassifier, fit_relu_generator, losses, sample_patterns, solvers, ssnal
from convexgan.penalties import GroupL2
from cvxpy_reference import reference_optimum

N_PROBLEMS = 12


def random_problem(seed, loss):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(10, 30)), int(rng.integers(2, 6))
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n) if loss == "squared" else np.r_[0, 1, rng.integers(0, 2, n - 2)]
    return X, y, float(rng.uniform(0.005, 0.1)), bool(seed % 2)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
@pytest.mark.parametrize("tracked", [False, True])
def test_matches_cvxpy_with_and_without_intercept(loss, tracked, monkeypatch):
    """``tracked``: the line search combines the direction's ``X A^T xi`` (the route of d >= 64)
    instead of recomputing X W+ (small d)."""
    monkeypatch.setattr(ssnal, "TRACKED_IMAGE_DEPTH", 1 if tracked else 10 ** 9)
    estimator = ConvexReLU if loss == "squared" else ConvexReLUClassifier
    for seed in range(N_PROBLEMS):
        X, y, lam, fit_intercept = random_problem(seed, loss)
        model = estimator(lam=lam, n_patterns=8, activation="gated", solver="newton", tol=1e-9,
                          fit_intercept=fit_intercept, seed=seed).fit(X, y)
        assert model.solver_ == "newton" and model.converged_, (seed, model.gap_)
        Y = y[:, None] if loss == "squared" else (2.0 * y - 1)[:, None]
        expected = reference_optimum(X, Y, X @ model.gates_ >= 0, lam, loss, "gated", fit_intercept, vector=False)
        assert model.objective_ == pytest.approx(expected, rel=1e-6), seed
        assert model.dual_objective_ <= expected * (1 + 1e-7) + 1e-12, seed
        assert model.network_objective(X, y) == pytest.approx(model.objective_, rel=1e-8), seed


@pytest.mark.parametrize("shape", ["tall", "wide"])
def test_vector_output_program_matches_cvxpy(shape):
    """Every output with its own neurons (the generator fit): one program over all outputs.
    Tall (n >> d P) problems take the active-group Newton systems, wide ones the n-space ones."""
    rng = np.random.default_rng(3)
    n, d, P = (120, 2, 4) if shape == "tall" else (15, 4, 10)
    Z, G = rng.standard_normal((n, d)), rng.standard_normal((n, 3))
    network = fit_relu_generator(Z, G, lam=0.02, n_patterns=P, activation="gated", tol=1e-9, max_iter=500)
    masks, _ = sample_patterns(Z, P, seed=0)
    expected = sum(reference_optimum(Z, G[:, [k]], masks, 0.02, "squared", "gated", True, vector=False)
                   for k in range(3))
    assert network.certificate.gap <= 1e-9
    assert network.certificate.objective == pytest.approx(expected, rel=1e-6)
    own = ((network(torch.as_tensor(Z)).numpy() - G) ** 2).sum() / (2 * n) + 0.02 * float(network.weight_penalty())
    assert own == pytest.approx(expected, rel=1e-6)


def explicit_hessian(program, state, sigma, k):
    """grad^2 F* + sigma (A J A^T + 1 1^T) for output k, from the dense masked design."""
    X, masks = program.X, program.mask_weights
    n, d = X.shape
    design = (masks[:, :, None] * X[:, None, :]).reshape(n, -1)  # columns group-major
    blocks = []
    for g in range(masks.shape[1]):
        v, t = state.V[:, g, k], sigma * program.penalty.lam
        norm = torch.linalg.vector_norm(v)
        blocks.append(torch.zeros(d, d, dtype=X.dtype) if norm <= t else
                      (1 - t / norm) * torch.eye(d, dtype=X.dtype) + t / norm ** 3 * torch.outer(v, v))
    H = design @ torch.block_diag(*blocks) @ design.T + (1.0 if program.fit_intercept else 0.0)
    curvature = program.loss.conjugate_hessian(state.xi, program.Y)[:, k]
    return torch.diag(curvature) + sigma * H


# squared: n = 40, 9 in the active-group space, n = 6 in n-space (float32, refined); logistic: n-space in float64
@pytest.mark.parametrize("loss,n,c", [("squared", 40, 2), ("squared", 9, 1), ("squared", 6, 2), ("logistic", 30, 1)])
def test_newton_direction_solves_the_generalized_hessian_system(loss, n, c, monkeypatch):
    monkeypatch.setattr(ssnal, "BLOCK_ENTRIES", 13)  # K in float32 built over several blocks of rows
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.standard_normal((n, 3)))
    masks = torch.as_tensor(rng.random((n, 4)) > 0.4)
    Y = torch.as_tensor(rng.standard_normal((n, c)) if loss == "squared" else rng.choice([-1.0, 1.0], (n, 1)))
    program = solvers.ConvexProgram(X, masks, torch.ones(4, dtype=X.dtype), Y, losses.LOSSES[loss](),
                                    GroupL2(1.0), fit_intercept=True, cone=False)
    W = 5 * torch.as_tensor(rng.standard_normal((3, 4, c)))
    W[:, :2] = 0  # groups the prox may set to zero
    share = torch.as_tensor(rng.uniform(0.1, 0.9, (n, c)))  # a dual point inside the conjugate's domain
    xi = 0.01 * share if loss == "squared" else -Y * share / n
    state = ssnal._psi(program, xi, W, program.image(W), torch.zeros(c, dtype=X.dtype), 0.7,
                       ssnal._Products.of(program, xi))
    assert 0 < int((state.scale > 0).sum()) < 4 * c  # some groups active, some not
    direction = ssnal._NewtonSystems(program).direction(state, 0.7, program.loss.conjugate_hessian(xi, Y))
    for k in range(c):
        H = explicit_hessian(program, state, 0.7, k)
        # the n-space systems round H's entries to float32 (exact otherwise): a backward error of
        # that size, against a residual of ||grad|| = 1e-1..1e1 for a wrong direction
        residual = torch.linalg.vector_norm(H @ direction[:, k] + state.grad[:, k])
        scale = torch.linalg.matrix_norm(H, 2) * torch.linalg.vector_norm(direction[:, k])
        assert residual <= 10 * torch.finfo(torch.float32).eps * scale


@pytest.mark.parametrize("condition,block_entries", [(1e3, 2 ** 25), (1e3, 600), (1e12, 2 ** 25)])
def test_refined_solve_reaches_float64_accuracy_or_refuses(condition, block_entries, monkeypatch):
    # a float32 Cholesky factorization refined with float64 residuals (over blocks of rows of H: 6
    # blocks with 600 entries): the float32 system solved to float64 accuracy while cond * eps32
    # is small; None (the caller goes to float64) at 1e12
    monkeypatch.setattr(ssnal, "BLOCK_ENTRIES", block_entries)
    rng = np.random.default_rng(1)
    Q, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    H = torch.as_tensor((Q * np.geomspace(1, condition, 60)) @ Q.T, dtype=torch.float32)
    H = (H + H.T) / 2
    rhs = torch.as_tensor(rng.standard_normal((60, 1)))
    overflowed = H.clone()
    overflowed[3, 3] = math.inf  # float32 overflow while forming H: the caller goes to float64
    assert ssnal._refined_solve(overflowed, rhs) is None
    x = ssnal._refined_solve(H.clone(), rhs)
    if condition > 1e6:
        assert x is None
        return
    exact = torch.linalg.solve(H.double(), rhs)
    assert x.dtype == torch.float64
    assert torch.linalg.vector_norm(x - exact) <= 1e3 * condition * 2.3e-16 * torch.linalg.vector_norm(exact)


def test_dense_limit_counts_the_memory_a_device_can_give(monkeypatch):
    GiB, cuda = 2 ** 30, torch.device("cuda", 0)
    # a CPU: what the available memory holds at 28 bytes an entry, between 8,000 and 16,000 rows
    for available, rows in ((1 * GiB, 8000), (4 * GiB, 12385), (20 * GiB, 16000)):
        monkeypatch.setattr(ssnal, "_available_memory", lambda: available)
        assert ssnal.dense_limit(torch.device("cpu")) == ssnal.dense_limit("cpu") == rows
    assert 12385 ** 2 * 28 <= 4 * GiB < 12386 ** 2 * 28
    monkeypatch.undo()
    assert ssnal._available_memory() > 0  # this machine tells
    with pytest.raises(RuntimeError, match="device"):
        ssnal.dense_limit("no such device")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (40 * GiB, 141 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 5 * GiB)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 5 * GiB)
    assert ssnal.dense_limit(cuda) == math.isqrt(40 * GiB // ssnal.DENSE_BYTES)
    # blocks torch keeps cached after an earlier solve are free to the next one (on an H200 a
    # second 50,000-sample fit in one process was refused before they counted)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 70 * GiB)
    assert ssnal.dense_limit(cuda) == math.isqrt(105 * GiB // ssnal.DENSE_BYTES) > 50000
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (0, 141 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 5 * GiB)
    assert ssnal.dense_limit(cuda) == ssnal.DENSE_LIMIT


def test_float32_and_float64_solves_recover_the_same_width():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((60, 5))
    y = np.maximum(X @ rng.standard_normal(5), 0) - np.maximum(X @ rng.standard_normal(5), 0)
    Y = np.c_[y, X[:, 0] * X[:, 1]]
    for target in (y, Y):  # one output (Newton against FISTA), two (nuclear norm, FISTA)
        widths = [ConvexReLU(lam=0.02, n_patterns=30, activation="gated", tol=1e-5, dtype=dtype, solver=solver,
                             max_iter=50000).fit(X, target).n_neurons_
                  for dtype, solver in [("float64", "auto"), ("float32", "fista")]]
        assert widths[0] == widths[1] and 0 < widths[0] < 30 * target.reshape(60, -1).shape[1]


def test_certify_uses_the_fitted_program_after_set_params():
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((40, 4)), rng.standard_normal(40)
    model = ConvexReLU(lam=0.01, n_patterns=12, activation="gated", tol=1e-9).fit(X, y)
    model.set_params(lam=1.0, fit_intercept=False)
    cert = model.certify(X, y, model.coef_, model.intercept_)
    # the fitted program (lam 0.01, intercept): its primal, and a gap only its optimum has (the
    # gradient-based dual of ``certify`` is weaker than the solver's own, which proved 1e-9)
    assert cert.primal == pytest.approx(model.objective_, rel=1e-10) and cert.gap <= 1e-6
    assert model.network_objective(X, y) == pytest.approx(model.objective_, rel=1e-8)


def test_non_convergence_warns_and_bad_solver_choices_are_named():
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((50, 6)), rng.standard_normal(50)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        model = ConvexReLU(lam=1e-4, n_patterns=20, activation="gated", tol=1e-12, max_iter=2).fit(X, y)
    assert not model.converged_
    with pytest.raises(ValueError, match="solver='fista'"):  # cross-entropy has no smooth conjugate
        ConvexReLUClassifier(activation="gated", solver="newton").fit(X, np.arange(50) % 3)
    with pytest.raises(ValueError, match="solver"):
        ConvexReLU(activation="relu", solver="newton").fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert ConvexReLUClassifier(activation="gated", tol=1e-6).fit(X, np.arange(50) % 3).solver_ == "fista"


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_a_solve_from_the_carried_dual_iterate_matches_cvxpy(loss):
    """Along a path the dual iterate of one solve starts the next (scaled to the new lam): the
    warm solve reaches CVXPY's optimum, its dual stays a lower bound, and it hands its own dual
    iterate on."""
    X, y, lam, fit_intercept = random_problem(4, loss)
    Y = y[:, None] if loss == "squared" else (2.0 * y - 1)[:, None]
    masks = X @ np.random.default_rng(0).standard_normal((X.shape[1], 6)) >= 0
    program = solvers.ConvexProgram.from_arrays(X, masks, np.ones(6), Y, losses.LOSSES[loss](), GroupL2(2 * lam),
                                                fit_intercept, False, torch.float64, "cpu")
    dual = {}
    W, b, _, _ = ssnal.solve_ssnal(program, *program.zeros(), 1e-10, 500, dual=dual)
    assert dual["lam"] == 2 * lam and dual["xi"].shape == Y.shape
    program.penalty.lam = lam
    W, b, cert, _ = ssnal.solve_ssnal(program, W, b, 1e-10, 500, dual=dual)
    expected = reference_optimum(X, Y, masks, lam, loss, "gated", fit_intercept, vector=False)
    assert cert.primal == pytest.approx(expected, rel=1e-6)
    assert cert.dual <= expected * (1 + 1e-7) + 1e-12
    assert dual["lam"] == lam


def test_a_centered_iterate_outside_the_logistic_domain_still_certifies():
    """With an intercept the dual iterate is centered (1^T xi = 0); where that pushes samples whose
    dual weight is near 0 out of the logistic conjugate's domain, the point is moved toward the
    centered intercept-only gradient just enough: centered, inside, its A^T xi carried exactly,
    and its dual value a finite lower bound on CVXPY's optimum."""
    X, y, lam, _ = random_problem(4, "logistic")
    Y = (2.0 * y - 1)[:, None]
    masks = X @ np.random.default_rng(0).standard_normal((X.shape[1], 6)) >= 0
    program = solvers.ConvexProgram.from_arrays(X, masks, np.ones(6), Y, losses.LogisticLoss(), GroupL2(lam),
                                                True, False, torch.float64, "cpu")
    n = len(Y)
    share = torch.as_tensor(np.random.default_rng(1).uniform(0.05, 0.95, (n, 1)))
    share[Y > 0] = 1e-9  # dual weights near 0 on one class: centering moves them the wrong way
    xi = -program.Y * share / n
    assert float(xi.sum()) > 0 and not program.loss.in_conjugate_domain(xi - xi.mean(), program.Y)
    systems = ssnal._NewtonSystems(program)
    centered = xi - xi.mean()
    adjoint = program.adjoint(program.loss_image_grad(centered))
    point, point_adjoint = ssnal._toward_anchor(program, systems.anchor, centered, adjoint)
    assert program.loss.in_conjugate_domain(point, program.Y)
    assert abs(float(point.sum())) <= 1e-15 * float(point.abs().sum())
    torch.testing.assert_close(point_adjoint, program.adjoint(program.loss_image_grad(point)), rtol=1e-12, atol=1e-15)
    expected = reference_optimum(X, Y, masks, lam, "logistic", "gated", True, vector=False)
    cert = ssnal._xi_certificate(program, systems, expected, xi, program.adjoint(program.loss_image_grad(xi)))
    assert math.isfinite(cert.dual) and cert.dual <= expected * (1 + 1e-7)
