"""Regularization paths: certified at every lam, monotone optimal values, warm starts, the plot."""
import numpy as np
import pytest
from PIL import Image

from convexgan import ConvexReLU, plot_regularization_path, regularization_path


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    return X, np.maximum(X @ [1.0, -1.0, 0.5], 0) - np.maximum(X @ [0.0, 1.0, 1.0], 0)


@pytest.mark.parametrize("activation", ["gated", "relu"])
def test_lam_max_is_where_the_zero_network_stops_being_optimal(data, activation):
    X, y = data
    model = ConvexReLU(n_patterns=15, activation=activation, tol=1e-8)
    top = model.lam_max(X, y)
    assert model.set_params(lam=1.01 * top).fit(X, y).n_neurons_ == 0
    if activation == "gated":  # exact for gated; an upper bound for relu
        assert model.set_params(lam=0.95 * top).fit(X, y).n_neurons_ > 0


def test_path_is_certified_monotone_and_warm_started(data, tmp_path):
    X, y = data
    estimator = ConvexReLU(n_patterns=15, activation="gated", tol=1e-8, max_iter=50000)
    path = regularization_path(X, y, estimator=estimator, n_lams=8, lam_min_ratio=1e-2, progress=False)
    assert np.all(np.diff(path.lams) < 0) and path.n_neurons[-1] > 1
    # the grid starts at lam_max, where the zero network (intercept only) is optimal
    assert path.objectives[0] == pytest.approx(0.5 * np.var(y), rel=1e-7)
    assert np.all(path.gaps <= 1e-8)
    assert np.all(np.diff(path.objectives) <= 1e-12)  # the optimal value grows with lam
    assert estimator.get_params()["warm_start"] is False  # the caller's estimator is untouched
    cold_iterations = 0
    for lam, objective in zip(path.lams, path.objectives):
        cold = ConvexReLU(**{**estimator.get_params(), "lam": lam}).fit(X, y)
        assert cold.objective_ == pytest.approx(objective, rel=1e-7)
        cold_iterations += cold.n_iter_
    assert path.n_iters.sum() < cold_iterations
    image = plot_regularization_path(path, tmp_path / "path.png")
    with Image.open(image) as png:
        assert png.format == "PNG" and png.size[0] > 800
    figure = plot_regularization_path(path)  # no file: the open figure, its first panel the widths
    widths = figure.axes[0].lines[0].get_ydata()
    assert len(figure.axes) == 3 and set(widths) == set(path.n_neurons)


def test_path_rejects_bad_grids(data):
    X, y = data
    with pytest.raises(ValueError, match="lam"):
        regularization_path(X, y, lams=[0.1, 0.0], progress=False)
    with pytest.raises(ValueError, match="NaN"):
        regularization_path(X, y, lams=[0.1, np.nan], progress=False)
