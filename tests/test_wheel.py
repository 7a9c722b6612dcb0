"""The wheel works outside the repository: built from the checkout, installed into a fresh virtual
environment, its console script trains on the embedded faces in an empty folder.

The fresh environment sees this one's installed dependencies (torch is gigabytes) as a plain
``sys.path`` entry, whose ``.pth`` files (this checkout's editable install among them) are not
processed: ``convexgan`` and ``layerwise`` can only come from the wheel.
"""
import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import convexgan

ROOT = Path(__file__).resolve().parents[1]


def isolated(env=None):
    """The environment without what would let the checkout's packages in (PYTHONPATH, user site)."""
    env = {key: value for key, value in (env or os.environ).items() if key != "PYTHONPATH"}
    return {**env, "PYTHONNOUSERSITE": "1"}


def run(command, env=None, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, env=isolated(env), **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A virtual environment outside the checkout with the wheel installed; its bin/ folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: no build/ left in the checkout, and no stale one read from it
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info",
                                                                "_build", "__pycache__", "checkpoints", "data"))
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp / "dist"), str(source)])
    wheel, = (tmp / "dist").glob("convexgan-*.whl")
    run([sys.executable, "-m", "venv", str(tmp / "venv")])
    python = tmp / "venv" / "bin" / "python"
    venv_site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (venv_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)])
    return tmp / "venv" / "bin"


@pytest.mark.slow
def test_wheel_installs_the_packages_and_their_version(installed, tmp_path):
    where = json.loads(run([str(installed / "python"), "-c",
                            "import json, convexgan, layerwise; print(json.dumps([convexgan.__file__, "
                            "layerwise.__file__, convexgan.__version__]))"], cwd=tmp_path))
    assert all(Path(path).is_relative_to(installed.parent) for path in where[:2]), where
    assert where[2] == convexgan.__version__


@pytest.mark.slow
def test_console_script_trains_on_the_embedded_faces_outside_the_checkout(installed, tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    env = {**os.environ, "CONVEXGAN_DATA": str(empty), "CONVEXGAN_CACHE": str(tmp_path / "cache")}
    run([str(installed / "convexgan-train-celeba"), "--layers", "2", "--patches", "2000"], cwd=tmp_path, env=env)
    with Image.open(tmp_path / "samples" / "celeba_stage2_16px.png") as grid:
        assert grid.format == "PNG" and min(grid.size) > 16
    assert (tmp_path / "checkpoints" / "celeba.pt").is_file()
    out = run([str(installed / "convexgan-sample"), "--n", "4", "--out", "grid.png"], cwd=tmp_path, env=env)
    assert "wrote a grid of 4 samples" in out and (tmp_path / "grid.png").is_file()


@pytest.mark.slow
def test_layerwise_console_script_trains_on_the_embedded_digits(installed, tmp_path):
    out = run([str(installed / "convexgan-train-layerwise"), "--widths", "8,16", "--metrics-out", "metrics.json"],
              cwd=tmp_path)
    stages = json.loads((tmp_path / "metrics.json").read_text())["stages"]
    assert len(stages) == 2 and "test" in out
