"""Second-order solver for the gated program: a semismooth Newton augmented Lagrangian (SSNAL).

The program (a ``ConvexProgram`` with the ``GroupL2`` penalty and no cones):

    min_{W, b}  F(A W + 1 b^T) + lam sum_{g,k} ||W[:, g, k]||,     A W = sum_g s_g D_g X W_g  (n, c)

Following Li, Sun & Toh (SIAM J. Optim. 2018), the augmented Lagrangian method is applied to
the dual, ``min_xi F*(xi)`` s.t. ``||(A^T xi)_{g,k}|| <= lam`` (and ``1^T xi = 0`` with an
intercept). Minimizing the augmented Lagrangian over the dual slack leaves, for the current
primal point (W, b) and a step sigma,

    psi(xi) = F*(xi) + (||W+||^2 + ||b+||^2) / (2 sigma),
    W+ = prox_{sigma lam ||.||}(W - sigma A^T xi),   b+ = b - sigma 1^T xi,
    grad psi = grad F*(xi) - (A W+ + 1 b+^T),

a convex function of xi (n, c) alone whose generalized Hessian is
``grad^2 F*(xi) + sigma (A J A^T + 1 1^T)``, J the Jacobian of the group soft-thresholding: zero
on the groups it sets to zero, ``J_g = a_g I + (1 - a_g) u_g u_g^T`` on the others
(``a_g = 1 - sigma lam / ||v_g||``, ``u_g = v_g / ||v_g||``, v = W - sigma A^T xi). Each outer
step minimizes psi by Newton's method with an Armijo line search, then takes (W, b) <- (W+, b+)
(a proximal-point step on the primal) and grows sigma; it converges superlinearly. The relative
duality gap at (W+, b+), in float64, decides when to stop; it is checked after every Newton step
with the dual point xi (centered and scaled into the dual ball: psi already holds ``A^T xi``, so
it costs no product with the data), and with the scaled gradient at W+ where xi's is not finite.
Every quantity psi needs is linear in xi (``A^T xi``, ``1^T xi``, ``X A^T xi``; then
``X W+_g = a_g (X W_g - sigma X A_g^T xi)``), so a Newton step costs two products with the data,
those of its direction, however many points its line search tries (for small d, X W+ is
recomputed instead: cheaper than the passes over its (n, G, c) arrays); the point returned is
certified once more with fresh products.

The losses used here (squared, logistic) and the penalty are separable over outputs, so each
output k has its own Newton system, solved in the smaller of two spaces:

- n-space: with K = X X^T and the masks M of the active groups,
  ``sum_g A_g J_g A_g^T = K o (M diag(a) M^T) + B diag(1 - a) B^T``, B = [D_g X u_g]: one n x n
  Cholesky factorization whatever d and P are (Wave-2 notes, DESIGN.md section 5), for n up to
  ``dense_limit`` (what the memory holds: on a CPU at most 16,000); on a CPU formed and factorized
  in float32 and refined with float64 residuals (``_refined_solve``; in float64 where H is too
  ill-conditioned for that);
- active-group space (squared loss, whose conjugate has the constant Hessian n I): by
  Sherman-Morrison-Woodbury with C = A_J J^{1/2}, ``H^{-1} r = (r - C S^{-1} C^T r) / n`` and
  ``S = (n / sigma) I + J^{1/2} A_J^T A_J J^{1/2}``, of the size d |J| (+1) of the active groups,
  taken from the Gram matrix of the masked design, computed once.

With rows sharded across ranks (``ConvexProgram.sharded``), the active-group systems are the
ones used: the Gram matrix is one all-reduce, each Newton step reduces ``A^T r`` with ``1^T r``
(as FISTA does), and the line search's scalars; xi and the residuals stay on their rank.
"""
import logging
import math
import os
import time
from dataclasses import dataclass

import torch

from .losses import Loss, SquaredLoss
from .penalties import GroupL2
from .solvers import Certificate, _record

log = logging.getLogger(__name__)

