"""Convex gated-ReLU solver against adelie, pyscnn's R-FISTA and Adam, on real CIFAR-10 images.

    python scripts/bench_solver.py                    # n=1000, d=3072, P=200, lam=1e-3, CPU
    python scripts/bench_solver.py --path 50          # also a 50-point path from lam_max down to lam
    python scripts/bench_solver.py --adelie .venv-adelie/bin/python --path 50   # adelie too
    python scripts/bench_solver.py --adam             # also Adam on the non-convex network
    python scripts/bench_solver.py --n 50000 --n-patterns 4096 --device cuda --no-pyscnn --tols 1e-3 --tol 1e-3 --reference-tol 0
    python scripts/bench_solver.py --relu-patterns 50 --tols 1e-6 --relu-al-iters 1500   # the exact ReLU program
    python scripts/bench_solver.py --scaling 1000,4000,10000     # solver="auto" as n grows: time, gap, memory

Problem (identical for every solver): the first n/2 ``airplane`` and n/2 ``automobile`` training
images in file-name order, pixels in [0, 1] standardized per feature, labels -1/+1, no intercept,
gates ``N(0, I)`` from ``default_rng(123)`` (exactly pyscnn's ``sample_gate_vectors(123, d, P)``),
objective ``1/(2n) ||yhat - y||^2 + lam sum_i ||u_i||``. Every final point W, whatever solver
produced it, is certified by one float64 function: ``gap(W) = (P(W) - D) / P(W)``, with P the
objective and D the largest of proven lower bounds on the optimum: the dual value of the
scaled gradient at W, the dual objective of a reference solve (ours at ``--reference-tol``,
1e-11; 0 skips it, as at GPU sizes) and, for our runs, their own dual value (any dual feasible
point bounds the optimum from below, whoever found it). A gradient-based dual alone is
first-order in the error of W while P is second-order, so it cannot certify 1e-6 on this
ill-conditioned problem even at points whose objective is exact to 1e-12. "Time to gap g" is
the time of the fastest run whose final point is certified to g.

``--relu-patterns P``: the exact ReLU program (cones) on the first P gates, our ADMM to a gap of
``--relu-tol`` with the cones met to ``--relu-cone-tol``, our augmented Lagrangian and pyscnn's for
a number of iterations; every final point certified by our float64 certificate (NNLS multipliers),
its cone violation ``||(-(2D - I) X u)_+|| / ||X u||`` beside it.

adelie (PyPI) pins numpy<2, so it runs in an environment of its own, through
``scripts/adelie_worker.py`` in a subprocess: ``python3 -m venv .venv-adelie &&
.venv-adelie/bin/pip install adelie``. Its ``tol`` is not a duality gap, so ``--adelie-tols``
sweeps it; each run is timed inside ``grpnet`` alone.
"""
import copy
import dataclasses
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from convexgan import ConvexReLU, regularization_path
from convexgan.cli import common
from convexgan.data import CIFAR10_CLASSES, cifar10_binary, dataset_folder
from convexgan.networks import TwoLayerGatedReLU

TARGETS = (1e-2, 1e-4, 1e-6)


