"""Datasets: Keras's ``keras.datasets`` loaders and the bundled ``faces()``.

``mnist``, ``fashion_mnist``, ``cifar10`` and ``cifar100`` each have Keras's
``load_data()``, returning the arrays Keras returns. They use the files of
Keras's own cache (``$KERAS_HOME/datasets`` or ``~/.keras/datasets``, with
Keras's file and directory names), so data Keras has downloaded is used as it
is; otherwise they download it from Keras's origins with
:func:`gpulayers.file_utils.get_file` (checked against Keras's hashes). The
CIFAR batches, which Keras stores as Python pickles, are read as data by
:mod:`gpulayers.datasets.pickle_reader`: nothing in them is ever executed.

``faces()`` is scikit-image's LFW subset, which needs no network.
"""

from gpulayers.datasets import cifar10, cifar100, fashion_mnist, mnist
from gpulayers.datasets._faces import faces

__all__ = ["cifar10", "cifar100", "faces", "fashion_mnist", "mnist"]
