"""Input checks that name the problem and the fix."""
import numbers

import numpy as np
import torch


def all_finite(A):
    """Whether every entry of tensor A is finite. A finite sum proves it in one fast pass (NaN and
    inf propagate through sums; ``isfinite`` is about 100x slower on gigabytes); a sum that is not
    finite (an overflow, or a bad entry) is settled entry by entry."""
    return bool(torch.isfinite(A.sum())) or bool(torch.isfinite(A).all())


def check_array(A, name, ndim=None, dtype=np.float64, min_rows=1):
    """Return ``A`` as a finite array (NumPy, or torch for a tensor input) of the given rank with
    at least ``min_rows`` rows (0: one rank's shard may be empty)."""
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
    if A.ndim == 0 or A.shape[0] < min_rows:
        raise ValueError(f"{name} is empty (shape {tuple(A.shape)}): pass at least one sample.")
    finite = all_finite(A) if isinstance(A, torch.Tensor) else np.isfinite(A).all()
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


def check_X_y(X, y, min_rows=1):
    """X (n, d) and y (n,) or (n, c) as float64 arrays with matching sample counts, at least
    ``min_rows`` of them (0: one rank's shard may be empty)."""
    X = check_array(X, "X", ndim=2, min_rows=min_rows)
    y = check_array(y, "y", min_rows=min_rows)
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be (n,) or (n, c), got shape {y.shape}.")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}: pass one target per row of X.")
    return X, y


def as_images(X, name="X"):
    """A checked float32 tensor (N, C, H, W) from one layout per type:

    - uint8 (NumPy or torch), (N, H, W, C) with values 0..255 (the layout of image files, PIL and
      the CIFAR arrays): scaled to [0, 1];
    - any other real type, (N, C, H, W) (torch's layout), values as they are;
    - a table (N, D) of features: D channels on a single pixel, (N, D, 1, 1).

    Anything else raises ValueError naming the layout it needs; a float batch that looks
    channel-last (N, H, W, C) is refused rather than read with C = W.
    """
    # contiguous: from_numpy refuses views with negative strides, such as mirror images X[:, :, ::-1]
    X = X if isinstance(X, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(_numeric(X, name)))
    pixels = X.dtype == torch.uint8
    if pixels:
        if X.ndim != 4 or X.shape[3] not in (1, 3, 4):
            raise ValueError(f"{name}: uint8 images must be (N, H, W, C) with C = 1, 3 or 4, got shape "
                             f"{tuple(X.shape)} (grey (N, H, W) images need X[..., None]).")
        X = X.permute(0, 3, 1, 2)
    elif X.ndim == 2:
        X = X[:, :, None, None]
    elif X.ndim != 4:
        raise ValueError(f"{name} must be images (N, C, H, W), uint8 images (N, H, W, C) or features (N, D), "
                         f"got shape {tuple(X.shape)}.")
    elif X.shape[3] in (1, 3, 4) and min(X.shape[1:3]) > 4:
        raise ValueError(f"{name} of shape {tuple(X.shape)} looks channel-last (N, H, W, C); float images are "
                         f"(N, C, H, W): pass X.permute(0, 3, 1, 2) (or uint8 pixels, which are read channel-last).")
    if X.shape[0] == 0 or X.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(X.shape)}): pass at least one image.")
    X = X.to(torch.float32) / 255 if pixels else X.to(torch.float32)  # no copy of a float32 batch
    if not all_finite(X):
        raise ValueError(f"{name} contains NaN or inf: remove or repair those images.")
    return X


def _numeric(X, name):
    """X as a real NumPy array (no copy where it already is one)."""
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {X.dtype}.")
    return X
