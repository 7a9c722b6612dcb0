"""Convex gated-ReLU solver against pyscnn's R-FISTA and against Adam, on real CIFAR-10 images.

    python scripts/bench_solver.py                    # n=1000, d=3072, P=200, lam=1e-3, CPU
    python scripts/bench_solver.py --adam             # also Adam on the non-convex network
    python scripts/bench_solver.py --n 50000 --patterns 4096 --device cuda --no-pyscnn

Problem (identical for every solver): the first n/2 ``airplane`` and n/2 ``automobile`` training
images in file-name order, pixels in [0, 1] standardized per feature, labels -1/+1, no intercept,
gates ``N(0, I)`` from ``default_rng(123)`` (exactly pyscnn's ``sample_gate_vectors(123, d, P)``),
objective ``1/(2n) ||yhat - y||^2 + lam sum_i ||u_i||``. Every final objective is evaluated and
certified by our own code. Both solvers run in this process with the same thread count.
"""
import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch

from convexgan import ConvexReLU
from convexgan.data import CIFAR10_CLASSES, cifar10_binary, data_root
from convexgan.networks import TwoLayerGatedReLU


def load_problem(n, root):
    """Airplane (-1) against automobile (+1); beyond 10,000 images (more than two classes hold),
    all ten classes, n/10 each, the first five -1 and the vehicles and animals after them +1."""
    classes = CIFAR10_CLASSES[:2] if n <= 10000 else CIFAR10_CLASSES
    X, y = cifar10_binary(root, classes=classes, per_class=n // len(classes))
    std = X.std(0)
    return (X - X.mean(0)) / np.where(std > 0, std, 1.0), y


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


def run_pyscnn(X, y, gates, lam, iters, dtype):
    from scnn.metrics import Metrics
    from scnn.models import ConvexGatedReLU
    from scnn.optimize import optimize_model
    from scnn.regularizers import NeuronGL1
    from scnn.solvers import RFISTA

    model = ConvexGatedReLU(gates)
    start = time.perf_counter()
    model, _ = optimize_model(model, RFISTA(model, max_iters=iters, tol=1e-10), Metrics(), X, y,
                              regularizer=NeuronGL1(lam), return_convex=True, unitize_data=False,
                              dtype=dtype)
    seconds = time.perf_counter() - start
    return np.transpose(model.parameters[0], (2, 1, 0)), seconds  # (c, P, d) -> (d, P, c)


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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--patterns", type=int, default=200)
    parser.add_argument("--lam", type=float, default=1e-3)
    parser.add_argument("--tol", type=float, default=1e-6, help="our certificate: relative duality gap")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--max-iter", type=int, default=100000, help="our iterations at most")
    parser.add_argument("--tf32", action="store_true", help="TF32 matrix products on the GPU")
    parser.add_argument("--no-precondition", action="store_true", help="plain FISTA, no diagonal metric")
    parser.add_argument("--pyscnn-iters", type=int, default=1000)
    parser.add_argument("--no-pyscnn", action="store_true")
    parser.add_argument("--adam", action="store_true")
    parser.add_argument("--adam-cap", type=float, default=300.0, help="seconds for Adam in all")
    parser.add_argument("--data-root", default=None, help="folder with cifar10/ (default: $CONVEXGAN_DATA)")
    args = parser.parse_args()

    X, y = load_problem(args.n, Path(args.data_root or data_root()) / "cifar10")
    gates = np.random.default_rng(123).standard_normal((X.shape[1], args.patterns))  # = pyscnn's
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    print(f"problem: n={len(X)} d={X.shape[1]} P={args.patterns} lam={args.lam} device={args.device} "
          f"dtype={args.dtype} threads={torch.get_num_threads()}")

    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    ours = ConvexReLU(lam=args.lam, gates=gates, activation="gated", fit_intercept=False, tol=args.tol,
                      max_iter=args.max_iter, device=args.device, dtype=args.dtype,
                      precondition=not args.no_precondition).fit(X, y)
    our_seconds = time.perf_counter() - start
    iters, seconds, objectives, gaps = ours.history_.T
    if args.device.startswith("cuda"):
        peak = f"GPU peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    else:
        peak = f"CPU peak RSS growth {(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 2**10:.0f} MiB"
    print(f"two-GEMM limit on this device: {1e3 * two_gemm_seconds(X, gates, args.device, args.dtype):.2f} ms")
    exact = ours.set_params(dtype="float64")  # certificates in float64
    final = exact.certify(X, y, ours.coef_)
    print(f"ours:   {our_seconds:8.2f} s  {int(ours.n_iter_):6d} iterations  objective {final.primal:.6f}  "
          f"gap {final.gap:.1e} (float64 check)  {1e3 * seconds[-1] / iters[-1]:.2f} ms/iteration  {peak}")

    if not args.no_pyscnn:
        coef, scnn_seconds = run_pyscnn(X, y, ours.gates_, args.lam, args.pyscnn_iters, args.dtype)
        theirs = exact.certify(X, y, coef)
        print(f"pyscnn: {scnn_seconds:8.2f} s  {args.pyscnn_iters:6d} iterations  objective {theirs.primal:.6f}  "
              f"gap {theirs.gap:.1e} (our certificate)")
        reached = np.nonzero(objectives <= theirs.primal)[0]
        if len(reached):
            t = seconds[reached[0]]
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


if __name__ == "__main__":
    main()
