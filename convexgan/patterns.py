"""Hyperplane-arrangement activation patterns.

A pattern is the diagonal of ``D = diag(1[X g >= 0])`` for a gate vector ``g``. Patterns are
returned as boolean ``masks`` of shape (n, P), one column per pattern, together with ``gates``
(d, P) that realize them: ``masks == (X @ gates >= 0)``.

The all-zero pattern is never returned: ``D = 0`` contributes nothing to any model.
With rows sharded across ranks (``across_ranks=True``), patterns are compared over the rows of
all ranks, so every rank keeps the same columns.
"""
import numpy as np
import torch
from scipy.optimize import linprog

from .distributed import all_reduce_sum
from .validation import check_array, check_positive_int


def unique_columns(masks, gates, across_ranks=False):
    """Drop repeated and all-zero columns of ``masks`` (n, P), keeping first occurrences in order.
    ``across_ranks``: masks are this rank's rows; columns are compared over all ranks' rows."""
    if across_ranks:
        return _unique_columns_across_ranks(masks, gates)
    keep = masks.any(axis=0)
    masks, gates = masks[:, keep], gates[..., keep]
    _, first = np.unique(np.packbits(masks, axis=0), axis=1, return_index=True)
    first = np.sort(first)
    return masks[:, first], gates[..., first]


def _unique_columns_across_ranks(masks, gates):
    """``unique_columns`` over the rows of every rank: two columns are equal when their Hamming
    distance ``c_i + c_j - 2 (M^T M)_ij`` over all rows is zero (c the column counts), from one
    all-reduce of the P x P co-occurrence counts (integers, exact in float64)."""
    M = torch.as_tensor(masks, dtype=torch.float64)
    counts = torch.cat([M.T @ M, M.sum(0)[None]])  # (P + 1, P)
    all_reduce_sum(counts)
    shared, ones = counts[:-1], counts[-1]
    equal = (ones[:, None] + ones[None, :] - 2 * shared) == 0
    earlier = torch.tril(equal, diagonal=-1).any(1)  # column j repeats an earlier column
    keep = ((ones > 0) & ~earlier).numpy()
    return masks[:, keep], gates[..., keep]


def sample_patterns(X, n_patterns, seed=0, across_ranks=False):
    """Activation patterns ``1[X g >= 0]`` of Gaussian gates ``g ~ N(0, I_d)``.

    Parameters
    ----------
    X : array-like of shape (n, d)
        The data.
    n_patterns : int
        Gates to draw; duplicate and all-zero patterns are removed.
    seed : int, default 0
        Seed of the gates.
    across_ranks : bool, default False
        X is this rank's rows of a ``torch.distributed`` group: the gates (from the seed) and the
        kept columns are the same on every rank.

    Returns
    -------
    masks : ndarray of bool, shape (n, P)
        The patterns, ``P <= n_patterns``.
    gates : ndarray of float64, shape (d, P)
        Their gates.
    """
    X = check_array(X, "X", ndim=2, min_rows=0 if across_ranks else 1)
    n_patterns = check_positive_int(n_patterns, "n_patterns")
    rng = np.random.default_rng(seed)
    gates = rng.standard_normal((X.shape[1], n_patterns))
    return unique_columns(X @ gates >= 0, gates, across_ranks)


def select_patterns(X, n_patterns=100, gates=None, seed=0, across_ranks=False):
    """The patterns a program uses: those of ``gates`` (d, P) when given, every pattern of X when
    ``n_patterns == "all"`` (``enumerate_patterns``: small data), else ``n_patterns`` sampled
    (``sample_patterns``). Returns ``(masks, gates)``; clear errors for gates of the wrong shape
    or that all give the empty pattern."""
    if gates is None:
        if n_patterns == "all":
            return enumerate_patterns(X)
        return sample_patterns(X, n_patterns, seed=seed, across_ranks=across_ranks)
    gates = check_array(gates, "gates", ndim=2)
    if gates.shape[0] != X.shape[1] or gates.shape[1] == 0:
        raise ValueError(f"gates must have shape (d, P) = ({X.shape[1]}, P >= 1) for X with "
                         f"{X.shape[1]} features, got {gates.shape}.")
    masks, gates = unique_columns(X @ gates >= 0, gates, across_ranks)
    if masks.shape[1] == 0:
        raise ValueError("every gate gives the all-zero pattern on X: pass other gates.")
    return masks, gates


def _distinct_hyperplanes(Xr, rtol):
    """Unit normals (h, r) of the distinct hyperplanes ``x_j^T g = 0`` among the rows of Xr."""
    norms = np.linalg.norm(Xr, axis=1)
    rows = Xr[norms > rtol * norms.max()] / norms[norms > rtol * norms.max(), None]
    normals = []
    for row in rows:
        if not any(abs(abs(row @ q) - 1.0) < 1e-9 for q in normals):
            normals.append(row)
    return np.array(normals)


