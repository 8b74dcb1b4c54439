"""The checks of ``fit``, ``evaluate`` and the ``*_on_batch`` calls, made before anything changes.

A refused call leaves the model as it was: the arguments and the data
(lengths, shapes, label ranges, class weights, validation data) are checked
before the model is built; a model that can only tell its output shape by
building (a subclassed model) is unbuilt again when a check refuses
(:func:`unbuilt_if_refused`).
"""

import contextlib
import numbers

import numpy as np

from backends import get_ops
from gpulayers import losses as losses_module, utils
from gpulayers.data_adapters import check_class_weight
from gpulayers.models import array_data
from gpulayers.models.compile_utils import flatten_like_outputs
from gpulayers.tree import flatten, map_structure

__all__ = ["check_batch_size", "check_data", "check_fit_arguments", "check_verbose", "class_weights",
           "unbuilt_if_refused"]


def check_verbose(verbose):
    if verbose == "auto":
        return 1
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(f"Invalid value for `verbose`: expected 'auto', 0, 1 or 2. Received: verbose={verbose!r}")
    return int(verbose)


def check_batch_size(batch_size, name="batch_size"):
    if batch_size is None:
        return 32
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"Invalid value for `{name}`: expected a positive int. Received: {name}={batch_size!r}")
    return int(batch_size)


def check_fit_arguments(verbose, batch_size, epochs, initial_epoch, validation_freq, steps_per_epoch,
                        validation_split, validation_steps, class_weight):
    """fit's arguments other than the data: ``(verbose, batch_size, steps_per_epoch, validation_steps,
    class_weight)`` standardized, or ValueError/TypeError naming the argument."""
    verbose = check_verbose(verbose)
    batch_size = check_batch_size(batch_size)
    for name, value, low in (("epochs", epochs, 0), ("initial_epoch", initial_epoch, 0),
                             ("validation_freq", validation_freq, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"Invalid value for `{name}`: expected an int >= {low}. Received: {name}={value!r}")
    if steps_per_epoch is not None:
        steps_per_epoch = check_batch_size(steps_per_epoch, "steps_per_epoch")
    if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) \
            or not 0 <= validation_split < 1:
        raise ValueError(
            "Invalid value for `validation_split`: expected a float in [0, 1). "
            f"Received: validation_split={validation_split!r}"
        )
    if validation_steps is not None:
        validation_steps = check_batch_size(validation_steps, "validation_steps")
    return verbose, batch_size, steps_per_epoch, validation_steps, check_class_weight(class_weight)


@contextlib.contextmanager
def unbuilt_if_refused(model):
    """Around the checks of a call on a model that is not built yet: if they refuse, every layer (and the
    process-wide random generator its initializers drew from) is put back as it was."""
    if model.built:
        yield
        return
    restores = [layer._snapshot() for layer in model._flatten_layers()]
    host = utils.host_rng()
    host_state = host.bit_generator.state
    try:
        yield
    except BaseException:
        for restore in restores:
            restore()
        host.bit_generator.state = host_state
        raise


def _input_shape(x):
    return map_structure(lambda a: (None,) + tuple(a.shape[1:]), x)


