"""SVT: the closed form against its defining constraint, streaming against in-memory."""
import importlib
import warnings

import numpy as np
import pytest
import torch

from convexgan.svt import GramAccumulator, svt, svt_factor


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((60, 12)) @ np.diag(np.linspace(3, 0.1, 12))


def test_constraint_holds_with_equality_and_singular_values_are_thresholded(data):
    s = np.linalg.svd(data, compute_uv=False)
    for lam in [0.5 * s[0] ** 2, s[4] ** 2 * 1.01, 1e-3]:
        G, used = svt(data, lam=lam)
        assert used == lam and G.shape == data.shape
        gap = np.linalg.norm(data.T @ data - G.T @ G, 2)
        # rounding of the Gram matrices: about eps * n * s_max^2, whatever lam is
        assert gap == pytest.approx(lam, rel=1e-9, abs=10 * np.finfo(float).eps * len(data) * s[0] ** 2)
        expected = np.sqrt(np.clip(s ** 2 - lam, 0, None))
        np.testing.assert_allclose(np.linalg.svd(G, compute_uv=False), expected, atol=1e-9 * s[0])
    G, used = svt(data, lam=2 * s[0] ** 2)  # above the top eigenvalue: zero is feasible and optimal
    assert np.abs(G).max() == 0


def test_minimum_norm_matches_the_semidefinite_program():
    """Independent reference: with M = G^T G the problem is the SDP
    min trace(M) s.t. -lam I <= X^T X - M <= lam I, M >= 0, solved by CVXPY."""
    cp = pytest.importorskip("cvxpy")
    X = np.random.default_rng(2).standard_normal((15, 6)) @ np.diag([3, 2, 1.5, 1, 0.5, 0.2])
    lam = np.linalg.svd(X, compute_uv=False)[2] ** 2
    M = cp.Variable((6, 6), PSD=True)
    gram = X.T @ X
    constraints = [gram - M << lam * np.eye(6), M - gram << lam * np.eye(6)]
    problem = cp.Problem(cp.Minimize(cp.trace(M)), constraints)
    problem.solve(solver="CLARABEL")
    G, _ = svt(X, lam=lam)
    assert np.linalg.norm(G) ** 2 == pytest.approx(problem.value, rel=1e-6)


def test_rank_keeps_the_top_directions(data):
    G, lam = svt(data, rank=3)
    assert np.linalg.matrix_rank(G, tol=1e-9 * np.abs(G).max()) == 3
    assert lam == pytest.approx(np.linalg.svd(data, compute_uv=False)[3] ** 2)


