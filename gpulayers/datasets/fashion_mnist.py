"""Fashion-MNIST: ``load_data()`` as ``keras.datasets.fashion_mnist.load_data``.

60,000 training and 10,000 test grey images of 28x28 pixels of Zalando's
articles in 10 classes: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal,
Shirt, Sneaker, Bag, Ankle boot. Fashion-MNIST is Zalando SE's, under the
MIT license.
"""

import gzip
import math
import os
import struct
import zlib

import numpy as np

from gpulayers.file_utils import get_file

__all__ = ["load_data"]

# Keras's origin and cache names (keras/src/datasets/fashion_mnist.py). Keras gives no hash for these
# files; the gzip checksum and the IDX header (checked below) catch a truncated or corrupted copy.
ORIGIN_FOLDER = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
CACHE_SUBDIR = os.path.join("datasets", "fashion-mnist")
FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")
FILE_HASHES = {}  # file name -> hex digest, none known from Keras
IMAGE_SHAPE = (28, 28)


def load_data():
    """Load Fashion-MNIST from Keras's cache (``datasets/fashion-mnist``), downloading it the first time.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: uint8 images in [0, 255] of
        shape ``(60000, 28, 28)`` and ``(10000, 28, 28)``, uint8 labels in
        [0, 9] of shape ``(60000,)`` and ``(10000,)``.

    Raises:
        gpulayers.file_utils.DownloadError: A file is not cached and cannot
            be downloaded; the message says which file to place where.
        ValueError: A cached file is not a gzip IDX file of the expected shape.
    """
    paths = [
        get_file(name, origin=ORIGIN_FOLDER + name, cache_subdir=CACHE_SUBDIR, file_hash=FILE_HASHES.get(name))
        for name in FILES
    ]
    y_train, x_train, y_test, x_test = (read_idx(p, ndim) for p, ndim in zip(paths, (1, 3, 1, 3)))
    for x, y, path in ((x_train, y_train, paths[1]), (x_test, y_test, paths[3])):
        if x.shape != (len(y),) + IMAGE_SHAPE:
            raise ValueError(f"{path} holds images of shape {x.shape}, where {(len(y),) + IMAGE_SHAPE} was expected.")
    return (x_train, y_train), (x_test, y_test)


def read_idx(path, ndim):
    """The uint8 array in the gzip-compressed IDX file ``path`` (magic ``0x0000 08 <ndim>``, big-endian sizes)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path} is not a readable gzip file ({exc}). Delete it to download it again.") from exc
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes((0, 0, 8, ndim)):
        raise ValueError(
            f"{path} is not an IDX file of uint8 with {ndim} dimension(s): it starts with {raw[:4].hex()}, "
            f"not {bytes((0, 0, 8, ndim)).hex()}. Delete it to download it again."
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if math.prod(shape) != len(raw) - header:
        raise ValueError(
            f"{path} is truncated or corrupted: its header gives the shape {shape} ({math.prod(shape)} bytes) but it holds "
            f"{len(raw) - header} bytes of data. Delete it to download it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()
