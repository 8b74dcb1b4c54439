"""What the program tests share: synthetic stand-ins for the datasets, and Keras 3 for parity checks.

The data sets the programs download are replaced by small arrays of the same
shapes and dtypes whose labels can be learned (so a falling loss means
something): an MNIST-like digit is a dark image with a bright square whose
position is its class.
"""

import numpy as np

from helpers import keras_or_skip  # noqa: F401 -- the programs' tests take it from here


def digits(n, seed=0):
    """``(images uint8 (n, 28, 28), labels uint8 (n,))``: class k has a bright 6x6 square at spot k."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = divmod(int(k), 5)
        images[i, 4 + 12 * r:10 + 12 * r, 1 + 5 * c:7 + 5 * c] = 250
    return images, labels