def test_streaming_factor_matches_in_memory_svt(data):
    accumulator = GramAccumulator(centered=True)
    for start in range(0, len(data), 7):
        accumulator.update(data[start:start + 7])
    centered = data - data.mean(0)
    np.testing.assert_allclose(accumulator.mean, data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(accumulator.gram(), centered.T @ centered, rtol=1e-10, atol=1e-10)
    for kwargs in [dict(rank=5), dict(lam=10.0)]:
        B, lam = svt_factor(accumulator.gram(), **kwargs)
        G, lam_direct = svt(centered, **kwargs)
        assert lam == pytest.approx(lam_direct, rel=1e-9)
        np.testing.assert_allclose(B.T @ B, G.T @ G, rtol=1e-6, atol=1e-6 * np.abs(G.T @ G).max())


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="exactly one"):
        svt(np.ones((3, 2)))
    with pytest.raises(ValueError, match="lam must be"):
        svt(np.ones((3, 2)), lam=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        svt(np.array([[np.nan, 1.0], [0.0, 1.0]]), lam=1.0)
    with pytest.raises(ValueError, match="2-D"):
        svt_factor(np.ones(4), rank=1)
    with pytest.raises(ValueError, match="rank must be"):
        svt_factor(np.eye(3), rank=0)
    with pytest.raises(ValueError, match="empty"):
        GramAccumulator().mean
    accumulator = GramAccumulator().update(np.ones((2, 3)))
    with pytest.raises(ValueError, match="features"):
        accumulator.update(np.ones((2, 4)))


def test_device_cuda_gives_the_numpy_result_or_says_what_is_missing():
    from convexgan.svt import to_device
    X = np.random.default_rng(5).standard_normal((40, 12))
    G, lam = svt(X, rank=4)
    G_cpu, _ = svt(X, rank=4, device="cpu")
    np.testing.assert_array_equal(G, G_cpu)
    with pytest.raises(ValueError, match="device must be"):
        svt(X, rank=4, device="tpu")
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no CuPy or no GPU here: the request is refused with the fix named
        with pytest.raises(ValueError, match="needs CuPy|no CUDA|cupy"):
            svt(X, rank=4, device="cuda")
        return
    G_gpu, lam_gpu = svt(X, rank=4, device="cuda")
    np.testing.assert_allclose(to_device(G_gpu, "cpu"), G, rtol=1e-6, atol=1e-9)
    assert lam_gpu == pytest.approx(lam, rel=1e-9)


@pytest.mark.parametrize("shape", [(60, 12), (12, 60)])
def test_factors_from_either_gram_matrix_give_the_closed_form(shape):
    """Tall X uses X^T X, wide X (fewer samples than features) X X^T: both give svt's G = Q B."""
    from convexgan.svt import svt_factors
    rng = np.random.default_rng(3)
    X = rng.standard_normal(shape) * np.linspace(3, 0.1, shape[1])
    s = np.linalg.svd(X, compute_uv=False)
    # lam between two squared singular values: at one of them the kept value is sqrt(rounding)
    for kwargs in ({"rank": 5}, {"lam": float(s[3] ** 2 + s[4] ** 2) / 2}):
        Q, B, lam = svt_factors(X, **kwargs)
        G, lam_svt = svt(X, **kwargs)
        assert lam == pytest.approx(lam_svt, rel=1e-12)
        np.testing.assert_allclose(Q @ B, G, atol=1e-9 * np.abs(G).max())
        np.testing.assert_allclose(Q.T @ Q, np.eye(Q.shape[1]), atol=1e-9)  # orthonormal columns
        np.testing.assert_allclose(Q @ (Q.T @ X), X @ np.linalg.pinv(B) @ B, atol=1e-8 * np.abs(X).max())


@pytest.mark.parametrize("shape", [(60, 12), (12, 60)])
def test_the_factors_signs_do_not_depend_on_the_gram_matrix_decomposed(shape):
    """svt_factors (X X^T for wide X) and svt_basis (X^T X, the matrix summed over ranks) give the
    same B, signs included, so that a generator's samples for a seed are the same."""
    from convexgan.svt import svt_basis, svt_factors
    X = np.random.default_rng(5).standard_normal(shape) * np.linspace(3, 0.1, shape[1])
    Q, B, lam = svt_factors(X, rank=4)
    Vt, s, kept, lam_gram = svt_basis(X.T @ X, rank=4)
    assert lam_gram == pytest.approx(lam, rel=1e-9)
    np.testing.assert_allclose(np.sqrt(kept)[:, None] * Vt, B, atol=1e-9 * np.abs(B).max())
    np.testing.assert_allclose(X @ Vt.T / s, Q, atol=1e-9)
    assert (B[np.arange(4), np.abs(B).argmax(1)] > 0).all()  # the largest entry of each row is positive


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_torch_tensors_give_the_numpy_result_in_their_own_kind(engine, monkeypatch):
    """CPU tensors are computed by NumPy; "torch" is the path of a CUDA tensor without CuPy
    (torch.linalg, with a warning), exercised here on the CPU."""
    from convexgan.svt import svt_factors
    svt_module = importlib.import_module("convexgan.svt")  # the package's name svt is the function
    monkeypatch.setattr(svt_module, "_tensor_engine", lambda tensor: engine)
    rng = np.random.default_rng(7)
    X = rng.standard_normal((30, 50)) * np.linspace(2, 0.1, 50)
    tensor = torch.from_numpy(X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        G, lam = svt(tensor, rank=6)
        Q, B, lam_factors = svt_factors(tensor, rank=6)
        accumulator = GramAccumulator().update(tensor[:20]).update(tensor[20:])
        B_stream, lam_stream = svt_factor(accumulator.gram(), rank=6)
        assert G.dtype == torch.float64 and svt(tensor.float(), rank=6)[0].dtype == torch.float32
    assert any("torch.linalg" in str(w.message) for w in caught) == (engine == "torch")
    G_ref, lam_ref = svt(X, rank=6)
    assert all(isinstance(a, torch.Tensor) for a in (G, Q, B, B_stream, accumulator.mean))
    scale = np.abs(G_ref).max()
    np.testing.assert_allclose(G.numpy(), G_ref, atol=1e-10 * scale)
    np.testing.assert_allclose((Q @ B).numpy(), G_ref, atol=1e-10 * scale)
    assert lam == pytest.approx(lam_ref, rel=1e-10) and lam_factors == pytest.approx(lam_ref, rel=1e-10)
    centered = X - X.mean(0)
    np.testing.assert_allclose(accumulator.gram().numpy(), centered.T @ centered, atol=1e-10 * np.abs(X).max() ** 2 * len(X))
    B_ref, lam_stream_ref = svt_factor(centered.T @ centered, rank=6)
    np.testing.assert_allclose((B_stream.T @ B_stream).numpy(), B_ref.T @ B_ref, atol=1e-9 * np.abs(B_ref).max() ** 2)
    assert lam_stream == pytest.approx(lam_stream_ref, rel=1e-10)
