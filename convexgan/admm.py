"""ADMM for the exact ReLU program (cones) with the squared loss.

    min_{W, b}  1/(2n) ||A W + 1 b^T - Y||^2 + lam sum_{g,k} ||W[:, g, k]||
    s.t.        C_g W_g = (2 D_g - I) X W_g >= 0   for every group g

With an intercept the optimal b is the mean residual, so the loss is ``1/(2n) ||P (A W - Y)||^2``
with P the centering of the rows. Splitting W = Z (the penalty) and C W = T (T >= 0, the cones),
scaled ADMM with over-relaxation (Boyd et al. 2011, section 3.4.3) alternates

    W <- argmin_W  loss(W) + rho_z/2 ||W - Z + U||^2 + rho_t/2 ||C W - T + V||^2     (a linear system)
    Z <- prox_{lam / rho_z}(W + U)   (group soft-thresholding),    T <- (C W + V)_+
    U <- U + W - Z,    V <- V + C W - T.

The linear system is what makes it cheap. In the singular basis of X (``singular_basis``: X^T X = S^2
diagonal), and as ``C_g^T C_g = X^T X`` for every group, its matrix is ``E + A^T P A / n`` with
``E = I_G (x) diag(rho_z + rho_t S^2)`` diagonal; by Woodbury

    (E + A^T P A / n)^{-1} = E^{-1} - E^{-1} A^T P H^{-1} P A E^{-1},    H = n I + P (X E^{-1} X^T o M M^T) P,

M the signed masks (n, G): one n x n Cholesky factorization for all iterations (and all outputs).
An iteration costs two products of X with (d, G c) weights and two with (n, G c) residuals.

The step sizes are set by the scales of the problem: ``rho_z = RHO_Z lam / mean ||Z_g||`` (the dual
variable of W = Z is a subgradient of the penalty, of norm lam per group; before Z has any norm, from
the data's curvature), re-set at ``RESCALE_AT``; and ``rho_t = RHO_T rho_z r / ||X||_F^2``, which
weighs the two constraints alike in an average direction. Where more rows of a cone are tight than
it has dimensions, the multipliers can drift along a direction that leaves W in place and the
violation stalls: rho_t then grows ``STALL_GROWTH``-fold.

Certificate (``ConvexProgram.certificate``): the point Z (exactly group-sparse), the intercept
re-fitted, with ``Theta = grad F`` and the multipliers ``mu = (-rho_t V)_+`` of the cone constraints.
"""
import logging
import math
import time

import torch

from .losses import SquaredLoss
from .penalties import GroupL2
from .solvers import _record

log = logging.getLogger(__name__)

RELAXATION = 1.6              # over-relaxation factor in (0, 2)
RHO_Z = 0.25                  # rho_z in units of lam / mean ||Z_g||
RHO_Z_START = 3e-3            # rho_z before Z has any norm, in units of ||X||_F^2 / (r n)
RHO_T = 3.0                   # rho_t in units of rho_z r / ||X||_F^2
RESCALE_AT = (50, 200)        # iterations at which rho_z is set from the norms of Z
STALL_CHECKS = 20             # certificates without halving the cone violation before rho_t grows
STALL_GROWTH = 4.0            # rho_t's factor then


def supports(program):
    """Whether ``solve_cone_admm`` handles this program: cones, the l2 group penalty and the
    squared loss, in one process."""
    return (program.cone and isinstance(program.penalty, GroupL2) and isinstance(program.loss, SquaredLoss)
            and not program.sharded)


class _WeightStep:
    """The W-update's linear system ``(E + A^T P A / n) W = rhs`` for one pair (rho_z, rho_t)."""

    def __init__(self, program, rho_z, rho_t):
        p = self.program = program
        X = p.X
        self.rho_z, self.rho_t = rho_z, rho_t
        self.E = rho_z + rho_t * X.square().sum(0)  # (r,): X^T X = S^2 in the singular basis
        H = _centered(p, _centered(p, ((X / self.E) @ X.T) * (p.mask_weights @ p.mask_weights.T)).T)
        H.diagonal().add_(p.n)
        self.factor = torch.linalg.cholesky(H)

    def solve(self, rhs):
        """W (d, G, c) and X W_g (n, G, c) for the right-hand side rhs (d, G, c)."""
        p = self.program
        v = rhs / self.E[:, None, None]
        Xv = p.image(v)
        x = torch.cholesky_solve(_centered(p, p.predict(Xv, 0)), self.factor)
        correction = p.adjoint(p.loss_image_grad(_centered(p, x))) / self.E[:, None, None]
        return v - correction, Xv - p.image(correction)


def _rescaled(program, step, U, V, rho_z, rho_t):
    """The W-update for new step sizes; the scaled duals U, V are rescaled in place (U rho_z and
    V rho_t are the multipliers)."""
    U *= step.rho_z / rho_z
    V *= step.rho_t / rho_t
    return _WeightStep(program, rho_z, rho_t)


