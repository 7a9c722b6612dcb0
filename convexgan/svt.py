"""Closed-form generator of the convex Wasserstein GAN: singular value thresholding (SVT).

With a linear generator and a two-layer quadratic-activation discriminator whose norm is
penalized by ``lam``, the generator problem is

    min ||G||_F^2   s.t.   ||X^T X - G^T G||_2 <= lam

and its solution, with ``X = U S V^T``, is ``G* = U (S^2 - lam I)_+^{1/2} V^T``. Only ``G*^T G*``
matters to the constraint, so any orthonormal left factor serves: the solution is carried as its
right factor ``B = (S^2 - lam)_+^{1/2} V^T`` (k x d), and ``G = Q B`` for any Q with orthonormal
columns. Arrays are NumPy on the CPU and CuPy on a GPU: the input's type decides.
"""
import numpy as np
import scipy.linalg

from .validation import check_positive, check_positive_int


def array_module(A):
    """``cupy`` for a CuPy array, else ``numpy``."""
    module = type(A).__module__.split(".")[0]
    if module == "cupy":
        import cupy
        return cupy
    return np


def _check_finite_matrix(A, name, xp):
    if A.ndim != 2 or A.shape[0] == 0 or A.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {A.shape}.")
    if not bool(xp.isfinite(A).all()):
        raise ValueError(f"{name} contains NaN or inf: clean the data first.")


def threshold_spectrum(eigenvalues, lam=None, rank=None):
    """Kept values ``(S^2 - lam)_+`` from eigenvalues S^2 in decreasing order, and the lam used.

    Exactly one of ``lam`` (> 0) or ``rank`` (>= 1): ``rank`` keeps the top ``rank`` directions,
    with lam the next eigenvalue (0 when there is none).
    """
    if (lam is None) == (rank is None):
        raise ValueError("give exactly one of lam or rank.")
    if rank is not None:
        rank = check_positive_int(rank, "rank")
        lam = float(eigenvalues[rank]) if rank < len(eigenvalues) else 0.0
    else:
        lam = check_positive(lam, "lam")
    return (eigenvalues - lam).clip(0, None), lam


def to_device(A, device=None):
    """A as a NumPy array (``device="cpu"``) or a CuPy array (``"cuda"``/``"cuda:k"``); ``None``
    leaves it as it is. CuPy arrays move to the host with ``cupy.asnumpy``."""
    if device is None:
        return A
    if str(device).startswith("cuda"):
        try:
            import cupy
        except ImportError as err:
            raise ValueError("device='cuda' needs CuPy: pip install 'convexgan[gpu]' on a machine with a GPU.") from err
        with cupy.cuda.Device(int(str(device).partition(":")[2] or 0)):
            return cupy.asarray(A)
    if device != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:k', got {device!r}.")
    return A.get() if array_module(A) is not np else np.asarray(A)


def svt(X, lam=None, rank=None, device=None):
    """``G* = U (S^2 - lam I)_+^{1/2} V^T`` for X (n, d), NumPy or CuPy; same shape and type as X
    (``device`` "cpu" or "cuda" moves X first; by default the array's type decides).

    ``rank`` instead of ``lam`` keeps the top ``rank`` singular directions. Returns ``(G, lam)``.
    """
    X = to_device(X, device)
    xp = array_module(X)
    X = xp.asarray(X, dtype=X.dtype if X.dtype in (xp.float32, xp.float64) else xp.float64)
    _check_finite_matrix(X, "X", xp)
    U, s, Vt = xp.linalg.svd(X, full_matrices=False)
    kept, lam = threshold_spectrum(s ** 2, lam, rank)
    return (U * xp.sqrt(kept)) @ Vt, lam


