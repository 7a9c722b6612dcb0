"""Image loading shared by scripts, benchmarks and tests.

Real data sets are read by path, never copied into the project: from an explicit root (the scripts'
``--data-root``), else from ``data_root()``.
"""
import hashlib
import logging
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torchvision.datasets.folder import find_classes, make_dataset
from torchcodec.decoders import decode_image
from torchvision.transforms.v2 import functional as F
from tqdm.auto import tqdm

from .checkpoints import atomic_write

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")  # what torchcodec's decode_image reads
DATASETS = ("celeba", "olivetti", "cifar10")  # the data sets found by name (dataset_folder)


def data_root():
    """The folder that holds the data sets (``celeba/``, ``olivetti/``, ``cifar10/``).

    Returns
    -------
    pathlib.Path
        ``$CONVEXGAN_DATA`` when set, else the user cache ``$XDG_CACHE_HOME/convexgan/data``
        (``~/.cache/convexgan/data``). It need not exist: the loaders say what is missing. The
        installed package's own location is never used, so a wheel finds the same data as a checkout.
    """
    if os.environ.get("CONVEXGAN_DATA"):
        return Path(os.environ["CONVEXGAN_DATA"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "convexgan" / "data"


def dataset_folder(name, data_root_override=None):
    """Where a data set is looked for.

    Parameters
    ----------
    name : str
        The data set's folder name: "celeba", "olivetti" or "cifar10".
    data_root_override : str or path-like, optional
        A folder holding the data sets (the scripts' ``--data-root``); it wins when given.

    Returns
    -------
    pathlib.Path
        ``data_root_override / name`` when given, else ``data/<name>`` of the current folder when
        it exists, else ``data_root() / name``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}: the folders looked for are {', '.join(DATASETS)}.")
    if data_root_override is not None:
        return Path(data_root_override) / name
    local = Path("data") / name
    return local if local.is_dir() else data_root() / name


def image_files(folder):
    """Sorted image files of a folder (by file name); ValueError if it is missing or has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {folder} does not exist: check the path (or set CONVEXGAN_DATA).")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}; convert other "
                         "formats, say BMP or TIFF, to PNG).")
    return files


UNREADABLE = (OSError, RuntimeError, ValueError)  # missing; corrupt or truncated; not an image format


def _decode_or_none(path, mode="UNCHANGED"):
    """uint8 tensor (C, H, W) decoded by torchcodec (mode "RGB", "GRAY" or "UNCHANGED"), or None
    with a warning if the file cannot be read."""
    try:
        return decode_image(path, mode=mode)
    except UNREADABLE as err:
        log.warning("skipping unreadable image %s: %s", path, str(err).splitlines()[0])
        return None


def resize(images, size):
    """uint8 tensor (N, C, H, W) resized to (N, C, h, w), ``size`` = h = w or (h, w): bicubic with
    antialiasing, in batches (256 images per call bounds the float buffers torchvision allocates)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == size:
        return images
    return torch.cat([F.resize(chunk, list(size), interpolation=F.InterpolationMode.BICUBIC, antialias=True)
                      for chunk in images.split(256)])


def resize_array(images, size):
    """uint8 NumPy (N, H, W, C) resized to (N, h, w, C); see ``resize``."""
    return resize(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2), size).permute(0, 2, 3, 1).numpy()


def load_images(files, mode="RGB", size=None, box=None, progress=False):
    """Decode files into one uint8 array (N, H, W, C); corrupt files are skipped with a warning.

    ``box`` (left, top, right, bottom) crops each image, then ``size`` (h = w, or (h, w)) resizes
    it (see ``resize``; one batch per distinct input size). Without ``size`` all images must share
    one size. Returns ``(images, kept_files)``.
    """
    images, kept = [], []
    for path in tqdm(files, desc="decoding images", unit="img", disable=not progress):
        image = _decode_or_none(path, "RGB" if mode == "RGB" else "GRAY")
        if image is not None:
            images.append(image[:, box[1]:box[3], box[0]:box[2]] if box else image)
            kept.append(path)
    if len(kept) < len(files):
        log.warning("skipped %d unreadable image(s) of %d", len(files) - len(kept), len(files))
    if not images:
        raise ValueError(f"none of the {len(files)} image files could be decoded.")
    shapes = sorted({tuple(image.shape) for image in images})
    if size is None and len(shapes) > 1:
        raise ValueError(f"images have different sizes {shapes[:3]}...: resize them first.")
    size = shapes[0][1:] if size is None else (size, size) if isinstance(size, int) else tuple(size)
    out = torch.empty(len(images), images[0].shape[0], *size, dtype=torch.uint8)
    for shape in shapes:
        where = [k for k, image in enumerate(images) if tuple(image.shape) == shape]
        batch = torch.stack([images[k] for k in where])
        out[where] = batch if size is None else resize(batch, size)
    return out.permute(0, 2, 3, 1).numpy(), kept


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
    """``build()`` = (uint8 images, file names), memoized on disk under a hash of ``key``;
    written atomically."""
    path = cache_dir() / f"images-{hashlib.sha256(repr(key).encode()).hexdigest()[:20]}.npz"
    if path.is_file():
        try:
            with np.load(path) as stored:
                return stored["images"], list(stored["names"])
        except (OSError, ValueError, KeyError):
            log.warning("cache file %s is unreadable; decoding again", path)
    images, names = build()
    atomic_write(path, lambda handle: np.savez(handle, images=images, names=np.array(names, dtype=str)))
    return images, names


def load_image_folder(folder, resolution=64, box=None, mode="RGB", limit=None):
    """Every image of ``folder`` cropped to ``box`` (left, top, right, bottom; None: whole image)
    and resized to ``resolution`` squared. Decoded once, then read from the cache (``cache_dir()``);
    corrupt files skipped with a warning.

    Returns ``(images, names)``: uint8 (N, r, r, C), C = 3 for "RGB", 1 for "L"; the N file names.
    """
    files = image_files(folder)[:limit]
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = ("folder", str(Path(folder).resolve()), stats, resolution, box, mode, "torchvision bicubic")

    def build():
        images, kept = load_images(files, mode, resolution, box, progress=True)
        return images, [path.name for path in kept]
    return _cached(key, build)


def load_celeba(root, resolution=64, limit=None):
    """CelebA aligned faces from ``root/img_align_celeba`` (``root`` may also be that folder
    itself), the standard 140 x 140 crop at (19, 39) resized.

    Returns ``(images, identities)``: uint8 (N, r, r, 3), and (N,) int identities from
    ``identity_CelebA.txt`` beside ``img_align_celeba/`` (-1 for files it does not list), or None
    when that file is absent."""
    root = Path(root)
    folder = root if root.name == "img_align_celeba" else root / "img_align_celeba"
    if not folder.is_dir():
        raise ValueError(f"no CelebA folder at {folder}: pass the folder that holds img_align_celeba/.")
    images, names = load_image_folder(folder, resolution, CELEBA_BOX, "RGB", limit)
    table = folder.parent / "identity_CelebA.txt"
    if not table.is_file():
        return images, None
    identity = dict(line.split() for line in table.read_text().splitlines() if line.strip())
    return images, np.array([int(identity.get(name, -1)) for name in names])


def identity_split(identities, holdout, seed=0):
    """Held-out mask (N,) bool: whole identities, drawn in a seeded random order until at least
    ``holdout`` of the images are held out. Images of unknown identity (-1) always train."""
    identities = np.asarray(identities)
    known, counts = np.unique(identities[identities >= 0], return_counts=True)
    order = np.random.default_rng(seed).permutation(len(known))
    taken = np.cumsum(counts[order]) - counts[order] < holdout * len(identities)  # count before adding < target
    return np.isin(identities, known[order[taken]])


def load_olivetti(path, resolution=64):
    """The 400 Olivetti faces (Roweis' ``olivettifaces.mat``), resized: uint8 (400, r, r, 1)."""
    from scipy.io import loadmat
    path = Path(path)
    if path.is_dir():
        path = path / "olivettifaces.mat"
    if not path.is_file():
        raise ValueError(f"no Olivetti file at {path}: pass olivettifaces.mat or its folder.")
    faces = loadmat(path)["faces"].T.reshape(-1, 64, 64).transpose(0, 2, 1)  # column-major images
    return resize_array(faces[..., None], resolution)


def load_lfw_subset(resolution=64):
    """The 100 LFW faces that ship with scikit-image (25 x 25 grey), resized: uint8 (100, r, r, 1).
    Small, but real and offline: the default when no other face set is at hand."""
    from skimage.data import lfw_subset
    faces = lfw_subset()[:100]  # the first 100 are faces, the next 100 are not
    return resize_array(np.round(faces * 255).astype(np.uint8)[..., None], resolution)


class FaceData(NamedTuple):
    """A face set split into training and held-out images.

    Parameters
    ----------
    train : ndarray of uint8, shape (N, r, r, C)
        The training images.
    test : ndarray of uint8, shape (M, r, r, C)
        The held-out images (whole identities where they are known).
    description : str
        What they are, the split included.
    """
    train: np.ndarray
    test: np.ndarray
    description: str


def face_dataset(name, root=None, resolution=64, holdout=0.1, limit=None):
    """A face set for the convex GAN, with about ``holdout`` of it held out.

    Whole identities are held out where they are known (CelebA with its ``identity_CelebA.txt``;
    Olivetti, 10 images per person in order), so no person is on both sides; otherwise the last
    images in file order.

    Parameters
    ----------
    name : {"celeba", "olivetti", "folder", "lfw"}
        "celeba": ``root`` holds ``img_align_celeba/`` (default ``dataset_folder("celeba")``, else,
        with a warning, the LFW faces of scikit-image); "olivetti": ``olivettifaces.mat`` or its
        folder (default ``dataset_folder("olivetti")``); "folder": any image folder, resized whole;
        "lfw": the 100 LFW faces that ship with scikit-image.
    root : str or path-like, optional
        Where the images are.
    resolution : int, default 64
        Side of the square images, in pixels.
    holdout : float, default 0.1
        The fraction held out, in [0, 1).
    limit : int, optional
        Use at most this many images.

    Returns
    -------
    FaceData
        The training and held-out images and their description.
    """
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be a fraction in [0, 1), got {holdout}.")
    if name == "celeba" and root is None:
        root = dataset_folder("celeba")
        if not (root / "img_align_celeba").is_dir():
            log.warning("CelebA not found (%s/img_align_celeba): training on the 100 LFW faces that ship with "
                        "scikit-image instead. Pass --data-root, or set CONVEXGAN_DATA to the folder holding "
                        "celeba/.", root)
            name, root = "lfw", None
    identities = None
    if name == "celeba":
        images, identities = load_celeba(root, resolution, limit)
    elif name == "olivetti":
        images = load_olivetti(root if root is not None else dataset_folder("olivetti"), resolution)[:limit]
        identities = np.arange(len(images)) // 10
    elif name == "folder":
        if root is None:
            raise ValueError("dataset 'folder' needs a folder of images: pass --data-root.")
        images, _ = load_image_folder(root, resolution, limit=limit)
    elif name == "lfw":
        images = load_lfw_subset(resolution)[:limit]
    else:
        raise ValueError(f"unknown face dataset {name!r}: use celeba, olivetti, folder or lfw.")
    if identities is not None and holdout > 0:
        held = identity_split(identities, holdout)
        split = f"{len(np.unique(identities[held]))} identities held out"
    else:
        held = np.arange(len(images)) >= len(images) - int(round(holdout * len(images)))
        split = "held out in file order" + (": no identities known" if holdout > 0 else "")
    if (~held).sum() < 2:
        raise ValueError(f"{name} has {len(images)} images; at least 2 must remain for training.")
    where = f" at {root}" if root is not None else ""
    log.info("%s: %d training and %d held-out images, %s", name, (~held).sum(), held.sum(), split)
    return FaceData(images[~held], images[held], f"{name}{where} ({len(images)} images at {resolution} px, {split})")


# -- labelled image sets for the layerwise classifiers --------------------------------------------
class LabelledImages(NamedTuple):
    """A classification set: images and labels for training and test, and the class names.

    Parameters
    ----------
    X_train : ndarray of uint8, shape (N, H, W, C)
        Training images.
    y_train : ndarray of int, shape (N,)
        Their labels, indices into ``classes``.
    X_test : ndarray of uint8, shape (M, H, W, C)
        Test images.
    y_test : ndarray of int, shape (M,)
        Their labels.
    classes : tuple of str
        The class names.
    """
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: tuple


def _image_classes(split_folder, limit_per_class=None, size=None):
    """An ImageFolder split (one subfolder per class, found by torchvision): uint8 (N, H, W, C),
    labels, class names. Images of another size than ``size`` (h, w) (default: the first image's)
    are resized; grey images stay one channel."""
    try:
        classes, class_to_index = find_classes(split_folder)
        samples = make_dataset(split_folder, class_to_index, extensions=IMAGE_SUFFIXES)
    except FileNotFoundError as err:
        raise ValueError(f"{split_folder} is no ImageFolder split with images ({err}). The layout is train/ and "
                         f"test/, each with one subfolder per class holding images ({', '.join(IMAGE_SUFFIXES)}).") from err
    labels = np.array([label for _, label in samples])
    keep = np.concatenate([np.flatnonzero(labels == k)[:limit_per_class] for k in range(len(classes))])
    files = [samples[k][0] for k in keep]
    first = next((image for image in map(_decode_or_none, files) if image is not None), None)
    if first is None:
        raise ValueError(f"none of the {len(files)} images under {split_folder} could be decoded.")
    images, kept = load_images(files, "L" if first.shape[0] <= 2 else "RGB", size or tuple(first.shape[1:]))
    if len(kept) < len(files):
        kept = set(kept)
        keep = np.array([k for k, path in zip(keep, files) if path in kept])
    return images, labels[keep], tuple(classes)


def _torchvision_cifar10(root, train, limit_per_class):
    from torchvision.datasets import CIFAR10
    data = CIFAR10(root, train=train, download=False)
    X, y = np.asarray(data.data), np.asarray(data.targets)
    if limit_per_class:
        keep = np.concatenate([np.flatnonzero(y == k)[:limit_per_class] for k in range(10)])
        X, y = X[keep], y[keep]
    return X, y


def resize_images(X, size):
    """uint8 images (N, H, W, C) resized to (N, size, size, C); see ``resize``."""
    if X.dtype != np.uint8 or X.ndim != 4 or X.shape[3] not in (1, 3):
        raise ValueError(f"images must be uint8 (N, H, W, 1 or 3), got {X.dtype} of shape {X.shape}.")
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer number of pixels, got {size!r}.")
    return resize_array(X, int(size))


def labelled_images(name, root=None, limit_per_class=None, test_limit_per_class=None, seed=0, size=None):
    """A classification set for the layerwise classifiers.

    Parameters
    ----------
    name : {"digits", "cifar10", "folder"}
        "digits": scikit-learn's 1,797 8 x 8 grey digits, embedded, split 80/20 (stratified, by
        ``seed``); "cifar10": ``root`` an ImageFolder layout ``train/<class>/``, ``test/<class>/``
        (default ``dataset_folder("cifar10")``) or a torchvision ``CIFAR10`` root holding
        ``cifar-10-batches-py``; "folder": any ImageFolder layout with train/ and test/.
    root : str or path-like, optional
        Where the images are.
    limit_per_class : int, optional
        Keep the first training images of every class (file-name order).
    test_limit_per_class : int, optional
        The same for the test images.
    seed : int, default 0
        The digits' split.
    size : int, optional
        Resize every image to size x size (e.g. 28 for the digits at MNIST's resolution).

    Returns
    -------
    LabelledImages
        The images, labels and class names.
    """
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
        root = dataset_folder("cifar10")
    root = Path(root)
    if name == "cifar10" and (root / "cifar-10-batches-py").is_dir():
        X_train, y_train = _torchvision_cifar10(root, True, limit_per_class)
        X_test, y_test = _torchvision_cifar10(root, False, test_limit_per_class)
        return LabelledImages(X_train, y_train, X_test, y_test, CIFAR10_CLASSES)
    X_train, y_train, classes = _image_classes(root / "train", limit_per_class)
    X_test, y_test, test_classes = _image_classes(root / "test", test_limit_per_class, X_train.shape[1:3])
    if test_classes != classes:
        raise ValueError(f"train/ and test/ of {root} have different classes: {classes} vs {test_classes}.")
    if X_test.shape[3] != X_train.shape[3]:
        raise ValueError(f"train images have {X_train.shape[3]} channels, test images {X_test.shape[3]}.")
    if len(classes) < 2:
        raise ValueError(f"{root} has a single class {classes}: a classifier needs at least two.")
    return LabelledImages(X_train, y_train, X_test, y_test, classes)