def _centered(program, Z):
    """P Z: the rows of Z (n, ...) centered where the program fits an intercept, else Z."""
    return Z - Z.mean(0) if program.fit_intercept else Z


def solve_cone_admm(program, W, b, tol, max_iter, check_every=25, history=None, cone_tol=None):
    """Minimize the ReLU program from (W, b) until its float64 relative duality gap is <= tol and
    its cone violation <= ``cone_tol`` (default tol).

    Parameters
    ----------
    program : ConvexProgram
        ``supports(program)``, in the singular basis of its data (``singular_basis(program,
        always=True)``: the columns of X orthogonal); the solve runs on ``program.float64()``.
    W, b : torch.Tensor
        Start: weights (d, G, c), intercept (c,).
    tol : float
    max_iter : int
        ADMM iterations.
    check_every : int
        Iterations between certificates (each costs two products, half an iteration).
    history : list, optional
        Receives ``(iteration, seconds, primal, gap)`` at every certificate.
    cone_tol : float, optional

    Returns
    -------
    W, b : torch.Tensor
        The last certified point Z, float64, and its intercept.
    certificate : Certificate
    n_iter : int
    multipliers : torch.Tensor
        (n, G, c), the cone constraints' multipliers mu >= 0.
    """
    if not supports(program):
        raise ValueError("solve_cone_admm solves ReLU programs (cones) with the group l2 penalty and the squared "
                         "loss in one process.")
    p = program.float64()
    cone_tol = tol if cone_tol is None else cone_tol
    X, cone_signs = p.X, p.cone_signs[:, :, None]
    frobenius = float(X.square().sum())
    if frobenius == 0:  # all-zero data: W = 0 is optimal, the intercept alone fits
        W, b = p.zeros()
        XW = p.image(W)
        b = p.intercept(XW, b)
        no_multipliers = torch.zeros_like(XW)
        return W, b, p.certificate(W, b, XW, no_multipliers), 0, no_multipliers
    gram = X.T @ X
    if float((gram - torch.diag(gram.diagonal())).abs().max()) > 1e-8 * float(gram.diagonal().max()):
        raise ValueError("solve_cone_admm needs the program in the singular basis of its data (orthogonal columns): "
                         "pass singular_basis(program, always=True)[0].")
    r, lam = X.shape[1], p.penalty.lam
    rho_z = RHO_Z_START * frobenius / (r * p.n)
    step = _WeightStep(p, rho_z, RHO_T * rho_z * r / frobenius)
    Z = W.double()
    XZ = p.image(Z)
    T = (cone_signs * XZ).clamp_min(0)
    U, V = torch.zeros_like(Z), torch.zeros_like(T)
    constant = p.adjoint(p.loss_image_grad(_centered(p, p.Y))) / p.n  # A^T P Y / n
    start, cert, stalled = time.perf_counter(), None, []
    for it in range(1, max_iter + 1):
        if it in RESCALE_AT:
            norms = torch.linalg.vector_norm(Z, dim=0)
            if bool((norms > 0).any()):  # rho_t keeps its ratio to rho_z (with the stalls' growth)
                rho_z = RHO_Z * lam / float(norms[norms > 0].mean())
                step = _rescaled(p, step, U, V, rho_z, step.rho_t * rho_z / step.rho_z)
        rhs = constant + step.rho_z * (Z - U) + step.rho_t * p.adjoint(cone_signs * (T - V))
        W, XW = step.solve(rhs)
        CW = RELAXATION * cone_signs * XW + (1 - RELAXATION) * T
        W = RELAXATION * W + (1 - RELAXATION) * Z
        Z = W + U
        Z *= (1 - lam / (step.rho_z * torch.linalg.vector_norm(Z, dim=0).clamp_min(1e-300))).clamp_min(0)
        T = (CW + V).clamp_min(0)
        U += W - Z
        V += CW - T
        if it % check_every == 0 or it == max_iter:
            XZ = p.image(Z, (Z != 0).any(0).any(1))
            b = p.intercept(XZ, b.double())
            multipliers = (-step.rho_t * V).clamp_min(0)
            cert = p.certificate(Z, b, XZ, multipliers)
            _record(history, it, start, cert, Z, b)
            log.debug("admm: it=%d rho_z=%.3g gap=%.3g violation=%.3g", it, step.rho_z, cert.gap, cert.cone_violation)
            if cert.gap <= tol and cert.cone_violation <= cone_tol:
                break
            # degenerate cones (more tight rows than dimensions) leave the multipliers a direction to
            # drift along; a stiffer rho_t then restores feasibility
            stalled.append(cert.cone_violation)
            if len(stalled) > STALL_CHECKS and cert.cone_violation > max(cone_tol, 0.5 * stalled[-STALL_CHECKS - 1]):
                step = _rescaled(p, step, U, V, step.rho_z, step.rho_t * STALL_GROWTH)
                stalled = []
    return Z, b, cert, it, multipliers
