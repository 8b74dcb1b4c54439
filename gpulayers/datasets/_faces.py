"""``faces()``: a dataset that ships inside a Python package (scikit-image), so it loads with no network."""

import numpy as np

from gpulayers import config

__all__ = ["faces"]

_INSTALL_HINT = (
    "gpulayers.datasets.faces() needs scikit-image, which bundles the images. "
    "Install it with: pip install 'gpulayers[demo]'  (or: pip install scikit-image)"
)


def faces(test_size=40, seed=0, data_format=None):
    """Face / non-face images: scikit-image's bundled LFW subset.

    200 grey images of 25x25 pixels in [0, 1]: 100 faces (label 1) and 100
    non-faces (label 0). The split is fixed and stratified: ``test_size / 2``
    images of each class go to the test set, chosen by ``seed``.

    Args:
        test_size: Even int in [2, 198], the number of test images.
        seed: Int, the seed of the fixed split.
        data_format: ``'channels_last'`` gives (N, 25, 25, 1),
            ``'channels_first'`` (N, 1, 25, 25); default
            ``gpulayers.config.image_data_format()``.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: float32 images and int64
        labels (1 = face).

    Example:
        >>> (x_train, y_train), (x_test, y_test) = faces()
        >>> x_train.shape, x_test.shape
        ((160, 25, 25, 1), (40, 25, 25, 1))
    """
    if isinstance(test_size, bool) or not isinstance(test_size, (int, np.integer)) or not (
        2 <= test_size <= 198 and test_size % 2 == 0
    ):
        raise ValueError(f"Invalid value for `test_size`: expected an even int in [2, 198]. Received: test_size={test_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"Invalid value for `seed`: expected a non-negative int. Received: seed={seed!r}")
    data_format = config.standardize_data_format(data_format)
    try:
        from skimage import data as skdata
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    images = np.asarray(skdata.lfw_subset(), dtype=np.float32)  # (200, 25, 25); faces first
    labels = np.concatenate([np.ones(100, np.int64), np.zeros(100, np.int64)])
    rng = np.random.default_rng(seed)
    per_class = test_size // 2
    test_idx, train_idx = [], []
    for cls_indices in (np.arange(100), np.arange(100, 200)):
        order = rng.permutation(cls_indices)
        test_idx.append(order[:per_class])
        train_idx.append(order[per_class:])
    # Interleave the classes so that any prefix of the arrays is balanced too.
    train = rng.permutation(np.concatenate(train_idx))
    test = rng.permutation(np.concatenate(test_idx))
    axis = 3 if data_format == "channels_last" else 1
    x = np.expand_dims(images, axis)
    return (x[train], labels[train]), (x[test], labels[test])
