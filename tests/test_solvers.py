"""The programs' products with the data, and the float64 certificate of float32 programs computed over
blocks of rows against the one of the whole program converted to float64."""
import numpy as np
import pytest
import torch

from convexgan import losses, solvers
from convexgan.convolutional import PooledConvProgram
from convexgan.penalties import GroupL2, NuclearNorm


def whole_float64_certificate(program, W, b):
    exact = program.float64()
    XW = exact.image(W.double())
    b = exact.intercept(XW, b.double())
    return exact.certificate(W.double(), b, XW), b


def assert_same(blocked, whole):
    (cert, b), (expected, expected_b) = blocked, whole
    assert cert.primal == pytest.approx(expected.primal, rel=1e-12)
    assert cert.dual == pytest.approx(expected.dual, rel=1e-12)
    torch.testing.assert_close(b, expected_b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("exact", [True, False])
def test_certificate_by_row_blocks_equals_the_whole_float64_certificate(loss, fit_intercept, exact, monkeypatch):
    monkeypatch.setattr(solvers, "ROW_BLOCK", 150)  # blocks of 3 rows
    rng = np.random.default_rng(1)
    n, d, G = 40, 5, 6
    X = rng.standard_normal((n, d))
    Y = rng.standard_normal((n, 1)) if loss == "squared" else rng.choice([-1.0, 1.0], (n, 1))
    masks = X @ rng.standard_normal((d, G)) >= 0
    if exact:  # built from float64 arrays: it keeps them for its certificates
        program = solvers.ConvexProgram.from_arrays(X, masks, np.ones(G), Y, losses.LOSSES[loss](), GroupL2(0.05),
                                                    fit_intercept, False, torch.float32, "cpu")
    else:  # float32 data only
        program = solvers.ConvexProgram(torch.tensor(X, dtype=torch.float32), torch.tensor(masks),
                                        torch.ones(G), torch.tensor(Y, dtype=torch.float32),
                                        losses.LOSSES[loss](), GroupL2(0.05), fit_intercept, False)
    W = torch.tensor(rng.standard_normal((d, G, 1)), dtype=torch.float32)
    b = torch.tensor([0.3], dtype=torch.float32)
    blocked = program.confirmed_certificate(W, b)
    assert exact or not hasattr(program, "_float64")  # no float64 copy of the whole data was made
    assert_same(blocked, whole_float64_certificate(program, W, b))


def test_convolutional_certificate_by_row_blocks(monkeypatch):
    rng = np.random.default_rng(2)
    P, n, QD, K = 3, 30, 8, 4
    features = torch.tensor(rng.standard_normal((P, n, QD)), dtype=torch.float32)
    Y = torch.tensor(np.eye(K)[rng.integers(0, K, n)], dtype=torch.float32)
    program = PooledConvProgram(features, Y, losses.CrossEntropyLoss(), NuclearNorm(0.1))
    monkeypatch.setattr(solvers, "ROW_BLOCK", 7 * (P * QD + program.shape[1] * program.shape[2]))  # 7 rows
    W = 0.3 * torch.tensor(rng.standard_normal(program.shape), dtype=torch.float32)
    b = torch.tensor(rng.standard_normal(K), dtype=torch.float32)
    blocked = program.confirmed_certificate(W, b)
    assert not hasattr(program, "_float64")
    assert_same(blocked, whole_float64_certificate(program, W, b))


def test_unconverged_float32_solve_reports_a_float64_certificate():
    rng = np.random.default_rng(3)
    n, d, G = 50, 6, 8
    X = rng.standard_normal((n, d))
    masks = X @ rng.standard_normal((d, G)) >= 0
    program = solvers.ConvexProgram(torch.tensor(X, dtype=torch.float32), torch.tensor(masks), torch.ones(G),
                                    torch.tensor(rng.standard_normal((n, 1)), dtype=torch.float32),
                                    losses.SquaredLoss(), GroupL2(0.01), True, False)
    W, b, cert, n_iter = solvers.solve_gated(program, *program.zeros(), tol=1e-12, max_iter=15)
    assert n_iter == 15 and cert.gap > 1e-12  # stopped by max_iter
    expected, expected_b = whole_float64_certificate(program, W, b)
    assert b.dtype == torch.float64 and cert.primal == pytest.approx(expected.primal, rel=1e-12)
    assert cert.dual == pytest.approx(expected.dual, rel=1e-12)
    torch.testing.assert_close(b, expected_b, rtol=1e-12, atol=1e-14)


def test_image_of_some_groups_equals_the_image_of_all():
    """``image(W, groups)`` computes only the named groups: equal to the full product when the
    other groups of W are zero, zeros in their place."""
    rng = np.random.default_rng(2)
    X = torch.as_tensor(rng.standard_normal((30, 4)))
    program = solvers.ConvexProgram(X, X @ torch.as_tensor(rng.standard_normal((4, 5))) >= 0,
                                    torch.ones(5, dtype=X.dtype), torch.as_tensor(rng.standard_normal((30, 2))),
                                    losses.SquaredLoss(), GroupL2(0.1), True, False)
    groups = torch.tensor([True, False, True, True, False])
    W = torch.as_tensor(rng.standard_normal((4, 5, 2))) * groups[:, None]
    image = program.image(W, groups)
    torch.testing.assert_close(image, program.image(W), rtol=1e-13, atol=1e-13)
    assert not image[:, ~groups].any()
    empty = solvers.ConvexProgram(X[:0], program.mask_weights[:0] > 0, torch.ones(5, dtype=X.dtype),
                                  program.Y[:0], losses.SquaredLoss(), GroupL2(0.1), True, False)
    assert empty.image(W, groups).shape == (0, 5, 2)  # an empty shard of rows


def test_lipschitz_estimate_against_the_masked_design_norm():
    """The power iteration stops early (``POWER_RTOL``) yet estimates ||[D_1 X, ..., D_G X]||^2,
    from below, to well within its 5 % margin."""
    rng = np.random.default_rng(3)
    X = torch.as_tensor(rng.standard_normal((80, 6)))
    masks = X @ torch.as_tensor(rng.standard_normal((6, 12))) >= 0
    program = solvers.ConvexProgram(X, masks, torch.ones(12, dtype=X.dtype), torch.zeros(80, 1, dtype=X.dtype),
                                    losses.SquaredLoss(), GroupL2(0.1), False, False)
    design = (masks[:, :, None] * X[:, None, :]).reshape(80, -1)
    exact = float(torch.linalg.matrix_norm(design, ord=2)) ** 2
    estimate = program.lipschitz_data() / 1.05
    assert 0.99 * exact <= estimate <= exact * (1 + 1e-12)


@pytest.mark.parametrize("shape", [(20, 60), (60, 20), (25, 25)])
def test_thin_svd_factors_wide_tall_and_rank_deficient_data(shape):
    """The QR route for wide data gives the thin SVD: orthonormal factors, ordered singular values
    equal to LAPACK's, and the data back to rounding (also for rank-deficient data)."""
    rng = np.random.default_rng(3)
    X = torch.as_tensor(rng.standard_normal(shape))
    X[:, 1] = X[:, 0]  # rank one below full
    X[1] = 2 * X[0]
    U, s, Vh = solvers._thin_svd(X)
    r = min(shape)
    eye = torch.eye(r, dtype=X.dtype)
    torch.testing.assert_close(U.T @ U, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(Vh @ Vh.T, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(s, torch.linalg.svdvals(X), rtol=0, atol=1e-12 * float(s[0]))
    torch.testing.assert_close(U * s @ Vh, X, rtol=0, atol=1e-12 * float(s[0]))
