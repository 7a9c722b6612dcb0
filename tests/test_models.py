"""Estimators against CVXPY, the recovery certificate, and the scikit-learn API."""
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from convexgan import ConvexReLU, ConvexReLUClassifier, TwoLayerGatedReLU, TwoLayerReLU
from convexgan import losses
from cvxpy_reference import reference_optimum

N_PROBLEMS = 20
CASES = [  # (loss, vector output)
    ("squared", False), ("squared", True), ("logistic", False), ("cross_entropy", True),
]


def random_problem(seed, loss, vector):
    rng = np.random.default_rng(seed)
    n, d = rng.integers(8, 15), rng.integers(2, 5)
    X = rng.standard_normal((n, d))
    if loss == "squared":
        y = rng.standard_normal((n, 3)) if vector else rng.standard_normal(n)
    else:
        classes = 3 if loss == "cross_entropy" else 2
        y = np.r_[np.arange(classes), rng.integers(0, classes, n - classes)]
    lam = float(rng.uniform(0.01, 0.1))
    return X, y, lam, bool(seed % 2)


def encoded_targets(model, y, loss):
    if loss == "squared":
        return y.reshape(len(y), -1)
    index = np.searchsorted(model.classes_, y)
    return (2.0 * index - 1)[:, None] if loss == "logistic" else np.eye(len(model.classes_))[index]


SLOW_CVXPY = {("cross_entropy", True, "gated"), ("squared", True, "relu"), ("cross_entropy", True, "relu")}


@pytest.mark.parametrize("loss,vector,activation", [
    pytest.param(*case, activation, marks=[pytest.mark.slow] if (*case, activation) in SLOW_CVXPY else [])
    for activation in ("gated", "relu") for case in CASES])
def test_matches_cvxpy_and_recovered_network(loss, vector, activation):
    estimator = ConvexReLU if loss == "squared" else ConvexReLUClassifier
    for seed in range(N_PROBLEMS):
        X, y, lam, fit_intercept = random_problem(seed, loss, vector)
        model = estimator(lam=lam, n_patterns=6, activation=activation, tol=1e-8, max_iter=200000,
                          fit_intercept=fit_intercept, seed=seed).fit(X, y)
        assert model.converged_, (seed, model.gap_, model.cone_violation_)
        masks = X @ model.gates_ >= 0
        expected = reference_optimum(X, encoded_targets(model, y, loss), masks, lam, loss,
                                     activation, fit_intercept, vector)
        assert model.objective_ == pytest.approx(expected, rel=1e-5), seed
        # the certificate brackets CVXPY's optimum: dual <= optimum <= primal (up to both tolerances)
        assert model.dual_objective_ <= expected * (1 + 1e-7) + 1e-12, seed
        # the recovered network's own non-convex objective equals the convex optimum
        assert model.network_objective(X, y) == pytest.approx(model.objective_, rel=1e-6), seed


def test_recovered_module_is_an_ordinary_network():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 4)), rng.standard_normal(30)
    for activation, module in [("relu", TwoLayerReLU), ("gated", TwoLayerGatedReLU)]:
        model = ConvexReLU(lam=0.02, n_patterns=10, activation=activation).fit(X, y)
        net = model.to_torch()
        assert type(net) is module and net.hidden.weight.shape == (model.n_neurons_, 4)
        assert all(p.requires_grad for p in net.parameters())
        assert [name for name, _ in net.named_buffers()] == (["gates"] if activation == "gated" else [])
        out = net(torch.as_tensor(X)).detach().numpy()[:, 0]
        np.testing.assert_allclose(out, model.predict(X), rtol=1e-12)
        # by hand: the network is what its weights say
        W1, W2 = net.hidden.weight.detach().numpy(), net.output.weight.detach().numpy()
        hidden = X @ W1.T
        hidden = np.maximum(hidden, 0) if activation == "relu" else hidden * (X @ net.gates.numpy() >= 0)
        np.testing.assert_allclose(hidden @ W2[0] + net.output.bias.item(), out, rtol=1e-10, atol=1e-12)