class GramAccumulator:
    """Streams ``X^T X``, the column sums and the count over batches (b, d), so that n x d never
    needs to fit in memory. ``centered=True`` makes ``gram()`` the Gram matrix of the centered data.
    Accumulates in float64 (NumPy) or in the batches' precision on a GPU (CuPy)."""

    def __init__(self, centered=True):
        self.centered = centered
        self.sum_outer, self.sum, self.count = None, None, 0

    def update(self, batch):
        xp = array_module(batch)
        batch = xp.asarray(batch)
        _check_finite_matrix(batch, "batch", xp)
        if xp is np:
            batch = batch.astype(np.float64, copy=False)
        if self.sum_outer is None:
            self.sum_outer = xp.zeros((batch.shape[1],) * 2, dtype=batch.dtype)
            self.sum = xp.zeros(batch.shape[1], dtype=batch.dtype)
        elif batch.shape[1] != self.sum.shape[0]:
            raise ValueError(f"batch has {batch.shape[1]} features, earlier batches had {self.sum.shape[0]}.")
        self.sum_outer += batch.T @ batch
        self.sum += batch.sum(0)
        self.count += batch.shape[0]
        return self

    @property
    def mean(self):
        if self.count == 0:
            raise ValueError("no batch was accumulated: the data stream was empty.")
        return self.sum / self.count

    def gram(self):
        """(d, d): ``X^T X``, of the centered data when ``centered``."""
        mean = self.mean
        if not self.centered:
            return self.sum_outer
        return self.sum_outer - self.count * (mean[:, None] * mean[None, :])


def _descending_eigh(gram, xp, top=None):
    """Eigenvalues (clipped at 0) and eigenvectors of a symmetric matrix, largest first; with
    ``top``, only the ``top`` largest (on NumPy by a subset eigensolver: a rank-k SVT of a
    4,860^2 Gram matrix costs about half of the full eigendecomposition)."""
    n = gram.shape[0]
    if top is not None and top < n and xp is np:
        eigenvalues, vectors = scipy.linalg.eigh(gram, subset_by_index=[n - top, n - 1], driver="evr")
    else:
        eigenvalues, vectors = xp.linalg.eigh(gram)
    return eigenvalues[::-1].clip(0, None), vectors[:, ::-1]


def _needed(rank):
    """Eigenpairs a rank-``rank`` threshold reads: the kept ones and the next (its lam)."""
    return None if rank is None else check_positive_int(rank, "rank") + 1


def svt_factor(gram, lam=None, rank=None):
    """The right factor ``B = (S^2 - lam)_+^{1/2} V^T`` (k, d) of ``G*`` from a Gram matrix
    ``X^T X`` (d, d), by one symmetric eigendecomposition; k counts the kept directions.
    ``G* = Q B`` for any Q (n, k) with orthonormal columns. Returns ``(B, lam)``."""
    xp = array_module(gram)
    _check_finite_matrix(gram, "gram", xp)
    eigenvalues, vectors = _descending_eigh((gram + gram.T) / 2, xp, _needed(rank))
    kept, lam = threshold_spectrum(eigenvalues, lam, rank)
    k = int((kept > 0).sum())
    return xp.sqrt(kept[:k])[:, None] * vectors[:, :k].T, lam


def svt_factors(X, lam=None, rank=None):
    """``G* = U (S^2 - lam)_+^{1/2} V^T`` of X (n, d) as its two factors ``(Q, B, lam)``:
    Q (n, k) the kept left singular vectors of X, B (k, d) the right factor, ``G* = Q @ B``.

    Computed from one symmetric eigendecomposition of the smaller Gram matrix (X X^T or X^T X,
    in float64 on NumPy), so a 5,000 x 12,288 image matrix costs a 5,000^2 eigh. Q pairs each row
    of X with its coordinates: ``sqrt(n) Q`` is X's whitened noise, the generator's training input.
    """
    xp = array_module(X)
    X = xp.asarray(X)
    _check_finite_matrix(X, "X", xp)
    X64 = X.astype(xp.float64) if xp is np else X
    wide = X.shape[0] < X.shape[1]
    eigenvalues, vectors = _descending_eigh(X64 @ X64.T if wide else X64.T @ X64, xp, _needed(rank))
    kept, lam = threshold_spectrum(eigenvalues, lam, rank)
    k = int((kept > 0).sum())
    s = xp.sqrt(eigenvalues[:k])
    if wide:  # vectors are U; V^T = S^-1 U^T X
        Q = vectors[:, :k]
        Vt = (Q.T @ X64) / s[:, None]
    else:  # vectors are V; U = X V S^-1
        Vt = vectors[:, :k].T
        Q = (X64 @ Vt.T) / s[None, :]
    B = xp.sqrt(kept[:k])[:, None] * Vt
    return Q.astype(X.dtype, copy=False), B.astype(X.dtype, copy=False), lam
