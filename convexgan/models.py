"""Scikit-learn style estimators for convex two-layer ReLU networks.

Both estimators solve, over P activation patterns D_i (from ``gates``, or sampled),

    relu:   min  F( sum_i D_i X (u_i - v_i) + b ) + lam sum_i (||u_i|| + ||v_i||)
            s.t. (2 D_i - I) X u_i >= 0,  (2 D_i - I) X v_i >= 0
    gated:  min  F( sum_i D_i X w_i + b ) + lam sum_i ||w_i||

with F the mean loss (squared: ``1/(2n) ||yhat - y||^2``). Both are exact reformulations of a
two-layer network with weight decay ``lam/2 (||W1||^2 + ||W2||^2)`` whose hidden neurons use
those patterns; ``network_`` is that network, recovered from the solution, and its own
objective equals ``objective_`` (the certificate by recovery, checked by ``network_objective``).

Vector outputs (c > 1 targets or classes):
- gated: ``w_i`` becomes a d x c matrix with the nuclear norm ``||W_i||_*``: exact for networks
  whose neurons share the gate of their pattern (an SVD of W_i gives the neurons).
- relu: every output k gets its own ``u_ik, v_ik`` with ``lam (||u_ik|| + ||v_ik||)``: exact for
  networks in which each hidden neuron feeds one output. (Neurons shared across outputs make the
  problem copositive, Sahiner et al. 2021: no exact convex program of polynomial size is known.)

Certificate: ``gap_`` is the relative duality gap, ``(objective_ - dual_objective_) / objective_``,
an upper bound on the relative suboptimality; for relu ``cone_violation_`` says how far the
solution is from the cones (relative). ``fit`` stops when the gap is ``<= tol`` and the violation
``<= cone_tol`` (default tol) and warns (``ConvergenceWarning``) when ``max_iter`` ran out first.

Solvers: gated programs with the l2 group penalty (one output, or ReLU-style separate outputs)
and a squared or logistic loss go to the semismooth Newton augmented Lagrangian (``ssnal``);
the others (nuclear norm, cross-entropy) to FISTA (``solvers``); relu with the squared loss and
d >= n / 4 to ADMM (``admm``), other relu programs to the augmented Lagrangian or, small, to
exact projections. BENCHMARKS.md measures each against the others.
"""
import copy
import logging
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_X_y
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import admm, losses, solvers, ssnal
from .distributed import agree, is_distributed, labels_of_all_ranks, total_rows
from .networks import network_from_neurons
from .patterns import select_patterns
from .penalties import GroupL2, NuclearNorm
from .recovery import separate_neurons, shared_neurons
from .validation import check_choice, check_positive, check_positive_int

log = logging.getLogger(__name__)
DTYPES = {"float64": torch.float64, "float32": torch.float32}
PROJECTION_SIZE = 200_000  # n * d * G * c up to which solver="auto" projects onto the cones exactly
ADMM_WIDTH = 0.25  # d / n from which solver="auto" takes ADMM for larger squared-loss relu programs
SOLVERS = {"gated": {"auto", "newton", "fista"}, "relu": {"auto", "admm", "augmented_lagrangian", "projection"}}
REPORT_SECONDS = 5.0  # verbose=1 reports a fit's progress at most this often


@dataclass
class _Prepared:
    """A program ready to solve: in the singular basis of X when ``basis`` (d, r) is set."""
    program: solvers.ConvexProgram
    basis: torch.Tensor
    metric: torch.Tensor
    solver: str


def _lifted(basis, W):
    """W (r, G, c) in the singular basis (d, r) mapped back to the input space: (d, G, c). Only
    the nonzero groups are multiplied (a path's early solutions have few)."""
    lifted = W.new_zeros(basis.shape[0], *W.shape[1:])
    groups = (W != 0).any(0).any(1)
    lifted[:, groups] = (basis @ W[:, groups].reshape(W.shape[0], -1)).reshape(basis.shape[0], -1, W.shape[2])
    return lifted