def test_recovered_relu_network_satisfies_the_cones():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((25, 3)), rng.standard_normal(25)
    model = ConvexReLU(lam=0.01, n_patterns=12, tol=1e-9, max_iter=100000).fit(X, y)
    P = model.gates_.shape[1]
    masks = X @ model.gates_ >= 0
    for g in range(2 * P):
        pre = X @ model.coef_[:, g, 0]
        if np.linalg.norm(model.coef_[:, g, 0]) > 0:  # an active group keeps its pattern
            assert np.all(pre[masks[:, g % P]] >= -1e-7) and np.all(pre[~masks[:, g % P]] <= 1e-7)


def test_sklearn_api_and_scores():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((80, 3))
    y = np.abs(X[:, 0]) - X[:, 1]  # a ReLU-representable target
    model = ConvexReLU(lam=1e-3, n_patterns=20, activation="gated", tol=1e-7, max_iter=50000)
    assert clone(model).get_params() == model.get_params()
    assert model.set_params(lam=2e-4).lam == 2e-4
    assert model.fit(X, y).score(X, y) > 0.99 and model.converged_
    labels = np.where(X[:, 0] * X[:, 1] > 0, "same", "opposite")  # XOR: not linearly separable
    clf = ConvexReLUClassifier(lam=1e-3, n_patterns=20, tol=1e-6).fit(X, labels)
    assert set(clf.classes_) == {"same", "opposite"} and clf.score(X, labels) > 0.95
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1)
    assert clf.decision_function(X).shape == (80,)


def test_multiclass_vector_output_shapes_and_accuracy():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((90, 2))
    y = np.digitize(np.arctan2(X[:, 1], X[:, 0]), [-1.5, 0.5])  # three angular sectors
    for activation in ["gated", "relu"]:
        clf = ConvexReLUClassifier(lam=1e-2, n_patterns=10, activation=activation, tol=1e-6).fit(X, y)
        assert clf.coef_.shape[2] == 3 and clf.predict_proba(X).shape == (90, 3)
        assert clf.converged_ and clf.score(X, y) > 0.9


def test_warm_start_reuses_patterns_and_solution():
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((40, 3)), rng.standard_normal(40)
    model = ConvexReLU(lam=0.05, n_patterns=20, activation="gated", warm_start=True, tol=1e-9).fit(X, y)
    cold_iterations = model.n_iter_
    gates = model.gates_.copy()
    model.fit(X, y)
    assert np.array_equal(model.gates_, gates) and model.n_iter_ < cold_iterations


@pytest.mark.parametrize("bad,message", [
    (dict(X=np.array([[np.nan, 1.0], [0.0, 1.0]])), "X contains NaN"),
    (dict(X=np.array([[np.inf, 1.0], [0.0, 1.0]])), "X contains infinity"),
    (dict(y=np.array([np.nan, 1.0])), "y contains NaN"), (dict(y=np.array([1.0, 2.0, 3.0])), "inconsistent numbers"),
    (dict(X=np.ones(2)), "Expected 2D array"), (dict(params=dict(lam=0.0)), "lam must be a finite number > 0"),
    (dict(params=dict(lam=-1.0)), "lam must be a finite number > 0"), (dict(params=dict(n_patterns=0)), "n_patterns must"),
    (dict(params=dict(gates=np.ones((3, 4)))), r"gates must have shape \(d, P\) = \(2"),
    (dict(params=dict(activation="tanh")), "activation must be one of"),
    (dict(X=np.zeros((0, 2)), y=np.zeros(0)), "0 sample"),
])
def test_bad_input_raises_clear_value_error(bad, message):
    X = bad.get("X", np.array([[1.0, 2.0], [3.0, -1.0]]))
    y = bad.get("y", np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match=message):
        ConvexReLU(**bad.get("params", {})).fit(X, y)