SIGMA_START = 100.0     # the first sigma, in units of the inverse curvature of the data term
SIGMA_GROWTH = 10.0     # sigma's factor per outer step
WARM_SIGMA = 100.0      # the first sigma's factor when the solve starts from a dual iterate (at least)
WARM_SIGMA_MAX = 1e5    # ... and at most (a tenth of the last solve's sigma, from a start near the optimum)
NEAR_GAP = 1e-3         # a start whose relative gap is at most this is near the optimum
MAX_INNER = 50          # Newton steps per outer step at most
INNER_RATIO = 0.1       # inner stop: ||grad psi|| below this share of the outer step's change of A W
NOISE = 2.0             # an outer step whose gap exceeds the best one by this factor met rounding
ROUNDING = 1e-12        # relative size of grad psi that float64 rounding cannot resolve
GRAM_LIMIT = 8000       # d G + 1 up to which the masked design's Gram matrix is cached
DENSE_LIMIT = 8000      # n up to which n-space Newton systems are factorized on any device
CPU_DENSE_LIMIT = 16000  # ... and on a CPU at most, where memory allows: n^3 / 3 flops a step (seconds on 2 cores)
DENSE_BYTES = 28        # bytes per entry of the n x n matrices of an n-space step at its peak (see _n_space)
BLOCK_ENTRIES = 2 ** 25  # matrix entries of one block of rows converted at a time
BATCH_ENTRIES = 2 ** 25  # matrix entries of one batch of active-group systems (256 MiB in float64)
TRACKED_IMAGE_DEPTH = 64  # d from which X A^T xi is carried along the line search (see _Products)


def supports(program):
    """Whether ``solve_ssnal`` handles this program: the l2 group penalty, no cones, a loss with
    a smooth conjugate, and a Newton system of a size that can be factorized (for rows sharded
    across ranks: the active-group systems of the squared loss)."""
    smooth = type(program.loss).conjugate_hessian is not Loss.conjugate_hessian
    if program.cone or not isinstance(program.penalty, GroupL2) or not smooth:
        return False
    if program.sharded:  # only the active-group systems are sums over rows
        return _group_space_available(program)
    return program.n <= dense_limit(program.X.device) or _group_space_available(program)


