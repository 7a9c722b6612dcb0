"""Independent reference: the same convex programs written directly in CVXPY."""
import cvxpy as cp
import numpy as np


def reference_optimum(X, Y, masks, lam, loss, activation, fit_intercept, vector):
    """Optimal value of the program that ``ConvexReLU``/``ConvexReLUClassifier`` solve.

    X (n, d), Y (n, c) targets as the estimators encode them (squared: values; logistic: -1/+1;
    cross_entropy: one-hot), masks (n, P) bool. ``vector``: per-pattern d x c weights
    (gated: nuclear norm; relu: an l2 norm per output column).
    """
    n, d = X.shape
    c = Y.shape[1]
    b = cp.Variable(c) if fit_intercept else np.zeros(c)
    pred, penalty, constraints = 0, 0, []
    for i in range(masks.shape[1]):
        D = masks[:, i].astype(float)
        cone = np.diag(2 * D - 1) @ X
        groups = [1] if activation == "gated" else [1, -1]
        for sign in groups:
            U = cp.Variable((d, c))
            pred = pred + sign * (np.diag(D) @ X) @ U
            if activation == "gated":
                penalty += cp.normNuc(U) if vector else cp.norm(U[:, 0])
            else:
                penalty += sum(cp.norm(U[:, k]) for k in range(c))
                constraints.append(cone @ U >= 0)
    pred = pred + np.ones((n, 1)) @ cp.reshape(b, (1, c), order="C") if fit_intercept else pred
    if loss == "squared":
        data = cp.sum_squares(pred - Y) / (2 * n)
    elif loss == "logistic":
        data = cp.sum(cp.logistic(-cp.multiply(Y, pred))) / n
    else:
        data = (cp.sum(cp.log_sum_exp(pred, axis=1)) - cp.sum(cp.multiply(Y, pred))) / n
    problem = cp.Problem(cp.Minimize(data + lam * penalty), constraints)
    problem.solve(solver="CLARABEL")
    assert problem.status == "optimal", problem.status
    return problem.value
