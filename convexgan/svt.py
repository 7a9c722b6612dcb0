"""Closed-form generator of the convex Wasserstein GAN: singular value thresholding (SVT).

With a linear generator and a two-layer quadratic-activation discriminator whose norm is
penalized by ``lam``, the generator problem is

    min ||G||_F^2   s.t.   ||X^T X - G^T G||_2 <= lam

and its solution, with ``X = U S V^T``, is ``G* = U (S^2 - lam I)_+^{1/2} V^T``. Only ``G*^T G*``
matters to the constraint, so any orthonormal left factor serves: the solution is carried as its
right factor ``B = (S^2 - lam)_+^{1/2} V^T`` (k x d), and ``G = Q B`` for any Q with orthonormal
columns.

Arrays may be NumPy, CuPy or torch, and every function returns the kind it got. NumPy arrays and
CPU tensors are computed by NumPy and SciPy (a tensor is viewed through DLPack, not copied),
CuPy arrays by CuPy, CUDA tensors by CuPy through DLPack when CuPy is installed and by
``torch.linalg`` otherwise (with one warning).
"""
import warnings

import numpy as np
import scipy.linalg
import torch
from array_api_compat import array_namespace, is_numpy_namespace, is_torch_array

from .validation import check_positive, check_positive_int


def _cupy():
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def _tensor_engine(tensor):
    """Which library computes on a torch tensor: "numpy" on the CPU, on a GPU "cupy" when
    installed, else "torch"."""
    if tensor.device.type == "cpu":
        return "numpy"
    return "cupy" if _cupy() is not None else "torch"


def _backend(A):
    """``(array, xp, back)``: A as the array library that computes it, that library's array-API
    namespace, and ``back`` turning a result into A's kind (same device)."""
    if not is_torch_array(A):
        return A, array_namespace(A), lambda result: result
    A, engine = A.detach(), _tensor_engine(A)
    if engine == "numpy":
        A = np.from_dlpack(A)
        return A, array_namespace(A), lambda result: torch.from_numpy(np.ascontiguousarray(result))
    if engine == "cupy":
        cupy = _cupy()
        A = cupy.from_dlpack(A)
        return A, array_namespace(A), lambda result: torch.from_dlpack(cupy.ascontiguousarray(result))
    warnings.warn("CuPy is not installed: the SVT of CUDA tensors runs in torch.linalg "
                  "(pip install 'convexgan[gpu]' to use CuPy).", RuntimeWarning, stacklevel=3)
    return A, array_namespace(A), lambda result: result.contiguous()


def array_module(A):
    """``cupy`` for a CuPy array, else ``numpy``."""
    module = type(A).__module__.split(".")[0]
    if module == "cupy":
        return _cupy()
    return np


def _check_finite_matrix(A, name, xp):
    if A.ndim != 2 or A.shape[0] == 0 or A.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {tuple(A.shape)}.")
    if not bool(xp.all(xp.isfinite(A))):
        raise ValueError(f"{name} contains NaN or inf: clean the data first.")


def _as_float(A, xp):
    """A in its own floating dtype (float32 or float64), other dtypes in float64."""
    return A if A.dtype in (xp.float32, xp.float64) else xp.astype(A, xp.float64)


