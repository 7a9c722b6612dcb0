"""Sharded solves on torch.distributed: 1 process against several, on the same CIFAR-10 program.

    python scripts/bench_distributed.py                      # 1 and 2 processes, this machine's cores
    python scripts/bench_distributed.py --processes 1,2,4 --images 20000

Problem (the same in every run): the first n/2 ``airplane`` and n/2 ``automobile`` training
images (file-name order), averaged down to 16 x 16 (d = 768), standardized per feature; P = 8
gates from the seed; lam = 1e-3; an intercept; certified to a relative duality gap of --tol.
Two solves: the squared loss by the Newton solver (its active-group systems, whose Gram matrix is
one all-reduce) and the logistic loss by FISTA (one all-reduce of the adjoint per iteration).

Each process count runs under ``torchrun --standalone`` with the machine's cores split between
the processes (so 1 x 2 threads against 2 x 1 on two cores), each rank fitting on its
contiguous share of the rows with ``distributed=True``; data loading is not timed. Printed per
run: wall time, iterations, objective, gap, all-reduces and float64 values sent, and the ratio to
one process; then the per-iteration communication volume and an estimate for n = 1.2M rows over
8 nodes (per-node compute scaled from the measured time per row; the all-reduce from its volume
at --bandwidth-gbs and --latency-us).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from convexgan import ConvexReLU, ConvexReLUClassifier
from convexgan.cli import common
from convexgan.data import cifar10_binary, dataset_folder
from convexgan.distributed import shard_rows, traffic

SOLVES = {"squared, Newton": (ConvexReLU, "newton"), "logistic, FISTA": (ConvexReLUClassifier, "fista")}


def load_problem(n, root, size=16):
    """X (n, 3 size^2) standardized, y (n,) in {-1, +1}: airplane against automobile."""
    X, y = cifar10_binary(root, per_class=n // 2)
    factor = 32 // size
    X = X.reshape(len(X), size, factor, size, factor, 3).mean((2, 4)).reshape(len(X), -1)
    std = X.std(0)
    return (X - X.mean(0)) / np.where(std > 0, std, 1.0), y


def worker(args):
    """One rank: fit both solves on this rank's rows; rank 0 writes the figures to --json."""
    with common.process_group() as (rank, world):
        X, y = load_problem(args.images, dataset_folder("cifar10", args.data_root))
        rows = shard_rows(len(X))
        figures = {}
        for name, (model_class, solver) in SOLVES.items():
            model = model_class(lam=args.lam, n_patterns=args.n_patterns, activation="gated", tol=args.tol,
                                max_iter=100_000, solver=solver, distributed=True)
            traffic(reset=True)
            start = time.perf_counter()
            model.fit(X[rows.start:rows.stop], y[rows.start:rows.stop])
            seconds = time.perf_counter() - start
            sent = traffic()
            figures[name] = {"seconds": seconds, "iterations": int(model.n_iter_), "objective": model.objective_,
                             "gap": model.gap_, "solver": model.solver_, "rows": len(rows), **sent,
                             "coef_shape": list(model.coef_.shape)}
        if rank == 0:
            Path(args.json).write_text(json.dumps({"world": world, "threads": torch.get_num_threads(),
                                                   "figures": figures}))


def launch(processes, args, out):
    """The worker under torchrun with ``processes`` ranks; returns rank 0's figures."""
    threads = max(1, (os.cpu_count() or 1) // processes)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               __file__, "--worker", "--json", str(out), "--images", str(args.images),
               "--n-patterns", str(args.n_patterns), "--lam", str(args.lam), "--tol", str(args.tol)]
    if args.data_root:
        command += ["--data-root", args.data_root]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{processes} processes failed:\n{done.stderr[-4000:]}")
    return json.loads(Path(out).read_text())


def bench(args):
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        for processes in args.processes:
            runs[processes] = launch(processes, args, Path(folder) / f"{processes}.json")
    base = runs[args.processes[0]]["figures"]
    print(f"problem: CIFAR-10 airplane/automobile, n={args.images}, d=768, P={args.n_patterns}, lam={args.lam}, "
          f"tol={args.tol}, {os.cpu_count()} cores")
    print(f"{'solve':18s} {'procs':>5s} {'threads':>7s} {'seconds':>8s} {'ratio':>6s} {'iters':>6s} "
          f"{'objective':>16s} {'gap':>8s} {'all-reduces':>11s} {'MB sent':>8s}")
    for name in SOLVES:
        for processes, run in runs.items():
            f = run["figures"][name]
            print(f"{name:18s} {processes:5d} {run['threads']:7d} {f['seconds']:8.2f} "
                  f"{base[name]['seconds'] / f['seconds']:6.2f} {f['iterations']:6d} {f['objective']:16.12f} "
                  f"{f['gap']:8.1e} {f['all_reduces']:11d} {8 * f['floats'] / 1e6:8.2f}")
    sharded = [p for p in args.processes if p > 1]
    if not sharded:
        return
    f = runs[sharded[0]]["figures"]["logistic, FISTA"]
    per_iteration = f["floats"] / f["iterations"]
    d, G, c = f["coef_shape"]
    print(f"\nFISTA per iteration: {f['all_reduces'] / f['iterations']:.1f} all-reduces, {per_iteration:.0f} "
          f"float64 values ({8 * per_iteration / 1e3:.1f} kB; the adjoint is d G c + c = {d * G * c + c})")
    single = base["logistic, FISTA"]
    compute = single["seconds"] / single["iterations"] / args.images  # seconds per iteration per row, one process
    rows, nodes = 1_200_000, 8
    ring = 2 * (nodes - 1) / nodes * 8 * per_iteration / (args.bandwidth_gbs * 1e9)
    latency = 2 * (nodes - 1) * args.latency_us * 1e-6 * f["all_reduces"] / f["iterations"]
    print(f"estimate, n={rows:,} rows on {nodes} nodes like this machine: compute {compute * rows / nodes * 1e3:.1f} ms "
          f"+ all-reduce {(ring + latency) * 1e3:.2f} ms per FISTA iteration ({args.bandwidth_gbs:g} GB/s, "
          f"{args.latency_us:g} us), against {compute * rows * 1e3:.0f} ms on one node")


def build_parser():
    parser = common.parser(__doc__)
    parser.add_argument("--processes", type=common.integers, default=[1, 2], help="process counts; the first is the base")
    parser.add_argument("--images", type=int, default=10000, help="rows n, half per class (not --n: torchrun would take it)")
    parser.add_argument("--n-patterns", type=int, default=8)
    parser.add_argument("--lam", type=float, default=1e-3)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--bandwidth-gbs", type=float, default=12.5, help="network, for the estimate (100 Gb/s)")
    parser.add_argument("--latency-us", type=float, default=5.0, help="per message, for the estimate")
    parser.add_argument("--data-root", default=None, help="folder with cifar10/ (default: data/ here, then $CONVEXGAN_DATA or ~/.cache/convexgan/data)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a rank, under torchrun
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    return common.run(build_parser(), lambda args: worker(args) if args.worker else bench(args), argv)


if __name__ == "__main__":
    sys.exit(main())
