"""Batches as NumPy (or, for data already on a GPU, CuPy) structures, and class weights as sample weights.

Nothing here imports torch or cupy unless a value of theirs is in hand: a
torch tensor is recognised by its class, and cupy is imported only to take a
CUDA tensor in through DLPack.
"""

import collections.abc
import numbers

import numpy as np

from gpulayers import config, tree

__all__ = [
    "check_class_weight", "class_weight_to_sample_weights", "is_cupy_array", "is_torch_tensor", "map_batch", "to_device_leaf",
    "to_numpy_leaf", "torch_to_cupy",
]


def is_torch_tensor(value):
    """True for a ``torch.Tensor`` (or a subclass, e.g. a Parameter), found without importing torch."""
    for cls in type(value).__mro__:
        if cls.__name__ == "Tensor" and cls.__module__ == "torch":
            return True
    return False


def is_cupy_array(value):
    return type(value).__module__.split(".", 1)[0] == "cupy" and hasattr(value, "shape")


def _is_gpulayers_tensor(value):
    return type(value).__module__.startswith("gpulayers.") and hasattr(value, "data") and hasattr(value, "shape")


def _plain_torch(tensor):
    """``tensor`` detached, dense, without lazy conjugate/negative bits, and in a dtype NumPy and CuPy know."""
    import torch  # already imported: a torch tensor exists

    tensor = tensor.detach()
    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    if tensor.dtype == torch.bfloat16:  # neither NumPy nor CuPy has bfloat16
        tensor = tensor.float()
    return tensor.resolve_conj().resolve_neg()


def _on_cuda(tensor):
    return tensor.device.type == "cuda"


def to_numpy_leaf(value):
    """One array of a batch as a NumPy array (None stays None).

    Torch tensors through ``.detach().cpu().numpy()`` (bfloat16 widened to
    float32, which NumPy lacks), CuPy arrays copied to the host, anything else
    through ``np.asarray`` (Python numbers, lists of numbers, pandas, objects
    with ``__array__``).
    """
    if value is None or isinstance(value, np.ndarray):
        return value
    if is_torch_tensor(value):
        return _plain_torch(value).cpu().numpy()
    if is_cupy_array(value):
        return value.get()
    if _is_gpulayers_tensor(value):
        return to_numpy_leaf(value.data)
    try:
        return np.asarray(value)
    except Exception as exc:
        raise TypeError(
            f"A batch holds a value of type {type(value).__name__} that cannot be converted to a NumPy array ({exc})."
        ) from None


def torch_to_cupy(tensor):
    """A torch tensor as a CuPy array.

    A CUDA tensor is taken in through DLPack: the CuPy array shares its
    memory (no copy, no trip through the host; DLPack orders the two
    libraries' streams). A CPU tensor is copied to CuPy's current device.
    bfloat16 is widened to float32 (CuPy has no bfloat16). Imports cupy.
    """
    if not is_torch_tensor(tensor):
        raise TypeError(f"Expected a torch.Tensor. Received: {type(tensor).__name__}")
    import cupy

    tensor = _plain_torch(tensor)
    if _on_cuda(tensor):
        return cupy.from_dlpack(tensor)
    return cupy.asarray(tensor.cpu().numpy())


def to_device_leaf(value):
    """One array of a batch for a CuPy trainer: what already lives on a CUDA device stays there, as a CuPy
    array (CuPy arrays as they are, CUDA torch tensors through :func:`torch_to_cupy`); the rest as NumPy."""
    if is_cupy_array(value):
        return value
    if is_torch_tensor(value) and _on_cuda(value):
        return torch_to_cupy(value)
    if _is_gpulayers_tensor(value):
        return to_device_leaf(value.data)
    return to_numpy_leaf(value)


def map_batch(leaf_fn, x, y, sample_weight):
    """``(x, y, sample_weight)`` with ``leaf_fn`` applied to every array; lists, tuples and dicts keep their structure."""

    def convert(part):
        return None if part is None else tree.map_structure(leaf_fn, part)

    return convert(x), convert(y), convert(sample_weight)


def check_class_weight(class_weight):
    """``class_weight`` as ``{class index: weight}`` (ints to floats), or None; TypeError naming it and the
    entry otherwise."""
    if class_weight is None:
        return None
    if not isinstance(class_weight, collections.abc.Mapping):
        raise TypeError(
            f"Invalid type for `class_weight`: expected a dict {{class: weight}}. Received: class_weight={class_weight!r:.100}"
        )
    checked = {}
    for key, weight in class_weight.items():
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, numbers.Integral):
            raise TypeError(
                "Invalid type for `class_weight`: its keys must be class indices (ints). "
                f"Received: class_weight={class_weight!r:.100} with the key {key!r:.100}"
            )
        if isinstance(weight, (bool, np.bool_)) or not isinstance(weight, numbers.Real):
            raise TypeError(
                "Invalid type for `class_weight`: its values must be numbers (the weights). "
                f"Received: class_weight[{key!r}]={weight!r:.100}"
            )
        checked[int(key)] = float(weight)
    return checked


def class_weight_to_sample_weights(y, class_weight):
    """One weight per sample from ``{class: weight}``, as Keras's function of the same name.

    The class of a sample is its one-hot target's argmax (targets of shape
    ``(n, k)``, k > 1), else its integer label (shape ``(n,)`` or ``(n, 1)``,
    rounded). Classes missing from ``class_weight`` weigh 1. The weights have
    the float dtype of :func:`gpulayers.config.floatx`.
    """
    labels = to_numpy_leaf(y)
    if labels.ndim == 0:
        raise ValueError(f"`class_weight` needs targets with a batch axis. Received targets of shape {labels.shape}.")
    shape = labels.shape
    if labels.dtype == np.bool_:
        labels = labels.astype(np.int32)
    if labels.ndim > 1:
        labels = labels.argmax(axis=-1) if labels.shape[-1] != 1 else labels.squeeze(-1)
    labels = np.round(labels).astype("int32")
    if labels.ndim != 1:
        raise ValueError(
            "`class_weight` needs one class per sample: targets of shape (n,), (n, 1) or one-hot (n, classes). "
            f"Received targets of shape {shape}."
        )
    weights = np.ones(labels.shape[0], dtype=config.floatx())
    for label in np.unique(labels):
        weights[labels == label] = class_weight.get(int(label), 1.0)
    return weights