def test_classifier_rejects_a_single_class_and_unseen_labels():
    X = np.random.default_rng(0).standard_normal((5, 2))
    with pytest.raises(ValueError, match="1 class"):
        ConvexReLUClassifier().fit(X, np.ones(5))
    clf = ConvexReLUClassifier(n_patterns=4).fit(X, [0, 1, 0, 1, 1])
    with pytest.raises(ValueError, match="not seen"):
        clf.network_objective(X, [0, 1, 2, 1, 1])
    with pytest.raises(ValueError, match="features"):
        clf.predict(np.ones((2, 3)))


def test_predict_before_fit_says_so():
    with pytest.raises(ValueError, match="not fitted"):
        ConvexReLU().predict(np.ones((2, 2)))


@pytest.mark.parametrize("loss,vector", [pytest.param(*case, marks=[pytest.mark.slow] if case[0] != "logistic" else [])
                                         for case in CASES])
def test_augmented_lagrangian_matches_cvxpy_and_its_dual_bound_is_valid(loss, vector):
    """The scalable ReLU solver (used for large problems): same optimum, valid lower bound."""
    estimator = ConvexReLU if loss == "squared" else ConvexReLUClassifier
    for seed in range(5):
        X, y, lam, fit_intercept = random_problem(seed, loss, vector)
        model = estimator(lam=lam, n_patterns=6, tol=1e-7, max_iter=20000, fit_intercept=fit_intercept,
                          seed=seed, solver="augmented_lagrangian").fit(X, y)
        masks = X @ model.gates_ >= 0
        expected = reference_optimum(X, encoded_targets(model, y, loss), masks, lam, loss, "relu",
                                     fit_intercept, vector)
        assert model.objective_ == pytest.approx(expected, rel=1e-5), seed
        assert model.dual_objective_ <= expected * (1 + 1e-7) + 1e-12, seed
        assert model.cone_violation_ <= 1e-5, seed


def test_certify_any_weights():
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((30, 3)), rng.standard_normal(30)
    model = ConvexReLU(lam=0.05, n_patterns=10, activation="gated", tol=1e-9).fit(X, y)
    own = model.certify(X, y, model.coef_, model.intercept_)
    assert own.primal == pytest.approx(model.objective_, rel=1e-12) and own.gap <= 1e-9
    zero = model.certify(X, y, np.zeros_like(model.coef_))
    assert zero.primal == pytest.approx(0.5 * np.var(y)) and zero.gap > 1e-3
    assert zero.dual <= model.objective_ <= zero.primal
    with pytest.raises(ValueError, match="coef must have shape"):
        model.certify(X, y, np.zeros((3, 1, 1)))


@pytest.mark.parametrize("activation", ["gated", "relu"])
def test_wide_data_uses_the_row_space_exactly(activation):
    """n < d: the solvers work in the row space of X; optimum and network must not change."""
    rng = np.random.default_rng(6)
    X, y = rng.standard_normal((7, 12)), rng.standard_normal((7, 2))
    model = ConvexReLU(lam=0.05, n_patterns=5, activation=activation, tol=1e-9, max_iter=100000).fit(X, y)
    assert model.converged_ and model.coef_.shape[0] == 12
    expected = reference_optimum(X, y, X @ model.gates_ >= 0, 0.05, "squared", activation, True, True)
    assert model.objective_ == pytest.approx(expected, rel=1e-6)
    assert model.network_objective(X, y) == pytest.approx(model.objective_, rel=1e-6)
    assert model.certify(X, y, model.coef_, model.intercept_).gap <= 1e-8


@pytest.mark.parametrize("activation", ["gated", "relu"])
def test_float32_solves_stop_on_a_float64_certificate(activation):
    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((40, 5)), rng.standard_normal(40)
    model = ConvexReLU(lam=0.02, n_patterns=8, activation=activation, tol=1e-5, max_iter=50000,
                       dtype="float32").fit(X, y)
    exact = ConvexReLU(lam=0.02, n_patterns=8, activation=activation, tol=1e-10, max_iter=100000).fit(X, y)
    assert model.converged_ and model.gap_ <= 1e-5
    assert model.objective_ == pytest.approx(exact.objective_, rel=2e-5)
    # the reported gap is a float64 bound: it covers the suboptimality against the exact solve
    assert (model.objective_ - exact.dual_objective_) / model.objective_ <= model.gap_ + 1e-12
    certified = model.set_params(dtype="float64").certify(X, y, model.coef_, model.intercept_)
    assert certified.primal == pytest.approx(model.objective_, rel=1e-6)


