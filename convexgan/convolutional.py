"""A convolutional block with a pooled linear head as one convex program.

The network: a gated-ReLU 3 x 3 convolution (neurons j, filters u_j, gates g_{p(j)} from
``conv_patterns``), average-pooled to 2 x 2 (``nn.AdaptiveAvgPool2d(2)``), then a linear layer to
K scores, with weight decay ``lam/2 (||U||^2 + ||head||^2)``:

    score(x) = b + sum_j sum_q head_j[q] . mean_{l in q} 1[g_{p(j)} . x_l >= 0] (u_j . x_l)

For pattern p and quadrant q, ``F[p, n, q] = mean_{l in q} D_p(x_n)_l x_{n,l}`` (9C,) is fixed once the
gates are, so the scores are linear in ``W_p = sum_{j: p(j) = p} u_j head_j^T`` (9C x 4K), and the
weight decay becomes the nuclear norm of W_p (Pilanci & Ergen 2020, section on CNNs; Sahiner et al.
2021 for vector outputs):

    min  CE( sum_p <F[p], W_p> + b, y ) + lam sum_p ||W_p||_*

``PooledConvProgram`` is that program for the shared solvers (FISTA, duality-gap certificate);
``restricted`` confines every W_p to a few directions, for ``solvers.solve_gated_subspace``; the
SVD of every W_p gives back the neurons (``ConvBlock`` and a ``nn.Linear`` head).

Natural image patches are badly conditioned (the pooled features' second moment spans eight
decades on CIFAR-10), which stalls FISTA. ``patch_whitening`` gives a fixed ZCA matrix A for the
9C patch coordinates (as in Coates & Ng 2011 and airbench's first layer); the program is then
solved over ``v`` with ``u = A v``: the same network, with the weight decay measured in whitened
coordinates, ``lam/2 (||A^{-1} u||^2 + ||head||^2)``.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .distributed import all_reduce_sum, computed_on_first_rank
from .recovery import NEURON_RTOL, shared_neurons
from .solvers import ConvexProgram
from .validation import all_finite, check_positive, check_positive_int

QUADRANTS = 4  # the head pools to 2 x 2


def _bins(size):
    """``nn.AdaptiveAvgPool2d(2)``'s bins along one axis: [start, end) twice."""
    return [(i * size // 2, -(-(i + 1) * size // 2)) for i in range(2)]


def pooled_features(x, gates, batch=1024):
    """Per pattern, the quadrant means of the masked 3 x 3 patches (zero padding).

    Parameters
    ----------
    x : torch.Tensor
        Images (N, C, H, W).
    gates : torch.Tensor
        (P, C, 3, 3), the gate filters of the patterns.
    batch : int
        Images per batch: the masks and patches of one batch are the working memory.

    Returns
    -------
    torch.Tensor
        F (P, N, 4 * 9C), quadrants in row-major order, each the 9C patch coordinates in
        ``F.unfold``'s order (channel, then 3 x 3). Written batch by batch into one tensor: no
        second copy of F.
    """
    check_positive_int(batch, "batch")
    N, C, H, W = x.shape
    out = x.new_empty(gates.shape[0], N, QUADRANTS, 9 * C)
    for start in range(0, N, batch):
        chunk = x[start:start + batch]
        masks = (F.conv2d(chunk, gates, padding=1) >= 0).to(x.dtype)  # (n, P, H, W)
        patches = F.unfold(chunk, 3, padding=1).reshape(len(chunk), 9 * C, H, W)
        for q, ((y0, y1), (x0, x1)) in enumerate((rows, cols) for rows in _bins(H) for cols in _bins(W)):
            m = masks[:, :, y0:y1, x0:x1].flatten(2)  # (n, P, L)
            p = patches[:, :, y0:y1, x0:x1].flatten(2)  # (n, 9C, L)
            out[:, start:start + len(chunk), q] = (torch.bmm(m, p.transpose(1, 2)) / m.shape[2]).transpose(0, 1)
    return out.reshape(gates.shape[0], N, -1)


def _check_features(features):
    if features.ndim != 3 or features.shape[2] % QUADRANTS or 0 in features.shape:
        raise ValueError(f"features must be pooled_features' (P, N, 4D) output, got shape {tuple(features.shape)}.")
    if not all_finite(features):
        raise ValueError("features contain NaN or inf: check the images they were computed from.")


def patch_whitening(features, eps=1e-3, across_ranks=False, dtype=torch.float64):
    """ZCA matrix ``A = (S + eps mean(eig S) I)^{-1/2}``, S the second moment of the D = 9C patch
    coordinates over patterns, images and quadrants (``across_ranks``: over every rank's images,
    the eigendecomposition on rank 0, so that A is the same on every rank).

    Parameters
    ----------
    features : torch.Tensor
        (P, N, 4D), ``pooled_features``' output.
    eps : float
        Regularization, relative to the mean eigenvalue (> 0).
    dtype : torch.dtype
        Precision of each pattern's products (summed in float64): A only fixes the coordinates of
        the program, so it needs no more precision than the solve (float32 is about 7x faster).

    Returns
    -------
    torch.Tensor
        A (D, D), symmetric, in the features' dtype.
    """
    _check_features(features)
    check_positive(eps, "eps")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}.")
    P, N, QD = features.shape
    D = QD // QUADRANTS
    second = torch.zeros(D, D, dtype=torch.float64, device=features.device)
    for block in features:  # one pattern at a time: no copy of all features in dtype
        rows = block.reshape(-1, D).to(dtype)
        second += (rows.T @ rows).double()
    count = torch.tensor([float(P * N * QUADRANTS)], dtype=torch.float64)
    if across_ranks:
        all_reduce_sum(second, count)
    second /= count
    eig, V = computed_on_first_rank(torch.linalg.eigh, second) if across_ranks else torch.linalg.eigh(second)
    eig = eig.clamp_min(0)
    return ((V / (eig + eps * eig.mean()).sqrt()) @ V.T).to(features.dtype)


def whiten(features, A):
    """features (P, N, 4D) in the whitened coordinates: every quadrant's D-vector times A."""
    _check_features(features)
    P, N, QD = features.shape
    if tuple(A.shape) != (QD // QUADRANTS,) * 2:
        raise ValueError(f"A must be ({QD // QUADRANTS}, {QD // QUADRANTS}) for features of width {QD}, "
                         f"got {tuple(A.shape)}: use patch_whitening(features).")
    return (features.reshape(-1, QD // QUADRANTS) @ A).reshape(P, N, QD)  # one GEMM


class PooledConvProgram(ConvexProgram):
    """The program above for ``ConvexProgram``'s solvers. features (P, n, 4D) with D = 9C,
    Y (n, K) one-hot; weights W (D, P, 4K) (quadrant-major columns), intercept (K,)."""
    TENSORS = ("F", "Y", "mask_weights", "cone_signs")
    ROW_AXES = {"F": 1}

    def __init__(self, features, Y, loss, penalty, fit_intercept=True):
        P, n, QD = features.shape
        self.F, self.Y, self.loss, self.penalty = features, Y, loss, penalty
        self.fit_intercept, self.cone, self.cone_signs = fit_intercept, False, None
        # one "group" to the shared solvers: the image is the scores summed over patterns, not the
        # (n, P, K) array of every pattern's, whose elementwise passes cost more than a restricted
        # program's products
        self.mask_weights = torch.ones(n, 1, dtype=features.dtype, device=features.device)
        self.K, self.D = Y.shape[1], QD // QUADRANTS
        self.shape = (self.D, P, QUADRANTS * self.K)
        self.n = loss.n(Y)

    @property
    def X(self):
        """The features, under the name the shared solvers use for the data (no second copy)."""
        return self.F

    def _per_group(self, W):
        """(D, P, 4K) -> (P, 4D, K), rows in the order of the features."""
        D, P, _ = W.shape
        return W.reshape(D, P, QUADRANTS, self.K).permute(1, 2, 0, 3).reshape(P, QUADRANTS * D, self.K)

    def image(self, W, groups=None):
        """The scores ``sum_p <F[p], W_p>``: (n, 1, K) (all patterns, whatever ``groups`` says: a
        subset would copy those features). Where every W_p has rank r <= K / 2 (as W_p is once
        the solver has found the active neurons), each F_p is read against r filters instead of
        4K columns (``_filters``)."""
        factors = self._filters(W)
        if factors is None:
            # W_p^T F_p^T rather than F_p W_p: with K (about 10) columns, twice as fast with MKL on 2 cores
            return _summed(torch.bmm(self._per_group(W).transpose(1, 2), self.F.transpose(1, 2)))
        filters, heads = factors
        P, n, _ = self.F.shape
        # (P, 4n, r): every image's and quadrant's responses; the operands' layouts are MKL's fast ones
        responses = torch.bmm(self.F.view(P, n * QUADRANTS, self.D), filters.transpose(1, 2))
        return _summed(torch.bmm(heads, responses.view(P, n, -1).transpose(1, 2)))

    def _filters(self, W):
        """Every W_p (D x 4K) as ``filters_p^T`` (D, r) times ``heads_p`` (r, 4K), r the largest rank of
        the W_p; None where r > K / 2 or where D < 4K.

        From the eigendecomposition of every W_p^T W_p in float64: its top r eigenvectors V_p give
        the filters ``(W_p V_p)^T`` and the heads ``V_p^T``, the latter regrouped as (K, 4r) (column
        ``q r + j`` is the weight of filter j's response in quadrant q). The dropped part of W_p is
        at most ``NEURON_RTOL * eps`` times its norm (as ``recovery`` counts neurons), so the scores
        differ from the full product by less than its own rounding; in float64 nothing is dropped
        but exact zeros. Returns ``(filters (P, r, D), heads (P, K, 4r))`` in W's dtype, or None."""
        if self.D < QUADRANTS * self.K:  # narrow features: the full product is cheap next to the eigensolves
            return None
        M = W.transpose(0, 1).double()  # (P, D, 4K)
        gram = M.transpose(1, 2) @ M
        if not all_finite(gram):  # no eigensolve of NaN: the full product passes it on to the caller's checks
            return None
        energy, V = torch.linalg.eigh(gram)  # ascending
        # the smallest directions whose total energy, with the eigenvalues' own float64 error, is negligible
        error = sum(M.shape[1:]) * torch.finfo(torch.float64).eps * energy[:, -1:]
        tolerance = (NEURON_RTOL * torch.finfo(W.dtype).eps) ** 2 * energy[:, -1:]
        dropped = (energy.clamp_min(0).cumsum(1) + error <= tolerance).sum(1)
        r = int(M.shape[2] - dropped.min())
        if r > self.K // 2:
            return None
        P = M.shape[0]
        V = V[:, :, M.shape[2] - r:]  # (P, 4K, r)
        heads = V.reshape(P, QUADRANTS, self.K, r).permute(0, 2, 1, 3).reshape(P, self.K, QUADRANTS * r)
        return (M @ V).transpose(1, 2).contiguous().to(W.dtype), heads.to(W.dtype)

    def local_adjoint(self, R):
        """R (n, 1, K), the same for every pattern -> (D, P, 4K)."""
        # R^T F rather than F^T R: the features are read along their rows (about twice as fast)
        G = torch.matmul(R.permute(1, 2, 0), self.F)  # (P, K, 4D)
        P = G.shape[0]
        return G.reshape(P, self.K, QUADRANTS, self.D).permute(3, 0, 2, 1).reshape(self.shape)

    def zeros(self):
        W = torch.zeros(self.shape, dtype=self.F.dtype, device=self.F.device)
        return W, torch.zeros(self.K, dtype=self.F.dtype, device=self.F.device)

    def restricted(self, basis):
        """The program with every W_p confined to the span of ``basis[p]`` (D, k), orthonormal
        columns: features ``F_p B_p`` (P, n, 4k), one pass over F. Its weights M (k, P, 4K) stand
        for ``W_p = B_p M_p`` (``lifted``): the same scores and, B_p orthonormal, the same nuclear
        norms, so its optimum is the program's optimum over those spans."""
        P, n, _ = self.F.shape
        if basis.ndim != 3 or tuple(basis.shape[:2]) != (P, self.D) or not 0 < basis.shape[2] <= self.D:
            raise ValueError(f"basis must be (P, D, k) = ({P}, {self.D}, k) with 0 < k <= {self.D}, "
                             f"got {tuple(basis.shape)}.")
        features = torch.bmm(self.F.view(P, n * QUADRANTS, self.D), basis.to(self.F.dtype))
        return PooledConvProgram(features.view(P, n, -1), self.Y, self.loss, self.penalty, self.fit_intercept)

    @staticmethod
    def lifted(basis, M):
        """``W_p = B_p M_p``: basis (P, D, k), M (k, P, 4K) -> W (D, P, 4K)."""
        return torch.einsum("pdk,kpc->dpc", basis.to(M.dtype), M)

    def lipschitz_data(self, n_power=10):
        """Power-iteration estimate of ||W -> sum_p <F[p], W_p>||^2 (one output). Few iterations: the
        top singular value (the features' mean direction) stands well apart, each iteration reads
        all features twice, and FISTA's line search corrects an underestimate."""
        W = torch.randn(self.shape, dtype=self.F.dtype, device=self.F.device,
                        generator=torch.Generator(self.F.device).manual_seed(0))
        for _ in range(n_power):
            W = W / torch.linalg.vector_norm(W)
            W = self.adjoint(self.image(W))
        return float(torch.linalg.vector_norm(W)) * 1.05


def _summed(scores):
    """Every pattern's scores (P, K, n) -> their sum (n, 1, K)."""
    return scores.sum(0).T.contiguous()[:, None, :]


class ConvBlock(nn.Module):
    """Gated-ReLU 3 x 3 convolution: ``conv(x, weight) * 1[conv(x, gates)[:, pattern] >= 0]``.
    Input (N, C, H, W), output (N, m, H, W); gates (P, C, 3, 3) and ``pattern`` (m,) are buffers."""

    def __init__(self, channels, n_neurons, n_patterns):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_neurons, channels, 3, 3))
        self.register_buffer("gates", torch.zeros(n_patterns, channels, 3, 3))
        self.register_buffer("pattern", torch.zeros(n_neurons, dtype=torch.long))

    def forward(self, x):
        # the P gates' signs as bytes, gathered for the m neurons: a third less time than float masks
        off = F.conv2d(x, self.gates, padding=1) < 0
        return F.conv2d(x, self.weight, padding=1).masked_fill_(off[:, self.pattern], 0)


def recover_block(W, gates, channels, whitening=None, precision=torch.float32):
    """The neurons of a solution W by the SVD of every W_p (``recovery.shared_neurons``).

    Parameters
    ----------
    W : torch.Tensor
        (D, P, 4K), a solution of ``PooledConvProgram``.
    gates : torch.Tensor
        (P, C, 3, 3).
    channels : int
        C, the input channels.
    whitening : torch.Tensor, optional
        The matrix A (D, D) the features were whitened with (filters ``u = A v``).
    precision : torch.dtype
        The dtype the solve was computed in: singular values below its rounding are not neurons.

    Returns
    -------
    block : ConvBlock
        m neurons, ordered by decreasing singular value, float64.
    head : torch.Tensor
        (K, 4m), in the order of ``nn.Flatten()`` after ``nn.AdaptiveAvgPool2d(2)`` (neuron-major,
        then quadrant).
    singular : torch.Tensor
        (m,) the singular values.
    """
    D, P, QK = W.shape
    K = QK // QUADRANTS
    pattern, filters, head, singular = shared_neurons(W, precision)  # (m,) (m, D) (m, 4K) (m,)
    if whitening is not None:
        filters = filters @ whitening.to(filters)  # A is symmetric: rows v^T A = (A v)^T
    m = len(pattern)
    block = ConvBlock(channels, m, P).double()
    with torch.no_grad():
        block.weight.copy_(filters.reshape(m, channels, 3, 3))  # unfold order: channel, then 3 x 3
        block.gates.copy_(gates)
        block.pattern.copy_(pattern)
    head = head.reshape(m, QUADRANTS, K).permute(2, 0, 1).reshape(K, m * QUADRANTS)
    return block, head, singular
