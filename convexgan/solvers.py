"""Solvers for the convex two-layer ReLU programs, certified by a duality gap.

The program, over group weights W (d, G, c) and an unpenalized intercept b (c,):

    min  F( sum_g s_g D_g X W_g + b ) + R(W)
    s.t. (2 D_g - I) X W_g >= 0   for every g           (only for ``cone=True``: ReLU)

``D_g = diag(masks[:, g])``, ``s_g = signs[g]`` (+1 or -1), F a loss of ``losses``, R a penalty of
``penalties``. Gated ReLU is the unconstrained program, solved by FISTA (backtracking line search,
step growth, gradient-based restarts). ReLU adds the cones, handled by an augmented Lagrangian
whose subproblems are solved by the same FISTA.

Certificate: with ``Theta = grad F(prediction)`` and cone multipliers ``mu >= 0``, the point
``alpha * (Theta, mu)`` with ``alpha = min(1, lam / max_g ||X^T (s_g D_g Theta - (2D_g - I) mu_g)||_*)``
is dual feasible, so ``-F*(alpha Theta)`` is a lower bound on the optimum. ``gap`` is
``(primal - dual) / |primal|``: the relative suboptimality is at most ``gap``. A float32 solve
stops only once the certificate, recomputed in float64, is below ``tol``. For ReLU the
primal point is feasible only up to ``cone_violation = ||(-(2D - I) X W)_+||_F / ||X W||_F``;
both must fall below ``tol``. An intercept is re-optimized exactly before each certificate,
so that the dual constraint ``1^T Theta = 0`` holds.

Sharded rows (``torch.distributed``): a program whose loss is ``sharded`` holds one rank's rows of
X, the masks and Y; W, b, the step and every stopping decision are the same on every rank, because
they depend only on reduced values: the adjoint ``X^T R`` (one all-reduce per FISTA iteration, the
intercept's gradient packed in), and the scalars of the loss (line search, certificate). The
dual norm is taken of the summed adjoint, so the certificate is the one of all rows.

Every product with X is one GEMM over all groups at once: ``X @ W.reshape(d, G * c)`` and
``X.T @ R.reshape(n, G * c)``; predictions are masked sums over groups, and each FISTA step
extrapolates the cached products instead of recomputing them, so an iteration costs two GEMMs.
"""
import copy
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import nnls

from .distributed import all_reduce_sum, computed_on_first_rank
from .penalties import NuclearNorm
from .recovery import threshold

log = logging.getLogger(__name__)


@dataclass
class Certificate:
    """A duality-gap certificate of one primal point.

    ``dual`` is the dual value ``-F*(dual_point)`` of a dual feasible point (every group's dual norm
    of ``A^T dual_point`` at most lam, ``1^T dual_point = 0`` with an intercept; with cones, with
    multipliers that are not kept), so it bounds the optimum from below.
    """
    primal: float
    dual: float
    gap: float
    cone_violation: float = 0.0
    dual_point: torch.Tensor = None  # (n, c) this rank's rows; None where no dual point was kept


