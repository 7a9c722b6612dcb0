"""The convex convolutional block: features by brute force, the optimum by CVXPY, and the
recovered ConvBlock + head reproduce the program's scores."""
import cvxpy as cp
import numpy as np
import pytest
import torch
from torch import nn

from convexgan import losses, solvers
from convexgan.convolutional import PooledConvProgram, patch_whitening, pooled_features, recover_block, whiten
from convexgan.patterns import conv_patterns
from convexgan.penalties import NuclearNorm


def brute_force_features(x, gates):
    """Quadrant means of masked zero-padded 3 x 3 patches, by loops."""
    N, C, H, W = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((len(gates), N, 4, 9 * C))
    for p, gate in enumerate(gates.reshape(len(gates), -1)):
        for n in range(N):
            for q, (rows, cols) in enumerate([(r, c) for r in (range(0, H // 2), range(H // 2, H))
                                              for c in (range(0, W // 2), range(W // 2, W))]):
                patches = [padded[n, :, i:i + 3, j:j + 3].reshape(-1) for i in rows for j in cols]
                out[p, n, q] = np.mean([z * (z @ gate >= 0) for z in patches], axis=0)
    return out


def cvxpy_optimum(features, y, lam):
    """The block's optimum by CVXPY: features (P, N, 4, D) as numbers, y (N,) labels in range(K)."""
    P, N, _, D = features.shape
    Y = np.eye(int(y.max()) + 1)[y]
    K = Y.shape[1]
    Ws = [cp.Variable((D, 4 * K)) for _ in range(P)]
    intercept = cp.Variable(K)
    scores = sum(features[p, :, q, :] @ Ws[p][:, q * K:(q + 1) * K] for p in range(P) for q in range(4))
    scores = scores + np.ones((N, 1)) @ cp.reshape(intercept, (1, K), order="C")
    objective = (cp.sum(cp.log_sum_exp(scores, axis=1)) - cp.sum(cp.multiply(Y, scores))) / N
    problem = cp.Problem(cp.Minimize(objective + lam * sum(cp.normNuc(w) for w in Ws)))
    problem.solve(solver="CLARABEL")
    return problem.value


@pytest.mark.parametrize("seed,whitened", [(0, False), (1, False), (2, False), (3, True), (4, True)])
def test_block_matches_cvxpy_and_its_recovered_network(seed, whitened):
    rng = np.random.default_rng(seed)
    N, C, H, K, lam = 12, 2, 4, 3, 0.05
    x = torch.tensor(rng.standard_normal((N, C, H, H)))
    y = np.r_[np.arange(K), rng.integers(0, K, N - K)]
    _, gates = conv_patterns(x, 3, seed=seed)
    features = pooled_features(x, gates)
    brute = brute_force_features(x.numpy(), gates.numpy())
    np.testing.assert_allclose(features.numpy(), brute.reshape(len(gates), N, -1), atol=1e-12)
    torch.testing.assert_close(pooled_features(x, gates, batch=5), features, rtol=1e-12, atol=1e-12)  # 5 + 5 + 2
    A = None
    if whitened:  # the program over v, u = A v: CVXPY sees the brute-force patches times A
        A = patch_whitening(features, 1e-3)
        features, brute = whiten(features, A), brute @ A.numpy()

    program = PooledConvProgram(features, torch.tensor(np.eye(K)[y]), losses.CrossEntropyLoss(), NuclearNorm(lam))
    W, b = program.zeros()
    W, b, cert, _ = solvers.solve_gated(program, W, b, 1e-8, 100000)

    optimum = cvxpy_optimum(brute, y, lam)
    assert cert.primal == pytest.approx(optimum, rel=1e-5)
    assert cert.dual <= optimum * (1 + 1e-7)

    block, head, _ = recover_block(W, gates, C, A, precision=torch.float64)
    linear = nn.Linear(head.shape[1], K).double()
    with torch.no_grad():
        linear.weight.copy_(head)
        linear.bias.copy_(b)
    network = nn.Sequential(block, nn.AdaptiveAvgPool2d(2), nn.Flatten(), linear)
    torch.testing.assert_close(network(x), program.predict(program.image(W), b), atol=1e-6, rtol=1e-6)


def test_program_image_and_adjoint_against_their_definition():
    rng = np.random.default_rng(5)
    P, n, D, K = 3, 7, 2, 3
    features = torch.tensor(rng.standard_normal((P, n, 4 * D)))
    program = PooledConvProgram(features, torch.tensor(np.eye(K)[rng.integers(0, K, n)]), losses.CrossEntropyLoss(),
                                NuclearNorm(0.1))
    W = torch.tensor(rng.standard_normal((D, P, 4 * K)))  # quadrant-major columns
    expected = torch.einsum("pnqi,ipqk->nk", features.reshape(P, n, 4, D), W.reshape(D, P, 4, K))[:, None, :]
    torch.testing.assert_close(program.image(W), expected, rtol=1e-12, atol=1e-12)
    R = torch.tensor(rng.standard_normal((n, 1, K)))  # the same for every pattern
    assert float((program.adjoint(R) * W).sum()) == pytest.approx(float((expected * R).sum()), rel=1e-12)


def test_image_of_low_rank_weights_equals_the_full_product():
    """Weights of rank <= K / 2 (FISTA's iterates once the neurons are found) take the low-rank
    route, to the full product's rounding; in float64 only exact zeros are dropped."""
    rng = np.random.default_rng(6)
    P, n, D, K = 3, 9, 16, 4  # D >= 4K: wide enough for the low-rank route
    features = torch.tensor(rng.standard_normal((P, n, 4 * D)))
    Y = torch.tensor(np.eye(K)[rng.integers(0, K, n)])
    program = PooledConvProgram(features.float(), Y.float(), losses.CrossEntropyLoss(), NuclearNorm(0.1))
    W = torch.zeros(D, P, 4 * K)
    W[:, 0] = torch.tensor(rng.standard_normal((D, 1)) @ rng.standard_normal((1, 4 * K)), dtype=torch.float32)
    W[:, 1] = torch.tensor(rng.standard_normal((D, 2)) @ rng.standard_normal((2, 4 * K)), dtype=torch.float32)
    W = program.penalty.prox(W, 1e-3)  # a float32 prox: rounding-sized singular values where it set zeros
    filters, heads = program._filters(W)
    assert filters.shape == (P, 2, D) and heads.shape == (P, K, 4 * 2)  # rank 2 = K / 2: the low-rank route
    expected = torch.einsum("pnqi,ipqk->nk", features.reshape(P, n, 4, D), W.double().reshape(D, P, 4, K))[:, None]
    torch.testing.assert_close(program.image(W).double(), expected, rtol=1e-5, atol=1e-5)
    zero = torch.zeros_like(W)
    assert program._filters(zero)[0].shape == (P, 0, D) and not program.image(zero).any()
    assert program.image(torch.full_like(W, float("nan"))).isnan().all()  # no eigensolver error

    exact = PooledConvProgram(features, Y, losses.CrossEntropyLoss(), NuclearNorm(0.1))
    W64 = W.double()
    W64[:, 2] = 1e-12 * torch.tensor(rng.standard_normal((D, 4 * K)))  # tiny, but not zero: not dropped in float64
    assert exact._filters(W64) is None
    expected = torch.einsum("pnqi,ipqk->nk", features.reshape(P, n, 4, D), W64.reshape(D, P, 4, K))[:, None]
    torch.testing.assert_close(exact.image(W64), expected, rtol=1e-12, atol=1e-15)


def test_patch_whitening_whitens_the_second_moment():
    rng = np.random.default_rng(0)
    mixing = torch.tensor(rng.standard_normal((18, 18)) * np.logspace(0, -3, 18))  # eigenvalues over 6 decades
    x = torch.tensor(rng.standard_normal((40, 2, 6, 6)))
    _, gates = conv_patterns(x, 4, seed=0)
    features = pooled_features(x, gates).reshape(4, 40, 4, 18) @ mixing
    A = patch_whitening(features.reshape(4, 40, -1), eps=1e-13)
    rows = whiten(features.reshape(4, 40, -1), A).reshape(-1, 18)
    torch.testing.assert_close(rows.T @ rows / len(rows), torch.eye(18, dtype=rows.dtype), atol=1e-5, rtol=0)
    torch.testing.assert_close(A, A.T)
    # float32 products (the float32 solves'): the same matrix to float32 precision
    single = patch_whitening(features.reshape(4, 40, -1).float(), eps=1e-3, dtype=torch.float32)
    torch.testing.assert_close(single.double(), patch_whitening(features.reshape(4, 40, -1), eps=1e-3),
                               rtol=1e-4, atol=1e-4 * float(single.abs().max()))


def test_whitening_rejects_bad_input():
    features = torch.randn(2, 5, 4 * 9)
    with pytest.raises(ValueError, match=r"\(P, N, 4D\)"):
        patch_whitening(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="eps must be"):
        patch_whitening(features, eps=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        patch_whitening(features.clone().index_fill_(0, torch.tensor([1]), float("nan")))
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64"):
        patch_whitening(features, dtype="float32")
    with pytest.raises(ValueError, match=r"A must be \(9, 9\)"):
        whiten(features, torch.eye(8))
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        pooled_features(torch.randn(3, 1, 4, 4), torch.randn(2, 1, 3, 3), batch=0)


def test_restricted_program_has_the_lifted_scores_and_nuclear_norms():
    rng = np.random.default_rng(7)
    P, n, D, K, k = 3, 8, 6, 2, 3
    features = torch.tensor(rng.standard_normal((P, n, 4 * D)))
    program = PooledConvProgram(features, torch.tensor(np.eye(K)[rng.integers(0, K, n)]), losses.CrossEntropyLoss(),
                                NuclearNorm(0.1))
    basis = torch.linalg.qr(torch.tensor(rng.standard_normal((P, D, k))))[0]
    M = torch.tensor(rng.standard_normal((k, P, 4 * K)))
    restricted, W = program.restricted(basis), program.lifted(basis, M)
    assert restricted.shape == (k, P, 4 * K)
    torch.testing.assert_close(restricted.image(M), program.image(W), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(restricted.penalty.group_norms(M), program.penalty.group_norms(W), rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_subspace_solver_reaches_the_cvxpy_optimum(dtype):
    """Blocks of 6 channels (D = 54, spans of k = 2 rank + 4 directions): the subspace rounds
    run, and the certified point is CVXPY's optimum."""
    rng = np.random.default_rng(8)
    N, C, H, K, lam = 30, 6, 4, 3, 0.05
    x = torch.tensor(rng.standard_normal((N, C, H, H)))
    y = np.r_[np.arange(K), rng.integers(0, K, N - K)]
    _, gates = conv_patterns(x, 2, seed=8)
    features = pooled_features(x, gates)
    Y = torch.tensor(np.eye(K)[y])
    program = PooledConvProgram(features.to(dtype), Y.to(dtype), losses.CrossEntropyLoss(), NuclearNorm(lam))
    history = []
    W, b, cert, n_iter = solvers.solve_gated_subspace(program, *program.zeros(), 1e-6, 20000, history=history,
                                                      warm_iter=20)
    assert cert.gap <= 1e-6 and W.dtype == dtype
    assert n_iter > 20 and len(history) > 2  # the rounds ran beyond the warm start

    brute = features.numpy().reshape(len(gates), N, 4, -1)
    optimum = cvxpy_optimum(brute, y, lam)
    assert cert.primal == pytest.approx(optimum, rel=2e-6)
    assert cert.dual <= optimum * (1 + 1e-7)


def test_subspace_solver_and_restriction_reject_what_they_cannot_solve():
    rng = np.random.default_rng(9)
    features = torch.tensor(rng.standard_normal((2, 5, 4 * 3)))
    Y = torch.tensor(np.eye(2)[rng.integers(0, 2, 5)])
    program = PooledConvProgram(features, Y, losses.CrossEntropyLoss(), NuclearNorm(0.1))
    with pytest.raises(ValueError, match=r"basis must be \(P, D, k\) = \(2, 3, k\)"):
        program.restricted(torch.zeros(2, 4, 1))
    with pytest.raises(ValueError, match="0 < k <= 3"):
        program.restricted(torch.zeros(2, 3, 0))
    gated = solvers.ConvexProgram(torch.ones(5, 3).double(), torch.ones(5, 2, dtype=torch.bool), torch.ones(2).double(),
                                  Y, losses.CrossEntropyLoss(), NuclearNorm(0.1), True, False)
    with pytest.raises(ValueError, match="use solve_gated"):
        solvers.solve_gated_subspace(gated, *gated.zeros(), 1e-3, 10)
