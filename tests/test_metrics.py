"""Sample-quality metrics against closed forms."""
import math

import pytest
import torch

from convexgan.metrics import (band_energy, block_structure, evaluate_samples, laplacian_pyramid, ms_swd,
                               nearest_neighbour_distance, sliced_wasserstein)


def test_sliced_wasserstein_of_shifted_gaussians_has_its_closed_form():
    # projections of N(0, I) and N(m, I) on a unit direction t differ by a shift |m.t|; averaged over
    # uniform directions in D dims: ||m|| Gamma(D/2) / (sqrt(pi) Gamma((D+1)/2))
    D, n = 8, 10000
    generator = torch.Generator().manual_seed(0)
    A = torch.randn(n, D, generator=generator, dtype=torch.float64)
    m = torch.full((D,), 0.5, dtype=torch.float64)
    B = torch.randn(n, D, generator=generator, dtype=torch.float64) + m
    expected = float(m.norm()) * math.gamma(D / 2) / (math.sqrt(math.pi) * math.gamma((D + 1) / 2))
    assert sliced_wasserstein(A, B, n_projections=1000, repeats=1, generator=generator) == pytest.approx(expected, rel=0.06)
    assert sliced_wasserstein(A, A, generator=generator) == 0


def test_pyramid_separates_frequencies():
    """A constant image is all low-pass; a checkerboard (the highest frequency) is all band-pass.
    A filter that is not normalized, or plain subsampling (which keeps one colour of the board),
    fails one or the other; the reconstruction then checks the bands are the differences."""
    constant = torch.full((1, 3, 64, 64), 0.3)
    levels = laplacian_pyramid(constant)
    assert [level.shape[-1] for level in levels] == [64, 32, 16]
    torch.testing.assert_close(levels[-1], torch.full((1, 3, 16, 16), 0.3))
    assert all(band.abs().max() < 1e-6 for band in levels[:-1])
    board = 0.5 + 0.5 * (-1.0) ** (torch.arange(64)[:, None] + torch.arange(64)).float().expand(1, 3, 64, 64)
    levels = laplacian_pyramid(board)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # away from the zero padding
    torch.testing.assert_close(levels[-1][inner], torch.full_like(levels[-1][inner], 0.5), rtol=0, atol=1e-6)
    assert levels[0][inner].abs().min() > 0.45  # the board's +-0.5 lives in the finest band
    x = levels[-1]
    for band in levels[-2::-1]:
        x = band + torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(x, board)


def test_ms_swd_ranks_distributions_and_rejects_bad_input():
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(256, 3, 32, 32, generator=generator)
    same = torch.rand(256, 3, 32, 32, generator=generator)
    blocky = torch.rand(256, 3, 16, 16, generator=generator).repeat_interleave(2, 2).repeat_interleave(2, 3)
    levels_close, close = ms_swd(same, real, patches_per_image=32)
    levels_far, far = ms_swd(blocky, real, patches_per_image=32)
    assert close < far and levels_close[0] < levels_far[0]
    with pytest.raises(ValueError, match="NaN"):
        ms_swd(torch.full((4, 3, 32, 32), float("nan")), real)
    with pytest.raises(ValueError, match="differ in shape"):
        ms_swd(torch.rand(4, 1, 32, 32), real)
    with pytest.raises(ValueError, match="must be images"):
        ms_swd(torch.rand(4, 3, 32), real)


def test_nearest_neighbour_distance_is_exact():
    train = torch.rand(50, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    samples = train[:5] + 0.1
    brute = torch.stack([((train - s) ** 2).mean((1, 2, 3)).sqrt().min() for s in samples])
    torch.testing.assert_close(nearest_neighbour_distance(samples, train), brute)


def test_evaluate_samples_reads_uint8_channel_last_like_floats_and_sees_memorization():
    generator = torch.Generator().manual_seed(1)
    train = torch.randint(0, 256, (40, 32, 32, 3), dtype=torch.uint8, generator=generator)
    test = torch.randint(0, 256, (20, 32, 32, 3), dtype=torch.uint8, generator=generator)
    as_float = lambda x: x.permute(0, 3, 1, 2).float() / 255  # noqa: E731
    copies = as_float(train[:20])  # a generator that memorized its training set
    result = evaluate_samples(copies, train, test, seed=0)
    assert result == evaluate_samples(copies, as_float(train), as_float(test), seed=0)
    assert result["nn_samples"] == 0 and result["ms_swd"] > 0
    fresh = evaluate_samples(as_float(test), train, test, seed=0)
    assert fresh["nn_samples"] > 0.3  # held-out noise images are about 0.41 (RMS) from any training image
    with pytest.raises(ValueError, match="looks channel-last"):
        evaluate_samples(train.float() / 255, train, test)


FAST = dict(patches_per_image=128, n_projections=128, repeats=1)


def smooth_images(n, seed):
    """Blurred noise (n, 3, 32, 32): images with energy in every band, unlike white noise."""
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


@pytest.mark.slow
def test_joint_normalization_sees_band_energy_that_per_set_normalization_hides():
    real, sharp = smooth_images(256, 0), torch.rand(256, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    mean = real.mean((0, 2, 3), keepdim=True)
    doubled = 2 * (real - mean) + mean  # every band, and the low-pass about its mean, scaled by 2
    for normalize in ("per_set", "joint"):
        _, itself = ms_swd(real, real, **FAST, normalize=normalize)
        _, unblurred = ms_swd(sharp, real, **FAST, normalize=normalize)
        levels_doubled, scaled = ms_swd(doubled, real, **FAST, normalize=normalize)
        levels_itself, _ = ms_swd(real, real, **FAST, normalize=normalize)
        assert itself < 0.5 * unblurred  # a set against itself: patch sampling noise only
        if normalize == "per_set":  # the same patches after normalization: exactly the self-distance
            assert levels_doubled == pytest.approx(levels_itself, rel=1e-4)
        else:
            assert min(d / i for d, i in zip(levels_doubled, levels_itself)) > 5
    assert band_energy(doubled) == pytest.approx([2 * e for e in band_energy(real)], rel=1e-4)  # float32 sums
    with pytest.raises(ValueError, match="normalize must be"):
        ms_swd(real, real, normalize="global")


def test_evaluate_samples_reports_both_variants_and_band_energy_ratios():
    real, other = smooth_images(64, 0), smooth_images(64, 1)
    result = evaluate_samples(0.5 + 0.5 * (other - 0.5), real, real, seed=0)  # half the contrast
    assert set(result) >= {"ms_swd", "ms_swd_joint", "ms_swd_levels", "ms_swd_joint_levels", "band_energy_ratio"}
    assert result["band_energy_ratio"] == pytest.approx([0.5] * 2, rel=0.05)
    assert result["ms_swd_joint"] > 3 * result["ms_swd"]


def test_block_structure_sees_pixels_generated_two_by_two():
    smooth = smooth_images(16, 0)
    assert block_structure(smooth) == pytest.approx((1.0, 1.0), abs=0.05)
    blocks = torch.nn.functional.interpolate(smooth_images(16, 1)[..., ::2, ::2], scale_factor=2, mode="nearest")
    assert min(block_structure(blocks + 0.01 * smooth)) > 5  # copies within blocks, steps between them
    with pytest.raises(ValueError, match="do not tile"):
        block_structure(torch.rand(2, 1, 6, 6), block=4)
