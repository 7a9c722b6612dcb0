"""Input checks that name the problem and the fix."""
import numbers

import numpy as np
import torch


def check_array(A, name, ndim=None, dtype=np.float64):
    """Return ``A`` as a finite array (NumPy, or torch for a tensor input) of the given rank."""
    if A is None:
        raise ValueError(f"{name} is None: pass an array.")
    if not isinstance(A, torch.Tensor):
        try:
            A = np.asarray(A, dtype=dtype)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be numeric; converting it failed: {err}") from None
    elif not torch.is_floating_point(A):
        A = A.to(torch.float64)
    if ndim is not None and A.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(A.shape)}.")
    if A.ndim == 0 or A.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(A.shape)}): pass at least one sample.")
    finite = torch.isfinite(A).all() if isinstance(A, torch.Tensor) else np.isfinite(A).all()
    if not finite:
        raise ValueError(f"{name} contains NaN or inf: remove or impute those entries first.")
    return A


def check_positive(value, name):
    """A finite real number > 0."""
    if not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


def check_positive_int(value, name):
    """An integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return int(value)


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}.")
    return value


def check_X_y(X, y):
    """X (n, d) and y (n,) or (n, c) as float64 arrays with matching sample counts."""
    X = check_array(X, "X", ndim=2)
    y = check_array(y, "y")
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be (n,) or (n, c), got shape {y.shape}.")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}: pass one target per row of X.")
    return X, y
