"""Sample-quality metrics against closed forms."""
import math

import pytest
import torch

from convexgan.metrics import laplacian_pyramid, ms_swd, nearest_neighbour_distance, sliced_wasserstein


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


def test_pyramid_reconstructs_the_image():
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    levels = laplacian_pyramid(images)
    assert [level.shape[-1] for level in levels] == [64, 32, 16]
    up = torch.nn.functional.interpolate
    x = levels[-1]
    for band in levels[-2::-1]:
        x = band + up(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(x, images)


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
    with pytest.raises(ValueError, match="image batch"):
        ms_swd(torch.rand(4, 3, 32), real)


def test_nearest_neighbour_distance_is_exact():
    train = torch.rand(50, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    samples = train[:5] + 0.1
    brute = torch.stack([((train - s) ** 2).mean((1, 2, 3)).sqrt().min() for s in samples])
    torch.testing.assert_close(nearest_neighbour_distance(samples, train), brute)
