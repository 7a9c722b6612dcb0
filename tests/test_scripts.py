"""Every command line: --help and bad arguments return cleanly, and each runs end to end on tiny data."""
import importlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from convexgan.data import data_root

SCRIPTS = ["train_celeba", "sample", "eval_gan", "train_layerwise", "regularization_path", "bench_solver",
           "bench_gan", "bench_layerwise", "bench_distributed", "figure_sgd_vs_convex", "figure_gradient_flow", "adelie_worker"]
CIFAR10 = data_root() / "cifar10" / "train" / "airplane"


def script(name):
    return importlib.import_module(f"convexgan.cli.{name}")


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_and_bad_arguments_return_an_exit_status(name, capsys):
    assert script(name).main(["--help"]) == 0
    assert "usage:" in capsys.readouterr().out
    assert script(name).main(["--no-such-option"]) == 2
    assert "error:" in capsys.readouterr().err


def test_bad_input_is_named_with_exit_status_2(tmp_path, capsys):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    assert script("sample").main(["--checkpoint", str(broken), "--out", str(tmp_path / "grid.png")]) == 2
    assert "is unreadable" in capsys.readouterr().err
    assert script("sample").main(["--n", "0"]) == 2
    assert "--n and --nrow must be positive" in capsys.readouterr().err
    assert script("train_layerwise").main(["--dataset", "folder"]) == 2
    assert "pass --data-root" in capsys.readouterr().err
    assert script("bench_layerwise").main(["--budget-factor", "0"]) == 2
    assert script("bench_solver").main(["--scaling", "1000,1"]) == 2
    assert "--scaling needs sizes of at least 2" in capsys.readouterr().err
    assert script("train_layerwise").main(["--widths", "8,x"]) == 2
    assert "integers separated by commas" in capsys.readouterr().err
    assert script("adelie_worker").main([str(tmp_path / "missing.npz"), str(tmp_path / "out.npz")]) == 2
    if not torch.cuda.is_available():
        assert script("train_celeba").main(["--dataset", "lfw", "--layers", "1", "--device", "cuda"]) == 2
        assert "torch sees no GPU" in capsys.readouterr().err


def test_face_scripts_train_sample_and_evaluate(tmp_path, capsys):
    checkpoint = str(tmp_path / "faces.pt")
    faces = ["--dataset", "lfw", "--layers", "2", "--limit", "60", "--holdout", "0.25"]
    assert script("train_celeba").main(faces + ["--rank", "8", "--n-patterns", "8", "--patches", "500", "--max-iter", "200",
                                                "--out-dir", str(tmp_path / "grids"), "--checkpoint", checkpoint]) == 0
    assert (tmp_path / "grids" / "faces_stage2_16px.png").is_file()
    assert script("sample").main(["--checkpoint", checkpoint, "--n", "6", "--nrow", "3",
                                  "--out", str(tmp_path / "grid.png")]) == 0
    assert np.asarray(Image.open(tmp_path / "grid.png")).shape == (2 * 18 + 2, 3 * 18 + 2, 3)
    assert script("sample").main(["--checkpoint", checkpoint, "--n", "3", "--out-dir", str(tmp_path / "each")]) == 0
    assert len(list((tmp_path / "each").glob("*.png"))) == 3
    figures = tmp_path / "eval.json"
    faces = [a for a in faces if a not in ("--layers", "2")]
    assert script("eval_gan").main(["--checkpoint", checkpoint, "--repeats", "2", "--baseline-ranks", "3,5",
                                    "--metrics-out", str(figures)] + faces) == 0
    results = json.loads(figures.read_text())
    assert len(results) == 4 and all(np.isfinite(r["ms_swd"]) and r["ms_swd"] >= 0 for r in results.values())
    assert all(len(r["band_energy_ratio"]) == len(r["ms_swd_joint_levels"]) for r in results.values())


def test_gan_benchmark_writes_its_grids_into_a_new_folder(tmp_path, capsys):
    out = tmp_path / "new" / "folder"
    assert script("bench_gan").main(["--dataset", "lfw", "--layers", "2", "--budget-factor", "0.2",
                                     "--out-dir", str(out)]) == 0
    assert (out / "bench_gan_convex.png").is_file() and (out / "bench_gan_wgan_gp.png").is_file()
    assert "best WGAN-GP MS-SWD" in capsys.readouterr().out


