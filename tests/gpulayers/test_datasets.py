"""gpulayers.datasets.faces: the bundled LFW subset, split and shaped."""

import sys

import numpy as np
import pytest

from gpulayers import datasets


def test_faces_split_is_fixed_stratified_and_channels_last():
    (x_train, y_train), (x_test, y_test) = datasets.faces(data_format="channels_last")
    assert x_train.shape == (160, 25, 25, 1) and x_test.shape == (40, 25, 25, 1)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() <= 1
    assert y_train.sum() == 80 and y_test.sum() == 20
    (x2, y2), (x3, y3) = datasets.faces(data_format="channels_last")
    np.testing.assert_array_equal(x_train, x2)
    np.testing.assert_array_equal(y_test, y3)
    # No image is in both sets.
    train_rows = {row.tobytes() for row in x_train}
    assert not any(row.tobytes() in train_rows for row in x_test)


def test_faces_labels_follow_the_source_order():
    from skimage import data

    images = data.lfw_subset()
    (x_train, y_train), _ = datasets.faces(data_format="channels_last")
    for image, label in zip(x_train[:10, :, :, 0], y_train[:10]):
        index = int(np.argmin(np.abs(images - image).reshape(200, -1).sum(axis=1)))
        assert label == (1 if index < 100 else 0)


def test_faces_channels_first_and_other_splits():
    (x_train, _), (x_test, y_test) = datasets.faces(test_size=20, seed=3, data_format="channels_first")
    assert x_train.shape == (180, 1, 25, 25) and x_test.shape == (20, 1, 25, 25)
    assert y_test.sum() == 10
    with pytest.raises(ValueError, match="test_size"):
        datasets.faces(test_size=3)
    with pytest.raises(ValueError, match="data_format"):
        datasets.faces(data_format="NHWC")


def test_faces_says_how_to_install_scikit_image(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(ImportError, match=r"pip install 'gpulayers\[demo\]'"):
        datasets.faces()