@pytest.mark.parametrize("activation", ["gated", "relu"])
def test_returned_intercept_is_the_certified_one(activation):
    """The certificate re-optimizes the intercept; fit must return that intercept, not FISTA's."""
    rng = np.random.default_rng(8)
    X, y = rng.standard_normal((30, 3)), rng.standard_normal(30) + 3.0
    model = ConvexReLU(lam=0.05, n_patterns=8, activation=activation, tol=1e-6).fit(X, y)
    without_intercept = model.predict(X) - model.intercept_[0]
    assert model.intercept_[0] == pytest.approx(np.mean(y - without_intercept), abs=1e-12)
    assert model.network_objective(X, y) == pytest.approx(model.objective_, rel=1e-12)


@pytest.mark.parametrize("activation", ["gated", "relu"])
def test_float32_solves_report_the_float64_intercept_of_their_certificate(activation):
    """The float64 confirmation re-fits the intercept in float64, so that the dual constraint
    1^T Theta = 0 of its certificate holds to float64 precision at the reported point."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((80, 5)), rng.standard_normal(80) + 3
    model = ConvexReLU(lam=0.01, n_patterns=10, activation=activation, dtype="float32", tol=1e-5,
                       solver="fista" if activation == "gated" else "auto", max_iter=100000).fit(X, y)
    assert model.converged_
    masks = X @ model.gates_ >= 0
    P = masks.shape[1]
    signs = np.r_[np.ones(P), -np.ones(P)] if activation == "relu" else np.ones(P)
    masks = np.tile(masks, (1, len(signs) // P))
    prediction = (masks * signs * (X @ model.coef_[:, :, 0])).sum(1) + model.intercept_[0]
    residual = prediction - y  # n Theta for the squared loss, at the reported float64 point
    assert abs(residual.sum()) <= 1e-11 * np.abs(residual).sum()


def numpy_dual_value(X, y, gates, lam, theta, loss, classes=None, rtol=1e-9):
    """The dual value that ``theta`` (n, c) proves, checked with NumPy alone (no library code): each
    pattern's block ``X^T D_g theta`` has dual norm (spectral: the l2 norm of one column, or the
    nuclear norm's dual) at most lam, and the value is ``-F*(theta)`` of the mean loss."""
    n = len(X)
    D = (X @ gates >= 0).astype(float)
    norms = [np.linalg.norm(X.T @ (D[:, [g]] * theta), 2) for g in range(D.shape[1])]
    assert max(norms) <= lam * (1 + rtol)
    if loss == "squared":
        Y = y.reshape(n, -1)
        return -(n / 2 * (theta ** 2).sum() + (theta * Y).sum())
    if loss == "logistic":
        signs = np.where(y == classes[1], 1.0, -1.0)[:, None]
        t = -n * theta * signs
        assert (t >= -1e-12).all() and (t <= 1 + 1e-12).all()
        t = t.clip(0, 1)
        return -np.sum(np.where(t > 0, t * np.log(np.where(t > 0, t, 1)), 0)
                       + np.where(t < 1, (1 - t) * np.log(np.where(t < 1, 1 - t, 1)), 0)) / n
    q = n * theta + (y[:, None] == classes[None, :])  # cross-entropy: a probability per row
    assert (q >= -1e-12).all() and np.allclose(q.sum(1), 1)
    q = q.clip(0, None)
    return -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0)) / n


