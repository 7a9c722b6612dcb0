"""Row sharding over torch.distributed: 2 gloo ranks on this machine against one process."""
import datetime
import multiprocessing
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from convexgan.data import data_root, face_dataset
from convexgan.distributed import RowShard, agree, computed_on_first_rank, first_rank_first, shard_rows
from convexgan.models import ConvexReLU, ConvexReLUClassifier
from layerwise.classifier import LayerwiseConvexClassifier
from layerwise.progressive import ProgressiveTrainer, load_checkpoint
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


def assert_nan_on_rank_one_stops_both(task, X, tmp_path, what):
    """Rank 1 raises its NaN error, rank 0 an error naming rank 1, long before the timeout."""
    start = time.perf_counter()
    results = run_ranks(task, X, tmp_path)
    assert time.perf_counter() - start < 45  # seconds, not the 60 s collective timeout
    assert results[1][0] == "error" and "NaN" in results[1][1]
    assert results[0][0] == "error" and f"rank 1 failed while {what}" in results[0][1]
    assert "NaN" in results[0][1]


def test_a_bad_shard_stops_every_rank_with_its_message(tmp_path):
    X = np.random.default_rng(1).standard_normal((20, 3))
    assert_nan_on_rank_one_stops_both(nan_on_rank_one, X, tmp_path, "reading its shard")


# (loss, fit_intercept, solver): Newton's active-group systems for the squared loss, FISTA for both
SOLVES = [("squared", True, "newton"), ("squared", False, "newton"), ("squared", True, "fista"),
          ("logistic", True, "fista"), ("logistic", False, "fista")]


