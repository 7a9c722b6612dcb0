"""Image loading shared by scripts, benchmarks and tests.

Real data sets are read by path, never copied into the project. ``data_root()`` is
``$CONVEXGAN_DATA`` when set, else ``../shared/data`` beside the checkout.
"""
import hashlib
import logging
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .checkpoints import atomic_write

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


def data_root():
    return Path(os.environ.get("CONVEXGAN_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def image_files(folder):
    """Sorted image files of a folder (by file name); ValueError if it is missing or has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {folder} does not exist: check the path (or set CONVEXGAN_DATA).")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"image folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return files


def load_images(files, mode="RGB", transform=None, progress=False):
    """Decode files into one uint8 array (N, H, W, C); corrupt files are skipped with a warning.

    ``transform`` (PIL image -> PIL image, say a crop and resize) is applied after decoding.
    All images must share one size. Returns ``(images, kept_files)``.
    """
    images, kept, skipped = [], [], 0
    for path in tqdm(files, desc="decoding images", unit="img", disable=not progress):
        try:
            with Image.open(path) as image:
                image = image.convert(mode)
                images.append(np.asarray(transform(image) if transform else image))
            kept.append(path)
        except (OSError, UnidentifiedImageError) as err:
            skipped += 1
            log.warning("skipping unreadable image %s: %s", path, err)
    if skipped:
        log.warning("skipped %d unreadable image(s) of %d", skipped, len(files))
    if not images:
        raise ValueError(f"none of the {len(files)} image files could be decoded.")
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise ValueError(f"images have different sizes {sorted(shapes)[:3]}...: resize them first.")
    array = np.stack(images)
    return (array[..., None] if array.ndim == 3 else array), kept


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cifar10_binary(root, classes=("airplane", "automobile"), per_class=500, split="train"):
    """The first ``per_class`` images (file-name order) of each class of a CIFAR-10 ImageFolder,
    labelled -1 for the first half of ``classes`` and +1 for the rest.

    Returns X (n, 3072) float64 in [0, 1] (channel-last pixels flattened) and y (n,) in {-1, +1}.
    """
    blocks, labels = [], []
    for k, name in enumerate(classes):
        images, _ = load_images(image_files(Path(root) / split / name)[:per_class])
        blocks.append(images.reshape(len(images), -1) / 255.0)
        labels.append(np.full(len(images), -1.0 if k < len(classes) // 2 else 1.0))
    return np.concatenate(blocks), np.concatenate(labels)


# -- face data sets for the convex GAN ------------------------------------------------------------
CELEBA_BOX = (19, 39, 159, 179)  # the standard 140 x 140 face crop of the 178 x 218 aligned images


def cache_dir():
    """``$CONVEXGAN_CACHE``, else ``~/.cache/convexgan``: decoded, resized image arrays."""
    return Path(os.environ.get("CONVEXGAN_CACHE", Path.home() / ".cache" / "convexgan"))


def _cached(key, build):
    """``build()`` (a uint8 array), memoized on disk under a hash of ``key``; written atomically."""
    path = cache_dir() / f"images-{hashlib.sha256(repr(key).encode()).hexdigest()[:20]}.npy"
    if path.is_file():
        try:
            return np.load(path)
        except (OSError, ValueError):
            log.warning("cache file %s is unreadable; decoding again", path)
    array = build()
    atomic_write(path, lambda handle: np.save(handle, array))
    return array


def _resize(image, resolution, box=None):
    image = image.crop(box) if box else image
    return image.resize((resolution, resolution), Image.Resampling.LANCZOS)


def load_image_folder(folder, resolution=64, box=None, mode="RGB", limit=None):
    """Every image of ``folder`` cropped to ``box`` (left, top, right, bottom; None: whole image)
    and resized to ``resolution`` squared: uint8 (N, r, r, C), C = 3 for RGB, 1 for "L".
    Decoded once, then read from the cache (``cache_dir()``); corrupt files skipped with a warning."""
    files = image_files(folder)[:limit]
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = ("folder", str(Path(folder).resolve()), stats, resolution, box, mode)
    return _cached(key, lambda: load_images(files, mode, lambda im: _resize(im, resolution, box), progress=True)[0])


def load_celeba(root, resolution=64, limit=None):
    """CelebA aligned faces from ``root/img_align_celeba`` (``root`` may also be that folder
    itself), the standard 140 x 140 crop at (19, 39) resized: uint8 (N, r, r, 3)."""
    root = Path(root)
    folder = root if root.name == "img_align_celeba" else root / "img_align_celeba"
    if not folder.is_dir():
        raise ValueError(f"no CelebA folder at {folder}: pass the folder that holds img_align_celeba/.")
    return load_image_folder(folder, resolution, CELEBA_BOX, "RGB", limit)


def load_olivetti(path, resolution=64):
    """The 400 Olivetti faces (Roweis' ``olivettifaces.mat``), resized: uint8 (400, r, r, 1)."""
    from scipy.io import loadmat
    path = Path(path)
    if path.is_dir():
        path = path / "olivettifaces.mat"
    if not path.is_file():
        raise ValueError(f"no Olivetti file at {path}: pass olivettifaces.mat or its folder.")
    faces = loadmat(path)["faces"].T.reshape(-1, 64, 64).transpose(0, 2, 1)  # column-major images
    return _resize_array(faces, resolution)


def load_lfw_subset(resolution=64):
    """The 100 LFW faces that ship with scikit-image (25 x 25 grey), resized: uint8 (100, r, r, 1).
    Small, but real and offline: the default when no other face set is at hand."""
    from skimage.data import lfw_subset
    faces = lfw_subset()[:100]  # the first 100 are faces, the next 100 are not
    return _resize_array(np.round(faces * 255).astype(np.uint8), resolution)


def _resize_array(images, resolution):
    """uint8 (N, h, w) grey images resized to (N, r, r, 1)."""
    return np.stack([np.asarray(_resize(Image.fromarray(im), resolution)) for im in images])[..., None]


class FaceData(NamedTuple):
    """uint8 training and held-out images (N, r, r, C), and what they are."""
    train: np.ndarray
    test: np.ndarray
    description: str


def face_dataset(name, root=None, resolution=64, holdout=0.1, limit=None):
    """A face set for the convex GAN, split in file order: the last ``holdout`` fraction is held out.

    ``name``: "celeba" (``root`` holds ``img_align_celeba/``; default ``data/celeba``, then
    ``data_root()/celeba``, then, with a warning, the LFW faces of scikit-image), "olivetti"
    (``olivettifaces.mat`` or its folder; default ``data_root()/olivetti``), "folder" (any image
    folder, resized whole) or "lfw"."""
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be a fraction in [0, 1), got {holdout}.")
    if name == "celeba" and root is None:
        found = [p for p in (Path("data/celeba"), data_root() / "celeba") if (p / "img_align_celeba").is_dir()]
        if not found:
            log.warning("CelebA not found (data/celeba/img_align_celeba, %s/celeba/img_align_celeba): training on "
                        "the 100 LFW faces that ship with scikit-image instead. Pass --data-root for CelebA.", data_root())
            name = "lfw"
        root = found[0] if found else None
    if name == "celeba":
        images = load_celeba(root, resolution, limit)
    elif name == "olivetti":
        images = load_olivetti(root if root is not None else data_root() / "olivetti", resolution)[:limit]
    elif name == "folder":
        if root is None:
            raise ValueError("dataset 'folder' needs a folder of images: pass --data-root.")
        images = load_image_folder(root, resolution, limit=limit)
    elif name == "lfw":
        images = load_lfw_subset(resolution)[:limit]
    else:
        raise ValueError(f"unknown face dataset {name!r}: use celeba, olivetti, folder or lfw.")
    n_test = int(round(holdout * len(images)))
    if len(images) - n_test < 2:
        raise ValueError(f"{name} has {len(images)} images; at least 2 must remain for training.")
    where = f" at {root}" if root is not None else ""
    return FaceData(images[:len(images) - n_test], images[len(images) - n_test:],
                    f"{name}{where} ({len(images)} images at {resolution} px)")


# -- labelled image sets for the layerwise classifiers --------------------------------------------
class LabelledImages(NamedTuple):
    """uint8 images (N, H, W, C) and integer labels (N,) for train and test, and class names."""
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: tuple


def _image_classes(split_folder, limit_per_class=None, size=None):
    """An ImageFolder split (one subfolder per class): uint8 (N, H, W, C), labels, class names.
    Images of another size than the first one (or ``size``) are resized; grey stays one channel."""
    split_folder = Path(split_folder)
    if not split_folder.is_dir():
        raise ValueError(f"no folder {split_folder}: an ImageFolder layout needs train/ and test/ with one "
                         "subfolder per class.")
    classes = sorted(p.name for p in split_folder.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{split_folder} has no class subfolders (ImageFolder layout: {split_folder}/<class>/*.png).")
    files = {name: image_files(split_folder / name)[:limit_per_class] for name in classes}
    with Image.open(files[classes[0]][0]) as first:
        mode = "L" if first.mode in ("L", "1", "I", "I;16") else "RGB"
        size = size or first.size
    resize = lambda image: image if image.size == tuple(size) else image.resize(tuple(size), Image.Resampling.BILINEAR)  # noqa: E731
    blocks, labels = [], []
    for k, name in enumerate(classes):
        images, _ = load_images(files[name], mode, resize)
        blocks.append(images)
        labels.append(np.full(len(images), k))
    return np.concatenate(blocks), np.concatenate(labels), tuple(classes)


def _torchvision_cifar10(root, train, limit_per_class):
    from torchvision.datasets import CIFAR10
    data = CIFAR10(root, train=train, download=False)
    X, y = np.asarray(data.data), np.asarray(data.targets)
    if limit_per_class:
        keep = np.concatenate([np.flatnonzero(y == k)[:limit_per_class] for k in range(10)])
        X, y = X[keep], y[keep]
    return X, y


def resize_images(X, size):
    """uint8 images (N, H, W, C) resized to (N, size, size, C), bilinear (PIL, per image)."""
    if X.dtype != np.uint8 or X.ndim != 4 or X.shape[3] not in (1, 3):
        raise ValueError(f"images must be uint8 (N, H, W, 1 or 3), got {X.dtype} of shape {X.shape}.")
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer number of pixels, got {size!r}.")
    if X.shape[1:3] == (size, size):
        return X
    squeeze = X.shape[3] == 1
    out = [np.asarray(Image.fromarray(x[..., 0] if squeeze else x).resize((size, size), Image.Resampling.BILINEAR))
           for x in X]
    out = np.stack(out)
    return out[..., None] if squeeze else out


def labelled_images(name, root=None, limit_per_class=None, test_limit_per_class=None, seed=0, size=None):
    """A classification set as ``LabelledImages``.

    ``name``: "digits" (scikit-learn's 1,797 8 x 8 grey digits, embedded; a stratified 80/20 split
    by ``seed``), "cifar10" (``root`` an ImageFolder layout ``train/<class>/``, ``test/<class>/``,
    default ``data_root()/cifar10``, or a torchvision ``CIFAR10`` root holding
    ``cifar-10-batches-py``) or "folder" (any ImageFolder layout with train/ and test/).
    ``limit_per_class`` keeps the first images of every class (file-name order); ``size`` resizes
    every image to size x size (e.g. 28 for the digits at MNIST's resolution)."""
    if size is not None:
        if int(size) != size or size < 4:
            raise ValueError(f"size must be an integer of at least 4 pixels, got {size!r}.")
        data = labelled_images(name, root, limit_per_class, test_limit_per_class, seed)
        return data._replace(X_train=resize_images(data.X_train, size), X_test=resize_images(data.X_test, size))
    if name == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        digits = load_digits()
        X = np.round(digits.images * 255 / 16).astype(np.uint8)[..., None]
        X_train, X_test, y_train, y_test = train_test_split(X, digits.target, test_size=0.2, random_state=seed,
                                                            stratify=digits.target)
        return LabelledImages(X_train, y_train, X_test, y_test, tuple(str(k) for k in range(10)))
    if name not in ("cifar10", "folder"):
        raise ValueError(f"unknown dataset {name!r}: use digits, cifar10 or folder.")
    if root is None:
        if name == "folder":
            raise ValueError("dataset 'folder' needs an ImageFolder root: pass --data-root.")
        root = data_root() / "cifar10"
    root = Path(root)
    if name == "cifar10" and (root / "cifar-10-batches-py").is_dir():
        X_train, y_train = _torchvision_cifar10(root, True, limit_per_class)
        X_test, y_test = _torchvision_cifar10(root, False, test_limit_per_class)
        return LabelledImages(X_train, y_train, X_test, y_test, CIFAR10_CLASSES)
    X_train, y_train, classes = _image_classes(root / "train", limit_per_class)
    X_test, y_test, test_classes = _image_classes(root / "test", test_limit_per_class, X_train.shape[1:3][::-1])
    if test_classes != classes:
        raise ValueError(f"train/ and test/ of {root} have different classes: {classes} vs {test_classes}.")
    if X_test.shape[3] != X_train.shape[3]:
        raise ValueError(f"train images have {X_train.shape[3]} channels, test images {X_test.shape[3]}.")
    if len(classes) < 2:
        raise ValueError(f"{root} has a single class {classes}: a classifier needs at least two.")
    return LabelledImages(X_train, y_train, X_test, y_test, classes)