_PARAMETERS = """    Parameters
    ----------
    lam : float > 0
        Weight decay.
    n_patterns : int
        Sampled activation patterns (ignored when ``gates`` is given).
    gates : array (d, P) or None
        Gate vectors whose patterns ``1[X g >= 0]`` the network uses; None samples them.
    activation : {"relu", "gated"}
        "relu": exact, cone-constrained program; "gated": gated ReLU, no cones.
    tol : float
        Relative duality gap (and, for relu, cone violation) at which ``fit`` stops.
    cone_tol : float or None
        Relu: the relative cone violation at which ``fit`` stops, when it should differ from tol
        (say a gap of 1e-4 on cones met to 1e-6).
    max_iter : int
        Solver iterations in all: Newton steps for "newton", gradient steps otherwise.
    device : str
        "cpu" or "cuda".
    seed : int
        Seed of the sampled gates.
    fit_intercept : bool
        Fit an unpenalized intercept ``b``.
    dtype : {"float64", "float32"}
        Precision of the first-order solvers (the Newton solver always works in float64;
        float32 runs stop only on a float64 certificate).
    warm_start : bool
        Start from the last solution and reuse its patterns.
    solver : str
        Gated: "newton" (semismooth Newton augmented Lagrangian, second order), "fista", or
        "auto" (newton where it applies: one output per group, squared or logistic loss).
        Relu: "admm" (squared loss: one n x n factorization, then four products with the data per
        iteration), "augmented_lagrangian" (any loss, GPU), "projection" (FISTA with exact cone
        projections by NNLS: feasible iterates, fast on small problems), or "auto" (projection
        when ``n * d * G * c <= 200,000``, else admm for the squared loss and d >= n / 4, else
        augmented_lagrangian; the comparison that set these thresholds is in BENCHMARKS.md).
    precondition : bool
        FISTA with one output: work in the singular basis of X with the metric ``S^2 / 2n``.
    distributed : bool
        Under an initialized ``torch.distributed`` process group (``torchrun``), ``fit(X, y)`` on
        every rank, each with its own rows, solves the program of all ranks' rows together
        (activation "gated", FISTA): the patterns (from ``seed``), the solution and every learned
        attribute are the same on every rank; one rank's bad rows stop every rank with their
        error. Without a group of several ranks, an ordinary fit. Only ``fit`` is sharded.
    verbose : int
        0: silent; 1: print the solver, then its iteration, time, objective and gap every few
        seconds; 2: at every certificate. With or without it, Ctrl-C during a gated fit stops it
        with a ``ConvergenceWarning`` and keeps the best certified point so far (its certificate
        recomputed in float64), instead of losing the fit.

    Attributes
    ----------
    gates_ : array (d, P)
        The gates of the patterns the program used.
    coef_ : array (d, G, c)
        Group weights (relu: G = 2P, the u's then the v's).
    intercept_ : array (c,)
        The unpenalized intercept (zeros without ``fit_intercept``).
    objective_, dual_objective_ : float
        The optimum reached and a proven lower bound on it.
    gap_ : float
        ``(objective_ - dual_objective_) / objective_``.
    dual_coef_ : array (n, c)
        Gated programs: the dual point Theta that proves ``dual_objective_``, checkable without
        this library: ``||X^T (D_g Theta)|| <= lam`` for every pattern ``D_g = diag(1[X g >= 0])``
        of ``gates_`` (and output), ``1^T Theta = 0`` with an intercept, and
        ``dual_objective_ = -F*(Theta)``, with F* the conjugate of the mean loss (squared:
        ``sum n/2 Theta^2 + Theta y``). Rows in the order of X (this rank's, when sharded).
    cone_violation_ : float
        Relative distance of the solution from the cones (relu; 0 for gated).
    converged_ : bool
        Whether ``tol`` (and ``cone_tol``) was met before ``max_iter``.
    n_iter_ : int
        Solver iterations.
    n_neurons_ : int
        Width of the recovered network.
    network_ : torch.nn.Module
        The recovered network (float64): its own objective equals ``objective_``.
    solver_ : str
        The solver that ran.
    n_features_in_ : int
        Features of X seen in ``fit``.
    fitted_params_ : dict
        The parameters of the fitted program (``certify`` and ``network_objective`` use them).
    history_ : array (k, 4)
        Iteration, seconds, objective and gap at every certificate.
"""