def test_layerwise_scripts_train_and_benchmark(tmp_path, capsys):
    tiny = ["--limit-per-class", "15", "--test-limit-per-class", "5", "--widths", "6", "--max-iter", "20"]
    metrics = tmp_path / "m.json"
    assert script("train_layerwise").main(tiny + ["--checkpoint", str(tmp_path / "c.pt"),
                                                  "--metrics-out", str(metrics)]) == 0
    stages = json.loads(metrics.read_text())["stages"]
    assert len(stages) == 1 and 0 <= stages[0]["test_accuracy"] <= 1
    assert script("bench_layerwise").main(tiny + ["--budget-factor", "0.5", "--metrics-out", str(metrics)]) == 0
    assert set(json.loads(metrics.read_text())["final"]) == {"convex", "greedy_sgd", "end_to_end_sgd"}


def test_regularization_path_writes_its_plot(tmp_path, capsys):
    out = tmp_path / "path.png"
    assert script("regularization_path").main(["--n-lams", "3", "--n-patterns", "8", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 100
    assert len(capsys.readouterr().out.splitlines()) == 1 + 3 + 1  # header, one row per lam, "wrote"


def test_sgd_figure_certifies_every_run_and_writes_its_plot(tmp_path, capsys):
    out = tmp_path / "sgd.png"
    assert script("figure_sgd_vs_convex").main(["--n", "6", "--starts", "2", "--steps", "200", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    optimum = float(lines[0].split()[2])
    runs = [line.split() for line in lines[2:4]]
    assert all(float(run[1]) >= float(run[2]) - 1e-12 and float(run[2]) <= optimum for run in runs)
    assert Image.open(out).size[0] > 100
    assert script("figure_sgd_vs_convex").main(["--starts", "0"]) == 2


def test_gradient_flow_figure_draws_both_data_sets(tmp_path, capsys):
    out = tmp_path / "flow.png"
    assert script("figure_gradient_flow").main(["--points", "10", "--starts", "1", "--steps", "300",
                                                "--out", str(out)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    rows = [row for row in rows if row and row[0] in ("orthogonal", "rings")]
    assert [row[0] for row in rows] == ["orthogonal", "rings"]
    assert all(float(row[-1]) <= 1 + 1e-6 for row in rows)  # never above the certified optimum
    assert Image.open(out).size[0] > 100
    assert script("figure_gradient_flow").main(["--points", "1"]) == 2


@pytest.mark.slow  # two torchrun launches
@pytest.mark.skipif(not CIFAR10.is_dir(), reason="CIFAR-10 not present")
def test_distributed_benchmark_runs_one_and_two_processes_on_the_same_program(capsys):
    assert script("bench_distributed").main(["--images", "200", "--n-patterns", "4", "--tol", "1e-6"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(("squared", "logistic"))]
    assert [row[2] for row in rows] == ["1", "2", "1", "2"]  # process counts
    for one, two in (rows[:2], rows[2:]):
        assert float(two[7]) == pytest.approx(float(one[7]), rel=1e-6)  # the same optimum
        assert float(one[8]) <= 1e-6 and float(two[8]) <= 1e-6 and int(one[9]) == 0 < int(two[9])


@pytest.mark.skipif(not CIFAR10.is_dir(), reason="CIFAR-10 not present")
def test_solver_benchmark_certifies_its_runs(capsys):
    assert script("bench_solver").main(["--n", "40", "--n-patterns", "8", "--tols", "1e-2", "--tol", "1e-4",
                                        "--no-pyscnn", "--device", "cpu", "--relu-patterns", "4",
                                        "--relu-al-iters", "50"]) == 0
    out = capsys.readouterr().out
    assert "reference lower bound" in out and "ours (augmented Lagrangian, float32)" in out
    admm = next(line.split() for line in out.splitlines() if "ours (admm)" in line)
    gap, violation = float(admm[admm.index("gap") + 1]), float(admm[admm.index("violation") + 1])
    assert gap <= 1e-4 and violation <= 1e-6
    # without the reference solve (the GPU runs): each run certified by its own dual value
    assert script("bench_solver").main(["--n", "40", "--n-patterns", "8", "--tols", "1e-4", "--tol", "1e-4",
                                        "--no-pyscnn", "--device", "cpu", "--reference-tol", "0"]) == 0
    out = capsys.readouterr().out
    ours = next(line.split() for line in out.splitlines() if line.startswith("ours (newton, tol=0.0001)"))
    assert "reference lower bound" not in out and float(ours[ours.index("gap") + 1]) <= 1e-4


@pytest.mark.skipif(not CIFAR10.is_dir(), reason="CIFAR-10 not present")
def test_solver_benchmark_scaling_table(capsys):
    assert script("bench_solver").main(["--scaling", "20,40", "--n-patterns", "8", "--tol", "1e-6",
                                        "--device", "cpu"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [row[0] for row in rows] == ["20", "40"]
    assert all(row[1] == "newton" and float(row[4]) <= 1e-6 and row[5] == "yes" for row in rows)
