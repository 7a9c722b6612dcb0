"""Layerwise convex classifier: export, labels, resume, errors."""
import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from convexgan.data import labelled_images
from layerwise.classifier import LayerwiseConvexClassifier, MirrorAverage


def small_digits():
    data = labelled_images("digits")
    return data.X_train[:300], data.y_train[:300], data.X_test[:100], data.y_test[:100]


def test_exported_sequential_predicts_the_trainers_labels_and_learns(tmp_path):
    X, y, X_test, y_test = small_digits()
    model = LayerwiseConvexClassifier(widths=(8, 8), n_patterns=(8, 4), max_iter=60, lam=1e-2)
    model.fit(X, y, X_test, y_test, checkpoint=tmp_path / "c.pt")
    network = model.to_torch()
    assert isinstance(network, torch.nn.Sequential)
    x = torch.from_numpy(X_test).permute(0, 3, 1, 2).float() / 255
    labels = model.classes_[network(x).argmax(1).numpy()]
    np.testing.assert_array_equal(labels, model.predict(X_test))
    # the last stage's recorded test accuracy is the exported network's
    assert model.stages_[-1]["test_accuracy"] == pytest.approx((labels == y_test).mean())
    assert model.score(X_test, y_test) > 0.5  # 10 classes: chance is 0.1
    assert [s["stage"] for s in model.stages_] == [1, 2]
    for s in model.stages_:  # the recorded certificate is a certificate: a gap consistent with its bounds
        cert = s["certificate"]
        assert cert["dual"] <= cert["primal"]
        assert cert["gap"] == pytest.approx((cert["primal"] - cert["dual"]) / cert["primal"], rel=1e-9)


def test_mirror_tta_averages_each_image_with_its_mirror_and_leaves_training_alone():
    X, y, X_test, y_test = small_digits()
    params = dict(widths=(8, 8), n_patterns=(8, 4), max_iter=60, lam=1e-2)
    plain = LayerwiseConvexClassifier(**params).fit(X, y)
    mirrored = LayerwiseConvexClassifier(**params, mirror_tta=True).fit(X, y, X_test, y_test)
    network = mirrored.to_torch()
    assert isinstance(network, MirrorAverage)
    for name, value in plain.to_torch().state_dict().items():  # the same blocks: training is unchanged
        torch.testing.assert_close(network.network.state_dict()[name], value)
    scores = mirrored.decision_function(X_test)
    np.testing.assert_allclose(mirrored.decision_function(X_test[:, :, ::-1]), scores, rtol=1e-5, atol=1e-5)
    averaged = (plain.decision_function(X_test) + plain.decision_function(X_test[:, :, ::-1])) / 2
    np.testing.assert_allclose(scores, averaged, rtol=1e-5, atol=1e-5)
    assert mirrored.stages_[-1]["test_accuracy"] == pytest.approx(mirrored.score(X_test, y_test))


def test_converged_stages_are_certified_to_the_tolerance():
    X, y, _, _ = small_digits()
    model = LayerwiseConvexClassifier(widths=(6, 6), n_patterns=(6, 4), max_iter=2000, tol=1e-2).fit(X, y)
    assert all(0 < s["certificate"]["gap"] <= 1e-2 for s in model.stages_)


