"""adelie's group lasso on one convex gated-ReLU problem, run by ``bench_solver.py --adelie`` in an
environment of its own (adelie pins numpy<2; ours needs numpy>=2). Needs only numpy and adelie.

    python scripts/adelie_worker.py PROBLEM.npz OUT.npz

PROBLEM holds X (n, d), y (n,), masks (n, P) bool, lams (L,) decreasing, tol, threads. The program
is ours: ``1/(2n) ||sum_i D_i X u_i - y||^2 + lam sum_i ||u_i||``, no intercept (adelie's gaussian
GLM with weights 1/n, groups of the d columns of each pattern, penalty factor 1). OUT gets the
coefficients (L, P, d) at every lam, the seconds inside ``grpnet`` and the peak RSS in KiB.
"""
import argparse
import resource
import sys
import time

import numpy as np


def solve(problem, out):
    import adelie as ad  # here, so that --help and the error below work without it
    data = np.load(problem)
    X, y, masks, lams = data["X"], data["y"], data["masks"], data["lams"]
    tol, threads = float(data["tol"]), int(data["threads"])
    d, P = X.shape[1], masks.shape[1]
    design = ad.matrix.convex_relu(np.asfortranarray(X), np.asfortranarray(masks), gated=True, n_threads=threads)
    start = time.perf_counter()
    state = ad.grpnet(design, ad.glm.gaussian(y), groups=np.arange(0, d * P, d), penalty=np.ones(P),
                      lmda_path=lams, intercept=False, early_exit=False, tol=tol, n_threads=threads,
                      progress_bar=False)
    seconds = time.perf_counter() - start
    betas = state.betas.toarray().reshape(-1, P, d)
    np.savez(out, coefs=betas, lams=np.asarray(state.lmdas), seconds=seconds,
             peak_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main(argv=None):
    """Exit status 0 when done, 2 for bad arguments or a Python without adelie."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("problem", help="input .npz")
    parser.add_argument("out", help="output .npz")
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return stop.code
    try:
        solve(args.problem, args.out)
    except ImportError:
        print(f"{parser.prog}: error: this Python has no adelie: python3 -m venv .venv-adelie && "
              ".venv-adelie/bin/pip install adelie, then run it with .venv-adelie/bin/python.", file=sys.stderr)
        return 2
    except (OSError, KeyError, ValueError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