def gated_problem(loss, n=101, d=5):
    """Rows (n, d) and targets with a nonzero mean (the intercept has work to do)."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((n, d))
    signal = np.tanh(X @ rng.standard_normal(d)) + 0.3 * rng.standard_normal(n)
    return X, (signal + 1.5 if loss == "squared" else np.where(signal > -0.4, "yes", "no"))


def gated_model(loss, fit_intercept, distributed, solver="fista"):
    model = ConvexReLU if loss == "squared" else ConvexReLUClassifier
    return model(lam=1e-2, n_patterns=8, activation="gated", tol=1e-10, max_iter=200_000, solver=solver,
                 fit_intercept=fit_intercept, distributed=distributed)


def sharded_gated_fits(rank, world, layout):
    """Each rank fits on its rows: contiguous uneven shards, or all rows on the last rank."""
    fits = []
    for loss, fit_intercept, solver in SOLVES:
        X, y = gated_problem(loss)
        rows = shard_rows(len(X), rank, world) if layout == "uneven" else range(0, len(X) * (rank == world - 1))
        model = gated_model(loss, fit_intercept, True, solver).fit(X[rows.start:rows.stop], y[rows.start:rows.stop])
        scores = model.predict(X) if loss == "squared" else model.decision_function(X)
        fits.append((model.coef_, model.intercept_, model.objective_, model.gap_, model.converged_, scores,
                     model.solver_, len(rows)))
    return fits


@pytest.mark.parametrize("layout", ["uneven", "one empty shard"])
def test_a_sharded_gated_solve_is_the_single_process_solve(tmp_path, layout):
    results = run_ranks(sharded_gated_fits, layout.split()[0], tmp_path, timeout=240)
    for rank in (0, 1):
        assert results[rank][0] == "ok", results[rank][1]
    for case, (loss, fit_intercept, sharded_solver) in enumerate(SOLVES):
        X, y = gated_problem(loss)
        single = gated_model(loss, fit_intercept, False, solver="auto").fit(X, y)  # Newton in n-space
        assert single.solver_ == "newton" and single.converged_
        scores = single.predict(X) if loss == "squared" else single.decision_function(X)
        (coef, intercept, objective, gap, converged, sharded_scores, solver, rows), other = (
            results[0][1][case], results[1][1][case])
        assert converged and gap <= 1e-9 and solver == sharded_solver
        assert objective == pytest.approx(single.objective_, rel=1e-7)
        np.testing.assert_allclose(sharded_scores, scores, rtol=0, atol=1e-6 * np.abs(scores).max())
        assert not fit_intercept or abs(intercept[0]) > 0.1
        # every rank holds the same bits: its decisions all came from reduced values
        np.testing.assert_array_equal(coef, other[0])
        np.testing.assert_array_equal(intercept, other[1])
        assert objective == other[2] and rows + other[7] == len(X)
    assert results[0][1][0][7] == (50 if layout == "uneven" else 0)


def nan_in_a_fit(rank, world, X):
    rows = shard_rows(len(X), rank, world)
    shard = X[rows.start:rows.stop].copy()
    if rank == 1:
        shard[3, 2] = np.nan
    return gated_model("squared", True, True).fit(shard, shard[:, 0] + 1).objective_


def test_a_nan_on_one_rank_stops_every_rank_of_a_fit(tmp_path):
    X = np.random.default_rng(2).standard_normal((40, 3))
    assert_nan_on_rank_one_stops_both(nan_in_a_fit, X, tmp_path, "checking its rows")


OLIVETTI = data_root() / "olivetti" / "olivettifaces.mat"
needs_olivetti = pytest.mark.skipif(not OLIVETTI.is_file(), reason="Olivetti faces not present")
ROOT = Path(__file__).resolve().parents[1]


def olivetti_trainer(distributed):
    return ProgressiveTrainer(layers=2, n_patches=3000, seed=4, distributed=distributed)


class Interrupted(Exception):
    pass


def interrupted_then_resumed(rank, world, checkpoint):
    """Both ranks stop at stage 2 (as a killed job would, after stage 1's files), then resume."""
    images = face_dataset("olivetti", resolution=16).train
    rows = shard_rows(len(images), rank, world)
    trainer = olivetti_trainer(True)
    fit_stage = trainer._fit_stage

    def stop_at_stage_two(k, *args):
        if k == 2:
            raise Interrupted
        return fit_stage(k, *args)
    trainer._fit_stage = stop_at_stage_two
    with pytest.raises(Interrupted):
        trainer.fit(images[rows.start:rows.stop], checkpoint=checkpoint)
    kept = sorted(p.name for p in Path(checkpoint).parent.iterdir())
    generator = olivetti_trainer(True).fit(images[rows.start:rows.stop], checkpoint=checkpoint)
    return kept, generator.sample(64, seed=1)


@needs_olivetti
def test_a_distributed_face_trainer_resumes_and_matches_one_process(tmp_path):
    checkpoint = tmp_path / "run" / "olivetti.pt"
    results = run_ranks(interrupted_then_resumed, checkpoint, tmp_path, timeout=240)
    for rank in (0, 1):
        assert results[rank][0] == "ok", results[rank][1]
    kept = results[0][1][0]  # after stage 1: rank 0's checkpoint, each rank's outputs
    assert kept == ["olivetti.pt", "olivetti.pt.rows0-180.stage1", "olivetti.pt.rows180-360.stage1"]
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["olivetti.pt"]  # outputs gone when done
    single = olivetti_trainer(False).fit(face_dataset("olivetti", resolution=16).train)
    expected = single.sample(64, seed=1)
    for rank in (0, 1):
        np.testing.assert_allclose(results[rank][1][1], expected, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(results[0][1][1], results[1][1][1])


@needs_olivetti
def test_torchrun_trains_the_olivetti_generator_of_one_process(tmp_path):
    """The README's command on 2 processes: it finishes, writes each file once, and its samples
    are the single process's."""
    def train(out, launcher):
        command = [*launcher, str(ROOT / "scripts" / "train_celeba.py"), "--layers", "2", "--dataset", "olivetti",
                   "--checkpoint", str(out / "olivetti.pt"), "--out-dir", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr
    log = train(tmp_path / "two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                   "--nproc-per-node", "2"])
    train(tmp_path / "one", [sys.executable])
    assert "2 processes" in log and log.count("stage 2 grid") == 1  # rank 0 alone logs and writes
    for out in ("one", "two"):
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == [
            "olivetti.pt", "olivetti_stage1_8px.png", "olivetti_stage2_16px.png"]
    samples = [load_checkpoint(tmp_path / out / "olivetti.pt")[0].sample(256, seed=2) for out in ("one", "two")]
    np.testing.assert_allclose(samples[1], samples[0], rtol=0, atol=1e-4)


def test_row_shard_of_one_process_holds_every_row():
    shard = RowShard(7, sharded=True)  # no process group: one process holds all rows
    assert (shard.sharded, shard.start, shard.stop, shard.total) == (False, 0, 7, 7)
    here, local = shard.local(torch.tensor([3, 20, 0]), per_row=3)
    assert here.tolist() == [True, True, True] and local.tolist() == [3, 20, 0]
    partial = torch.ones(2)
    assert shard.sum(partial) is partial and partial.tolist() == [1, 1]


def digits_block():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return X[:401].reshape(-1, 1, 8, 8) / 16.0, y[:401]


def digits_model(distributed):
    return LayerwiseConvexClassifier(widths=(6,), max_iter=20000, tol=1e-8, dtype="float64", distributed=distributed)


def sharded_layerwise_fit(rank, world, checkpoint):
    X, y = digits_block()
    rows = shard_rows(len(X), rank, world)
    model = digits_model(True).fit(X[rows.start:rows.stop], y[rows.start:rows.stop], checkpoint=checkpoint)
    resumed = digits_model(True).fit(X[rows.start:rows.stop], y[rows.start:rows.stop], checkpoint=checkpoint)
    untimed = [[{k: v for k, v in stage.items() if k != "seconds"} for stage in m.stages_] for m in (resumed, model)]
    assert untimed[0] == untimed[1]  # read from rank 0's checkpoint (its timing): no block is fitted again
    np.testing.assert_array_equal(resumed.decision_function(X), model.decision_function(X))
    return model.stages_[0], model.decision_function(X), sorted(p.name for p in Path(checkpoint).parent.iterdir())


def test_a_sharded_layerwise_block_is_the_single_process_block(tmp_path):
    checkpoint = tmp_path / "run" / "digits.pt"
    results = run_ranks(sharded_layerwise_fit, checkpoint, tmp_path, timeout=240)
    for rank in (0, 1):
        assert results[rank][0] == "ok", results[rank][1]
    single = digits_model(False).fit(*digits_block())
    expected = single.stages_[0]
    (stage, scores, files), (other_stage, other_scores, _) = results[0][1], results[1][1]
    assert stage["certificate"]["gap"] <= 1e-8 and files == ["digits.pt"]
    assert stage["certificate"]["primal"] == pytest.approx(expected["certificate"]["primal"], rel=1e-6)
    assert stage["train_accuracy"] == expected["train_accuracy"] and stage["neurons"] == expected["neurons"]
    np.testing.assert_allclose(scores, single.decision_function(digits_block()[0]), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(scores, other_scores)  # the same network on every rank
    assert stage["certificate"] == other_stage["certificate"]


def append_rank(path, rank):
    if rank == 0:
        time.sleep(0.5)  # rank 1 would write first if it did not wait
    with open(path, "a") as handle:
        handle.write(f"{rank}\n")
    return rank


def rank_zero_first(rank, world, path):
    return first_rank_first(append_rank, path, rank)


def test_first_rank_first_runs_rank_zero_before_the_others(tmp_path):
    log = tmp_path / "order.txt"
    results = run_ranks(rank_zero_first, log, tmp_path)
    assert results[0] == ("ok", 0) and results[1] == ("ok", 1)
    assert log.read_text() == "0\n1\n"
