"""The input checks' fast paths against their definitions."""
import pytest
import torch

from convexgan.validation import all_finite


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_finite_agrees_with_isfinite_everywhere(dtype):
    big = torch.finfo(dtype).max
    cases = [torch.zeros(0, dtype=dtype), torch.randn(1000, dtype=dtype),
             torch.tensor([big, big], dtype=dtype),  # the sum overflows, every entry is finite
             torch.tensor([1.0, float("nan")], dtype=dtype), torch.tensor([float("inf"), 2.0], dtype=dtype),
             torch.tensor([float("-inf"), float("inf")], dtype=dtype)]  # the sum is NaN
    for A in cases:
        assert all_finite(A) == bool(torch.isfinite(A).all())
    assert all_finite(torch.tensor([big, big], dtype=dtype)) and not all_finite(cases[-1])