def check_data(model, x, y, sample_weight, name_x="x", name_y="y", build=True, like=None):
    """Validate x, y and sample weights (arrays, or lists/dicts of them) against ``model``, then build it
    for them (unless ``build`` is False); the checks come first, so a refusal builds nothing. A model not
    built yet will be built for ``like`` (fit's x, for its validation data): ``x`` must have its shape."""
    x, y, sample_weight = array_data.check_arrays(x, y, sample_weight, name_x, name_y)
    shape = _input_shape(x)
    where = name_x.split("[", 1)[0]
    if like is not None and not model.built and _input_shape(like) != shape:
        raise ValueError(
            f"Invalid value for `{where}`: {name_x} does not fit the model's input: expected the shape of `x`, "
            f"{_input_shape(like)}. Received: {name_x} of shape {shape}"
        )
    try:
        out_shape = model.compute_output_shape(shape)  # raises for a wrong input shape (Sequential: unbuilt)
    except ValueError as exc:
        if name_x == "x":
            raise
        raise ValueError(f"Invalid value for `{where}`: {name_x} does not fit the model's input: {exc}") from None
    if y is not None and model._compiled:
        keys = model._output_keys()
        out_shapes = [out_shape] if len(keys) == 1 else flatten_like_outputs(out_shape, keys, "outputs")
        targets = flatten_like_outputs(y, keys, name_y, allow_missing=True)
        for i, (loss, target) in enumerate(zip(model._compile_loss.losses, targets)):
            if loss is not None and target is not None and hasattr(target, "shape"):
                label = name_y if len(keys) == 1 else f"{name_y}[{keys[i]!r}]"
                check_targets(loss, target, out_shapes[i], label)
    if build and not model.built:
        model.build_from_shape(shape)
    return x, y, sample_weight


def build_for(model, x):
    """Build ``model`` for the (checked) arrays ``x``, if it is not built."""
    if not model.built:
        model.build_from_shape(_input_shape(x))


def check_targets(loss, y, out_shape, name_y):
    """Targets must fit the model's output (and sparse labels the class count), for the built-in losses."""
    if not losses_module.is_builtin(loss) or not isinstance(out_shape, tuple):
        return  # a user's loss decides what its targets look like
    if isinstance(loss, losses_module.SparseCategoricalCrossentropy):
        classes = out_shape[-1]
        labels = y.reshape(y.shape[0], -1) if y.ndim > 1 else y
        if y.ndim > 1 and labels.shape[1] != 1 and tuple(y.shape[1:]) != tuple(out_shape[1:-1]):
            raise ValueError(
                f"Invalid `{name_y}` for a sparse categorical loss: expected integer labels of shape "
                f"({y.shape[0]},) or ({y.shape[0]}, 1). Received: {name_y}.shape={tuple(y.shape)}"
            )
        host = labels if isinstance(labels, np.ndarray) else get_ops().to_numpy(labels)
        bad = (host < 0) | (host >= classes) | (host != np.floor(host))
        if bad.any():
            first = host[bad].flat[0]
            raise ValueError(
                f"Invalid `{name_y}`: sparse labels must be integers in [0, {classes}) for a model "
                f"with {classes} outputs. Received a label {first!r}."
            )
        return
    want = tuple(out_shape[1:])
    got = tuple(y.shape[1:])
    if got != want and not (got == () and want == (1,)):
        raise ValueError(
            f"Invalid shape for `{name_y}`: the model's output has shape {(None,) + want} but "
            f"{name_y}.shape={tuple(y.shape)}."
        )


def class_weights(y, class_weight, sample_weight):
    """One weight per sample of the arrays ``y`` from a checked ``class_weight`` (times ``sample_weight``)."""
    if len(flatten(y)) > 1:
        raise ValueError(
            "`class_weight` is only supported for Models with a single output. Give `sample_weight` per output instead."
        )
    y = flatten(y)[0]
    if sample_weight is not None and len(flatten(sample_weight)) == 1:
        sample_weight = flatten(sample_weight)[0]
    host = y if isinstance(y, np.ndarray) else get_ops().to_numpy(y)
    if host.ndim > 1 and host.shape[-1] > 1:
        labels = host.argmax(axis=-1).reshape(host.shape[0])
    else:
        labels = np.rint(host.reshape(host.shape[0])).astype(np.int64)
    weights = np.ones(host.shape[0], dtype=np.float64)
    for cls, w in class_weight.items():
        weights[labels == cls] = w
    if sample_weight is not None:
        sw = sample_weight if isinstance(sample_weight, np.ndarray) else get_ops().to_numpy(sample_weight)
        weights = weights * sw
    return weights
