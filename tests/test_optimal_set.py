"""certify_network and prune against the convex optimum (itself checked against CVXPY in
test_models), gradient-trained networks, and the predictions they must keep."""
import numpy as np
import pytest
import torch

from convexgan import ConvexReLU, ConvexReLUClassifier, enumerate_patterns
from convexgan.networks import network_from_neurons
from convexgan.optimal_set import certify_network, is_unique, optimal_set, prune

LAM = 1e-2


@pytest.fixture(scope="module")
def problem():
    """Small data, its exact convex optimum (every pattern), and that optimal network."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 3))
    y = np.sin(X @ np.array([1.0, -2.0, 0.5])) + 0.1 * rng.standard_normal(12)
    _, gates = enumerate_patterns(X)
    model = ConvexReLU(lam=LAM, gates=gates, activation="relu", tol=1e-7, max_iter=100_000).fit(X, y)
    assert model.converged_
    return X, y, model


def objective(net, X, y):
    with torch.no_grad():
        pred = net(torch.as_tensor(X))[:, 0]
        return float(0.5 * ((pred - torch.as_tensor(y)) ** 2).mean() + LAM * net.weight_penalty())


def adam_network(X, y, seed, width=12, steps=500):
    """A two-layer ReLU network trained by Adam on the same objective from a random start."""
    torch.manual_seed(seed)
    net = network_from_neurons(torch.randn(width, X.shape[1], dtype=torch.float64) * 0.5,
                               torch.randn(width, 1, dtype=torch.float64) * 0.5, torch.zeros(1, dtype=torch.float64))
    net.requires_grad_(True)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-2)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = 0.5 * ((net(Xt)[:, 0] - yt) ** 2).mean() + LAM * net.weight_penalty()
        loss.backward()
        optimizer.step()
    return net.requires_grad_(False)


@pytest.mark.slow  # the exact ReLU program and 11 exact enumerations: about 50 s
def test_the_optimum_certifies_itself_and_bounds_every_adam_network(problem):
    X, y, model = problem
    cert = certify_network(model.network_, X, y, LAM)
    assert cert.objective == pytest.approx(model.objective_, rel=1e-9)
    assert cert.gap <= 2e-7 and cert.improvement <= 1e-5 * LAM  # no neuron can lower it
    for seed in range(10):
        net = adam_network(X, y, seed)
        found = certify_network(net, X, y, LAM)
        assert found.objective == pytest.approx(objective(net, X, y), rel=1e-12)
        assert found.objective >= model.dual_objective_  # gradient training never beats the optimum
        assert found.lower_bound <= model.objective_  # the bound holds for every network
        assert found.gap >= 0


@pytest.mark.slow
def test_the_best_neuron_lowers_the_objective_of_a_network_missing_one(problem):
    X, y, model = problem
    net = model.network_
    strongest = int(torch.linalg.vector_norm(net.hidden.weight, dim=1).argmax())
    keep = [j for j in range(net.hidden.weight.shape[0]) if j != strongest]
    missing = network_from_neurons(net.hidden.weight[keep], net.output.weight[:, keep].T, net.output.bias)
    cert = certify_network(missing, X, y, LAM)
    assert cert.gap > 1e-3 and cert.improvement > 0
    t = 1e-2  # a small neuron w = t u, a = sign t: the objective falls by about t^2 * improvement
    grown = network_from_neurons(torch.cat([missing.hidden.weight, t * torch.from_numpy(cert.best_neuron)[None]]),
                                 torch.cat([missing.output.weight.T, torch.tensor([[cert.best_sign * t]])]),
                                 missing.output.bias)
    assert objective(grown, X, y) < cert.objective - 0.5 * t ** 2 * cert.improvement


def test_logistic_networks_are_certified_too():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((10, 2))
    y = np.where(X[:, 0] * X[:, 1] > 0, 1.0, -1.0)
    _, gates = enumerate_patterns(X)
    model = ConvexReLUClassifier(lam=LAM, gates=gates, activation="relu", tol=1e-9, max_iter=100_000).fit(X, y)
    cert = certify_network(model.network_, X, y, LAM, loss="logistic")
    assert cert.objective == pytest.approx(model.objective_, rel=1e-8) and cert.gap <= 1e-7


@pytest.mark.slow
def test_pruning_a_split_optimal_network_keeps_its_predictions_and_objective(problem):
    X, y, model = problem
    net = model.network_
    rng = np.random.default_rng(1)
    W1, a = net.hidden.weight.numpy(), net.output.weight.numpy()[0]
    shares = rng.dirichlet(np.ones(4), size=len(a))  # each neuron split in four balanced pieces
    pieces = np.sqrt(shares)  # (neurons, 4): w sqrt(t), a sqrt(t) with the t summing to 1
    split = network_from_neurons(torch.from_numpy((W1[:, None, :] * pieces[:, :, None]).reshape(-1, W1.shape[1])),
                                 torch.from_numpy((a[:, None] * pieces).reshape(-1, 1)), net.output.bias)
    assert split.hidden.weight.shape[0] >= 40
    assert objective(split, X, y) == pytest.approx(model.objective_, rel=1e-9)
    pruned = prune(split, X)
    assert pruned.hidden.weight.shape[0] <= len(X) + 1
    Xt = torch.as_tensor(X)
    np.testing.assert_allclose(pruned(Xt), split(Xt), rtol=0, atol=1e-8)
    assert objective(pruned, X, y) <= objective(split, X, y) * (1 + 1e-12)  # optimal stays optimal


@pytest.mark.parametrize("gated", [False, True])
def test_pruning_any_wide_network_keeps_predictions_and_lowers_the_penalty(gated):
    rng = np.random.default_rng(2)
    X = torch.from_numpy(rng.standard_normal((9, 4)))
    gates = torch.from_numpy(rng.standard_normal((4, 50))) if gated else None
    wide = network_from_neurons(torch.from_numpy(rng.standard_normal((50, 4))),
                                torch.from_numpy(rng.standard_normal((50, 2))), torch.ones(2, dtype=torch.float64), gates)
    pruned = prune(wide, X.numpy())
    assert pruned.hidden.weight.shape[0] <= 9 * 2 and type(pruned) is type(wide)
    np.testing.assert_allclose(pruned(X), wide(X), rtol=0, atol=1e-9 * float(wide(X).abs().max()))
    assert float(pruned.weight_penalty()) <= float(wide.weight_penalty())
    norms = torch.linalg.vector_norm(pruned.hidden.weight, dim=1), torch.linalg.vector_norm(pruned.output.weight, dim=0)
    np.testing.assert_allclose(*norms, rtol=1e-12)  # balanced


def test_bad_input_is_named():
    X, y = np.ones((5, 3)), np.ones(5)
    net = network_from_neurons(torch.ones(2, 3, dtype=torch.float64), torch.ones(2, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="lam"):
        certify_network(net, X, y, 0.0)
    with pytest.raises(ValueError, match="features"):
        certify_network(net, X[:, :1], y, LAM)
    with pytest.raises(ValueError, match="one output"):
        certify_network(network_from_neurons(torch.ones(2, 3), torch.ones(2, 2)), X, y, LAM)
    with pytest.raises(ValueError, match="-1 and \\+1"):
        certify_network(net, X, 2 * y, LAM, loss="logistic")
    with pytest.raises(ValueError, match="TwoLayerReLU"):
        prune(torch.nn.Linear(3, 1), X)
    with pytest.raises(ValueError, match="NaN"):
        prune(net, np.full((4, 3), np.nan))


# Four points on a square: the patterns "left" + "right" and "bottom" + "top" fit the constant
# target equally well at equal cost, so every mix of the two pairs is optimal.
SQUARE = np.array([[1.0, -1, -1], [1, -1, 1], [1, 1, -1], [1, 1, 1]])
HALF_PLANES = np.array([[0.0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]]).T  # left, right, bottom, top


def objective_of(net, X, y, lam):
    with torch.no_grad():
        pred = net(torch.as_tensor(X))[:, 0]
        return float(0.5 * ((pred - torch.as_tensor(y)) ** 2).mean() + lam * net.weight_penalty())


@pytest.mark.parametrize("activation", ["gated", "relu"])
def test_a_tie_between_two_pairs_of_patterns_gives_a_second_optimal_network(activation):
    y, lam = np.ones(4), 0.1
    model = ConvexReLU(lam=lam, gates=HALF_PLANES, activation=activation, fit_intercept=False, tol=1e-12,
                       max_iter=100_000).fit(SQUARE, y)
    found = optimal_set(model, SQUARE, y)
    assert not found.unique and not is_unique(model, SQUARE, y)
    assert sorted(found.groups) == [0, 1, 2, 3]
    other = found.other
    assert other.hidden.weight.shape[0] < model.n_neurons_  # another point: one neuron fewer
    assert objective_of(other, SQUARE, y, lam) == pytest.approx(model.objective_, rel=1e-9)
    with torch.no_grad():
        torch.testing.assert_close(other(torch.as_tensor(SQUARE)), model.network_(torch.as_tensor(SQUARE)),
                                   rtol=0, atol=1e-9)
    # with only one of the pairs the optimum is a single point
    alone = ConvexReLU(lam=lam, gates=HALF_PLANES[:, :2], activation=activation, fit_intercept=False,
                       tol=1e-12, max_iter=100_000).fit(SQUARE, y)
    assert optimal_set(alone, SQUARE, y).unique


@pytest.mark.parametrize("activation", ["gated", pytest.param("relu", marks=pytest.mark.slow)])
def test_generic_data_have_one_optimum_that_every_solver_finds(activation):
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((15, 3)), rng.standard_normal(15)
    kwargs = dict(lam=1e-2, n_patterns=20, activation=activation, tol=1e-10, max_iter=200_000)
    model = ConvexReLU(**kwargs).fit(X, y)
    found = optimal_set(model, X, y)
    assert found.unique and found.other is None
    # unique: a different solver from another start reaches the same network (the same function
    # off the data too; a relu neuron on the face of two cones may sit in either group)
    solver = "fista" if activation == "gated" else "augmented_lagrangian"
    again = ConvexReLU(**{**kwargs, "solver": solver, "tol": 1e-9}).fit(X, y)
    new = rng.standard_normal((200, 3))
    np.testing.assert_allclose(again.predict(new), model.predict(new), atol=1e-3 * np.abs(model.predict(new)).max())


def test_optimal_set_refuses_what_it_cannot_describe():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 2))
    model = ConvexReLU(lam=1e-2, activation="gated").fit(X, rng.standard_normal((10, 2)))
    with pytest.raises(ValueError, match="one output"):
        optimal_set(model, X, rng.standard_normal((10, 2)))
    with pytest.raises(ValueError, match="rtol"):
        optimal_set(model, X, rng.standard_normal((10, 2)), rtol=0)
    with pytest.raises(Exception, match="not fitted"):
        optimal_set(ConvexReLU(), X, rng.standard_normal(10))


def test_a_classifier_and_a_model_with_no_neuron_have_one_optimum():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((30, 3))
    labels = np.where(X[:, 0] * X[:, 1] > 0, "a", "b")
    model = ConvexReLUClassifier(lam=1e-2, n_patterns=20, activation="gated", tol=1e-10).fit(X, labels)
    assert optimal_set(model, X, labels).unique
    y = rng.standard_normal(30)
    for fit_intercept in (True, False):  # lam above lam_max: zero is the one optimum
        empty = ConvexReLU(lam=1e3, n_patterns=10, activation="gated", fit_intercept=fit_intercept).fit(X, y)
        found = optimal_set(empty, X, y)
        assert found.unique and len(found.groups) == 0