def threshold_spectrum(eigenvalues, lam=None, rank=None):
    """Kept values ``(S^2 - lam)_+`` from eigenvalues S^2 in decreasing order, and the lam used.

    Parameters
    ----------
    eigenvalues : array
        (m,) S^2, decreasing.
    lam : float, optional
        The threshold (> 0).
    rank : int, optional
        Keep the top ``rank`` directions, with lam the next eigenvalue (0 when there is none).
        Exactly one of ``lam`` and ``rank``.

    Returns
    -------
    kept : array
        (m,) ``(S^2 - lam)_+``.
    lam : float
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
    """A (NumPy or CuPy) as a NumPy array (``device="cpu"``) or a CuPy array (``"cuda"``/``"cuda:k"``);
    ``None`` leaves it as it is. A torch tensor moves with ``Tensor.to``."""
    if device is None:
        return A
    if is_torch_array(A):
        return A.to(device)
    if str(device).startswith("cuda"):
        cupy = _cupy()
        if cupy is None:
            raise ValueError("device='cuda' needs CuPy: pip install 'convexgan[gpu]' on a machine with a GPU.")
        with cupy.cuda.Device(int(str(device).partition(":")[2] or 0)):
            return cupy.asarray(A)
    if device != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:k', got {device!r}.")
    return A.get() if array_module(A) is not np else np.asarray(A)


def svt(X, lam=None, rank=None, device=None):
    """The closed-form generator ``G* = U (S^2 - lam I)_+^{1/2} V^T`` by a thin SVD.

    Parameters
    ----------
    X : array (NumPy, CuPy or torch)
        (n, d) real data; integer data is computed in float64.
    lam, rank : float or int
        The threshold, or the number of singular directions to keep (``threshold_spectrum``).
    device : {None, "cpu", "cuda", "cuda:k"}
        Moves X first; by default the array's kind and device decide.

    Returns
    -------
    G : array
        (n, d), the kind and floating dtype of X.
    lam : float
        The threshold used (the given one, or the one that keeps ``rank`` directions).
    """
    X, xp, back = _backend(to_device(X, device))
    X = _as_float(X, xp)
    _check_finite_matrix(X, "X", xp)
    U, s, Vt = xp.linalg.svd(X, full_matrices=False)
    kept, lam = threshold_spectrum(s ** 2, lam, rank)
    return back((U * xp.sqrt(kept)) @ Vt), lam


class GramAccumulator:
    """Streams ``X^T X``, the column sums and the count over batches, so that X never needs to fit in memory.

    Parameters
    ----------
    centered : bool
        ``gram()`` is then the Gram matrix of the centered data.

    Notes
    -----
    Batches may be NumPy, CuPy or torch (all of one kind); sums are kept in float64 on the CPU and
    in the batches' precision on a GPU, and ``gram()`` and ``mean`` are of the batches' kind.
    Under ``torch.distributed`` each rank streams its own rows and ``all_reduce()`` then gives
    every rank the statistics of all rows (a rank with no rows updates with an empty (0, d) batch).
    """

    def __init__(self, centered=True):
        self.centered = centered
        self.sum_outer, self.sum, self.count, self._back = None, None, 0, None

    def update(self, batch):
        """Add a batch of rows.

        Parameters
        ----------
        batch : array (NumPy, CuPy or torch) of shape (b, d)
            Rows of X, of the same kind as the earlier batches.

        Returns
        -------
        GramAccumulator
            self, so that updates chain.
        """
        batch, xp, back = _backend(batch)
        if batch.ndim == 2 and batch.shape[0] == 0 and batch.shape[1] > 0:  # an empty shard: only d is known
            batch = xp.zeros((0, batch.shape[1]), dtype=_as_float(batch, xp).dtype)
        else:
            _check_finite_matrix(batch, "batch", xp)
        if is_numpy_namespace(xp):
            batch = xp.astype(batch, xp.float64)
        if self.sum_outer is None:
            self.sum_outer = xp.zeros((batch.shape[1],) * 2, dtype=batch.dtype)
            self.sum = xp.zeros(batch.shape[1], dtype=batch.dtype)
            self._back = back
        elif batch.shape[1] != self.sum.shape[0]:
            raise ValueError(f"batch has {batch.shape[1]} features, earlier batches had {self.sum.shape[0]}.")
        self.sum_outer += batch.T @ batch
        self.sum += xp.sum(batch, axis=0)
        self.count += batch.shape[0]
        return self

    def all_reduce(self):
        """Sum the statistics over all ranks of the process group, with one collective.

        Without a process group of several ranks it does nothing.

        Returns
        -------
        GramAccumulator
            self.
        """
        from .distributed import all_reduce_sum, as_tensor_view
        if self.sum_outer is None:
            raise ValueError("all_reduce before any update: update with this rank's rows, or an empty (0, d) batch.")
        count = torch.tensor([float(self.count)], dtype=torch.float64)
        all_reduce_sum(as_tensor_view(self.sum_outer), as_tensor_view(self.sum), count)
        self.count = int(count.item())
        return self

    def _mean(self):
        if self.count == 0:
            raise ValueError("no batch was accumulated: the data stream was empty.")
        return self.sum / self.count

    @property
    def mean(self):
        """(d,) the column means."""
        return self._back(self._mean())

    def gram(self):
        """The Gram matrix of the rows streamed so far.

        Returns
        -------
        array of shape (d, d)
            ``X^T X``, of the centered data when ``centered``; of the batches' kind.
        """
        mean = self._mean()
        if not self.centered:
            return self._back(self.sum_outer)
        return self._back(self.sum_outer - self.count * (mean[:, None] * mean[None, :]))


def _descending_eigh(gram, xp, top=None):
    """Eigenvalues (clipped at 0) and eigenvectors of a symmetric matrix, largest first; with
    ``top``, only the ``top`` largest (on NumPy by a subset eigensolver: a rank-k SVT of a
    4,860^2 Gram matrix costs about half of the full eigendecomposition)."""
    n = gram.shape[0]
    if top is not None and top < n and is_numpy_namespace(xp):
        eigenvalues, vectors = scipy.linalg.eigh(gram, subset_by_index=[n - top, n - 1], driver="evr")
    else:
        eigenvalues, vectors = xp.linalg.eigh(gram)
    return xp.flip(eigenvalues, axis=0).clip(0, None), xp.flip(vectors, axis=1)


def _needed(rank):
    """Eigenpairs a rank-``rank`` threshold reads: the kept ones and the next (its lam)."""
    return None if rank is None else check_positive_int(rank, "rank") + 1


def canonical_signs(Vt, xp):
    """Signs (k,) that make the largest entry (in magnitude) of every row of Vt (k, d) positive:
    singular vectors are defined up to sign, and a generator's samples for a seed should not
    depend on which Gram matrix (X X^T, X^T X, or one summed over ranks) was decomposed."""
    rows = xp.arange(Vt.shape[0])
    largest = Vt[rows, xp.argmax(xp.abs(Vt), axis=1)]
    one = xp.ones_like(largest)
    return xp.where(largest < 0, -one, one)


def svt_basis(gram, lam=None, rank=None):
    """The kept right singular directions of X from its Gram matrix ``X^T X`` (d, d), by one
    symmetric eigendecomposition, with the canonical signs of ``svt_factors``.

    Returns
    -------
    Vt : array
        (k, d), the kept right singular vectors of X, the kind of ``gram``.
    s : array
        (k,) their singular values: ``Q = X V / s`` pairs X's rows with their coordinates.
    kept : array
        (k,) ``(S^2 - lam)_+ > 0``; the right factor of ``G*`` is ``sqrt(kept) Vt``.
    lam : float
    """
    gram, xp, back = _backend(gram)
    gram = _as_float(gram, xp)
    _check_finite_matrix(gram, "gram", xp)
    eigenvalues, vectors = _descending_eigh((gram + gram.T) / 2, xp, _needed(rank))
    kept, lam = threshold_spectrum(eigenvalues, lam, rank)
    k = int(xp.sum(kept > 0))
    Vt = vectors[:, :k].T
    Vt = Vt * canonical_signs(Vt, xp)[:, None]
    return back(Vt), back(xp.sqrt(eigenvalues[:k])), back(kept[:k]), lam


def svt_factor(gram, lam=None, rank=None):
    """The right factor of ``G*`` from a Gram matrix, by one symmetric eigendecomposition.

    Parameters
    ----------
    gram : array (NumPy, CuPy or torch)
        (d, d), ``X^T X`` (say from ``GramAccumulator``).
    lam, rank : float or int
        See ``threshold_spectrum``.

    Returns
    -------
    B : array
        (k, d), ``(S^2 - lam)_+^{1/2} V^T`` over the k kept directions, the kind of ``gram``;
        ``G* = Q B`` for any Q (n, k) with orthonormal columns.
    lam : float
        The threshold used.
    """
    Vt, _, kept, lam = svt_basis(gram, lam, rank)
    return kept[:, None] ** 0.5 * Vt, lam


def svt_factors(X, lam=None, rank=None):
    """``G* = U (S^2 - lam)_+^{1/2} V^T`` of X as its two factors.

    Computed from one symmetric eigendecomposition of the smaller Gram matrix (X X^T or X^T X,
    in float64 on NumPy), so a 5,000 x 12,288 image matrix costs a 5,000^2 eigh.

    Parameters
    ----------
    X : array (NumPy, CuPy or torch)
        (n, d).
    lam, rank : float or int
        See ``threshold_spectrum``.

    Returns
    -------
    Q : array
        (n, k), the kept left singular vectors of X. It pairs each row of X with its coordinates:
        ``sqrt(n) Q`` is X's whitened noise, the generator's training input.
    B : array
        (k, d), the right factor; ``G* = Q @ B``. Both of X's kind and floating dtype. Signs are
        canonical (``canonical_signs``): the same whichever Gram matrix was decomposed.
    lam : float
        The threshold used.
    """
    X, xp, back = _backend(X)
    X = _as_float(X, xp)
    _check_finite_matrix(X, "X", xp)
    X64 = xp.astype(X, xp.float64) if is_numpy_namespace(xp) else X
    wide = X.shape[0] < X.shape[1]
    eigenvalues, vectors = _descending_eigh(X64 @ X64.T if wide else X64.T @ X64, xp, _needed(rank))
    kept, lam = threshold_spectrum(eigenvalues, lam, rank)
    k = int(xp.sum(kept > 0))
    s = xp.sqrt(eigenvalues[:k])
    if wide:  # vectors are U; V^T = S^-1 U^T X
        Q = vectors[:, :k]
        Vt = (Q.T @ X64) / s[:, None]
    else:  # vectors are V; U = X V S^-1
        Vt = vectors[:, :k].T
        Q = (X64 @ Vt.T) / s[None, :]
    signs = canonical_signs(Vt, xp)
    Q, Vt = Q * signs[None, :], Vt * signs[:, None]
    B = xp.sqrt(kept[:k])[:, None] * Vt
    return back(xp.astype(Q, X.dtype)), back(xp.astype(B, X.dtype)), lam
