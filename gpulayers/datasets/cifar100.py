"""CIFAR-100: ``load_data(label_mode)`` as ``keras.datasets.cifar100.load_data``.

50,000 training and 10,000 test colour images of 32x32 pixels in 100 fine
classes grouped into 20 coarse superclasses.
See https://www.cs.toronto.edu/~kriz/cifar.html.
"""

import os

from gpulayers import config
from gpulayers.datasets.cifar import load_batch
from gpulayers.file_utils import get_file

__all__ = ["load_data"]

# Keras's origin, cache names and sha256 (keras/src/datasets/cifar100.py).
ORIGIN_FOLDER = "https://www.cs.toronto.edu/~kriz/"
ARCHIVE_NAME = "cifar-100-python.tar.gz"
DIRNAME = "cifar-100-python-target"  # the extraction directory under ~/.keras/datasets (archive: <DIRNAME>_archive)
FILE_HASH = "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"
BATCHES_DIR = "cifar-100-python"  # inside the archive
NUM_CLASSES = {"fine": 100, "coarse": 20}


def load_data(label_mode="fine"):
    """Load CIFAR-100 from Keras's cache, downloading it the first time.

    Args:
        label_mode: ``"fine"`` (the 100 classes) or ``"coarse"`` (the 20 superclasses).

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: uint8 images of shape
        ``(50000, 32, 32, 3)`` and ``(10000, 32, 32, 3)`` when
        ``gpulayers.config.image_data_format()`` is ``'channels_last'``
        (``(N, 3, 32, 32)`` with ``'channels_first'``), and labels of shape
        ``(50000, 1)`` and ``(10000, 1)``, int64 as Keras's (its docstring
        says uint8, its code returns int64).

    Raises:
        ValueError: ``label_mode`` is neither ``"fine"`` nor ``"coarse"``.
        gpulayers.file_utils.DownloadError: The data is not cached and cannot
            be downloaded; the message says which file to place where.
    """
    if not isinstance(label_mode, str) or label_mode not in NUM_CLASSES:
        raise ValueError(f'Invalid value for `label_mode`: expected "fine" or "coarse". Received: label_mode={label_mode!r}')
    path = get_file(fname=DIRNAME, origin=ORIGIN_FOLDER + ARCHIVE_NAME, extract=True, file_hash=FILE_HASH)
    path = os.path.join(path, BATCHES_DIR)
    key, classes = f"{label_mode}_labels", NUM_CLASSES[label_mode]
    x_train, y_train = load_batch(os.path.join(path, "train"), label_key=key, num_classes=classes)
    x_train = x_train.copy()
    x_test, y_test = load_batch(os.path.join(path, "test"), label_key=key, num_classes=classes)
    x_test = x_test.copy()
    y_train = y_train.reshape(-1, 1)
    y_test = y_test.reshape(-1, 1)
    if config.image_data_format() == "channels_last":
        x_train = x_train.transpose(0, 2, 3, 1)
        x_test = x_test.transpose(0, 2, 3, 1)
    return (x_train, y_train), (x_test, y_test)
