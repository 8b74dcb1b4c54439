"""MNIST: ``load_data()`` as ``keras.datasets.mnist.load_data``.

60,000 training and 10,000 test grey images of handwritten digits, 28x28
pixels. MNIST is Yann LeCun's and Corinna Cortes's, after NIST's data, under
the Creative Commons Attribution-Share Alike 3.0 license.
"""

import numpy as np

from gpulayers.file_utils import get_file

__all__ = ["load_data"]

# Keras's origin, file name and sha256 (keras/src/datasets/mnist.py).
ORIGIN_FOLDER = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
FILE_NAME = "mnist.npz"
FILE_HASH = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_data(path="mnist.npz"):
    """Load MNIST from Keras's cache, downloading it the first time.

    Args:
        path: The file's name in ``$KERAS_HOME/datasets`` (or ``~/.keras/datasets``).

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: uint8 images in [0, 255] of
        shape ``(60000, 28, 28)`` and ``(10000, 28, 28)``, uint8 labels in
        [0, 9] of shape ``(60000,)`` and ``(10000,)``.

    Raises:
        gpulayers.file_utils.DownloadError: The file is not cached and cannot
            be downloaded; the message says which file to place where.
    """
    fpath = get_file(fname=path, origin=ORIGIN_FOLDER + FILE_NAME, file_hash=FILE_HASH)
    with np.load(fpath, allow_pickle=False) as f:
        missing = [key for key in _KEYS if key not in f.files]
        if missing:
            raise ValueError(f"{fpath} is not Keras's mnist.npz: it has no {missing} (its arrays: {f.files}).")
        x_train, y_train, x_test, y_test = (f[key] for key in _KEYS)
    return (x_train, y_train), (x_test, y_test)