def dense_limit(device):
    """The largest n whose n-space Newton systems are factorized on ``device``.

    What the free memory holds at ``DENSE_BYTES`` per entry of an n x n matrix, at least
    ``DENSE_LIMIT``: on a GPU all of it (about 68,000 on an empty 141-GB H200, where a 50,000 x
    50,000 factorization takes about a second); on a CPU at most ``CPU_DENSE_LIMIT`` (there the
    factorizations' time grows like n^3). ``device``: a ``torch.device`` or its name."""
    device = torch.device(device)
    if device.type != "cuda":
        return max(DENSE_LIMIT, min(CPU_DENSE_LIMIT, math.isqrt(_available_memory() // DENSE_BYTES)))
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # torch's cache is free to us
    return max(DENSE_LIMIT, math.isqrt(free // DENSE_BYTES))


def _available_memory():
    """Bytes of memory the system can give now: ``MemAvailable`` on Linux, else the free pages (0
    where neither is known)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0


def _group_space_available(program):
    """The squared loss's conjugate has the Hessian n I, so one Gram matrix of the masked design
    (d G + 1 square) serves every Newton step in the space of the active groups."""
    return isinstance(program.loss, SquaredLoss) and program.shape[0] * program.shape[1] + 1 <= GRAM_LIMIT


@dataclass
class _State:
    """psi and what its Newton step needs, at one dual point xi (n, c)."""
    xi: torch.Tensor
    value: float
    grad: torch.Tensor     # (n, c)
    V: torch.Tensor        # W - sigma A^T xi, (d, G, c)
    norms: torch.Tensor    # ||V_gk||, (G, c)
    scale: torch.Tensor    # a_gk = (1 - sigma lam / ||V_gk||)_+, (G, c)
    W: torch.Tensor        # W+ = V * scale
    b: torch.Tensor        # b+
    XW: torch.Tensor       # X W+_g, (n, G, c)
    fit: torch.Tensor      # A W+ without the intercept, (n, c)
    products: "_Products"  # of xi


class _NewtonSystems:
    """The Newton systems of one program: n-space or active-group space, whichever is smaller."""

    def __init__(self, program):
        self.program = program
        self.n = program.n
        self.dense = self.n <= dense_limit(program.X.device)  # once: the solve itself uses memory
        self._K = self._K32 = self._gram = self._ones_adjoint = self._anchor = None

    @property
    def K(self):
        if self._K is None:
            self._K = self.program.X @ self.program.X.T
        return self._K

    @property
    def K32(self):
        """K in float32, computed in float64 a block of rows at a time (no float64 copy of K)."""
        if self._K32 is None:
            X = self.program.X
            self._K32 = torch.empty(self.n, self.n, dtype=torch.float32, device=X.device)
            for rows in _row_blocks(self.n, self.n):
                self._K32[rows] = X[rows] @ X.T if self._K is None else self._K[rows]
        return self._K32

    @property
    def ones_adjoint(self):
        """``X^T s_g D_g 1`` for every group (d, G): the change of ``A^T xi`` when xi is centered."""
        if self._ones_adjoint is None:
            p = self.program
            self._ones_adjoint = p.adjoint(p.loss_image_grad(torch.ones_like(p.Y)))[:, :, 0]
        return self._ones_adjoint

    @property
    def anchor(self):
        """A dual point (n, c) strictly inside the conjugate's domain with ``1^T xi = 0``, and its
        ``A^T xi`` (d, G, c): the gradient at the intercept-only fit, centered."""
        if self._anchor is None:
            p = self.program
            fit = torch.zeros_like(p.Y)
            xi = p.loss.grad(fit + p.intercept_of_fit(fit, fit.new_zeros(fit.shape[1])), p.Y)
            xi = xi - p.loss.total(xi, 0) / p.n
            self._anchor = xi, p.adjoint(p.loss_image_grad(xi))
        return self._anchor

    @property
    def gram(self):
        """Gram matrix (dG + 1, dG + 1) of the masked design [s_1 D_1 X, ..., s_G D_G X, 1]
        (columns group-major), accumulated over row blocks."""
        if self._gram is None:
            p = self.program
            d, G, _ = p.shape
            gram = torch.zeros(d * G + 1, d * G + 1, dtype=p.X.dtype, device=p.X.device)
            for rows in _row_blocks(p.X.shape[0], d * G + 1, 2 ** 24):
                design = (p.mask_weights[rows, :, None] * p.X[rows, None, :]).flatten(1)
                design = torch.cat([design, design.new_ones(design.shape[0], 1)], 1)
                gram += design.T @ design
            self._gram = p.loss.reduced(gram)
        return self._gram

    def direction(self, state, sigma, hessian):
        """The Newton direction ``-H^{-1} grad psi`` (n, c), H block-diagonal over outputs."""
        p = self.program
        d, G, c = p.shape
        active = state.scale > 0  # (G, c)
        group_space = _group_space_available(p) and (d * int(active.sum(0).max()) + 1 < self.n
                                                      or not self.dense or p.sharded)
        if group_space:
            return -self._group_space(state, sigma, active)
        out = torch.empty_like(state.grad)
        for k in range(c):
            out[:, k] = -self._n_space(state, sigma, hessian[:, k], active[:, k], k)
        return out

    def _n_space(self, state, sigma, hessian, active, k):
        """The n-space system of output k. For the squared loss on a CPU, formed and factorized in
        float32 (half the time of float64) and refined with float64 residuals (``_refined_solve``):
        its conjugate's Hessian n I keeps H's condition number near ``sigma ||A J A^T|| / n``.
        Else, or where the refinement does not converge, formed and factorized in float64: the
        logistic conjugate's Hessian grows without bound at its domain's edge (there H rounded to
        float32 cost Newton steps: 351-397 against 306 on the logistic path of BENCHMARKS.md), and
        on a GPU float64 costs about what float32 does (an H200 at n = 50,000: BENCHMARKS.md).
        At its peak a step holds K in float32 and float64, H, its factor L and (for the refinement)
        H in float64: at most ``DENSE_BYTES`` per entry of an n x n matrix."""
        rhs = state.grad[:, k:k + 1]
        x = None
        if isinstance(self.program.loss, SquaredLoss) and self.program.X.device.type == "cpu":
            x = _refined_solve(self._n_space_matrix(state, sigma, hessian, active, k, torch.float32), rhs)
        if x is None:
            x = _spd_solve(self._n_space_matrix(state, sigma, hessian, active, k, torch.float64), rhs)
        return x[:, 0]

    def _n_space_matrix(self, state, sigma, hessian, active, k, dtype):
        p = self.program
        a = state.scale[active, k]
        u_images = state.XW[:, active, k] / (a * state.norms[active, k])  # X u_g, as X W+_g = a_g ||V_g|| X u_g
        a, masks = a.to(dtype), p.mask_weights[:, active].to(dtype)
        H = (masks * (sigma * a)) @ masks.T  # in place from here: one n x n matrix, sigma folded into the factors
        H *= self.K32 if dtype == torch.float32 else self.K
        B = masks * u_images.to(dtype)  # D_g X u_g
        H.addmm_(B * (sigma * (1 - a)), B.T)
        if p.fit_intercept:
            H += sigma
        H.diagonal().add_(hessian.to(dtype))
        return H

    def _group_space(self, state, sigma, active):
        """``H^{-1} grad`` for all outputs by Sherman-Morrison-Woodbury (squared loss: H = n I + ...);
        the outputs with the same active groups are solved as one batch."""
        p = self.program
        d, G, c = p.shape
        n, gram = self.n, self.gram
        grad = state.grad
        adjoint, grad_sum = p.adjoint(p.loss_image_grad(grad), grad.sum(0))  # A^T grad: (d, G, c); 1^T grad
        correction = torch.zeros_like(state.V)
        intercept = torch.zeros(c, dtype=grad.dtype, device=grad.device)
        patterns, which = torch.unique(active.T, dim=0, return_inverse=True)
        for u, pattern in enumerate(patterns):
            outputs, groups = torch.nonzero(which == u)[:, 0], torch.nonzero(pattern)[:, 0]
            m = len(groups)
            index = (groups[:, None] * d + torch.arange(d, device=groups.device)).reshape(-1)
            if p.fit_intercept:
                index = torch.cat([index, index.new_tensor([d * G])])
            shared = gram[index][:, index]
            for ks in torch.split(outputs, max(1, BATCH_ENTRIES // max(1, len(index)) ** 2)):
                half = _RootJacobian(state, groups, ks, p.fit_intercept)
                S = half.congruence(shared)
                S.diagonal(dim1=1, dim2=2).add_(n / sigma)
                rhs = adjoint[:, groups][:, :, ks].permute(2, 1, 0).reshape(len(ks), m * d)
                if p.fit_intercept:
                    rhs = torch.cat([rhs, grad_sum[ks, None]], 1)
                x = half.apply(_spd_solve(S, half.apply(rhs)[:, :, None])[:, :, 0])
                correction[:, groups[:, None], ks] = x[:, :m * d].reshape(len(ks), m, d).permute(2, 1, 0)
                if p.fit_intercept:
                    intercept[ks] = x[:, -1]
        return (grad - p.predict(p.image(correction), intercept)) / n


class _RootJacobian:
    """``J^{1/2}`` for a batch of outputs ks (B,) over the active groups (m,): block-diagonal with
    ``sqrt(a_g) I + (1 - sqrt(a_g)) u_g u_g^T`` per group (d, d) and 1 for the intercept, kept as
    ``R + U C U^T``: R diagonal (B, D), U (B, D, m) the directions u_g in their blocks, C = 1 - sqrt(a)
    (B, m), D = m d (+ 1). Products with it are rank-m updates: no (B, m, d, m, d) einsum."""

    def __init__(self, state, groups, ks, intercept):
        d = state.V.shape[0]
        m, B = len(groups), len(ks)
        root = state.scale[groups][:, ks].T.sqrt()  # (B, m)
        u = (state.V[:, groups][:, :, ks] / state.norms[groups][:, ks]).permute(2, 1, 0)  # (B, m, d)
        eye = torch.eye(m, dtype=u.dtype, device=u.device)
        self.U = (u[:, :, :, None] * eye[:, None, :]).reshape(B, m * d, m)
        self.R = root.repeat_interleave(d, 1)
        if intercept:
            self.U = torch.cat([self.U, self.U.new_zeros(B, 1, m)], 1)
            self.R = torch.cat([self.R, self.R.new_ones(B, 1)], 1)
        self.C = 1 - root

    def apply(self, x):
        """``J^{1/2} x`` for x (B, D)."""
        along = self.C[:, :, None] * (self.U.transpose(1, 2) @ x[:, :, None])  # C U^T x (B, m, 1)
        return self.R * x + (self.U @ along)[:, :, 0]

    def congruence(self, S):
        """``J^{1/2} S J^{1/2}`` (B, D, D) for one symmetric S (D, D)."""
        SU = S @ self.U
        RSU = self.R[:, :, None] * SU                                    # R S U (B, D, m)
        inner = self.U.transpose(1, 2) @ SU                              # U^T S U (B, m, m)
        out = S * self.R[:, :, None] * self.R[:, None, :]                # R S R
        UC = self.U * self.C[:, None, :]
        out.baddbmm_(RSU, UC.transpose(1, 2))                            # R S U C U^T
        out.baddbmm_(UC, RSU.transpose(1, 2))                            # U C U^T S R
        return out.baddbmm_(UC @ inner, UC.transpose(1, 2))              # U C U^T S U C U^T


def _refined_solve(H, rhs, steps=4):
    """Solve H x = rhs (float64 x) for a symmetric positive definite float32 H (n, n) and a float64
    rhs (n, r): Cholesky in float32, then iterative refinement with float64 residuals. Each step
    shrinks the residual by about cond(H) eps(float32); where ``steps`` steps do not bring it below
    1e-10 ||rhs|| (cond(H) above about 1e5, where H's rounding to float32 also moves the solution
    too far), or where float32 overflowed, returns None. The residuals use H converted to float64
    once, a block of rows at a time, after the factorization (``DENSE_BYTES`` counts it)."""
    if not bool(torch.isfinite(H.diagonal()).all()):  # H is PSD: its diagonal bounds every entry
        return None
    L = _cholesky(H)
    x = _triangular_solves(L, rhs.float()).double()
    exact = torch.empty(H.shape, dtype=torch.float64, device=H.device)  # converted once, not at every step
    for rows in _row_blocks(*H.shape):
        exact[rows] = H[rows]
    for _ in range(steps):
        residual = rhs - exact @ x
        if float(residual.norm()) <= 1e-10 * float(rhs.norm()):
            return x
        x += _triangular_solves(L, residual.float()).double()
    return None


def _row_blocks(n, width, entries=BLOCK_ENTRIES):
    """Slices over the n rows of an (n, width) matrix, about ``entries`` entries (at least a row) each."""
    size = max(1, entries // max(width, 1))
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]


def _spd_solve(H, rhs):
    """Solve H x = rhs for symmetric positive definite H (..., D, D), rhs (..., D, r) (Cholesky,
    with a tiny shift where rounding made H indefinite)."""
    return _triangular_solves(_cholesky(H), rhs)


def _cholesky(H):
    """The Cholesky factor of H (..., D, D), with a tiny shift where rounding made H indefinite."""
    L, info = torch.linalg.cholesky_ex(H)
    shift = 50 * torch.finfo(H.dtype).eps * H.diagonal(dim1=-2, dim2=-1).abs().amax(-1, keepdim=True)
    while bool((info != 0).any()):
        H.diagonal(dim1=-2, dim2=-1).add_(torch.where((info != 0)[..., None], shift, 0))
        L, info = torch.linalg.cholesky_ex(H)
        shift *= 100
    return L


def _triangular_solves(L, rhs):
    """x with L L^T x = rhs: two triangular solves, several times faster than cholesky_solve for
    batches on the CPU."""
    return torch.linalg.solve_triangular(L.mT, torch.linalg.solve_triangular(L, rhs, upper=False), upper=True)


@dataclass
class _Products:
    """The products of a dual point xi (n, c) with the data, all linear in xi: ``A^T xi`` (d, G, c),
    ``1^T xi`` (c,) and, for d >= ``TRACKED_IMAGE_DEPTH``, ``X A^T xi`` (n, G, c) (else None), whose
    columns are computed when a group first needs them (``image_on``: the groups the prox sets to
    zero never do) and valid where ``known`` (G,). Along a Newton direction they are combinations
    of the direction's products: a line search needs no product with the data. (For small d the
    product X W+ costs less than the passes over (n, G, c) arrays that combining the images takes:
    13 s against 21 s for the 16-pixel face fit.)"""
    adjoint: torch.Tensor
    total: torch.Tensor
    image: torch.Tensor = None
    known: torch.Tensor = None

    @classmethod
    def of(cls, program, xi):
        adjoint, total = program.adjoint(program.loss_image_grad(xi), xi.sum(0))
        if program.shape[0] < TRACKED_IMAGE_DEPTH:
            return cls(adjoint, total)
        G = program.shape[1]
        return cls(adjoint, total, adjoint.new_zeros(program.X.shape[0], G, program.shape[2]),
                   torch.zeros(G, dtype=torch.bool, device=adjoint.device))

    def image_on(self, program, groups):
        """``X A^T xi`` (n, G, c), computed on the groups (G,) bool that lack it; the other
        unknown groups' columns hold finite values of no meaning."""
        missing = groups & ~self.known
        if bool(missing.any()):
            self.image[:, missing] = program.image(self.adjoint, missing)[:, missing]
            self.known = self.known | missing
        return self.image

    def scaled(self, factor):
        """The products of ``factor * xi``."""
        image = None if self.image is None else factor * self.image
        return _Products(factor * self.adjoint, factor * self.total, image, self.known)

    def plus(self, other):
        """The products of the sum of the two dual points."""
        if self.image is None:
            return _Products(self.adjoint + other.adjoint, self.total + other.total)
        return _Products(self.adjoint + other.adjoint, self.total + other.total, self.image + other.image,
                         self.known & other.known)

    def step(self, step, direction):
        """The products of ``xi + step * direction`` (this xi's and the direction's products)."""
        return self.plus(direction.scaled(step))


def _psi(program, xi, W, XW, b, sigma, products):
    """psi at xi (its ``_Products``) for the outer point (W, b), XW = X W_g (n, G, c), and step sigma.
    ``X W+ = a X V`` (group by group) and ``X V = X W - sigma X A^T xi``: no product with the data
    where the products carry ``X A^T xi``."""
    p = program
    V = W - sigma * products.adjoint
    norms = torch.linalg.vector_norm(V, dim=0)
    scale = (1 - sigma * p.penalty.lam / norms.clamp_min(1e-300)).clamp_min(0)
    W_plus = V * scale
    if products.image is None:
        XW_plus = p.image(W_plus, (scale > 0).any(1))  # the groups set to zero need no product
    else:
        XW_plus = (XW - sigma * products.image_on(p, (scale > 0).any(1))) * scale
    b_plus = b - sigma * products.total if p.fit_intercept else b  # without an intercept b is zero
    value = p.loss.conjugate(xi, p.Y) + (W_plus.square().sum() + b_plus.square().sum()) / (2 * sigma)
    fit = p.predict(XW_plus, 0)
    grad = p.loss.conjugate_grad(xi, p.Y) - (fit + b_plus)
    return _State(xi, float(value), grad, V, norms, scale, W_plus, b_plus, XW_plus, fit, products)


def solve_ssnal(program, W, b, tol, max_iter, history=None, dual=None):
    """Minimize the gated program from (W, b) until the float64 relative duality gap is <= tol.

    Parameters
    ----------
    program : ConvexProgram
        A program ``supports(program)`` accepts; the solve runs on ``program.float64()``.
    W, b : torch.Tensor
        Start: weights (d, G, c), intercept (c,) (zero when the program fits none).
    tol : float
        Relative duality gap to reach.
    max_iter : int
        Newton steps in all.
    history : list, optional
        Receives ``(newton steps, seconds, primal, gap)`` after every outer step.
    dual : dict, optional
        Carries the dual iterate from one solve of this program to the next (a path): where it
        holds one (``xi`` at ``lam``, found with step ``sigma``), the solve starts from it, scaled
        by the ratio of the lams (which keeps its groups' dual norms at the new lam), with a sigma
        ``WARM_SIGMA`` times the cold one; where that start is certified to ``NEAR_GAP`` (the
        active set barely changes), with a tenth of the last solve's sigma instead, at most
        ``WARM_SIGMA_MAX`` times the cold one: a large first step then certifies in two or three
        Newton steps. The solve leaves its best dual iterate, its products with the data (which
        scale with it) and its sigma in it.

    Returns
    -------
    W, b : torch.Tensor
        The best certified point, float64.
    certificate : Certificate
    n_newton_steps : int

    Notes
    -----
    sigma grows tenfold per outer step. A large sigma amplifies the rounding left in grad psi (the
    Newton systems' condition number grows like sigma), so once an outer step raises the primal
    objective (which an exact proximal step never does) and makes the gap clearly worse than the
    best one, the solve goes back to the best point and caps sigma below the value that did it.
    """
    p = program.float64()
    loss, Y = p.loss, p.Y
    systems = getattr(p, "_newton_systems", None)
    if systems is None or systems.program is not p:  # kept for the next solve (a path) of this program
        systems = p._newton_systems = _NewtonSystems(p)
    W, b = W.double(), b.double()
    XW = p.image(W, (W != 0).any(0).any(1))
    b = p.intercept(XW, b)
    xi = loss.grad(p.predict(XW, b), Y)  # the gradient: scaled, the start's dual point
    # the primal proximal term 1/(2 sigma) ||W - W_k||^2 starts SIGMA_START times flatter than
    # the data term's largest curvature
    sigma_start = SIGMA_START * p.n / (p.lipschitz_data() * loss.curvature)
    start, n_newton = time.perf_counter(), 0
    factor = p.penalty.lam / dual["lam"] if dual and dual["xi"].shape == xi.shape else None
    warm = factor is not None and bool(loss.in_conjugate_domain(factor * dual["xi"], Y))
    # the products are linear in xi: the carried ones, scaled, cost no product with the data
    xi, products = (factor * dual["xi"], dual["products"].scaled(factor)) if warm else (xi, _Products.of(p, xi))
    cert = _xi_certificate(p, systems, p.objective(W, p.predict(XW, b)), xi, products.adjoint)
    if warm:  # near the optimum a large first step certifies in a few Newton steps; farther, it overshoots
        carried = dual["sigma"] / (SIGMA_GROWTH * sigma_start) if cert.gap <= NEAR_GAP else 0
        sigma_start *= min(max(carried, WARM_SIGMA), WARM_SIGMA_MAX)
    sigma, sigma_cap = sigma_start, math.inf
    best, best_sigma = (cert, W, b, XW, xi, products), sigma
    _record(history, 0, start, cert, W, b)
    while best[0].gap > tol and n_newton < max_iter:
        state, steps, cert, b = _minimize_psi(p, systems, xi, products, W, b, XW, sigma, max_iter - n_newton, tol)
        n_newton += steps
        W, xi, XW, products = state.W, state.xi, state.XW, state.products
        if not math.isfinite(cert.gap):  # centered, xi left the conjugate's domain: the gradient's dual
            cert = p.certificate(W, b, XW)
        _record(history, n_newton, start, cert, W, b)
        log.debug("ssnal: sigma=%.3g newton=%d primal=%.10g gap=%.3g", sigma, n_newton, cert.primal, cert.gap)
        if cert.gap <= best[0].gap:
            best, best_sigma = (cert, W, b, XW, xi, products), sigma
        if cert.gap > NOISE * best[0].gap and cert.primal >= best[0].primal and sigma > sigma_start:
            # rounding (a proximal step never raises the primal): back to the best point, smaller step
            sigma_cap = sigma = sigma / SIGMA_GROWTH
            cert, W, b, XW, xi, products = best
        else:
            sigma = min(sigma * SIGMA_GROWTH, sigma_cap)
    _, W, b, _, xi, products = best
    if dual is not None:
        dual.update(xi=xi, lam=p.penalty.lam, sigma=best_sigma, products=products)
    # the products of the iterates were updated along the Newton steps: certify with fresh ones,
    # with the scaled gradient's dual point too where xi's alone does not reach tol
    XW = p.image(W, (W != 0).any(0).any(1))
    b = p.intercept(XW, b)
    adjoint = p.adjoint(p.loss_image_grad(xi))
    cert = _xi_certificate(p, systems, p.objective(W, p.predict(XW, b)), xi, adjoint)
    if not cert.gap <= tol:
        cert = _best_dual(p, systems, p.certificate(W, b, XW), xi, adjoint)
    return W, b, cert, n_newton


def _best_dual(p, systems, cert, xi, adjoint):
    """The certificate with the better of two dual points: the scaled gradient at the primal point
    (``cert``'s) and the Newton iterate xi (n, c), its ``adjoint = A^T xi`` (d, G, c) given,
    centered (1^T xi = 0, with an intercept) and scaled into the dual ball. Both are dual feasible;
    xi is the better one while the primal is still far from exact, which a tiny lam makes common."""
    if p.fit_intercept:
        mean = p.loss.total(xi, 0) / p.n
        xi, adjoint = xi - mean, adjoint - systems.ones_adjoint[:, :, None] * mean
        if not p.loss.in_conjugate_domain(xi, p.Y):  # centering pushed samples out (logistic)
            xi, adjoint = _toward_anchor(p, systems.anchor, xi, adjoint)
    candidate = p.scaled_certificate(cert.primal, xi, p.penalty.dual_norms(adjoint))
    # the better dual; also cert where xi fell outside the conjugate's domain (-inf)
    return candidate if candidate.dual > cert.dual else cert


def _toward_anchor(p, anchor, xi, adjoint, steps=40):
    """The point ``(1 - t) xi + t xi0`` of least t (bisection, to 2^-steps) strictly inside the
    conjugate's domain, with its ``A^T``: both ends centered, so it is too. anchor: ``(xi0,
    A^T xi0)`` inside the domain. Without it, an iterate whose centering leaves the domain where
    the logistic loss's dual weights are near 0 or 1/n certifies nothing (its dual value is -inf):
    ``t`` is then about the size of that overshoot."""
    xi0, adjoint0 = anchor
    low, high = 0.0, 1.0
    for _ in range(steps):
        middle = (low + high) / 2
        if p.loss.in_conjugate_domain((1 - middle) * xi + middle * xi0, p.Y):
            high = middle
        else:
            low = middle
    return (1 - high) * xi + high * xi0, (1 - high) * adjoint + high * adjoint0


def _xi_certificate(p, systems, primal, xi, adjoint):
    """The certificate of the primal value ``primal`` with the dual point xi alone (``_best_dual``;
    its dual is -inf where xi's is not finite)."""
    return _best_dual(p, systems, Certificate(primal, -math.inf, math.inf), xi, adjoint)


def _state_certificate(p, systems, state):
    """The certificate at the primal point (W+, b+) of ``state``, the intercept re-fitted, with the
    dual point xi (``_xi_certificate``): no product with the data. Returns ``(certificate, intercept)``."""
    b = p.intercept_of_fit(state.fit, state.b)
    primal = p.objective(state.W, state.fit + b)
    return _xi_certificate(p, systems, primal, state.xi, state.products.adjoint), b


def _minimize_psi(p, systems, xi, products, W, b, XW, sigma, budget, tol):
    """Newton's method on psi from xi (its ``_Products``), for the outer point (W, b) (XW = X W_g),
    until psi is minimized well enough for this outer step, or the point (W+, b+) with the dual
    point xi is certified to ``tol`` (checked after every step: it needs no product with the data). Returns ``(state, steps, certificate, intercept)``, the certificate's dual
    xi's (or -inf), the intercept re-fitted."""
    fit_before = p.predict(XW, b)
    state, steps, stop = _psi(p, xi, W, XW, b, sigma, products), 0, False
    while True:
        cert, b_plus = _state_certificate(p, systems, state)
        if stop or cert.gap <= tol or steps >= min(MAX_INNER, budget):
            return state, steps, cert, b_plus
        residual = _norm(p, state.grad)
        # stop once psi is minimized well enough for this outer step, or down to rounding
        fit = state.fit + state.b
        if residual <= max(INNER_RATIO * _norm(p, fit - fit_before), ROUNDING * _norm(p, fit)):
            return state, steps, cert, b_plus
        direction = systems.direction(state, sigma, p.loss.conjugate_hessian(state.xi, p.Y))
        trial, moved = _line_search(p, state, direction, W, XW, b, sigma)
        stop = not moved or (trial.value >= state.value and _norm(p, trial.grad) >= residual)
        state, steps = trial, steps + 1


def _norm(p, Z):
    """The Frobenius norm of Z (n, c) over the rows of every rank."""
    return math.sqrt(float(p.loss.total(Z.square())))


def _line_search(program, state, direction, W, XW, b, sigma):
    """Armijo backtracking on psi along ``direction``, inside the conjugate's domain; the
    direction's products are the only ones with the data. Returns ``(state, moved)``."""
    slope = float(program.loss.total(state.grad * direction))
    if not slope < 0:
        return state, False
    along, step = _Products.of(program, direction), 1.0
    if along.image is not None:  # the images of the groups xi's products know: those of its trials
        along.image_on(program, state.products.known)
    while step > 1e-12:
        xi = state.xi + step * direction
        if program.loss.in_conjugate_domain(xi, program.Y):
            trial = _psi(program, xi, W, XW, b, sigma, state.products.step(step, along))
            if math.isfinite(trial.value) and trial.value <= state.value + 1e-4 * step * slope:
                return trial, True
        step *= 0.5
    return state, False
