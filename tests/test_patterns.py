"""Arrangement patterns against brute force."""
import itertools

import numpy as np
import pytest
import torch

from convexgan import conv_patterns, enumerate_patterns, sample_patterns


def as_set(masks):
    return {tuple(column) for column in np.asarray(masks).T.astype(int)}


def brute_force_patterns(X, n_gates=2_000_000, seed=0):
    """Patterns of many random gates: with probability ~1, every open cell of a small arrangement."""
    rng = np.random.default_rng(seed)
    found = set()
    for _ in range(n_gates // 200_000):
        masks = X @ rng.standard_normal((X.shape[1], 200_000)) >= 0
        found |= as_set(np.unique(masks, axis=1))
    return found - {tuple([0] * len(X))}


def test_talk_example_has_exactly_the_theoretical_patterns():
    X = np.array([[2.0, 2.0], [3.0, 3.0], [1.0, 0.0]])
    masks, gates = enumerate_patterns(X)
    # D1 = I, D2 = diag(1, 1, 0), D4 = diag(0, 0, 1); D3 = 0 is dropped (it contributes nothing)
    assert as_set(masks) == {(1, 1, 1), (1, 1, 0), (0, 0, 1)} and masks.shape == (3, 3)
    assert np.array_equal(X @ gates >= 0, masks)


@pytest.mark.parametrize("case", ["general", "duplicates", *[pytest.param(case, marks=pytest.mark.slow)
                                                               for case in ("parallel", "zero_row", "rank1", "rank3")]])
def test_enumeration_matches_brute_force(case):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((9, 2))
    if case == "duplicates":
        X[3] = X[0]
    elif case == "parallel":
        X[4], X[5] = 2.5 * X[1], -0.5 * X[2]
    elif case == "zero_row":
        X[6] = 0
    elif case == "rank1":
        X = np.outer(rng.standard_normal(9), rng.standard_normal(4))
    elif case == "rank3":
        X = rng.standard_normal((8, 3)) @ rng.standard_normal((3, 5))
    masks, gates = enumerate_patterns(X)
    assert as_set(masks) == brute_force_patterns(X)
    assert masks.shape[1] == len(as_set(masks))  # no duplicates
    assert np.array_equal(X @ gates >= 0, masks)


def test_enumeration_count_in_general_position_meets_the_bound():
    rng = np.random.default_rng(2)
    n, r = 12, 2
    masks, _ = enumerate_patterns(rng.standard_normal((n, r)))
    # 2 sum_{k<r} C(n-1, k) cells, minus the all-zero one (absent: the all-zero cell needs
    # every x_j^T g < 0, impossible when the rows' cone is the whole plane) -> at most that many
    bound = 2 * sum(len(list(itertools.combinations(range(n - 1), k))) for k in range(r))
    assert masks.shape[1] == bound or masks.shape[1] == bound - 1


def test_enumeration_refuses_too_many_patterns():
    X = np.random.default_rng(3).standard_normal((60, 6))
    with pytest.raises(ValueError, match="sample_patterns"):
        enumerate_patterns(X, max_patterns=100)


def test_sampled_patterns_are_distinct_realized_and_seeded():
    X = np.random.default_rng(4).standard_normal((50, 5))
    masks, gates = sample_patterns(X, 300, seed=7)
    assert masks.dtype == bool and masks.shape[0] == 50 and gates.shape == (5, masks.shape[1])
    assert len(as_set(masks)) == masks.shape[1] and masks.any(0).all()
    assert np.array_equal(X @ gates >= 0, masks)
    again, _ = sample_patterns(X, 300, seed=7)
    assert np.array_equal(masks, again)
    with pytest.raises(ValueError, match="n_patterns"):
        sample_patterns(X, 0)


def test_conv_patterns_are_patch_patterns():
    images = torch.as_tensor(np.random.default_rng(5).standard_normal((4, 3, 8, 8)))
    masks, gates = conv_patterns(images, 20, kernel_size=3, padding=1, seed=0)
    assert masks.dtype == torch.bool and masks.shape[0] == 4 and masks.shape[2:] == (8, 8)
    assert gates.shape == (masks.shape[1], 3, 3, 3)
    # by hand: one patch of one image against one gate
    patch = torch.nn.functional.pad(images, (1, 1, 1, 1))[2, :, 3:6, 4:7]
    for p in range(masks.shape[1]):
        assert bool(masks[2, p, 3, 4]) == bool((patch * gates[p]).sum() >= 0)
    flat = masks.permute(0, 2, 3, 1).reshape(-1, masks.shape[1]).numpy()
    assert len(as_set(flat)) == masks.shape[1]
    with pytest.raises(ValueError, match="4 dimensions"):
        conv_patterns(images[0], 5)
