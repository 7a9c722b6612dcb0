"""Proximal operators against the optimality conditions that define them."""
import pytest
import torch

from convexgan.penalties import GroupL2, NuclearNorm


@pytest.mark.parametrize("decades", [0, 4, 8])
def test_group_prox_in_a_metric_spanning_decades_meets_its_optimality_conditions(decades):
    """W = argmin 1/2 ||W - Z||_M^2 + t sum_g ||W_g||: a zero group has ||M z_g|| <= t, a nonzero one
    M (z_g - W_g) = t W_g / ||W_g||."""
    generator = torch.Generator().manual_seed(decades)
    d, groups = 12, 200
    metric = torch.logspace(-decades / 2, decades / 2, d, dtype=torch.float64)
    Z = torch.randn(d, groups, 1, generator=generator, dtype=torch.float64) * torch.logspace(-2, 1, groups).double()[:, None]
    step = 0.7
    penalty = GroupL2(float(torch.linalg.vector_norm(metric[:, None, None] * Z, dim=0).median()) / step)
    t = step * penalty.lam  # about half the groups are zero
    W = penalty.prox_metric(Z, step, metric)
    m = metric[:, None, None]
    norms = torch.linalg.vector_norm(W, dim=0)
    zero = norms == 0
    assert (torch.linalg.vector_norm(m * Z, dim=0)[zero] <= t * (1 + 1e-12)).all()
    assert 0 < int(zero.sum()) < groups  # both cases occur
    residual = m * (Z - W) - t * W / norms.clamp_min(1e-300)
    scale = torch.linalg.vector_norm(m * Z, dim=0)
    assert (torch.linalg.vector_norm(residual, dim=0)[~zero] <= 1e-9 * scale[~zero]).all()
    if decades == 0:  # the identity metric: the plain prox
        torch.testing.assert_close(W, penalty.prox(Z, step), rtol=1e-10, atol=1e-12)


def test_nuclear_prox_meets_its_optimality_conditions():
    """W = argmin 1/2 ||W - Z||^2 + t ||W||_* per group iff ||Z - W||_2 <= t and <Z - W, W> = t ||W||_*."""
    generator = torch.Generator().manual_seed(0)
    Z = torch.randn(6, 30, 4, generator=generator, dtype=torch.float64) * torch.linspace(0.1, 3, 30).double()[:, None]
    penalty, step = NuclearNorm(0.5), 0.8
    t = step * penalty.lam
    W = penalty.prox(Z, step)
    R = (Z - W).transpose(0, 1)
    assert (torch.linalg.matrix_norm(R, ord=2) <= t * (1 + 1e-10)).all()
    inner = (R * W.transpose(0, 1)).sum((1, 2))
    torch.testing.assert_close(inner, t * penalty.group_norms(W), rtol=1e-10, atol=1e-12)
    ranks = torch.linalg.matrix_rank(W.transpose(0, 1))
    assert ranks.min() == 0 and ranks.max() == 4  # thresholding kills some groups, keeps others whole
    assert float(penalty.value(W)) == pytest.approx(penalty.lam * float(penalty.group_norms(W).sum()))