def _open_cell_center(normals, signs):
    """A point with ``signs * (normals @ h) >= margin`` and the largest margin in the unit box, or None."""
    h_count, r = normals.shape
    # variables (h, margin): maximize margin s.t. -signs*normals h + margin <= 0, |h| <= 1
    A = np.hstack([-signs[:, None] * normals, np.ones((h_count, 1))])
    res = linprog(np.r_[np.zeros(r), -1.0], A_ub=A, b_ub=np.zeros(h_count),
                  bounds=[(-1, 1)] * r + [(None, 1)], method="highs")
    if res.status != 0 or -res.fun <= 1e-9:
        return None
    return res.x[:r]


def enumerate_patterns(X, max_patterns=20000, rtol=1e-10):
    """Every distinct pattern ``1[X g >= 0]`` of the open cells of the arrangement, exactly.

    Works for data of any rank r (general position or degenerate: repeated, parallel, or zero
    rows): it adds the distinct hyperplanes ``x_j^T g = 0`` one at a time in the r-dimensional row
    space of X and splits every cell that the new hyperplane cuts, testing each side with a small
    linear program. The number of cells is at most ``2 sum_{k<r} C(h-1, k)`` for h distinct
    hyperplanes, so this is meant for small rank or small n. Every weight vector lies in the
    closure of an open cell, so these patterns are all that the convex ReLU program needs.

    Parameters
    ----------
    X : array-like of shape (n, d)
        The data.
    max_patterns : int, default 20000
        The most cells to enumerate.
    rtol : float, default 1e-10
        Relative tolerance of the rank of X and of parallel hyperplanes.

    Returns
    -------
    masks : ndarray of bool, shape (n, P)
        Every distinct nonzero pattern.
    gates : ndarray of float64, shape (d, P)
        Each gate strictly inside its cell, so ``X @ gates >= 0`` reproduces masks robustly.

    Raises
    ------
    ValueError
        When X is zero, or the cells would exceed ``max_patterns``.
    """
    X = check_array(X, "X", ndim=2)
    _, s, Vt = np.linalg.svd(X, full_matrices=False)
    rank = int((s > rtol * s.max()).sum()) if s.size and s.max() > 0 else 0
    if rank == 0:
        raise ValueError("X is zero: every pattern is all-ones or empty; there is nothing to enumerate.")
    basis = Vt[:rank].T  # (d, r): gates live in the row space of X
    normals = _distinct_hyperplanes(X @ basis, rtol)

    cells = [(np.zeros(0), np.zeros(rank))]  # (signs so far, a point inside the cell)
    for k in range(len(normals)):
        normals_k = normals[: k + 1]
        next_cells = []
        for signs, point in cells:
            for sign in (1.0, -1.0):
                center = _open_cell_center(normals_k, np.r_[signs, sign])
                if center is not None:
                    next_cells.append((np.r_[signs, sign], center))
        if len(next_cells) > max_patterns:
            raise ValueError(
                f"X has more than {max_patterns} patterns (rank {rank}, {len(normals)} distinct "
                "hyperplanes): use sample_patterns, or raise max_patterns.")
        cells = next_cells
    gates = basis @ np.array([point for _, point in cells]).T
    return unique_columns(X @ gates >= 0, gates)


def conv_patterns(images, n_patterns, kernel_size=3, stride=1, padding=1, seed=0):
    """Patterns of image patches under Gaussian convolutional gates.

    A gate is a filter ``g`` of shape (C, k, k); its pattern is ``1[patch^T g >= 0]`` over every
    patch of every image.

    Parameters
    ----------
    images : array-like or torch.Tensor of shape (N, C, H, W)
        The images.
    n_patterns : int
        Gates to draw; duplicate and all-zero patterns are removed.
    kernel_size : int, default 3
        The filters' height and width k.
    stride : int, default 1
        The convolution's stride.
    padding : int, default 1
        The convolution's zero padding.
    seed : int, default 0
        Seed of the gates.

    Returns
    -------
    masks : torch.Tensor of bool, shape (N, P, H_out, W_out)
        The patterns.
    gates : torch.Tensor of shape (P, C, k, k)
        Their filters, usable as a ``conv2d`` weight.
    """
    images = torch.as_tensor(check_array(images, "images", ndim=4))
    n_patterns = check_positive_int(n_patterns, "n_patterns")
    kernel_size = check_positive_int(kernel_size, "kernel_size")
    generator = torch.Generator().manual_seed(seed)
    gates = torch.randn(n_patterns, images.shape[1], kernel_size, kernel_size,
                        generator=generator, dtype=images.dtype)
    masks = torch.nn.functional.conv2d(images, gates, stride=stride, padding=padding) >= 0
    flat = masks.permute(0, 2, 3, 1).reshape(-1, n_patterns).numpy()
    _, kept = unique_columns(flat, np.arange(n_patterns))
    kept = torch.as_tensor(kept)
    return masks[:, kept].contiguous(), gates[kept].contiguous()
