"""Losses: gradients against autograd, conjugates against the Fenchel-Young equality."""
import numpy as np
import pytest
import torch

from convexgan import CrossEntropyLoss, GroupL2, LogisticLoss, SquaredLoss, sample_patterns
from convexgan.losses import Loss
from convexgan.solvers import ConvexProgram, solve_gated


def targets(loss, rng, n, c):
    if isinstance(loss, SquaredLoss):
        return torch.as_tensor(rng.standard_normal((n, c)))
    if isinstance(loss, LogisticLoss):
        return torch.as_tensor(rng.choice([-1.0, 1.0], (n, 1)))
    return torch.as_tensor(np.eye(c)[rng.integers(0, c, n)])


@pytest.mark.parametrize("loss", [SquaredLoss(), LogisticLoss(), CrossEntropyLoss()])
def test_gradient_conjugate_and_intercept(loss):
    rng = np.random.default_rng(0)
    n, c = 17, 1 if isinstance(loss, LogisticLoss) else 4
    Y = targets(loss, rng, n, c)
    Z = torch.tensor(rng.standard_normal((n, c)), requires_grad=True)
    value = loss.value(Z, Y)
    (autograd,) = torch.autograd.grad(value, Z)
    torch.testing.assert_close(loss.grad(Z, Y), autograd)
    Z = Z.detach()
    Theta = loss.grad(Z, Y)
    # Fenchel-Young: F(Z) + F*(Theta) = <Theta, Z> exactly when Theta = grad F(Z)
    assert float(loss.value(Z, Y) + loss.conjugate(Theta, Y)) == pytest.approx(float((Theta * Z).sum()), abs=1e-12)
    # and >= for any other dual point in the domain (here: scaled gradients of other points)
    for scale in [0.3, 0.9]:
        other = scale * loss.grad(torch.as_tensor(rng.standard_normal((n, c))), Y)
        assert float(loss.value(Z, Y) + loss.conjugate(other, Y)) >= float((other * Z).sum()) - 1e-12
    # the Bregman divergence, computed stably, against its definition
    Z_new = Z + 1e-3 * torch.as_tensor(rng.standard_normal((n, c)))
    direct = loss.value(Z_new, Y) - loss.value(Z, Y) - (Theta * (Z_new - Z)).sum()
    assert loss.bregman(Z_new, Z, Y) == pytest.approx(float(direct), rel=1e-5) and loss.bregman(Z_new, Z, Y) > 0
    b = loss.optimal_intercept(Z, Y, torch.zeros(c, dtype=Z.dtype))
    assert loss.grad(Z + b, Y).sum(0).abs().max() < 1e-10
    # optimal: moving b along any axis raises the loss by its second-order term, 1/2 t^2 H_kk (far
    # above rounding); a shift of every logit alike would be no test (cross-entropy ignores it)
    H = loss.intercept_hessian(Z + b, Y) if not isinstance(loss, SquaredLoss) else torch.eye(c, dtype=Z.dtype)
    for k in range(c):
        for t in [1e-3, -1e-3]:
            shift = torch.zeros(c, dtype=Z.dtype)
            shift[k] = t
            rise = float(loss.value(Z + b + shift, Y) - loss.value(Z + b, Y))
            assert rise == pytest.approx(0.5 * t * t * float(H[k, k]), rel=1e-2)


class HuberLoss(Loss):
    """A datafit the library does not ship, defined here in one class: the mean Huber loss, whose
    conjugate is ``sum n/2 Theta^2 + Theta Y`` on ``|n Theta| <= delta`` and +inf outside."""
    curvature = 1.0

    def __init__(self, delta):
        self.delta = delta

    def value(self, Z, Y):
        r = (Z - Y).abs()
        return self.total(torch.where(r <= self.delta, r ** 2 / 2, self.delta * (r - self.delta / 2))) / self.n(Z)

    def grad(self, Z, Y):
        return (Z - Y).clamp(-self.delta, self.delta) / self.n(Z)

    def conjugate(self, Theta, Y):
        n = self.n(Theta)
        if bool((n * Theta.abs() > self.delta * (1 + 1e-12)).any()):
            return torch.tensor(torch.inf, dtype=Theta.dtype)
        return self.total(n / 2 * Theta ** 2 + Theta * Y)

    def intercept_hessian(self, Z, Y):
        return torch.diag(self.total(((Z - Y).abs() <= self.delta).to(Z.dtype), 0)) / self.n(Z)


def test_a_new_datafit_works_with_fista_and_the_certificate():
    """Nothing in the solvers names the loss: a Huber loss defined in this file is solved by FISTA
    and certified, its optimum that of the same program written in CVXPY."""
    cvxpy = pytest.importorskip("cvxpy")
    rng = np.random.default_rng(0)
    n, d, P, lam, delta = 40, 4, 8, 0.02, 0.3
    X = rng.standard_normal((n, d))
    y = np.maximum(X[:, 0], 0) + rng.standard_t(2, n) * 0.3  # heavy tails: the Huber loss's case
    masks, _ = sample_patterns(X, P, seed=0)
    program = ConvexProgram.from_arrays(X, masks, np.ones(masks.shape[1]), y[:, None], HuberLoss(delta),
                                        GroupL2(lam), True, False, torch.float64, "cpu")
    W, b = program.zeros()
    W, b, cert, _ = solve_gated(program, W, b, tol=1e-8, max_iter=100_000)
    U, c = cvxpy.Variable((d, masks.shape[1])), cvxpy.Variable()
    pred = cvxpy.sum(cvxpy.multiply(masks, X @ U), axis=1) + c
    reference = cvxpy.Problem(cvxpy.Minimize(cvxpy.sum(cvxpy.huber(pred - y, delta)) / (2 * n)
                                             + lam * cvxpy.sum(cvxpy.norm(U, axis=0))))
    reference.solve(solver="CLARABEL")
    assert cert.gap <= 1e-8
    assert cert.primal == pytest.approx(reference.value, rel=1e-6)
    assert cert.dual <= reference.value * (1 + 1e-7)  # a proven lower bound
