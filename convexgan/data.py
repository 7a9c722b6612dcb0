"""Image loading shared by scripts, benchmarks and tests.

Real data sets are read by path, never copied into the project. ``data_root()`` is
``$CONVEXGAN_DATA`` when set, else ``../shared/data`` beside the checkout.
"""
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

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


def load_images(files, mode="RGB"):
    """Decode files into one uint8 array (N, H, W, C); corrupt files are skipped with a warning.

    All images must share one size. Returns ``(images, kept_files)``.
    """
    images, kept, skipped = [], [], 0
    for path in files:
        try:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert(mode)))
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
