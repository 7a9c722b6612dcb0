"""The SOCP and SDP programs of the library (max-margin, three-layer, quadratic activations) go
to CVXPY with the Clarabel interior-point solver, an optional extra: ``convexgan[cvxpy]``."""


def cvxpy(what):
    """The cvxpy module, or an ImportError that says how to install it."""
    try:
        import cvxpy
    except ImportError:
        raise ImportError(f"{what} is solved by CVXPY: pip install 'convexgan[cvxpy]'.") from None
    return cvxpy


def solve(problem, what, infeasible=None):
    """Solve a CVXPY problem with Clarabel; ValueError ``infeasible`` when it has no feasible point,
    RuntimeError when the solver stops short of the optimum."""
    problem.solve(solver="CLARABEL")
    if infeasible is not None and problem.status in ("infeasible", "infeasible_inaccurate"):
        raise ValueError(infeasible)
    if problem.status != "optimal":
        raise RuntimeError(f"{what} ended with status {problem.status!r}: rescale X and y.")
    return problem.value