def test_tables_are_one_pixel_images_and_layouts_are_checked():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 5))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)  # not linearly separable
    model = LayerwiseConvexClassifier(widths=(16, 16), max_iter=300).fit(X, y)
    assert model.n_features_in_ == 5 and model.score(X, y) > 0.8
    np.testing.assert_array_equal(model.predict(X), model.predict(X[:, :, None, None].astype(np.float32)))
    images = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    from convexgan.validation import as_images
    torch.testing.assert_close(as_images(images), torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    torch.testing.assert_close(as_images(torch.from_numpy(images)), as_images(images))  # uint8 tensors alike
    with pytest.raises(ValueError, match="looks channel-last"):
        as_images(images.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="real numbers"):
        as_images(np.zeros((2, 3, 4, 4), dtype=complex))
    with pytest.raises(ValueError, match="X has 4 features, but LayerwiseConvexClassifier is expecting 5"):
        model.predict(X[:, :4])


def test_a_killed_run_resumes(tmp_path):
    X, y, _, _ = small_digits()
    checkpoint = tmp_path / "c.pt"

    def kill(record):
        if record["stage"] == 1:
            raise KeyboardInterrupt

    params = dict(widths=(6, 6), n_patterns=(6, 4), max_iter=30, lam=1e-2)
    with pytest.raises(KeyboardInterrupt):
        LayerwiseConvexClassifier(**params).fit(X, y, checkpoint=checkpoint, on_stage=kill)
    seen = []
    resumed = LayerwiseConvexClassifier(**params).fit(X, y, checkpoint=checkpoint, on_stage=seen.append)
    assert [r["stage"] for r in seen] == [2]
    straight = LayerwiseConvexClassifier(**params).fit(X, y)
    np.testing.assert_array_equal(resumed.decision_function(X[:50]), straight.decision_function(X[:50]))
    with pytest.raises(ValueError, match="other data or parameters"):
        LayerwiseConvexClassifier(widths=(5, 6), n_patterns=(6, 4), max_iter=30).fit(X, y, checkpoint=checkpoint)


def test_checkpoints_load_without_running_code(tmp_path):
    """A file of the old format (whole pickled modules) is refused with the reason, not unpickled."""
    X, y, _, _ = small_digits()
    old = tmp_path / "old.pt"
    torch.save({"layers": [torch.nn.Flatten()], "stages": [], "fingerprint": {}}, old)
    with pytest.raises(ValueError, match="holds more than tensors.*torch.nn.modules.flatten.Flatten"):
        LayerwiseConvexClassifier(widths=(6,), max_iter=5).fit(X, y, checkpoint=old)
    from layerwise.progressive import load_checkpoint
    with pytest.raises(ValueError, match="holds more than tensors"):
        load_checkpoint(old)


def test_bad_input_gives_clear_errors(tmp_path):
    X, y, _, _ = small_digits()
    with pytest.raises(ValueError, match="uint8 images"):
        LayerwiseConvexClassifier().fit(X[:, :, :, 0], y)
    with pytest.raises(ValueError, match="one label per image"):
        LayerwiseConvexClassifier().fit(X, y[:-1])
    with pytest.raises(ValueError, match="one value per stage"):
        LayerwiseConvexClassifier(widths=(4, 4), n_patterns=(4,)).fit(X, y)
    with pytest.raises(ValueError, match="mirror_tta must be True or False"):
        LayerwiseConvexClassifier(mirror_tta="yes").fit(X, y)
    with pytest.raises(TypeError, match="wraps a torch.nn.Module"):
        MirrorAverage(lambda x: x)
    with pytest.raises(ValueError, match="unknown dataset"):
        labelled_images("mnist")
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no ImageFolder split with images .* one subfolder per class"):
        labelled_images("folder", tmp_path)
    with pytest.raises(ValueError, match="not fitted"):
        LayerwiseConvexClassifier().predict(X)


def test_digits_resized_to_mnist_resolution():
    small, large = labelled_images("digits"), labelled_images("digits", size=28)
    assert large.X_train.shape == (len(small.X_train), 28, 28, 1) and large.X_train.dtype == np.uint8
    np.testing.assert_array_equal(large.y_test, small.y_test)
    # bicubic upsampling keeps each image's mean brightness to within a grey level or two
    np.testing.assert_allclose(large.X_test.mean((1, 2, 3)), small.X_test.mean((1, 2, 3)), atol=4)
    with pytest.raises(ValueError, match="size must be an integer"):
        labelled_images("digits", size=2)


def test_resize_images_rejects_bad_input():
    from convexgan.data import resize_images
    with pytest.raises(ValueError, match="uint8"):
        resize_images(np.zeros((2, 8, 8, 1)), 16)
    with pytest.raises(ValueError, match="positive integer"):
        resize_images(np.zeros((2, 8, 8, 1), np.uint8), 0)


def test_a_block_stopped_by_max_iter_warns_with_its_gap():
    X, y, _, _ = small_digits()
    with pytest.warns(ConvergenceWarning, match="block 1 stopped after max_iter=5") as caught:
        model = LayerwiseConvexClassifier(widths=(6, 6), n_patterns=(6, 4), max_iter=5, tol=1e-8).fit(X, y)
    gaps = [s["certificate"]["gap"] for s in model.stages_]
    assert len([w for w in caught if issubclass(w.category, ConvergenceWarning)]) == 2 and min(gaps) > 1e-8
