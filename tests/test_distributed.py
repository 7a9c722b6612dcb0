"""Row sharding over torch.distributed: 2 gloo ranks on this machine against one process."""
import datetime
import multiprocessing
import time
import traceback

import numpy as np
import pytest
import torch
import torch.distributed as dist

from convexgan.distributed import agree, computed_on_first_rank, shard_rows
from convexgan.svt import GramAccumulator, svt_factor

pytestmark = pytest.mark.slow  # each test spawns two ranks that import torch (about 8 s)


def _rank_main(rank, world, rendezvous, task, data, results):
    """One rank: join the group through a file, run ``task``, report its result or error."""
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=60))
        results.put((rank, "ok", task(rank, world, data)))
    except Exception as err:  # noqa: BLE001 -- sent to the parent, which asserts on it
        results.put((rank, "error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(task, data, tmp_path, world=2, timeout=60):
    """``task(rank, world, data)`` on ``world`` spawned ranks: {rank: (status, result)}."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_rank_main, args=(r, world, tmp_path / "rendezvous", task, data, results))
                 for r in range(world)]
    for p in processes:
        p.start()
    out = {}
    try:
        for _ in range(world):
            rank, status, value = results.get(timeout=timeout)
            out[rank] = (status, value)
    finally:
        for p in processes:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return out


def sharded_gram_and_factor(rank, world, X):
    rows = shard_rows(len(X), rank, world)
    accumulator = GramAccumulator().update(X[rows.start:rows.stop]).all_reduce()
    B, lam = computed_on_first_rank(svt_factor, accumulator.gram(), rank=3)
    return accumulator.gram(), accumulator.mean, accumulator.count, B, lam


def test_shards_are_contiguous_uneven_and_cover_every_row_once():
    for n, world in [(10, 3), (2, 4), (0, 2), (7, 1)]:
        shards = [shard_rows(n, r, world) for r in range(world)]
        assert [i for s in shards for i in s] == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="outside a world"):
        shard_rows(5, 2, 2)


@pytest.mark.parametrize("n", [101, 1])  # uneven shards; one empty shard
def test_sharded_gram_and_svt_equal_the_single_process_ones(tmp_path, n):
    X = np.random.default_rng(0).standard_normal((n, 6)) * np.linspace(3, 0.5, 6)
    results = run_ranks(sharded_gram_and_factor, X, tmp_path)
    single = GramAccumulator().update(X)
    B_single, lam_single = svt_factor(single.gram(), rank=3)
    for rank in (0, 1):
        status, value = results[rank]
        assert status == "ok", value
        gram, mean, count, B, lam = value
        scale = np.abs(single.gram()).max()
        np.testing.assert_allclose(gram, single.gram(), rtol=0, atol=1e-12 * scale)
        np.testing.assert_allclose(mean, single.mean, rtol=0, atol=1e-12 * np.abs(X).max())
        assert count == n
        np.testing.assert_allclose(B.T @ B, B_single.T @ B_single, rtol=0, atol=1e-12 * scale)
        assert lam == pytest.approx(lam_single, rel=1e-12)
    np.testing.assert_array_equal(results[0][1][3], results[1][1][3])  # the factor is the same bits everywhere


def nan_on_rank_one(rank, world, X):
    rows = shard_rows(len(X), rank, world)
    shard = X[rows.start:rows.stop].copy()
    if rank == 1:
        shard[0, 0] = np.nan
    accumulator = GramAccumulator()
    with agree("reading its shard"):
        accumulator.update(shard)
    return accumulator.all_reduce().count


def test_a_bad_shard_stops_every_rank_with_its_message(tmp_path):
    X = np.random.default_rng(1).standard_normal((20, 3))
    start = time.perf_counter()
    results = run_ranks(nan_on_rank_one, X, tmp_path)
    assert time.perf_counter() - start < 45  # seconds, not the 60 s collective timeout
    assert results[1][0] == "error" and "NaN" in results[1][1]
    assert results[0][0] == "error" and "rank 1 failed while reading its shard" in results[0][1]
    assert "NaN" in results[0][1]
