"""Losses: gradients against autograd, conjugates against the Fenchel-Young equality."""
import numpy as np
import pytest
import torch

from convexgan import CrossEntropyLoss, LogisticLoss, SquaredLoss


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
