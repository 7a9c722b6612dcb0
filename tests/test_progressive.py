"""Progressive convex GAN: real Olivetti faces, resume after a kill, clear errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from convexgan.data import data_root, face_dataset, load_olivetti
from layerwise.progressive import ProgressiveTrainer, load_checkpoint, pca_generator

OLIVETTI = data_root() / "olivetti" / "olivettifaces.mat"
needs_olivetti = pytest.mark.skipif(not OLIVETTI.is_file(), reason="Olivetti faces not present")
SMALL = dict(rank=16, n_patterns=16, n_patches=2000, max_iter=500, tol=1e-2)


@needs_olivetti
def test_olivetti_trains_to_a_valid_64px_grid(tmp_path):
    from convexgan.cli import train_celeba
    assert train_celeba.main(["--dataset", "olivetti", "--layers", "4", "--rank", "16", "--n-patterns", "16",
                              "--patches", "2000", "--out-dir", str(tmp_path), "--checkpoint", str(tmp_path / "g.pt")]) == 0
    grid = np.asarray(Image.open(tmp_path / "g_stage4_64px.png"))
    assert grid.shape == (8 * 66 + 2, 8 * 66 + 2, 3)  # 8 x 8 images of 64 px, 2 px padding
    generator, config, leftover = load_checkpoint(tmp_path / "g.pt")
    assert len(generator.stages) == 4 and leftover is None and config["data"].startswith("olivetti")
    samples = generator.sample(40, seed=3)
    assert samples.shape == (40, 1, 64, 64) and samples.min() >= 0 and samples.max() <= 1
    torch.testing.assert_close(samples, generator.sample(40, seed=3))  # seeded
    # the samples vary: not one collapsed image
    assert samples.std(0).mean() > 0.05


def test_stage_one_has_the_data_covariance_thresholded():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 8, 8, 1), dtype=np.uint8)
    generator = ProgressiveTrainer(layers=1, rank=5).fit(images)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).flatten(1).double() / 255
    centered = x - x.mean(0)
    eigenvalues = torch.linalg.eigvalsh(centered.T @ centered).flip(0)
    B = generator.stages[0].factor.double()
    # the closed form: B^T B has eigenvalues (S^2 - lam)_+ with lam the 6th eigenvalue of X^T X
    kept = torch.linalg.eigvalsh(B.T @ B).flip(0)[:5]
    torch.testing.assert_close(kept, eigenvalues[:5] - eigenvalues[5], rtol=1e-4, atol=1e-6)


def test_automatic_rank_keeps_one_direction_per_eight_images_up_to_64():
    rng = np.random.default_rng(1)
    few = rng.integers(0, 256, (90, 8, 8, 1), dtype=np.uint8)
    assert ProgressiveTrainer(layers=1).fit(few).stages[0].noise_dim == 11
    many = rng.integers(0, 256, (1000, 8, 8, 1), dtype=np.uint8)
    assert ProgressiveTrainer(layers=1).fit(many).stages[0].noise_dim == 64


class Killed(Exception):
    pass


def test_a_killed_run_resumes_to_the_same_generator(tmp_path):
    images = load_olivetti(OLIVETTI, 32) if OLIVETTI.is_file() else face_dataset("lfw", resolution=32).train
    checkpoint = tmp_path / "run.pt"

    def kill_after_stage_two(k, generator, seconds, info):
        if k == 2:
            raise Killed

    with pytest.raises(Killed):
        ProgressiveTrainer(layers=3, **SMALL).fit(images, checkpoint=checkpoint, on_stage=kill_after_stage_two)
    partial, _, outputs = load_checkpoint(checkpoint)
    assert len(partial.stages) == 2 and outputs.shape == (len(images), 1, 16, 16)
    stages_run = []
    resumed = ProgressiveTrainer(layers=3, **SMALL).fit(images, checkpoint=checkpoint,
                                                         on_stage=lambda k, *rest: stages_run.append(k))
    assert stages_run == [3]
    straight = ProgressiveTrainer(layers=3, **SMALL).fit(images)
    torch.testing.assert_close(resumed.sample(16, seed=0), straight.sample(16, seed=0))
    with pytest.raises(ValueError, match="trained with"):
        ProgressiveTrainer(layers=3, rank=8).fit(images, checkpoint=checkpoint)


def test_bad_input_gives_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="layers"):
        ProgressiveTrainer(layers=0)
    with pytest.raises(ValueError, match="at most"):
        ProgressiveTrainer(layers=9)
    with pytest.raises(ValueError, match=r"\(N, 32, 32"):
        ProgressiveTrainer(layers=3).fit(np.zeros((10, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="no CelebA folder"):
        face_dataset("celeba", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        face_dataset("folder", tmp_path / "empty")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="unreadable"):
        load_checkpoint(tmp_path / "broken.pt")


def test_script_rejects_wrong_layers_and_missing_data(tmp_path, capsys):
    from convexgan.cli import train_celeba
    assert train_celeba.main(["--layers", "7"]) == 2
    assert "--layers must be between 1 and 6" in capsys.readouterr().err
    assert train_celeba.main(["--data-root", str(tmp_path / "nowhere")]) == 2
    assert "no CelebA folder" in capsys.readouterr().err


def test_pca_baseline_keeps_the_top_principal_variance():
    rng = np.random.default_rng(0)
    images = rng.integers(96, 160, (400, 8, 8, 3), dtype=np.uint8)  # samples stay inside [0, 1]
    samples = pca_generator(images, 10).sample(20000, seed=0).flatten(1).double()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).flatten(1).double() / 255
    top = torch.linalg.eigvalsh(torch.cov(x.T)).flip(0)[:10]
    sampled = torch.linalg.eigvalsh(torch.cov(samples.T)).flip(0)[:10]
    torch.testing.assert_close(sampled, top * (400 - 1) / 400, rtol=0.05, atol=0)


def kurtosis(x):
    x = x - x.mean()
    return float((x ** 4).mean() / (x ** 2).mean() ** 2)


def test_refine_stage_gives_the_residual_its_real_sparse_marginals_and_energy():
    """Faces-like data whose 16 px detail is Laplace noise (kurtosis 6, standard deviation
    sqrt(2) 0.04): an SVT alone would sample it Gaussian (kurtosis 3); the stage's monotone
    rearrangement gives it back the Laplace marginal, at the real energy, in every pixel and in
    the finest band."""
    rng = np.random.default_rng(0)
    n = 600
    coarse = torch.from_numpy(rng.normal(0.5, 0.1, (n, 1, 4, 4)))
    smooth = torch.nn.functional.interpolate(coarse, size=16, mode="bilinear", align_corners=False)
    images = (smooth + torch.from_numpy(rng.laplace(0, 0.04, (n, 1, 16, 16)))).clamp(0, 1)
    images = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    generator = ProgressiveTrainer(layers=2, rank=16, n_patterns=8, n_patches=3000, max_iter=300).fit(images)
    first, second = generator.stages
    with torch.no_grad():
        z = [torch.randn(2000, s.noise_dim, generator=torch.Generator().manual_seed(k)) for k, s in enumerate(generator.stages)]
        x1 = first(None, z[0])
        detail, _ = second.conditional(x1)
        residual = second(x1, z[1]) - detail - second.mean.reshape(second.shape)
        gaussian = z[1] @ second.factor  # what the SVT alone would add, up to its scale per pixel
        gaussian = (gaussian / gaussian.std(0)).flatten()
    assert 5 < kurtosis(residual.flatten()) < 7.5 and abs(kurtosis(gaussian) - 3) < 0.3
    # the energy of the 0-255 rounded Laplace detail: sqrt(2) 0.04 = 0.057, within 10 %
    assert abs(float(residual.std()) / (2 ** 0.5 * 0.04) - 1) < 0.1
    # the noise was scaled so that the finest Laplacian band has the real energy (on 512 draws)
    from convexgan.metrics import band_energy
    assert abs(band_energy(second(x1, z[1]), 8)[0] / band_energy(images, 8)[0] - 1) < 0.05


def test_quantile_function_interpolates_the_table_and_holds_its_ends():
    from layerwise.progressive import QUANTILE_LEVELS, _quantile_function
    table = torch.stack([-torch.log1p(-QUANTILE_LEVELS), 2 * QUANTILE_LEVELS])  # exponential; uniform on [0, 2]
    u = torch.rand(5, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    values = _quantile_function(u, table)
    inside = (u >= QUANTILE_LEVELS[0]) & (u <= QUANTILE_LEVELS[-1])
    exact = torch.stack([-torch.log1p(-u[:, 0]), 2 * u[:, 1]], 1)
    assert values.shape == u.shape
    torch.testing.assert_close(values[:, 1][inside[:, 1]], exact[:, 1][inside[:, 1]])  # linear: exact
    # the exponential between table points: the chord lies above the convex curve, by at most
    # spacing^2 max f'' / 8 = (1e-3)^2 400 / 8 = 5e-5 below u = 0.95
    body = inside[:, 0] & (u[:, 0] < 0.95)
    gap = (values[:, 0] - exact[:, 0])[body]
    assert gap.min() > -1e-5 and gap.max() < 1e-4
    ends = _quantile_function(torch.tensor([0.0, 1.0]).reshape(2, 1, 1).expand(2, 2, 1).clone(), table)
    torch.testing.assert_close(ends[0, :, 0], table[:, 0])
    torch.testing.assert_close(ends[1, :, 0], table[:, -1])


def test_overlapping_windows_are_a_partition_of_unity():
    from layerwise.progressive import _overlap_add, _windows
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_overlap_add(_windows(x), 12), x)  # windows cut from one image give it back
    # every window predicting its own constant c_ij: a pixel blends its block's (3/4) and the
    # neighbouring block's (1/4) along each axis, 9/16 + 3/16 + 3/16 + 1/16 in all
    c = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(1)).double()
    blended = _overlap_add(c.flatten(2).expand(1, 16, 36), 12)[0, 0]
    y, x = 5, 6  # row 5: lower row of block row 2 (3/4), next to block row 3 (1/4); column 6: likewise
    expected = (9 * c[0, 0, 2, 3] + 3 * c[0, 0, 3, 3] + 3 * c[0, 0, 2, 2] + c[0, 0, 3, 2]) / 16
    torch.testing.assert_close(blended[y, x], expected)


@pytest.mark.skipif(not (data_root() / "celeba" / "img_align_celeba").is_dir(), reason="CelebA not present")
def test_faces_have_no_block_grid_and_the_real_fine_band_energy():
    """A 32 px generator on 900 CelebA faces: neighbouring pixels differ across the borders of
    the 2 x 2 blocks the patch networks predict as much as within them, as in the real faces
    (networks predicting bare blocks, pixel shuffle, give 1.23 / 1.19 against the faces' 1.02 /
    1.01 here), and the finest Laplacian band has the faces' energy."""
    from convexgan.metrics import band_energy, block_structure
    faces = face_dataset("celeba", None, 32, 0.1, 1000).train
    generator = ProgressiveTrainer(layers=3, rank=16, n_patterns=4, n_patches=2000, max_iter=500).fit(faces)
    samples = generator.sample(len(faces), seed=0)
    for ratio, real_ratio in zip(block_structure(samples), block_structure(faces)):  # faces: uint8 (N, r, r, C)
        assert abs(ratio / real_ratio - 1) < 0.06
    assert abs(band_energy(samples)[0] / band_energy(faces)[0] - 1) < 0.15
