"""Image loading: real CIFAR-10 files, corrupt files skipped, clear errors."""
import logging

import numpy as np
import pytest
from PIL import Image

from convexgan.data import cifar10_binary, data_root, dataset_folder, image_files, load_images


def write_images(folder, count, size=(6, 5)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{k:03d}.png")


def test_corrupt_files_are_skipped_with_a_warning(tmp_path, caplog):
    write_images(tmp_path, 3)
    (tmp_path / "002b.jpg").write_bytes(b"not a jpeg at all")
    with caplog.at_level(logging.WARNING):
        images, kept = load_images(image_files(tmp_path))
    assert images.shape == (3, 5, 6, 3) and images.dtype == np.uint8 and len(kept) == 3
    assert "skipped 1 unreadable image" in caplog.text


def test_missing_empty_and_mixed_folders_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        image_files(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        image_files(tmp_path / "empty")
    write_images(tmp_path / "mixed", 2)
    write_images(tmp_path / "mixed2", 1, size=(4, 4))
    files = image_files(tmp_path / "mixed") + image_files(tmp_path / "mixed2")
    with pytest.raises(ValueError, match="different sizes"):
        load_images(files)


@pytest.mark.skipif(not (data_root() / "cifar10").is_dir(), reason="CIFAR-10 folder not present")
def test_cifar10_binary_reads_the_first_files_in_name_order():
    X, y = cifar10_binary(data_root() / "cifar10", per_class=5)
    assert X.shape == (10, 3072) and 0 <= X.min() and X.max() <= 1
    assert list(y) == [-1.0] * 5 + [1.0] * 5
    first, _ = load_images([data_root() / "cifar10" / "train" / "automobile" / "0000.jpg"])
    np.testing.assert_array_equal(X[5], first.reshape(-1) / 255.0)


def test_image_folders_are_decoded_once_then_read_from_the_cache(tmp_path, monkeypatch, caplog):
    import convexgan.data as data
    monkeypatch.setenv("CONVEXGAN_CACHE", str(tmp_path / "cache"))
    write_images(tmp_path / "faces", 4, size=(10, 12))
    first, names = data.load_image_folder(tmp_path / "faces", resolution=8, box=(1, 1, 9, 11))
    assert first.shape == (4, 8, 8, 3) and first.dtype == np.uint8 and names == [f"{k:03d}.png" for k in range(4)]
    assert len(list((tmp_path / "cache").glob("images-*.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache holds these images")
    monkeypatch.setattr(data, "load_images", no_decoding)
    cached, cached_names = data.load_image_folder(tmp_path / "faces", resolution=8, box=(1, 1, 9, 11))
    np.testing.assert_array_equal(cached, first)
    assert cached_names == names
    monkeypatch.undo()
    monkeypatch.setenv("CONVEXGAN_CACHE", str(tmp_path / "cache"))
    # another resolution, or a changed folder, is another entry; a damaged entry is decoded again
    assert data.load_image_folder(tmp_path / "faces", resolution=4)[0].shape == (4, 4, 4, 3)
    write_images(tmp_path / "faces", 5, size=(10, 12))
    assert data.load_image_folder(tmp_path / "faces", resolution=8, box=(1, 1, 9, 11))[0].shape[0] == 5
    for entry in (tmp_path / "cache").glob("images-*.npz"):
        entry.write_bytes(b"damaged")
    with caplog.at_level(logging.WARNING):
        again, _ = data.load_image_folder(tmp_path / "faces", resolution=8, box=(1, 1, 9, 11))
    assert again.shape == (5, 8, 8, 3) and "unreadable; decoding again" in caplog.text
    np.testing.assert_array_equal(again[:4], first)


def test_image_folder_layout_for_classifiers(tmp_path):
    from convexgan.data import labelled_images
    for split, count in (("train", 3), ("test", 2)):
        for name in ("cat", "dog"):
            write_images(tmp_path / split / name, count, size=(6, 6))
    data = labelled_images("folder", tmp_path, limit_per_class=2)
    assert data.X_train.shape == (4, 6, 6, 3) and data.classes == ("cat", "dog")
    assert list(data.y_train) == [0, 0, 1, 1] and data.X_test.shape == (4, 6, 6, 3)
    (tmp_path / "test" / "bird").mkdir()
    write_images(tmp_path / "test" / "bird", 1, size=(6, 6))
    with pytest.raises(ValueError, match="different classes"):
        labelled_images("folder", tmp_path)


def test_image_folder_resizes_other_sizes_and_keeps_labels_of_skipped_files(tmp_path, caplog):
    from convexgan.data import labelled_images
    for split in ("train", "test"):
        write_images(tmp_path / split / "cat", 2, size=(6, 6))
        write_images(tmp_path / split / "dog", 2, size=(9, 7))  # another size: resized to the first's
    (tmp_path / "train" / "cat" / "001.png").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING):
        data = labelled_images("folder", tmp_path)
    assert data.X_train.shape == (3, 6, 6, 3) and list(data.y_train) == [0, 1, 1]
    assert "skipping unreadable image" in caplog.text and data.X_test.shape == (4, 6, 6, 3)


def test_batched_resize_is_antialiased_and_groups_sizes():
    from convexgan.data import resize_array
    # white lines every third column shrunk 4x come out near-flat grey (85 on average) when the
    # filter averages; unfiltered bicubic samples alias them into stripes (standard deviation 74)
    lines = ((np.arange(40) % 3 == 0)[None, :].repeat(40, 0) * 255).astype(np.uint8)[None, ..., None]
    small = resize_array(lines, 10).astype(float)
    assert small.shape == (1, 10, 10, 1) and abs(small.mean() - 85) < 5 and small.std() < 15
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (300, 20, 20, 3), dtype=np.uint8)  # more than one chunk of 256
    one_by_one = np.concatenate([resize_array(image[None], 8) for image in batch])
    np.testing.assert_array_equal(resize_array(batch, 8), one_by_one)


def test_identity_split_holds_out_whole_identities():
    from convexgan.data import identity_split
    rng = np.random.default_rng(0)
    identities = np.concatenate([rng.integers(0, 40, 500), np.full(20, -1)])  # 20 images of unknown identity
    held = identity_split(identities, 0.1)
    assert not set(identities[held]) & set(identities[~held]) and -1 not in identities[held]
    # the last identity drawn crosses 10 %: without it the held-out share is below 10 %
    assert held.mean() >= 0.1 and held.mean() < 0.1 + np.bincount(identities[identities >= 0]).max() / len(identities)
    np.testing.assert_array_equal(identity_split(identities, 0.1), held)  # seeded


@pytest.mark.skipif(not (data_root() / "celeba" / "identity_CelebA.txt").is_file(), reason="CelebA not present")
def test_celeba_split_shares_no_identity(tmp_path, monkeypatch):
    from convexgan.data import face_dataset, identity_split, load_celeba
    monkeypatch.setenv("CONVEXGAN_CACHE", str(tmp_path))
    images, identities = load_celeba(data_root() / "celeba", resolution=8)
    assert (identities >= 0).all()
    held = identity_split(identities, 0.1)
    assert not set(identities[held]) & set(identities[~held]) and 0.1 <= held.mean() < 0.12
    data = face_dataset("celeba", data_root() / "celeba", resolution=8)
    np.testing.assert_array_equal(data.test, images[held])
    np.testing.assert_array_equal(data.train, images[~held])
    assert f"{len(set(identities[held]))} identities held out" in data.description


def test_data_root_is_the_variable_else_the_user_cache_never_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVEXGAN_DATA", str(tmp_path / "mine"))
    assert data_root() == tmp_path / "mine"
    monkeypatch.delenv("CONVEXGAN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache" / "convexgan" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "convexgan" / "data"
    monkeypatch.setenv("CONVEXGAN_DATA", "")  # set but empty: as if unset
    assert data_root() == tmp_path / "home" / ".cache" / "convexgan" / "data"


def test_dataset_folder_prefers_data_here(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVEXGAN_DATA", str(tmp_path / "shared"))
    monkeypatch.chdir(tmp_path)
    assert dataset_folder("cifar10") == tmp_path / "shared" / "cifar10"
    (tmp_path / "data" / "cifar10").mkdir(parents=True)
    assert dataset_folder("cifar10").resolve() == tmp_path / "data" / "cifar10"
    assert dataset_folder("cifar10", tmp_path / "given") == tmp_path / "given" / "cifar10"  # --data-root wins
    with pytest.raises(ValueError, match="unknown data set 'cifar100'.*celeba, olivetti, cifar10"):
        dataset_folder("cifar100")


def test_celeba_absent_falls_back_to_the_embedded_faces_and_says_how_to_point_at_it(monkeypatch, tmp_path, caplog):
    from convexgan.data import face_dataset
    monkeypatch.setenv("CONVEXGAN_DATA", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="convexgan.data"):
        data = face_dataset("celeba", resolution=8)
    assert data.description.startswith("lfw") and len(data.train) + len(data.test) == 100
    assert "CONVEXGAN_DATA" in caplog.text and str(tmp_path / "empty" / "celeba") in caplog.text