def load_problem(n, root):
    """Airplane (-1) against automobile (+1); beyond 10,000 images (more than two classes hold),
    all ten classes, n/10 each, the first five -1 and the vehicles and animals after them +1."""
    classes = CIFAR10_CLASSES[:2] if n <= 10000 else CIFAR10_CLASSES
    X, y = cifar10_binary(root, classes=classes, per_class=n // len(classes))
    std = X.std(0)
    return (X - X.mean(0)) / np.where(std > 0, std, 1.0), y


def problem_gates(X, n_patterns):
    """The problem's gates (d, P): ``N(0, I)`` from ``default_rng(123)``, exactly pyscnn's."""
    return np.random.default_rng(123).standard_normal((X.shape[1], n_patterns))


def two_gemm_seconds(X, gates, device, dtype, repeats=20):
    """The floor of one gradient: X @ W (n x d by d x P) and X^T @ R (d x n by n x P), timed alone."""
    dtype = getattr(torch, dtype)
    Xt = torch.as_tensor(X, dtype=dtype, device=device)
    W = torch.as_tensor(gates, dtype=dtype, device=device)
    for _ in range(3):
        Xt.T @ (Xt @ W)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        R = Xt @ W
        Xt.T @ R
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def optimize_pyscnn(model, solver, X, y, lam, **kwargs):
    """pyscnn's ``optimize_model`` on its convex program with the group penalty lam.
    Returns (the model's parameters, seconds)."""
    from scnn.metrics import Metrics
    from scnn.optimize import optimize_model
    from scnn.regularizers import NeuronGL1

    start = time.perf_counter()
    model, _ = optimize_model(model, solver, Metrics(), X, y, regularizer=NeuronGL1(lam), return_convex=True,
                              unitize_data=False, **kwargs)
    return model.parameters, time.perf_counter() - start


def run_pyscnn(X, y, gates, lam, iters, dtype):
    from scnn.models import ConvexGatedReLU
    from scnn.solvers import RFISTA

    model = ConvexGatedReLU(gates)
    parameters, seconds = optimize_pyscnn(model, RFISTA(model, max_iters=iters, tol=1e-10), X, y, lam, dtype=dtype)
    return np.transpose(parameters[0], (2, 1, 0)), seconds  # (c, P, d) -> (d, P, c)


def run_adam(X, y, ours, lam, cap_seconds, device, dtype):
    """Full-batch Adam on the equivalent non-convex gated network until within 1 % of our optimum."""
    d, P = ours.gates_.shape
    Xt = torch.as_tensor(X, dtype=dtype, device=device)
    yt = torch.as_tensor(y, dtype=dtype, device=device)[:, None]
    target = 1.01 * ours.objective_
    best, trace = {}, []
    for lr in (1e-3, 1e-4):
        torch.manual_seed(0)
        model = TwoLayerGatedReLU(d, P, 1, bias=False).to(device, dtype)
        model.gates.copy_(torch.as_tensor(ours.gates_))
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        start, objective, steps = time.perf_counter(), float("inf"), 0
        while time.perf_counter() - start < cap_seconds / 2 and objective > target:
            optimizer.zero_grad()
            loss = 0.5 * ((model(Xt) - yt) ** 2).mean() + lam * model.weight_penalty()
            loss.backward()
            optimizer.step()
            objective, steps = float(loss.detach()), steps + 1
        trace.append((lr, objective, steps, time.perf_counter() - start))
        if objective < best.get("objective", float("inf")):
            best = dict(lr=lr, objective=objective, steps=steps, seconds=time.perf_counter() - start)
    return best, trace


def run_pyscnn_relu(X, y, gates, lam, iters, tol):
    """pyscnn's augmented Lagrangian on the exact ReLU program; coef (d, 2P, 1), u's then v's."""
    from scnn.models import ConvexReLU as PyscnnReLU
    from scnn.solvers import AL

    model = PyscnnReLU(gates)
    parameters, seconds = optimize_pyscnn(model, AL(model, max_primal_iters=iters, tol=tol, constraint_tol=tol),
                                          X, y, lam)
    U, V = parameters[:2]
    return np.transpose(np.concatenate([U, V], 1), (2, 1, 0)), seconds  # (c, 2P, d) -> (d, 2P, c)


def bench_relu(args, X, y, gates):
    """The exact ReLU program on the first ``args.relu_patterns`` gates: ours (ADMM; the augmented
    Lagrangian for ``--relu-al-iters``) and pyscnn's augmented Lagrangian, each certified."""
    gates = gates[:, :args.relu_patterns]
    common_params = dict(lam=args.lam, gates=gates, activation="relu", fit_intercept=False, tol=args.relu_tol,
                         cone_tol=args.relu_cone_tol)
    runs = [("admm", dict(solver="admm", max_iter=100000))]
    if args.relu_al_iters:
        runs.append(("augmented Lagrangian, float32", dict(solver="augmented_lagrangian", dtype="float32",
                                                           max_iter=args.relu_al_iters)))
    print(f"exact ReLU program: P={args.relu_patterns} (G={2 * args.relu_patterns} groups), target gap "
          f"{args.relu_tol:g} with cone violation {args.relu_cone_tol:g}")
    for name, params in runs:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = ConvexReLU(**common_params, **params).fit(X, y)
        seconds = time.perf_counter() - start
        print(f"  ours ({name}): {seconds:7.1f} s  {int(model.n_iter_):6d} iterations  objective "
              f"{model.objective_:.10f}  gap {model.gap_:.1e}  cone violation {model.cone_violation_:.1e}  "
              f"neurons {model.n_neurons_}")
    if not args.no_pyscnn and args.relu_pyscnn_iters:
        coef, seconds = run_pyscnn_relu(X, y, gates, args.lam, args.relu_pyscnn_iters, args.relu_cone_tol)
        cert = certify(model, X, y, coef, args.lam)
        print(f"  pyscnn (AL, {args.relu_pyscnn_iters} primal iterations at most): {seconds:7.1f} s  objective "
              f"{cert.primal:.10f}  gap {cert.gap:.1e}  cone violation {cert.cone_violation:.1e}")


def certify(model, X, y, coef, lam, lower_bound=-np.inf):
    """The float64 certificate of ``coef`` (d, P, 1) for the program of ``model`` at ``lam``, its dual
    value raised to ``lower_bound`` (a proven lower bound on the optimum) when that is larger."""
    exact = copy.copy(model)
    exact.fitted_params_ = {**model.fitted_params_, "lam": float(lam), "dtype": "float64"}
    cert = exact.certify(X, y, coef)
    dual = max(cert.dual, lower_bound)
    return dataclasses.replace(cert, dual=dual, gap=(cert.primal - dual) / abs(cert.primal))


def times_to_targets(runs):
    """runs: (seconds, gap) of finished solves -> the least seconds certified to each target."""
    return {g: min((t for t, gap in runs if gap <= g), default=None) for g in TARGETS}


def describe(times):
    return "  ".join(f"gap {g:.0e}: " + ("not reached" if t is None else f"{t:.2f} s") for g, t in times.items())


def run_adelie(python, X, y, masks, lams, tol, threads, timeout):
    """adelie in its own environment. Returns (coefs (L, d, P, 1), seconds, peak MiB) or None on a timeout."""
    with tempfile.TemporaryDirectory() as folder:
        problem, out = Path(folder) / "problem.npz", Path(folder) / "out.npz"
        np.savez(problem, X=X, y=y, masks=masks, lams=np.asarray(lams, dtype=float), tol=tol, threads=threads)
        worker = Path(__file__).with_name("adelie_worker.py")
        try:
            subprocess.run([python, str(worker), str(problem), str(out)], check=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        result = np.load(out)
        coefs = np.transpose(result["coefs"], (0, 2, 1))[..., None]  # (L, P, d) -> (L, d, P, 1)
        return coefs, float(result["seconds"]), float(result["peak_kib"]) / 2**10


def build_parser():
    parser = common.parser(__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--scaling", type=common.integers, default=None,
                        help="instead: one solve (solver auto) at each of these n, e.g. 1000,4000,10000; prints the "
                             "solver chosen, time, iterations, gap and peak RSS")
    parser.add_argument("--n-patterns", type=int, default=200)
    parser.add_argument("--lam", type=float, default=1e-3)
    parser.add_argument("--tol", type=float, default=1e-6, help="our certificate: relative duality gap")
    parser.add_argument("--tols", default="1e-2,1e-4,1e-6,1e-8", help="also solve to these tolerances")
    parser.add_argument("--reference-tol", type=float, default=1e-11,
                        help="the reference solve's gap, whose dual value bounds every run's optimum from below "
                             "(0: none; each of our runs is then certified by its own dual value and the gradient's)")
    parser.add_argument("--solver", default="newton", choices=["newton", "fista"])
    common.add_device(parser)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="FISTA's precision (newton works in float64)")
    parser.add_argument("--max-iter", type=int, default=100000, help="our iterations at most")
    parser.add_argument("--tf32", action="store_true", help="TF32 matrix products on the GPU")
    parser.add_argument("--no-precondition", action="store_true", help="FISTA: plain, no diagonal metric")
    parser.add_argument("--path", type=int, default=0, help="also a path of this many lams from lam_max to --lam")
    parser.add_argument("--adelie", default=None, metavar="PYTHON", help="a Python with adelie installed")
    parser.add_argument("--adelie-tols", default="1e-7,1e-9,1e-11", help="adelie tol values to sweep")
    parser.add_argument("--adelie-timeout", type=float, default=600.0, help="seconds per adelie run")
    parser.add_argument("--pyscnn-iters", type=int, default=1000)
    parser.add_argument("--no-pyscnn", action="store_true")
    parser.add_argument("--adam", action="store_true")
    parser.add_argument("--relu-patterns", type=int, default=0, help="also the exact ReLU program on this many gates")
    parser.add_argument("--relu-tol", type=float, default=1e-4, help="its relative duality gap")
    parser.add_argument("--relu-cone-tol", type=float, default=1e-6, help="its relative cone violation")
    parser.add_argument("--relu-al-iters", type=int, default=0, help="also our augmented Lagrangian, this many iterations")
    parser.add_argument("--relu-pyscnn-iters", type=int, default=1000, help="pyscnn's AL primal iterations at most (0: not run)")
    parser.add_argument("--adam-cap", type=float, default=300.0, help="seconds for Adam in all")
    parser.add_argument("--data-root", default=None, help="folder with cifar10/ (default: data/ here, then $CONVEXGAN_DATA or ~/.cache/convexgan/data)")
    return parser


def scaling(args):
    """One ``solver="auto"`` fit per n of ``--scaling``, as a new user would run it: the table of issue 32."""
    if min(args.scaling) < 2:
        raise ValueError(f"--scaling needs sizes of at least 2 (an image of each class), got {args.scaling}.")
    root = dataset_folder("cifar10", args.data_root)
    print(f"{'n':>7} {'solver':>7} {'seconds':>9} {'iterations':>10} {'gap':>8} {'certified':>9} {'peak RSS':>9}")
    for n in args.scaling:
        X, y = load_problem(n, root)
        gates = problem_gates(X, args.n_patterns)
        estimator = ConvexReLU(lam=args.lam, gates=gates, activation="gated", fit_intercept=False, tol=args.tol,
                               max_iter=args.max_iter, device=args.device)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the table says it
            estimator.fit(X, y)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # the process's peak so far, GiB
        print(f"{n:7d} {estimator.solver_:>7} {seconds:9.1f} {int(estimator.n_iter_):10d} {estimator.gap_:8.1e} "
              f"{'yes' if estimator.converged_ else 'no':>9} {peak:7.2f} GiB", flush=True)


def bench(args):
    args.device = common.device(args.device)
    if args.scaling:
        return scaling(args)

    X, y = load_problem(args.n, dataset_folder("cifar10", args.data_root))
    gates = problem_gates(X, args.n_patterns)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    threads = torch.get_num_threads()
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else f"{threads} threads"
    print(f"problem: n={len(X)} d={X.shape[1]} P={args.n_patterns} lam={args.lam} device={args.device} ({where}) "
          f"solver={args.solver}")

    estimator = ConvexReLU(lam=args.lam, gates=gates, activation="gated", fit_intercept=False, tol=args.tol,
                           max_iter=args.max_iter, device=args.device, dtype=args.dtype, solver=args.solver,
                           precondition=not args.no_precondition)
    bound = -np.inf
    if args.reference_tol > 0:
        reference = copy.deepcopy(estimator).set_params(tol=args.reference_tol, solver="newton").fit(X, y)
        bound = reference.dual_objective_
        print(f"reference lower bound on the optimum: {bound:.12f} (ours at tol {args.reference_tol:g}: objective "
              f"{reference.objective_:.12f}, gap {reference.gap_:.1e})")
    ours_runs, single_seconds = [], {}
    for tol in sorted({float(t) for t in args.tols.split(",")} | {args.tol}, reverse=True):
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        ours = copy.deepcopy(estimator).set_params(tol=tol).fit(X, y)
        our_seconds = time.perf_counter() - start
        if args.device.startswith("cuda"):
            peak = f"GPU peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
        else:
            peak = f"peak RSS growth {(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 2**10:.0f} MiB"
        final = certify(ours, X, y, ours.coef_, args.lam, max(bound, ours.dual_objective_))
        ours_runs.append((our_seconds, final.gap))
        single_seconds[tol] = our_seconds
        print(f"ours ({args.solver}, tol={tol:g}): {our_seconds:8.2f} s  {int(ours.n_iter_):6d} iterations  "
              f"objective {final.primal:.12f}  gap {final.gap:.1e} (shared; the solver's own {ours.gap_:.1e})  {peak}")
    print(f"  ours time to {describe(times_to_targets(ours_runs))}")
    if args.solver == "fista":
        print(f"two-GEMM limit on this device: {1e3 * two_gemm_seconds(X, gates, args.device, args.dtype):.2f} ms")
    iters, seconds, objectives, _ = ours.history_.T
    setup = our_seconds - seconds[-1]  # patterns, reduction to the row space, first certificate

    lams = None
    if args.path:
        top = estimator.lam_max(X, y)
        lams = np.geomspace(top, args.lam, args.path)
        start = time.perf_counter()
        path = regularization_path(X, y, lams=lams, estimator=estimator, progress=False)
        path_seconds = time.perf_counter() - start
        path_gaps = path.gaps  # the solver's own certificates: each its own proven dual bound
        path_bounds = path.objectives * (1 - path.gaps)  # their dual values, the bounds for adelie's path
        single = single_seconds[args.tol]
        print(f"ours path: {args.path} lams from {top:.4g} to {args.lam:g} in {path_seconds:.2f} s "
              f"({path_seconds / single:.2f}x the single solve at tol={args.tol:g}), worst gap "
              f"{max(path_gaps):.1e}, "
              f"neurons {path.n_neurons[0]} -> {path.n_neurons[-1]}, {int(path.n_iters.sum())} iterations")

    if args.adelie:
        masks = X @ ours.gates_ >= 0
        tols = [float(t) for t in args.adelie_tols.split(",")]
        runs = []
        for tol in tols:
            result = run_adelie(args.adelie, X, y, masks, [args.lam], tol, threads, args.adelie_timeout)
            if result is None:
                print(f"adelie tol={tol:g}: did not finish in {args.adelie_timeout:.0f} s")
                continue
            coefs, secs, peak_mib = result
            cert = certify(ours, X, y, coefs[-1], args.lam, bound)
            runs.append((secs, cert.gap))
            print(f"adelie tol={tol:g}: {secs:8.2f} s  objective {cert.primal:.12f}  gap {cert.gap:.1e}  "
                  f"peak RSS {peak_mib:.0f} MiB")
        adelie_times, our_times = times_to_targets(runs), times_to_targets(ours_runs)
        print(f"  adelie time to {describe(adelie_times)}")
        for g in TARGETS:
            if our_times[g] is not None and adelie_times[g] is not None:
                print(f"  gap {g:.0e}: ours {adelie_times[g] / our_times[g]:.1f}x faster than adelie")
            elif our_times[g] is not None:
                print(f"  gap {g:.0e}: ours {our_times[g]:.2f} s; adelie did not reach it (sweep: {args.adelie_tols})")
        if lams is not None:
            for tol in tols:
                result = run_adelie(args.adelie, X, y, masks, lams, tol, threads, args.adelie_timeout)
                if result is None:
                    print(f"adelie path tol={tol:g}: did not finish in {args.adelie_timeout:.0f} s")
                    continue
                coefs, secs, _ = result
                worst = max(certify(ours, X, y, c, lam, low).gap for c, lam, low in zip(coefs, lams, path_bounds))
                print(f"adelie path tol={tol:g}: {secs:.2f} s, worst gap {worst:.1e}")

    if not args.no_pyscnn:
        coef, scnn_seconds = run_pyscnn(X, y, ours.gates_, args.lam, args.pyscnn_iters, args.dtype)
        theirs = certify(ours, X, y, coef, args.lam, bound)
        print(f"pyscnn: {scnn_seconds:8.2f} s  {args.pyscnn_iters:6d} iterations  objective {theirs.primal:.6f}  "
              f"gap {theirs.gap:.1e} (our certificate)")
        reached = np.nonzero(objectives <= theirs.primal)[0]
        if len(reached):
            t = setup + seconds[reached[0]]
            print(f"ours reach pyscnn's objective after {t:.2f} s ({int(iters[reached[0]])} iterations): "
                  f"{scnn_seconds / t:.1f}x faster; full certified solve {scnn_seconds / our_seconds:.1f}x faster")
        else:
            print("ours never reached pyscnn's objective")

    if args.adam:
        best, trace = run_adam(X, y, ours, args.lam, args.adam_cap, args.device, getattr(torch, args.dtype))
        for lr, objective, steps, secs in trace:
            print(f"adam lr={lr:g}: objective {objective:.6f} after {steps} steps, {secs:.1f} s")
        verdict = "reached" if best["objective"] <= 1.01 * ours.objective_ else "did not reach"
        print(f"adam (best lr {best['lr']:g}) {verdict} 1 % of our optimum: {best['objective']:.6f} in "
              f"{best['seconds']:.1f} s; ours {ours.objective_:.6f} certified in {our_seconds:.2f} s "
              f"({best['seconds'] / our_seconds:.1f}x)")

    if args.relu_patterns:
        bench_relu(args, X, y, gates)


def main(argv=None):
    return common.run(build_parser(), bench, argv)


if __name__ == "__main__":
    sys.exit(main())