@pytest.mark.parametrize("loss, vector", CASES)
@pytest.mark.parametrize("solver", ["auto", "fista"])
def test_dual_coef_proves_the_dual_objective_in_numpy(loss, vector, solver):
    X, y, lam, intercept = random_problem(7, loss, vector)
    estimator = ConvexReLU if loss == "squared" else ConvexReLUClassifier
    model = estimator(lam=lam, n_patterns=20, activation="gated", tol=1e-8, fit_intercept=intercept,
                      solver=solver, max_iter=50_000).fit(X, y)
    theta = model.dual_coef_
    assert theta.shape == (len(X), model.intercept_.shape[0])
    if intercept:
        assert np.abs(theta.sum(0)).max() <= 1e-10 * np.abs(theta).sum()
    dual = numpy_dual_value(X, y, model.gates_, lam, theta, loss, getattr(model, "classes_", None))
    assert dual == pytest.approx(model.dual_objective_, rel=1e-9, abs=1e-12)
    assert dual <= model.objective_ * (1 + 1e-12) and model.gap_ <= 1e-8


def test_relu_programs_keep_no_dual_coef():
    X, y, lam, _ = random_problem(3, "squared", False)
    model = ConvexReLU(lam=lam, n_patterns=10, activation="gated").fit(X, y)
    assert hasattr(model, "dual_coef_")
    model.set_params(activation="relu").fit(X, y)  # its dual also has cone multipliers
    assert not hasattr(model, "dual_coef_")


def test_verbose_reports_the_solver_and_the_result(capsys):
    X, y, lam, _ = random_problem(1, "squared", False)
    ConvexReLU(lam=lam, n_patterns=10, activation="gated", verbose=1).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[ConvexReLU] newton: n=") and "converged after" in lines[-1]
    ConvexReLU(lam=lam, n_patterns=10, activation="gated").fit(X, y)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="verbose"):
        ConvexReLU(verbose=3).fit(X, y)


@pytest.mark.parametrize("solver, method", [("fista", "grad"), ("newton", "conjugate_grad")])
def test_interrupted_fit_keeps_the_best_certified_point(monkeypatch, solver, method):
    """Ctrl-C (a KeyboardInterrupt raised inside the solver) keeps the best point certified so far,
    with its certificate recomputed: the model's gap is the one ``certify`` gives its weights."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 20))
    y = np.maximum(X[:, 0], 0) - np.maximum(X[:, 1] - X[:, 2], 0)
    original, calls = getattr(losses.SquaredLoss, method), []

    def interrupted_once(self, *args):
        calls.append(1)
        if len(calls) == 40:
            raise KeyboardInterrupt
        return original(self, *args)
    monkeypatch.setattr(losses.SquaredLoss, method, interrupted_once)
    model = ConvexReLU(lam=1e-4, n_patterns=50, activation="gated", solver=solver, tol=1e-12, max_iter=10**6)
    with pytest.warns(ConvergenceWarning, match="interrupted"):
        model.fit(X, y)
    assert len(calls) >= 40 and not model.converged_ and 0 < model.gap_ < 1
    check = model.certify(X, y, model.coef_, model.intercept_)
    assert check.primal == pytest.approx(model.objective_, rel=1e-9)
    assert model.dual_objective_ <= model.objective_ and check.gap <= model.gap_ * (1 + 1e-6) + 1e-12


def test_interrupted_relu_fit_raises():
    X, y, lam, _ = random_problem(2, "squared", False)

    def interrupt(*args):
        raise KeyboardInterrupt
    model = ConvexReLU(lam=lam, n_patterns=5, activation="relu")
    model._run_solver = interrupt  # a cone certificate needs multipliers that no history keeps
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y)


def test_auto_says_when_it_leaves_the_newton_solver(caplog):
    X, y, lam, _ = random_problem(4, "squared", True)  # three outputs: a nuclear norm, FISTA
    with caplog.at_level("INFO", logger="convexgan.models"):
        model = ConvexReLU(lam=lam, n_patterns=10, activation="gated").fit(X, y)
    assert model.solver_ == "fista" and "solver='auto' takes FISTA" in caplog.text and "NuclearNorm" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="convexgan.models"):
        ConvexReLU(lam=lam, n_patterns=10, activation="gated").fit(X, y[:, 0])
    assert "takes FISTA" not in caplog.text