class _Progress(list):
    """A fit's history rows ``(iteration, seconds, primal, gap)`` (a list, as the solvers expect),
    printed as they come when ``verbose`` (every ``REPORT_SECONDS`` at 1, all at 2), and the
    certified point of least gap so far (``keep``), which an interrupted fit returns."""

    def __init__(self, name, solver, verbose):
        super().__init__()
        self.name, self.solver, self.verbose = name, solver, verbose
        self.best, self.reported = None, -float("inf")

    def say(self, text):
        """Print ``[estimator] solver: text`` when verbose."""
        if self.verbose:
            print(f"[{self.name}] {self.solver}: {text}", flush=True)

    def append(self, row):
        super().append(row)
        iteration, seconds, primal, gap = row
        if self.verbose > 1 or (self.verbose and seconds - self.reported >= REPORT_SECONDS):
            self.say(f"iteration {iteration}, {seconds:.1f} s, objective {primal:.10g}, relative gap {gap:.2e}")
            self.reported = seconds

    def keep(self, cert, W, b):
        if self.best is None or cert.gap <= self.best[0].gap:
            self.best = (cert, W.clone(), b.clone())


class _ConvexTwoLayer(BaseEstimator):
    def __init__(self, lam=1e-3, n_patterns=100, gates=None, activation="relu", tol=1e-6,
                 max_iter=10000, device="cpu", seed=0, fit_intercept=True, dtype="float64",
                 warm_start=False, solver="auto", precondition=True, distributed=False, cone_tol=None,
                 verbose=0):
        self.lam = lam
        self.n_patterns = n_patterns
        self.gates = gates
        self.activation = activation
        self.tol = tol
        self.cone_tol = cone_tol
        self.max_iter = max_iter
        self.device = device
        self.seed = seed
        self.fit_intercept = fit_intercept
        self.dtype = dtype
        self.warm_start = warm_start
        self.solver = solver
        self.precondition = precondition
        self.distributed = distributed
        self.verbose = verbose

    # -- fitting -------------------------------------------------------------------------------
    def _check_params(self):
        check_positive(self.lam, "lam")
        check_positive(self.tol, "tol")
        if self.cone_tol is not None:
            check_positive(self.cone_tol, "cone_tol")
        check_positive_int(self.n_patterns, "n_patterns")
        check_positive_int(self.max_iter, "max_iter")
        if self.verbose not in (0, 1, 2, False, True):
            raise ValueError(f"verbose must be 0 (silent), 1 (progress every {REPORT_SECONDS:g} s) or 2 (every "
                             f"certificate), got {self.verbose!r}.")
        check_choice(self.activation, "activation", {"relu", "gated"})
        check_choice(self.dtype, "dtype", set(DTYPES))
        check_choice(self.solver, f"solver (activation={self.activation!r})", SOLVERS[self.activation])
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device='cuda' but torch sees no GPU: use device='cpu'.")
        if self.distributed and self.activation == "relu":
            raise ValueError("distributed=True solves gated programs (activation='gated'); the ReLU cones "
                             "are not sharded across ranks.")

    def _sharded(self):
        """Whether ``fit`` solves the program of every rank's rows: ``distributed=True`` under an
        initialized process group of several ranks."""
        return bool(self.distributed) and is_distributed()

    def _setup(self, X, Y, loss):
        """Check the parameters; the loss (over all ranks' rows when sharded), masks and gates."""
        self._check_params()
        sharded = self._sharded()
        if sharded:
            loss = loss.sharded(total_rows(X.shape[0], (X.shape[1], Y.shape[1])))
        masks, gates = self._patterns(X, across_ranks=sharded)
        return loss, masks, gates

    def _patterns(self, X, across_ranks=False):
        """masks (n, P) and gates (d, P): reused on a warm start, else from ``gates`` or sampled
        (``across_ranks``: X is this rank's shard; every rank keeps the same patterns)."""
        if self.warm_start and hasattr(self, "gates_") and self.gates_.shape[0] == X.shape[1]:
            return X @ self.gates_ >= 0, self.gates_
        return select_patterns(X, self.n_patterns, self.gates, self.seed, across_ranks)

    def _program(self, X, Y, loss, masks, params=None):
        """The convex program for X (n, d) and targets Y (n, c), as tensors, with the estimator's
        parameters ``params`` (default: the current ones)."""
        params = params or self.get_params()
        P = masks.shape[1]
        if params["activation"] == "relu":  # groups: u_1..u_P (+1), then v_1..v_P (-1)
            signs = np.r_[np.ones(P), -np.ones(P)]
            masks, penalty = np.concatenate([masks, masks], 1), GroupL2(params["lam"])
        else:
            signs = np.ones(P)
            penalty = GroupL2(params["lam"]) if Y.shape[1] == 1 else NuclearNorm(params["lam"])
        return solvers.ConvexProgram.from_arrays(X, masks, signs, Y, loss, penalty, params["fit_intercept"],
                                                 params["activation"] == "relu", DTYPES[params["dtype"]],
                                                 torch.device(params["device"]))

    def _prepare(self, X, Y, loss, masks):
        """The program of ``fit``, its solver, and for FISTA the singular basis and metric."""
        program = self._program(X, Y, loss, masks)
        solver = self.solver
        if self.activation == "relu":
            size = program.shape[0] * program.shape[1] * program.shape[2] * X.shape[0]
            if solver == "admm" and not admm.supports(program):
                raise ValueError(f"solver='admm' handles relu programs with the squared loss in one process; this "
                                 f"one ({type(program.loss).__name__}) needs solver='augmented_lagrangian' (or 'auto').")
            if solver == "auto":  # ADMM where its cones rarely have more tight rows than dimensions (wide data)
                wide = admm.supports(program) and program.shape[0] >= ADMM_WIDTH * program.n
                solver = "projection" if size <= PROJECTION_SIZE else "admm" if wide else "augmented_lagrangian"
        elif self.activation == "gated":
            newton = ssnal.supports(program)
            if solver == "newton" and not newton:
                raise ValueError(f"solver='newton' handles gated programs with one output per group and a "
                                 f"squared or logistic loss of at most {ssnal.dense_limit(program.X.device)} samples "
                                 f"on {program.X.device.type}, in one "
                                 f"process; this one ({type(program.penalty).__name__}, "
                                 f"{type(program.loss).__name__}, n={program.n}"
                                 f"{', sharded' if program.sharded else ''}) needs solver='fista' (or 'auto').")
            if self.solver == "auto" and not newton:  # the cliff a user should see: no second-order solve
                log.info("solver='auto' takes FISTA: the Newton solver needs one output per group, a squared or "
                         "logistic loss and at most %d rows on %s (n=%d, %s, %s)", ssnal.dense_limit(program.X.device),
                         program.X.device.type, program.n, type(program.penalty).__name__, type(program.loss).__name__)
            solver = "newton" if solver == "auto" and newton else ("fista" if solver == "auto" else solver)
            if solver == "newton":  # it works in float64: on the data, not on their float32 rounding
                program = program.float64()
        precondition = solver == "fista" and bool(self.precondition) and Y.shape[1] == 1
        # ADMM's linear system is diagonal plus n x n only in the singular basis
        program, basis, metric = solvers.singular_basis(program, always=precondition or solver == "admm")
        return _Prepared(program, basis, metric if precondition else None, solver)

    def _fit(self, X, Y, loss):
        loss, masks, gates = self._setup(X, Y, loss)
        prepared = self._prepare(X, Y, loss, masks)
        W, b = prepared.program.zeros()
        if self.warm_start and hasattr(self, "coef_") and self.coef_.shape[1:] == tuple(W.shape[1:]):
            W = torch.as_tensor(self.coef_, dtype=W.dtype, device=W.device)
            basis = prepared.basis
            W = W if basis is None else torch.einsum("dr,dgc->rgc", basis, W.double()).to(W.dtype)
            if self.fit_intercept:  # else b stays zero: an old intercept is no part of this program
                b = torch.as_tensor(self.intercept_, dtype=W.dtype, device=W.device)
        self._solve(prepared, gates, W, b)
        return self

    def _solve(self, prepared, gates, W, b, dual=None):
        """Solve the prepared program from (W, b) and set the learned attributes. Returns the
        solution (W, b) in the program's basis (for warm starts along a path); ``dual``: the
        Newton solver's dual iterate, carried between the solves of a path."""
        program = prepared.program
        history = _Progress(type(self).__name__, prepared.solver, int(self.verbose))
        history.say(f"n={program.n} rows, {program.shape[1]} groups, {program.shape[2]} output(s), "
                    f"lam={program.penalty.lam:g}, tol={self.tol:g}")
        started, interrupted = time.perf_counter(), False
        try:
            W, b, cert, n_iter = self._run_solver(prepared, W, b, history, dual)
        except KeyboardInterrupt:
            if history.best is None or program.cone:  # a cone certificate needs its multipliers
                raise
            _, W, b = history.best
            cert, b = program.confirmed_certificate(W, b)
            n_iter, interrupted = history[-1][0], True
        solution = (W, b)
        if prepared.basis is not None:  # back to the input space, in float64
            W = _lifted(prepared.basis, W.double())
        self.fitted_params_ = self.get_params()
        self.solver_ = prepared.solver
        self.history_ = np.array(history).reshape(-1, 4)
        self.gates_ = gates
        self.coef_ = W.double().cpu().numpy()
        self.intercept_ = b.double().cpu().numpy()
        self.objective_, self.dual_objective_ = cert.primal, cert.dual
        if cert.dual_point is not None and not program.cone:
            self.dual_coef_ = cert.dual_point.double().cpu().numpy()
        elif hasattr(self, "dual_coef_"):
            del self.dual_coef_  # a refit without a checkable dual point keeps no stale one
        self.gap_, self.cone_violation_ = cert.gap, cert.cone_violation
        self.n_iter_ = n_iter
        self.converged_ = cert.gap <= self.tol and cert.cone_violation <= self._cone_tol()
        if interrupted:
            warnings.warn(f"{type(self).__name__} was interrupted after {n_iter} {prepared.solver} iterations "
                          f"({time.perf_counter() - started:.1f} s): keeping the best certified point so far, "
                          f"relative gap {cert.gap:.2g} (tol={self.tol:g}).", ConvergenceWarning, stacklevel=3)
        elif not self.converged_:
            warnings.warn(f"{type(self).__name__} stopped after max_iter={self.max_iter} {prepared.solver} "
                          f"iterations with relative gap {cert.gap:.2g} and cone violation "
                          f"{cert.cone_violation:.2g} above tol={self.tol:g} (cone_tol={self._cone_tol():g}): "
                          "raise max_iter or the tolerances.", ConvergenceWarning, stacklevel=3)
        self.network_ = self._recover()
        self.n_neurons_ = self.network_.hidden.weight.shape[0]
        history.say(f"{'converged' if self.converged_ else 'stopped'} after {n_iter} iterations, "
                    f"{time.perf_counter() - started:.1f} s: objective {cert.primal:.10g}, relative gap "
                    f"{cert.gap:.2e}, {self.n_neurons_} neurons")
        return solution

    def _run_solver(self, prepared, W, b, history, dual):
        """The prepared program's solver from (W, b): ``(W, b, certificate, iterations)``."""
        program = prepared.program
        if prepared.solver == "projection":
            return solvers.solve_cone_projected(program, W, b, self.tol, self.max_iter, history=history)
        if prepared.solver == "augmented_lagrangian":
            return solvers.solve_cone(program, W, b, self.tol, self.max_iter, history=history,
                                      cone_tol=self._cone_tol())[:4]
        if prepared.solver == "admm":
            return admm.solve_cone_admm(program, W, b, self.tol, self.max_iter, history=history,
                                        cone_tol=self._cone_tol())[:4]
        if prepared.solver == "newton":
            return ssnal.solve_ssnal(program, W, b, self.tol, self.max_iter, history=history, dual=dual)
        return solvers.solve_gated(program, W, b, self.tol, self.max_iter, history=history, metric=prepared.metric)

    def _cone_tol(self):
        return self.tol if self.cone_tol is None else self.cone_tol

    def _path(self, X, y, lams):
        """Fit at every lam of ``lams`` in turn, the program prepared once; yields after each fit
        (this estimator holds that fit). Each solve starts from the linear extrapolation of the
        last two solutions (the path is smooth between changes of the active set, and a grid
        log-spaced in lam has equal steps), and the Newton solver from the last dual iterate."""
        X, Y, loss = self._targets(X, y, "fit")
        loss, masks, gates = self._setup(X, Y, loss)
        prepared = self._prepare(X, Y, loss, masks)
        W, b = prepared.program.zeros()
        previous, dual = W, {}
        for lam in lams:
            self.lam = prepared.program.penalty.lam = float(lam)
            start = 2 * W - previous
            previous = W
            W, b = self._solve(prepared, gates, start, b, dual)
            yield self

    def _recover(self):
        """The two-layer network of the solution: its neurons and output weights, float64 on the CPU."""
        W = torch.as_tensor(self.coef_, dtype=torch.float64)
        params = self.fitted_params_
        precision = torch.float64 if self.solver_ == "newton" else DTYPES[params["dtype"]]
        if params["activation"] == "gated":
            group, hidden, output, _ = shared_neurons(W, precision)
            gates = torch.as_tensor(self.gates_)[:, group]
        else:  # one neuron per nonzero (group, output); the v's (second half) get negative output weights
            group, hidden, output = separate_neurons(W, precision)
            output *= torch.where(group < W.shape[1] // 2, 1.0, -1.0).double()[:, None]
            gates = None
        return network_from_neurons(hidden, output, self.intercept_ if params["fit_intercept"] else None, gates)

    # -- checking data ------------------------------------------------------------------------
    def _check_data(self, X, y, mode, check_targets=None, **kwargs):
        """X (n, d) and y as float64 arrays, checked by scikit-learn (and by ``check_targets(y)``):
        ``mode`` "fit" records ``n_features_in_``, "fitted" checks X against it, "free" leaves the
        estimator as it is. A sharded fit checks every rank's rows (a shard may be empty) and
        fails on every rank when one rank's rows are bad."""
        sharded = mode == "fit" and self._sharded()
        with agree("checking its rows") if sharded else nullcontext():
            if mode == "free":
                X, y = check_X_y(X, y, dtype=np.float64, **kwargs)
            elif sharded and len(X) == 0:  # an empty shard: scikit-learn's check of y wants a sample
                X = validate_data(self, X, reset=True, dtype=np.float64, ensure_min_samples=0)
                y = np.asarray(y, dtype=np.float64 if kwargs.get("y_numeric") else None)
                if len(y):
                    raise ValueError(f"X has no rows but y has {len(y)}: pass the same rows of both.")
            else:
                X, y = validate_data(self, X, y, reset=mode == "fit", dtype=np.float64,
                                     ensure_min_samples=0 if sharded else 1, **kwargs)
            if check_targets is not None:
                check_targets(y)
        return X, y

    def __sklearn_is_fitted__(self):
        return hasattr(self, "network_")

    # -- using the fitted model ----------------------------------------------------------------
    def _decision(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.network_(torch.from_numpy(X))

    def to_torch(self):
        """A copy of the recovered two-layer network.

        Returns
        -------
        TwoLayerReLU or TwoLayerGatedReLU
            A trainable ``torch.nn.Module`` (float64) mapping (n, d) to (n, c); its objective on the
            training data equals ``objective_``.
        """
        check_is_fitted(self)
        return copy.deepcopy(self.network_).requires_grad_(True)

    def network_objective(self, X, y):
        """The recovered network's own non-convex objective on (X, y).

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.
        y : array-like of shape (n,) or (n, c)
            The targets, as for ``fit``.

        Returns
        -------
        float
            ``mean loss + lam/2 (||W1||_F^2 + ||W2||_F^2)``, with the fitted lam; on the training
            data it equals ``objective_`` (the certificate by recovery).
        """
        check_is_fitted(self)
        X, Y, loss = self._targets(X, y, "fitted")
        pred = self.network_(torch.from_numpy(X))  # X is checked
        return float(loss.value(pred, torch.as_tensor(Y)) + self.fitted_params_["lam"] * self.network_.weight_penalty())

    def certify(self, X, y, coef, intercept=None):
        """The duality-gap certificate of any weights for this model's program.

        The program is the one ``fit`` solved (its patterns, lam, activation and intercept),
        whatever ``set_params`` changed since. The intercept, if fitted, is re-optimized first.
        The dual point is the scaled gradient at ``coef``; the Newton solver's
        ``dual_objective_`` comes from its own dual iterate when that is better, so ``gap_`` can
        be smaller than the gap this gives for the same weights (both bound the suboptimality).

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.
        y : array-like of shape (n,) or (n, c)
            The targets, as for ``fit``.
        coef : array-like of shape (d, G, c)
            Group weights, from any solver.
        intercept : array-like of shape (c,), optional
            The starting intercept.

        Returns
        -------
        Certificate
            ``primal``, ``dual`` (a proven lower bound on the optimum), the relative ``gap`` and
            the ``cone_violation``.
        """
        check_is_fitted(self)
        X, Y, loss = self._targets(X, y, "fitted")
        program = self._program(X, Y, loss, X @ self.gates_ >= 0, self.fitted_params_)
        W, b = program.zeros()
        coef = torch.as_tensor(np.asarray(coef), dtype=W.dtype, device=W.device)
        if coef.shape != W.shape:
            raise ValueError(f"coef must have shape {tuple(W.shape)} for this model, got {tuple(coef.shape)}.")
        if intercept is not None:
            b = torch.as_tensor(np.asarray(intercept), dtype=W.dtype, device=W.device).reshape(b.shape)
        XW = program.image(coef)
        b = program.intercept(XW, b)
        multipliers = torch.zeros_like(XW) if program.cone else None
        return program.certificate(coef, b, XW, multipliers, refine=program.cone)

    def lam_max(self, X, y):
        """The smallest lam at which the all-zero network is optimal.

        Exact for gated programs; for relu, a value at and above which zero is optimal. It uses the
        current parameters and leaves learned attributes as they are.

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.
        y : array-like of shape (n,) or (n, c)
            The targets, as for ``fit``.

        Returns
        -------
        float
            ``max_i ||(D_i X)^T grad F(b)||`` over the patterns, at the optimal intercept b.
        """
        X, Y, loss = self._targets(X, y, "free")
        masks, _ = self._patterns(X)
        program = self._program(X, Y, loss, masks)
        W, b = program.zeros()
        XW = program.image(W)
        b = program.intercept(XW, b)
        Theta = loss.grad(program.predict(XW, b), program.Y)
        return float(program.penalty.dual_norms(program.adjoint(program.loss_image_grad(Theta))).max())


class ConvexReLU(RegressorMixin, _ConvexTwoLayer):
    __doc__ = f"""Two-layer (gated) ReLU regression with squared loss, trained by convex optimization.

{_PARAMETERS}    """

    def _targets(self, X, y, mode):
        X, y = self._check_data(X, y, mode, multi_output=True, y_numeric=True)
        if mode == "fit":
            self._y_ndim = y.ndim
        return X, y.reshape(len(y), int(np.prod(y.shape[1:]))), losses.SquaredLoss()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        """Solve the convex program on (X, y) and recover its network.

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.
        y : array-like of shape (n,) or (n, c)
            The targets.

        Returns
        -------
        ConvexReLU
            The fitted estimator.
        """
        return self._fit(*self._targets(X, y, "fit"))

    def predict(self, X):
        """The recovered network's predictions.

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.

        Returns
        -------
        ndarray of shape (n,) or (n, c)
            Predictions, shaped like the fitted y.
        """
        pred = self._decision(X).numpy()
        return pred[:, 0] if self._y_ndim == 1 else pred


class ConvexReLUClassifier(ClassifierMixin, _ConvexTwoLayer):
    __doc__ = f"""Two-layer (gated) ReLU classifier trained by convex optimization.

    The loss is logistic for two classes (one output, labels mapped to -1/+1 in the order of
    ``classes_``) and the multinomial cross-entropy for more (one output per class).

{_PARAMETERS}    classes_ : ndarray of shape (c,)
        The labels seen in ``fit``, sorted.
    """

    def _targets(self, X, y, mode):
        """Targets encoded with the fitted ``classes_`` (``mode`` "fitted") or with the classes of y
        (which "fit" records as ``classes_``)."""
        X, y = self._check_data(X, y, mode, check_targets=check_classification_targets)
        if mode == "fitted":
            classes = self.classes_
        else:
            classes = labels_of_all_ranks(y) if mode == "fit" and self._sharded() else np.unique(y)
        if mode == "fit":
            self.classes_ = classes
        if len(classes) < 2:
            raise ValueError(f"y has 1 class ({classes[0]!r}): a classifier needs at least two.")
        index = np.searchsorted(classes, y)
        if (index >= len(classes)).any() or (classes[index.clip(0, len(classes) - 1)] != y).any():
            raise ValueError("y has labels that were not seen in fit.")
        if len(classes) == 2:
            return X, (2.0 * index - 1)[:, None], losses.LogisticLoss()
        return X, np.eye(len(classes))[index], losses.CrossEntropyLoss()

    def fit(self, X, y):
        """Solve the convex program on (X, y) and recover its network.

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.
        y : array-like of shape (n,)
            Labels of any sortable type, at least two classes.

        Returns
        -------
        ConvexReLUClassifier
            The fitted estimator.
        """
        return self._fit(*self._targets(X, y, "fit"))

    def decision_function(self, X):
        """The recovered network's class scores.

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.

        Returns
        -------
        ndarray of shape (n,) or (n, c)
            Margins for two classes (positive: ``classes_[1]``), logits for more.
        """
        scores = self._decision(X).numpy()
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, X):
        """Class probabilities: the sigmoid of the margin, or the softmax of the logits.

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.

        Returns
        -------
        ndarray of shape (n, c)
            Probabilities in the order of ``classes_``.
        """
        scores = self._decision(X)
        if scores.shape[1] == 1:
            p = torch.sigmoid(scores)
            return torch.cat([1 - p, p], 1).numpy()
        return torch.softmax(scores, 1).numpy()

    def predict(self, X):
        """The most probable class of every row.

        Parameters
        ----------
        X : array-like of shape (n, d)
            The data.

        Returns
        -------
        ndarray of shape (n,)
            Labels from ``classes_``.
        """
        probabilities = self.predict_proba(X)
        return self.classes_[probabilities.argmax(1)]
