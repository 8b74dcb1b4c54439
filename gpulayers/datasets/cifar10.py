"""CIFAR-10: ``load_data()`` as ``keras.datasets.cifar10.load_data``.

50,000 training and 10,000 test colour images of 32x32 pixels in 10 classes:
airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck.
See https://www.cs.toronto.edu/~kriz/cifar.html.
"""

import os

import numpy as np

from gpulayers import config
from gpulayers.datasets.cifar import load_batch
from gpulayers.file_utils import get_file

__all__ = ["load_data"]

# Keras's origin, cache names and sha256 (keras/src/datasets/cifar10.py).
ORIGIN_FOLDER = "https://www.cs.toronto.edu/~kriz/"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
DIRNAME = "cifar-10-batches-py-target"  # the extraction directory under ~/.keras/datasets (archive: <DIRNAME>_archive)
FILE_HASH = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
BATCHES_DIR = "cifar-10-batches-py"  # inside the archive
NUM_CLASSES = 10


def load_data():
    """Load CIFAR-10 from Keras's cache, downloading it the first time.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: uint8 images of shape
        ``(50000, 32, 32, 3)`` and ``(10000, 32, 32, 3)`` when
        ``gpulayers.config.image_data_format()`` is ``'channels_last'``
        (``(N, 3, 32, 32)`` with ``'channels_first'``), and uint8 labels in
        [0, 9] of shape ``(50000, 1)`` and ``(10000, 1)``.

    Raises:
        gpulayers.file_utils.DownloadError: The data is not cached and cannot
            be downloaded; the message says which file to place where.
    """
    path = get_file(fname=DIRNAME, origin=ORIGIN_FOLDER + ARCHIVE_NAME, extract=True, file_hash=FILE_HASH)
    path = os.path.join(path, BATCHES_DIR)
    train = [load_batch(os.path.join(path, f"data_batch_{i}"), num_classes=NUM_CLASSES) for i in range(1, 6)]
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train]).astype(np.uint8).reshape(-1, 1)
    del train
    x_test, y_test = load_batch(os.path.join(path, "test_batch"), num_classes=NUM_CLASSES)
    x_test = x_test.copy()
    y_test = y_test.astype(np.uint8).reshape(-1, 1)
    if config.image_data_format() == "channels_last":
        x_train = x_train.transpose(0, 2, 3, 1)
        x_test = x_test.transpose(0, 2, 3, 1)
    return (x_train, y_train), (x_test, y_test)