class ConvexProgram:
    """The data of one program. X (n, d), masks (n, G) bool, signs (G,), Y (n, c): all tensors on one
    device and dtype (masks bool)."""
    TENSORS = ("X", "Y", "mask_weights", "cone_signs")  # the data float64() converts
    ROW_AXES = {}  # the axis of each of them that indexes rows, where it is not 0

    def __init__(self, X, masks, signs, Y, loss, penalty, fit_intercept, cone, exact=None):
        """``exact``: X and Y in float64 before any rounding to X's dtype; a float32 program keeps
        them so that its float64 certificates are those of the data, not of their rounding."""
        self.X, self.Y, self.loss, self.penalty = X, Y, loss, penalty
        self.fit_intercept, self.cone = fit_intercept, cone
        self.mask_weights = masks.to(X.dtype) * signs  # s_g D_g as an (n, G) matrix
        self.cone_signs = 2 * masks.to(X.dtype) - 1 if cone else None  # the diagonal of 2 D_g - I
        self.shape = (X.shape[1], masks.shape[1], Y.shape[1])
        self.n = loss.n(Y)  # rows of all ranks
        if cone and self.sharded:
            raise NotImplementedError("the ReLU (cone) programs are not sharded across ranks: use "
                                      "activation='gated', or one process.")
        if exact is not None and X.dtype != torch.float64:
            self._float64 = ConvexProgram(*exact[:1], masks, signs.double(), *exact[1:], loss, penalty,
                                          fit_intercept, cone)

    @property
    def sharded(self):
        """Whether this program holds one rank's rows of a program over several ranks."""
        return self.loss.n_total is not None

    @classmethod
    def from_arrays(cls, X, masks, signs, Y, loss, penalty, fit_intercept, cone, dtype, device):
        """The program of arrays (NumPy or torch) X (n, d), masks (n, G), signs (G,), Y (n, c), as
        tensors of ``dtype`` on ``device``; below float64 it keeps its float64 twin of the data."""
        def tensor(A, dtype=dtype):
            return torch.as_tensor(A, dtype=dtype, device=device)
        exact = None if dtype == torch.float64 else (tensor(X, torch.float64), tensor(Y, torch.float64))
        return cls(tensor(X), torch.as_tensor(masks, device=device), tensor(signs), tensor(Y), loss, penalty,
                   fit_intercept, cone, exact=exact)

    def image(self, W, groups=None):
        """X W_g for every group: (n, G, c). ``groups`` (G,) bool, optional: the groups whose W_g may
        be nonzero; the others' products are zero, and not computed."""
        n, (d, G, c) = self.X.shape[0], self.shape
        if groups is None or bool(groups.all()):
            return (self.X @ W.reshape(d, -1)).reshape(n, G, c)
        XW = W.new_zeros(n, G, c)
        XW[:, groups] = (self.X @ W[:, groups].reshape(d, -1)).reshape(n, int(groups.sum()), c)
        return XW

    def adjoint(self, R, *partial_sums):
        """X^T R_g for every group of R (n, G, c): (d, G, c), summed over the rows of all ranks.
        Further per-rank sums (say the intercept's gradient) are reduced in the same collective
        and returned after it."""
        product = self.local_adjoint(R)
        if self.sharded:
            all_reduce_sum(product, *partial_sums)
        return (product, *partial_sums) if partial_sums else product

    def local_adjoint(self, R):
        """X^T R_g over this rank's rows."""
        return (self.X.T @ R.reshape(R.shape[0], self.shape[1] * self.shape[2])).reshape(self.shape)

    def predict(self, XW, b):
        return torch.einsum("ngc,ng->nc", XW, self.mask_weights) + b

    def loss_image_grad(self, Theta):
        """The gradient with respect to X W of <Theta, prediction>: s_g D_g Theta, (n, G, c)."""
        return self.mask_weights[:, :, None] * Theta[:, None, :]

    def slack(self, XW):
        """(2 D_g - I) X W_g, nonnegative on the cones."""
        return self.cone_signs[:, :, None] * XW

    def zeros(self):
        W = torch.zeros(self.shape, dtype=self.X.dtype, device=self.X.device)
        return W, torch.zeros(self.shape[2], dtype=self.X.dtype, device=self.X.device)

    def lipschitz_data(self, n_power=30):
        """Power-iteration estimate of ||W -> sum_g s_g D_g X W_g||^2 (one output), computed once
        (copies share it: ``float64()`` and the rotation of ``singular_basis`` keep the operator norm).
        At most ``n_power`` iterations: it stops once an iteration changes the estimate by less
        than ``POWER_RTOL`` (after 6 on the CIFAR problem of BENCHMARKS.md, 0.013 % below the
        converged value: 0.09 s instead of 0.52 s; FISTA's line search corrects an underestimate)."""
        if getattr(self, "_lipschitz", None) is None:
            self._lipschitz = self._power_iteration(n_power)
        return self._lipschitz

    def _power_iteration(self, n_power):
        W = torch.randn(self.shape[:2] + (1,), dtype=self.X.dtype, device=self.X.device,
                        generator=torch.Generator(self.X.device).manual_seed(0))
        estimate = 0.0
        for _ in range(n_power):
            W = W / torch.linalg.vector_norm(W)
            pred = torch.einsum("ngc,ng->nc", (self.X @ W[:, :, 0])[:, :, None], self.mask_weights)
            W = self.loss.reduced((self.X.T @ (self.mask_weights * pred))[:, :, None])
            previous, estimate = estimate, float(torch.linalg.vector_norm(W))
            if estimate - previous <= POWER_RTOL * estimate:
                break
        return estimate * 1.05

    def intercept(self, XW, b):
        """The optimal intercept (c,) for the products XW, from b (b itself without an intercept)."""
        return self.intercept_of_fit(self.predict(XW, 0), b) if self.fit_intercept else b

    def intercept_of_fit(self, fit, b, Y=None):
        """The optimal intercept (c,) for predictions ``fit`` (n, c) made without one, from b (b itself
        when the program fits none); Y: the targets (default the program's)."""
        if not self.fit_intercept:
            return b
        return self.loss.optimal_intercept(fit, self.Y if Y is None else Y, b)

    def objective(self, W, pred, Y=None):
        """The primal objective of W (d, G, c) with predictions ``pred`` (n, c): loss plus penalty;
        Y: the targets (default the program's)."""
        return float(self.loss.value(pred, self.Y if Y is None else Y) + self.penalty.value(W))

    def refine_dual_norms(self, Theta, norms):
        """Dual norms with the best multipliers for Theta, ``min_{mu >= 0} ||X^T (s D Theta - (2D - I) mu)||``
        by non-negative least squares, for the groups (and outputs) whose norm exceeds lam."""
        image = self.loss_image_grad(Theta).double().cpu().numpy()
        norms = norms.clone()
        for g, k in torch.nonzero(norms > self.penalty.lam).tolist():
            norms[g, k] = min(float(norms[g, k]), self.cone_dual(image[:, g, k], g)[0])
        return norms

    def cone_dual(self, image, g):
        """The dual norm of group g under its cone ``K = {u : (2 D_g - I) X u >= 0}`` for the column
        ``image = s_g D_g Theta_k`` (n,) of ``loss_image_grad``: ``max_{u in K, ||u|| <= 1} -<X^T image, u>``,
        the rate at which a neuron of this pattern and sign lowers the Lagrangian, and the unit u
        attaining it (zero when the maximum is 0). By Moreau, ``Pi_K(-v) = G^T mu - v`` with
        ``v = X^T image``, ``G = (2 D_g - I) X`` and mu the non-negative least squares solution
        of ``min_{mu >= 0} ||G^T mu - v||``. Returns ``(norm, u)``, u a NumPy (d,) array."""
        X = self.X.double().cpu().numpy()
        v = X.T @ image
        B = X.T * self.cone_signs[:, g].double().cpu().numpy()
        mu, norm = nnls(B, v, maxiter=50 * X.shape[0])
        direction = B @ mu - v
        return norm, direction / norm if norm > 0 else direction

    def group_duals(self, Theta):
        """Every group's exact dual norm for Theta (n, 1), with the unit direction u attaining it:
        ``max -<X^T s_g D_g Theta, u>`` over ``||u|| <= 1`` (and the group's cone, ``cone_dual``).
        Returns a list of ``(norm, u)``, u a NumPy (d,) array (zero when the norm is 0)."""
        image = self.loss_image_grad(Theta).double().cpu().numpy()[:, :, 0]
        if self.cone:
            return [self.cone_dual(image[:, g], g) for g in range(image.shape[1])]
        directions = -(self.X.double().cpu().numpy().T @ image)  # (d, G)
        norms = np.linalg.norm(directions, axis=0)
        return [(float(norm), u / norm if norm > 0 else u) for norm, u in zip(norms, directions.T)]

    def project_cones(self, W):
        """Project every group W[:, g, k] onto its cone {u : (2 D_g - I) X u >= 0}: by Moreau,
        ``z + G^T mu`` with ``mu = argmin_{mu >= 0} ||z + G^T mu||`` and ``G = (2 D_g - I) X``."""
        slack = self.slack(self.image(W))
        outside = torch.nonzero((slack < 0).any(0)).tolist()
        if not outside:
            return W
        X, cone_signs = self.X.double().cpu().numpy(), self.cone_signs.double().cpu().numpy()
        W = W.clone()
        for g, k in outside:
            G_t = X.T * cone_signs[:, g]
            z = W[:, g, k].double().cpu().numpy()
            mu, _ = nnls(-G_t, z, maxiter=50 * X.shape[0])
            W[:, g, k] = torch.as_tensor(z + G_t @ mu, dtype=W.dtype, device=W.device)
        return W

    def float64(self):
        """This program in float64 (cached): certificates of float32 solves are confirmed in it."""
        if self.X.dtype == torch.float64:
            return self
        if not hasattr(self, "_float64"):
            self._float64 = self._with_data(lambda _, value: value.double())
        return self._float64

    def _with_data(self, convert):
        """A shallow copy of this program whose data (``TENSORS``) are ``convert(name, tensor)``."""
        program = copy.copy(self)
        for name in self.TENSORS:
            value = getattr(self, name)
            if value is not None:
                setattr(program, name, convert(name, value))
        return program

    def confirmed_certificate(self, W, b, multipliers=None, refine=False):
        """The certificate recomputed in float64 from the weights (the products X W included),
        the intercept re-fitted in float64 so that the dual constraint ``1^T Theta = 0`` holds to
        float64 precision. Returns ``(certificate, intercept)``, the intercept in float64.

        Without cones it runs over blocks of rows (``row_blocks``): one block of the data is in
        float64 at a time, so a float32 program is never copied whole (it uses its exact float64
        data where it keeps them). The cone certificate needs all rows at once (multipliers, NNLS)."""
        W = W.double()
        if self.cone:
            exact = self.float64()
            XW = exact.image(W)
            b = exact.intercept(XW, b.double())
            return exact.certificate(W, b, XW, multipliers.double(), refine), b
        source = getattr(self, "_float64", self)
        Y = source.Y.double()
        fit = torch.cat([block.predict(block.image(W), 0) for _, block in source.row_blocks()])
        b = self.intercept_of_fit(fit, b.double(), Y)

        def adjoint_of(Theta):
            product = torch.zeros(self.shape, dtype=torch.float64, device=W.device)
            for rows, block in source.row_blocks():
                product += block.local_adjoint(block.loss_image_grad(Theta[rows]))
            return all_reduce_sum(product)[0] if self.sharded else product
        return self._certificate(W, fit + b, Y, adjoint_of), b

    def row_blocks(self):
        """``(rows, program)`` over consecutive blocks of this rank's rows: the program of those rows
        with its data in float64, about ``ROW_BLOCK`` float64 entries of data and products each."""
        n = self.Y.shape[0]
        size = max(1, ROW_BLOCK // (self.X.numel() // max(n, 1) + self.shape[1] * self.shape[2]))
        for start in range(0, max(n, 1), size):  # an empty shard: one empty block
            rows = slice(start, min(n, start + size))
            yield rows, self._with_data(lambda name, value: value[(slice(None),) * self.ROW_AXES.get(name, 0)
                                                                  + (rows,)].double())

    def certificate(self, W, b, XW, multipliers=None, refine=False):
        violation = 0.0
        if self.cone:
            violation = float(torch.linalg.vector_norm(self.slack(XW).clamp_max(0))
                              / torch.linalg.vector_norm(XW).clamp_min(1e-300))

        def adjoint_of(Theta):
            R = self.loss_image_grad(Theta)
            return self.adjoint(R - self.cone_signs[:, :, None] * multipliers if self.cone else R)
        return self._certificate(W, self.predict(XW, b), self.Y, adjoint_of, violation, refine)

    def _certificate(self, W, pred, Y, adjoint_of, violation=0.0, refine=False):
        """The certificate at predictions ``pred`` (n, c) of W for targets Y; ``adjoint_of(Theta)``
        gives the (d, G, c) products whose dual norms scale Theta into the dual ball."""
        primal = self.objective(W, pred, Y)
        Theta = self.loss.grad(pred, Y)
        norms = self.penalty.dual_norms(adjoint_of(Theta))
        if self.cone and refine:
            norms = self.refine_dual_norms(Theta, norms)
        return self.scaled_certificate(primal, Theta, norms, Y, violation)

    def scaled_certificate(self, primal, Theta, norms, Y=None, violation=0.0):
        """The certificate of the primal value ``primal`` by the dual point ``alpha Theta``: Theta
        (n, c) scaled into the dual ball, ``alpha = min(1, lam / max(norms))`` with ``norms`` its
        dual norms per group. Its dual value ``-F*(alpha Theta)`` bounds the optimum from below
        when Theta also satisfies the intercept's constraint ``1^T Theta = 0``. Y: the targets
        (default the program's)."""
        worst = float(norms.max())
        point = (min(1.0, self.penalty.lam / worst) if worst > 0 else 1.0) * Theta
        dual = -float(self.loss.conjugate(point, self.Y if Y is None else Y))
        return Certificate(primal, dual, (primal - dual) / max(abs(primal), 1e-300), violation, point)


def singular_basis(program, always=False):
    """The same program in the singular basis of X, over its r-dimensional row space.

    With ``X = (U S) V^T`` (thin SVD, rank r), every solution has ``W_g`` in the range of ``X^T``
    (a component outside it raises the penalty and changes nothing else), so ``W_g = V beta_g``
    with equal norms (l2 and nuclear), cones and predictions: the program with data ``U S`` (n x r)
    is exact (a sharded program rotates by all d eigenvectors of the summed Gram matrix
    ``X^T X = V S^2 V^T``, its data ``X V`` per rank). When n < d each GEMM is d/r times cheaper;
    and in this basis the data curvature is nearly diagonal, ``S U^T D_g U S / n`` with
    ``u^T D_g u`` about 1/2, so ``metric = S^2 / (2n)`` is a good diagonal preconditioner.

    Parameters
    ----------
    program : ConvexProgram
        The program with data X (n, d).
    always : bool
        Rotate even when n >= d (the preconditioner alone is then the gain).

    Returns
    -------
    program : ConvexProgram
        The program with data ``U S`` (n, r); its float64 twin is rotated in float64.
    V : torch.Tensor or None
        (d, r) float64; a solution maps back as ``W = V beta``.
    metric : torch.Tensor or None
        (r,) the diagonal preconditioner. ``(program, None, None)`` when n >= d and not ``always``.
    """
    n, d = program.n, program.shape[0]
    if n >= d and not always:
        return program, None, None
    exact = program.float64()
    if program.sharded:  # rows on every rank: V from the summed Gram matrix, all d directions kept
        gram = exact.X.T @ exact.X
        all_reduce_sum(gram)
        eigenvalues, V = computed_on_first_rank(torch.linalg.eigh, gram)  # the same bits on every rank
        s, V = eigenvalues.flip(0).clamp_min(0).sqrt(), V.flip(1)
        r, rotated = d, exact.X @ V
    else:
        U, s, Vh = _thin_svd(exact.X)  # float64: V maps back exactly
        r = max(int((s > s[0] * 1e-12).sum()), 1)
        V, rotated = Vh[:r].T, U[:, :r] * s[:r]
    reduced = copy.copy(program)
    reduced.X, reduced.shape = rotated.to(program.X.dtype), (r, *program.shape[1:])
    if exact is not program:  # certificates in float64 use the exact rotated data, not its rounding
        reduced._float64 = copy.copy(exact)
        reduced._float64.X, reduced._float64.shape = rotated, reduced.shape
    # floor: directions the data barely see still get a bounded step
    metric = (s[:r] ** 2).clamp_min(1e-4 * float(s[0]) ** 2 if s[0] > 0 else 1.0) * program.loss.curvature / (2 * n)
    return reduced, V, metric.to(program.X.dtype)


def _thin_svd(X):
    """``torch.linalg.svd(X, full_matrices=False)`` of X (n, d); for a wide X through the QR
    factorization ``X^T = Q R`` and the SVD of the square R (n, n): ``X = (U S) (Q V_R)^T``,
    as accurate as the SVD of the wide matrix and faster (0.57 s against 0.94 s for 1,000 x 3,072
    in float64 on 2 cores)."""
    n, d = X.shape
    if d <= n:
        return torch.linalg.svd(X, full_matrices=False)
    Q, R = torch.linalg.qr(X.T)
    V, s, Uh = torch.linalg.svd(R, full_matrices=False)  # R = V S U^T, so X = R^T Q^T = U S (Q V)^T
    return Uh.T, s, (Q @ V).T


def fista(program, gradient, divergence, prox, W, b, step, max_iter, check, check_every=10, metric=None):
    """Accelerated proximal gradient on ``f(XW, b) + penalty(W)``, with backtracking and restarts.

    Parameters
    ----------
    program : ConvexProgram
        Supplies ``image`` (W -> XW) and ``adjoint``.
    gradient : callable
        ``gradient(XW, b)`` -> gradients of f with respect to XW (n, G, c) and b (c,) (the latter
        this rank's part when sharded: it is reduced with the adjoint).
    divergence : callable
        ``divergence(XW_new, b_new, XW, b)``, the Bregman divergence of f, which the line search
        compares with ``||step||^2 / (2 step)`` (computed directly, it keeps float32 runs accurate
        where differences of objective values would cancel).
    prox : callable
        ``prox(Z, step)``, the proximal map of ``step * penalty`` (in the ``metric`` norm if given).
    W, b : torch.Tensor
        Start: weights (d, G, c) and intercept (c,).
    step : float
        First step size (1 / curvature); it adapts (halved on a failed test, x1.05 after a step).
    max_iter : int
        Iterations at most.
    check : callable
        Every ``check_every`` iterations ``check(W, b, XW, mapping_norm, it)`` -> ``(stop, b)``: on a
        stop, b is the intercept to return (the certificate may have re-optimized it).
    metric : torch.Tensor, optional
        (d,): FISTA in the norm ``||W||_M^2 = sum_k metric_k ||W[k]||^2`` (a diagonal preconditioner).

    Returns
    -------
    W, b, XW : torch.Tensor
        The last iterate, its intercept and X W (n, G, c).
    n_iter : int
    step : float
        The last step size (a warm start for the next solve).

    Raises
    ------
    FloatingPointError
        When no step below 1e-30 passes the test: the loss or its gradient is not finite.
    """
    m = 1.0 if metric is None else metric.reshape(-1, 1, 1)
    XW = program.image(W)
    yW, yb, yXW, t = W, b, XW, 1.0
    for it in range(1, max_iter + 1):
        gXW, gb = gradient(yXW, yb)
        gW, gb = program.adjoint(gXW, gb)
        while True:
            W_new = prox(yW - step * gW / m, step)
            b_new = yb - step * gb if program.fit_intercept else yb
            XW_new = program.image(W_new)
            squared_step = float((m * (W_new - yW).square()).sum() + (b_new - yb).square().sum())
            if divergence(XW_new, b_new, yXW, yb) <= (1 + 1e-6) * squared_step / (2 * step):
                break
            step *= 0.5
            if step < 1e-30:  # no step decreases the model: the objective is not finite or not smooth here
                raise FloatingPointError(f"FISTA's line search found no step at iteration {it} (the loss or its "
                                         "gradient is not finite): check the data and lam for extreme values.")
        # gradient-based adaptive restart (O'Donoghue and Candes, 2015)
        if float((m * (yW - W_new) * (W_new - W)).sum() + ((yb - b_new) * (b_new - b)).sum()) > 0:
            t = 1.0
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        beta = (t - 1) / t_next
        yW, yb, yXW = W_new + beta * (W_new - W), b_new + beta * (b_new - b), XW_new + beta * (XW_new - XW)
        W, b, XW, t = W_new, b_new, XW_new, t_next
        mapping_norm = math.sqrt(squared_step) / step
        step *= 1.05
        if it % check_every == 0 or it == max_iter:
            stop, b_checked = check(W, b, XW, mapping_norm, it)
            if stop:
                return W, b_checked, XW, it, step
    return W, b, XW, max_iter, step


def solve_gated(program, W, b, tol, max_iter, check_every=10, history=None, metric=None):
    """The gated program (no cones) by FISTA, until the float64 relative duality gap is <= tol.

    Parameters
    ----------
    program : ConvexProgram
    W, b : torch.Tensor
        Start: weights (d, G, c), intercept (c,).
    tol : float
        Relative duality gap to reach.
    max_iter : int
    check_every : int
        Iterations between certificates (``FAR_CHECKS`` times as many while the last gap is above
        ``FAR_GAP * tol``: each certificate costs about an iteration).
    history : list, optional
        Receives ``(iteration, seconds, primal, gap)`` at every certificate.
    metric : torch.Tensor, optional
        (d,) diagonal preconditioner (GroupL2 only), see ``singular_basis``.

    Returns
    -------
    W, b : torch.Tensor
    certificate : Certificate
        Of the returned point, computed in float64 (with the intercept re-fitted in float64, which
        is the one returned), whether or not it met ``tol``.
    n_iter : int
    """
    if metric is None:
        return _solve_prox(program, program.penalty.prox, W, b, tol, max_iter, check_every, history)
    prox = lambda Z, step: program.penalty.prox_metric(Z, step, metric)  # noqa: E731
    return _solve_prox(program, prox, W, b, tol, max_iter, check_every, history, metric)


def solve_gated_subspace(program, W, b, tol, max_iter, check_every=10, history=None, warm_iter=None):
    """The gated program of a ``PooledConvProgram`` (nuclear norm) by FISTA on subspaces, until the
    float64 relative duality gap is <= tol.

    FISTA on the whole program for ``warm_iter`` iterations (default ``SUBSPACE_WARM``) finds the
    active neurons. Each round then confines every W_p to the span of k orthonormal directions
    B_p (``program.restricted``: features ``F_p B_p``, D / k times fewer), solves that program by
    FISTA to ``SUBSPACE_INNER`` times the current gap, lifts its solution and certifies it on the
    whole program (one product each way). B_p holds the range of W_p and the top left singular
    vectors of the whole gradient G_p = F_p^T Theta, k twice the largest rank plus
    ``SUBSPACE_SLACK``: the certificate's dual norm is ``||G_p||_2``, and directions of G_p
    outside B_p that are each below lam still raise it above lam together with those inside
    (measured on CIFAR-10 features: a basis of the gradient's part outside the range of W_p left
    ``||G_p|| = 1.03 lam`` after the restricted optimum). Where k >= D / 2 nothing is gained: the
    whole program is solved by FISTA from there.

    Parameters and returns as ``solve_gated``; ``max_iter`` bounds the whole program's FISTA
    iterations and those of each round (at most ``SUBSPACE_ROUNDS`` rounds); ``n_iter`` counts
    both kinds. ``history`` receives the whole program's certificates (iterations of both kinds).
    """
    if not hasattr(program, "restricted") or not isinstance(program.penalty, NuclearNorm):
        raise ValueError(f"solve_gated_subspace solves PooledConvProgram's nuclear-norm programs, got a "
                         f"{type(program).__name__} with {type(program.penalty).__name__}: use solve_gated.")
    warm_iter = SUBSPACE_WARM if warm_iter is None else warm_iter
    start, prox = time.perf_counter(), program.penalty.prox
    curvature = program.lipschitz_data() * program.loss.curvature / program.n
    W, b, cert, n_iter = _solve_prox(program, prox, W, b, tol, min(warm_iter, max_iter), check_every, history,
                                     curvature=curvature, confirm=False)
    if cert is not None and cert.gap <= tol:  # certified in float64 by the FISTA's check
        return W, b, cert, n_iter
    b = b.to(W.dtype)
    for _ in range(SUBSPACE_ROUNDS):
        cert, b, G = _certificate_and_gradient(program, W, b)
        _record(history, n_iter, start, cert, W, b)
        if cert.gap <= tol:
            confirmed, exact_b = program.confirmed_certificate(W, b)
            if confirmed.gap <= tol:
                return W, exact_b, confirmed, n_iter
        basis = _subspace_basis(W, G)
        if 2 * basis.shape[2] >= program.D:  # spans as wide as the data: the whole program is cheaper
            W, b, cert, more = _solve_prox(program, prox, W, b, tol, max_iter, check_every, history,
                                           curvature=curvature)
            return W, b, cert, n_iter + more
        restricted = program.restricted(basis)
        M = torch.einsum("pdk,dpc->kpc", basis.to(W.dtype), W)
        M, b, _, inner_iter = _solve_prox(restricted, prox, M, b, max(tol / 3, SUBSPACE_INNER * cert.gap),
                                          max_iter, check_every, None, curvature=curvature, confirm=False)
        W, b, n_iter = program.lifted(basis, M), b.to(W.dtype), n_iter + inner_iter
    cert, b = program.confirmed_certificate(W, b)
    return W, b, cert, n_iter


def _certificate_and_gradient(program, W, b):
    """The certificate of (W, b) with its intercept re-fitted, the intercept and the adjoint of the
    loss's gradient (d, G, c) that the certificate scaled by: one product each way."""
    XW = program.image(W)
    b = program.intercept(XW, b)
    gradient = {}

    def adjoint_of(Theta):
        gradient["G"] = program.adjoint(program.loss_image_grad(Theta))
        return gradient["G"]
    return program._certificate(W, program.predict(XW, b), program.Y, adjoint_of), b, gradient["G"]


def _subspace_basis(W, G):
    """Per group, k orthonormal directions (P, d, k) in float64: the range of W_g (its singular
    vectors that count as neurons, ``recovery.threshold``), then the top left singular vectors of
    G_g; k = twice the largest rank plus ``SUBSPACE_SLACK``, at most d."""
    Wg, Gg = W.transpose(0, 1).double(), G.transpose(0, 1).double()
    U, s, _ = torch.linalg.svd(Wg, full_matrices=False)
    ranks = (s > threshold(s, W.dtype)).sum(1)
    d = Wg.shape[1]
    k = min(d, 2 * int(ranks.max()) + SUBSPACE_SLACK)
    UG = torch.linalg.svd(Gg, full_matrices=False)[0]
    basis = Wg.new_zeros(Wg.shape[0], d, k)
    for g, r in enumerate(ranks.tolist()):
        r = min(r, k)
        candidates = torch.cat([U[g, :, :r], UG[g, :, :k - r]], 1)
        basis[g, :, :candidates.shape[1]] = torch.linalg.qr(candidates)[0]
    return basis


def solve_cone_projected(program, W, b, tol, max_iter, check_every=10, history=None):
    """The ReLU program by FISTA with the exact prox of ``lam ||u|| + indicator(K_g)``: the norm's
    shrinkage of the projection onto the cone (an NNLS per group). Iterates stay feasible; meant
    for small problems (each step solves G * c NNLS problems of size d x n on the CPU).
    Parameters and returns as ``solve_gated`` (without ``metric``)."""
    prox = lambda W, step: program.penalty.prox(program.project_cones(W), step)  # noqa: E731
    return _solve_prox(program, prox, W, b, tol, max_iter, check_every, history)


def _solve_prox(program, prox, W, b, tol, max_iter, check_every, history, metric=None, curvature=None,
                confirm=True):
    """FISTA until certified to tol. ``curvature``: the data term's, when known (else estimated);
    ``confirm=False``: a solve stopped by max_iter returns its last certificate as it is, not
    recomputed in float64."""
    loss, Y = program.loss, program.Y
    if curvature is None:
        curvature = program.lipschitz_data() * loss.curvature / program.n

    def gradient(XW, b):
        Theta = loss.grad(program.predict(XW, b), Y)
        return program.loss_image_grad(Theta), Theta.sum(0)

    def divergence(XW_new, b_new, XW, b):
        return loss.bregman(program.predict(XW_new, b_new), program.predict(XW, b), Y)

    result, start = {}, time.perf_counter()
    no_multipliers = torch.zeros_like(program.X[:, :1, None]) if program.cone else None

    def check(W, b, XW, mapping_norm, it):
        last = result.get("certificate")
        if last is not None and last.gap > FAR_GAP * tol and it - result["checked"] < FAR_CHECKS * check_every:
            return False, b  # far from tol: fewer certificates (each one reads all the data)
        b = program.intercept(XW, b)
        cert = program.certificate(W, b, XW, no_multipliers, refine=program.cone)
        if cert.gap <= tol and W.dtype != torch.float64:  # stop only on a float64 certificate
            cert, exact_b = program.confirmed_certificate(W, b, no_multipliers, refine=program.cone)
            b = exact_b if cert.gap <= tol else b  # the stopping point's intercept, in float64
        result["certificate"], result["checked"] = cert, it
        _record(history, it, start, cert, W, b)
        return cert.gap <= tol, b

    step = _first_step(curvature if metric is None else float(metric.max()), loss)  # M ~ the data curvature
    W, b, XW, n_iter, _ = fista(program, gradient, divergence, prox, W, b, step, max_iter,
                                check, check_every, metric)
    cert = result.get("certificate")
    if confirm and (result.get("checked") != n_iter or (cert.gap > tol and W.dtype != torch.float64)):
        # stopped at max_iter: a float64 certificate of the last point
        cert, b = program.confirmed_certificate(W, b, no_multipliers, refine=program.cone)
    return W, b, cert, n_iter


def solve_cone(program, W, b, tol, max_iter, check_every=10, history=None, cone_tol=None):
    """ReLU: the cone-constrained program by an augmented Lagrangian.

    Subproblem k minimizes ``F + R + 1/(2 rho) (||(mu - rho S)_+||^2 - ||mu||^2)`` (S the cone
    slack) with FISTA until its prox-gradient mapping is below ``eps_k * lam``; then
    ``mu <- (mu - rho S)_+``, and rho grows fivefold when the violation did not halve. Near
    feasibility the certificate's multipliers are re-solved exactly (NNLS) for the current Theta.

    Parameters
    ----------
    program : ConvexProgram
        With ``cone=True``.
    W, b : torch.Tensor
        Start: weights (d, G, c), intercept (c,).
    tol : float
        Relative duality gap to reach (the cone violation enters the certificate).
    max_iter : int
        FISTA iterations over all subproblems.
    check_every : int
    history : list, optional
        Receives ``(iteration, seconds, primal, gap)`` at every certificate.
    cone_tol : float, optional
        Cone violation to reach (default tol).

    Returns
    -------
    W, b : torch.Tensor
    certificate : Certificate
    n_iter : int
    multipliers : torch.Tensor
        (n, G, c), the cone constraints' multipliers mu >= 0.
    """
    loss, Y, n = program.loss, program.Y, program.n
    cone_tol = tol if cone_tol is None else cone_tol
    data_curvature = program.lipschitz_data() * loss.curvature / n
    cone_curvature = float(torch.linalg.matrix_norm(program.X, ord=2)) ** 2
    multipliers = torch.zeros(program.X.shape[0], *program.shape[1:], dtype=W.dtype, device=W.device)
    start = time.perf_counter()
    # start where the penalty is as curved as the loss: neither term dominates the first steps
    rho, eps, n_iter, violation = (data_curvature / cone_curvature if cone_curvature > 0 else 1.0), 1e-2, 0, math.inf
    result = {}
    while n_iter < max_iter:
        def penalty_terms(XW):
            """((mu - rho S)_+^2 - mu^2) / (2 rho) per entry, without cancellation, and its derivative in S."""
            slack = program.slack(XW).double()
            mu = multipliers.double()
            shifted = (mu - rho * slack).clamp_min(0)
            return torch.where(shifted > 0, slack * (0.5 * rho * slack - mu), -mu ** 2 / (2 * rho)), -shifted

        def gradient(XW, b):
            Theta = loss.grad(program.predict(XW, b), Y)
            shifted = (multipliers - rho * program.slack(XW)).clamp_min(0)
            return program.loss_image_grad(Theta) - program.cone_signs[:, :, None] * shifted, Theta.sum(0)

        def divergence(XW_new, b_new, XW, b):
            (h_new, _), (h, dh) = penalty_terms(XW_new), penalty_terms(XW)
            change = (program.slack(XW_new) - program.slack(XW)).double()
            return (loss.bregman(program.predict(XW_new, b_new), program.predict(XW, b), Y)
                    + float((h_new - h - dh * change).sum()))

        def check(W, b, XW, mapping_norm, it):
            b = program.intercept(XW, b)
            updated = (multipliers - rho * program.slack(XW)).clamp_min(0)
            cert = program.certificate(W, b, XW, updated)
            if cert.cone_violation <= cone_tol and tol < cert.gap:  # feasible: the best multipliers for Theta
                cert = program.certificate(W, b, XW, updated, refine=True)
            if cert.gap <= tol and cert.cone_violation <= cone_tol and W.dtype != torch.float64:
                cert, exact_b = program.confirmed_certificate(W, b, updated, refine=True)
                b = exact_b if cert.gap <= tol and cert.cone_violation <= cone_tol else b
            result["certificate"] = cert
            _record(history, n_iter + it, start, cert, W, b)
            done = cert.gap <= tol and cert.cone_violation <= cone_tol
            result["done"] = done
            return done or mapping_norm <= eps * program.penalty.lam, b

        step = _first_step(data_curvature + rho * cone_curvature, loss)
        inner_budget = min(max_iter - n_iter, MAX_INNER)
        W, b, XW, inner, _ = fista(program, gradient, divergence, program.penalty.prox, W, b, step, inner_budget,
                                   check, check_every)
        n_iter += inner
        if result.get("done"):
            break
        multipliers = (multipliers - rho * program.slack(XW)).clamp_min(0)
        cert = result["certificate"]
        log.debug("augmented Lagrangian: rho=%.3g inner=%d gap=%.3g violation=%.3g",
                  rho, inner, cert.gap, cert.cone_violation)
        if cone_tol < cert.cone_violation > 0.5 * violation:
            rho = min(rho * 5, 1e8 / n)
        violation, eps = cert.cone_violation, max(eps * 0.3, tol)
    cert = result["certificate"]
    if not result.get("done") and W.dtype != torch.float64:  # stopped at max_iter: still a float64 certificate
        cert, b = program.confirmed_certificate(W, b, multipliers, refine=True)
    return W, b, cert, n_iter, multipliers


def _first_step(curvature, loss):
    """1 / curvature; for all-zero data (curvature 0, W stays 0) the intercept's curvature."""
    return 1.0 / (curvature if curvature > 0 else loss.curvature)


def _record(history, iteration, start, cert, W=None, b=None):
    """Append ``(iteration, seconds, primal, gap)`` to ``history``; a history with a ``keep(cert, W, b)``
    method also receives the certified point (the estimators keep the best one for an interrupted fit)."""
    if history is not None:
        history.append((iteration, time.perf_counter() - start, cert.primal, cert.gap))
        if W is not None and hasattr(history, "keep"):
            history.keep(cert, W, b)


FAR_GAP, FAR_CHECKS = 10, 5  # while the gap is above FAR_GAP tol, certify every FAR_CHECKS-th check
SUBSPACE_WARM = 150  # FISTA iterations on the whole program before the subspace rounds
SUBSPACE_ROUNDS = 20  # subspace rounds at most
SUBSPACE_INNER = 0.1  # a round's restricted gap target, relative to the whole program's gap
SUBSPACE_SLACK = 4  # directions beyond twice the largest rank
MAX_INNER = 2000  # FISTA iterations before a multiplier update at the latest
POWER_RTOL = 1e-3  # the power iteration's relative change of the estimate at which it stops
ROW_BLOCK = 2 ** 24  # float64 entries of data and products per block of the float64 certificate (128 MiB)
