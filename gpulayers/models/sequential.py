"""The Sequential model: a plain stack of layers (``keras.Sequential``)."""

import inspect

from gpulayers import layers as layers_module
from gpulayers.layers.base import Layer
from gpulayers.layers.input_layer import InputLayer
from gpulayers.symbolic import KerasTensor
from gpulayers.models.model import Model

__all__ = ["Sequential"]


class Sequential(Model):
    """A linear stack of layers, each feeding the next.

    Args:
        layers: Optional list of layers (an ``Input(...)`` or ``InputLayer``
            may come first) to add in order.
        trainable: Whether the model's weights are trained.
        name: Model name (default ``sequential``, ``sequential_1``...).

    Example (the chapter's, with the imports changed):
        >>> from gpulayers.models import Sequential
        >>> from gpulayers.layers import Conv2D, Flatten
        >>> model = Sequential()
        >>> model.add(Conv2D(64, (3, 3), input_shape=(3, 32, 32), padding="same"))
        >>> model.output_shape   # channels_last: (None, 3, 32, 64)
        >>> model.add(Flatten())
        >>> model.output_shape   # (None, 6144)
    """

    def __init__(self, layers=None, trainable=True, name=None, **kwargs):
        super().__init__(trainable=trainable, name=name, **kwargs)
        self._layers = []  # the InputLayer (when known) first, then the added layers: the sublayers
        self._functional = None  # the graph of the stack, once its input is known (as Keras 3's Sequential)
        self._auto_input = None  # the InputLayer a deferred build inserted (it checks only the rank)
        if layers is not None:
            if isinstance(layers, (Layer, KerasTensor)) or not hasattr(layers, "__iter__"):
                raise TypeError(f"Invalid type for `layers`: expected a list of layers. Received: layers={layers!r:.80}")
            self._add_all(layers)  # the graph built once for the whole list, as Keras's constructor

    _untracked_attributes = Model._untracked_attributes | {"_functional", "_auto_input"}

    def _track(self, value):
        # The stack is the model's only sublayers: a layer kept as an attribute is not added to it.
        if not isinstance(value, Layer):
            super()._track(value)

    # ------------------------------------------------------------ structure

    def add(self, layer, rebuild=True):
        """Append a layer; builds it at once when the model's input shape is known.

        Refuses non-layers (TypeError), a second input, duplicate names and
        layers that do not fit the current output (ValueError), leaving the
        model unchanged.
        """
        self._add_all([layer], rebuild)

    def _add_all(self, layers, rebuild=True):
        """``add`` each of ``layers``, keeping the name set and the running output shape from one to the
        next (linear in the count; ``add`` alone finds both anew), and the graph rebuilt once at the end."""
        names = {l.name for l in self._layers}
        shape = self._output_shape_or_none()
        for layer in layers:
            shape = self._append(layer, names, shape)
        if rebuild and self.built:
            self._rebuild_graph()

    def _append(self, layer, names, shape):
        """Add one layer given the names in the stack and its output shape (None when unknown); both are
        updated; returns the new output shape."""
        if isinstance(layer, KerasTensor):
            layer = layer._keras_history[0]
        if not isinstance(layer, Layer):
            raise ValueError(
                "Only instances of `gpulayers.layers.Layer` can be added to a Sequential model. "
                f"Received: layer={layer!r:.80} (of type {type(layer).__name__})"
            )
        if layer is self:
            raise ValueError("A Sequential model cannot be added to itself.")
        added = []
        if isinstance(layer, InputLayer):
            if self._layers:
                what = "an input layer" if isinstance(self._layers[0], InputLayer) else "layers"
                raise ValueError(
                    f"Sequential model '{self.name}' already has {what}: an InputLayer can only be its first layer."
                )
            added.append(layer)
        else:
            if not self._layers and layer._batch_input_shape is not None:
                added.append(InputLayer(batch_shape=layer._batch_input_shape, dtype=layer.dtype))
            elif not self._layers and _built_model_input_shape(layer) is not None:
                # A built model as the first layer (Keras: a first layer with an input_shape): its input is ours.
                added.append(InputLayer(batch_shape=_built_model_input_shape(layer), dtype=layer.dtype))
            added.append(layer)
        new_names = [new.name for new in added]
        for i, name in enumerate(new_names):
            if name in names or name in new_names[:i]:
                raise ValueError(
                    "All layers added to a Sequential model should have unique names. "
                    f"Name '{name}' is already the name of a layer in this model."
                )
        if shape is None and isinstance(added[0], InputLayer):
            shape = added[0].batch_shape
        if shape is not None:
            for new in added:
                if not isinstance(new, InputLayer):
                    new.build_from_shape(shape)  # raises before the model changes
                    shape = new.compute_output_shape(shape)
        self._layers.extend(added)
        names.update(new_names)
        if isinstance(self._layers[0], InputLayer):
            self.built = True
            self._build_input_shape = (None,) + tuple(self._layers[0].batch_shape[1:])
        return shape

    def _rebuild_graph(self):
        """The stack as a functional graph from its InputLayer (Keras 3 does the same at each change): it gives
        ``model.inputs``, ``model.outputs`` and every layer's ``input`` / ``output``."""
        from gpulayers.models.functional import Functional

        self._functional = None
        if not self.layers or not isinstance(self._layers[0], InputLayer):
            return
        x = inputs = self._layers[0].output
        try:
            for layer in self._layers[1:]:
                x = layer(x)
        except NotImplementedError:
            return  # a layer that cannot be called symbolically (as Keras: no graph, the stack runs eagerly)
        self._functional = Functional(inputs, x)

    @property
    def inputs(self):
        if self._functional is None:
            raise AttributeError(f"Sequential model '{self.name}' has no defined inputs yet: it is not built.")
        return self._functional.inputs

    @property
    def outputs(self):
        if self._functional is None:
            raise AttributeError(f"Sequential model '{self.name}' has no defined outputs yet: it is not built.")
        return self._functional.outputs

    @property
    def input(self):
        return self.inputs[0] if self._functional is not None else super().input

    @property
    def output(self):
        return self.outputs[0] if self._functional is not None else super().output

    @property
    def output_names(self):
        return [self.layers[-1].name] if self.layers else []

    def pop(self):
        """Remove the last added layer."""
        if not self.layers:
            raise IndexError("There are no layers in the model to pop.")
        layer = self._layers.pop()
        self._rebuild_graph()
        return layer

    @property
    def layers(self):
        """The added layers, without the InputLayer (as Keras)."""
        return [l for l in self._layers if not isinstance(l, InputLayer)]

    @layers.setter
    def layers(self, value):
        raise AttributeError("`Sequential.layers` attribute is reserved and should not be used. "
                             "Use `add()` and `pop()` to change the layers in the model.")

    def _output_shape_or_none(self):
        if not self._layers:
            return None
        first = self._layers[0]
        if isinstance(first, InputLayer):
            shape = first.batch_shape
        elif self._build_input_shape is not None:
            shape = self._build_input_shape
        else:
            return None
        for layer in self._layers:
            if not isinstance(layer, InputLayer):
                shape = layer.compute_output_shape(shape)
        return shape

    # ------------------------------------------------------------ building

    def build(self, input_shape=None):
        """Build every layer for inputs of ``input_shape`` (batch axis first)."""
        if input_shape is None:
            if not self._layers or not isinstance(self._layers[0], InputLayer):
                raise ValueError(f"Sequential model '{self.name}' needs an input shape to be built.")
            input_shape = self._layers[0].batch_shape
        self.build_from_shape(tuple(input_shape))

    def build_from_shape(self, input_shape):
        if isinstance(input_shape, dict) or any(isinstance(d, (list, tuple, dict)) for d in input_shape):
            # A stack whose input is a structure (a dict, a list of tensors) is no graph, as in Keras:
            # each layer builds at its first call.
            self.built = True
            return
        input_shape = tuple(None if d is None else int(d) for d in input_shape)
        if not self.layers:
            if self._layers:  # an Input alone (Keras's nested case): nothing to build
                self.built = True
                return
            raise ValueError(f"Sequential model '{self.name}' has no layers to build.")
        self._check_batch_axis(input_shape)
        for layer in self.layers:
            _check_single_positional_input(layer)
        try:
            self.compute_output_shape(input_shape)  # refuse before any layer is built
        except NotImplementedError:
            # A layer that cannot infer its shape (Keras: compute_output_spec raising): no graph; the
            # layers build at their first call.
            self.built = True
            return
        # A later layer can still refuse while building (an initializer that
        # refuses its weight's shape): then the earlier ones are unbuilt again.
        restores = [layer._snapshot() for layer in self._layers if not layer.built]
        shape = input_shape
        try:
            for layer in self._layers:
                shape = layer.compute_output_shape(shape) if layer.built else shape
                if not layer.built:
                    layer.build_from_shape(shape)
                    shape = layer.compute_output_shape(shape)
        except BaseException:
            for restore in restores:
                restore()
            raise
        self.built = True
        self._build_input_shape = (None,) + input_shape[1:]
        if not isinstance(self._layers[0], InputLayer):  # as Keras: the stack gets the InputLayer it was built for
            self._auto_input = InputLayer(batch_shape=self._build_input_shape, dtype=self._layers[0].dtype)
            self._layers.insert(0, self._auto_input)
        self._rebuild_graph()

    def build_from_config(self, config):
        if self.layers:  # an empty stack has nothing to build
            super().build_from_config(config)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        self._check_batch_axis(shape)
        inferred = self._layers and (not isinstance(self._layers[0], InputLayer) or self._layers[0] is self._auto_input)
        if inferred and self._build_input_shape is not None and len(shape) != len(self._build_input_shape):
            raise ValueError(
                f"Input of model '{self.name}' is incompatible: expected shape {self._build_input_shape}. "
                f"Received: inputs.shape={shape}"
            )
        for layer in self._layers:
            if layer is not self._auto_input:  # an input the model inferred checks only the rank (as Keras's)
                shape = layer.compute_output_shape(shape)
        return shape

    @property
    def output_shape(self):
        if not self.built:
            raise AttributeError(
                f"Sequential model '{self.name}' has not been built yet: give the first layer an "
                "`input_shape`, start with `Input(...)`, call `build()` or call the model on data."
            )
        return self._output_shape_or_none()

    @property
    def input_shape(self):
        if not self.built:
            raise AttributeError(f"Sequential model '{self.name}' has not been built yet.")
        return self._build_input_shape

    # ------------------------------------------------------------ computing

    def __call__(self, *args, **kwargs):
        """Run the layers in order; returns a Tensor of the active backend."""
        if not self._layers:
            raise ValueError(f"Sequential model '{self.name}' has no layers to call.")
        # A layer refusing its input (or a user activation refusing to give a
        # float array) leaves the model as it was: forward passes replace
        # weight arrays, never change them, so keeping the references is enough.
        restores = [] if self.built else [self._snapshot()] + [layer._snapshot() for layer in self._layers]
        values = [(v, v.data) for v in self.weights]
        try:
            return super().__call__(*args, **kwargs)
        except BaseException:
            for v, value in values:
                v.data = value
            for restore in restores:
                restore()
            raise

    def call(self, inputs, training=None):
        from gpulayers.models.functional import fuses_relu

        x = inputs
        layers = [layer for layer in self._layers if layer is not self._auto_input]
        i = 0
        while i < len(layers):
            layer = layers[i]
            if i + 1 < len(layers) and fuses_relu(layer, layers[i + 1]):
                # A BatchNormalization then a plain ReLU: one call (see models/functional.py).
                x = layer(x, training=training, _then_relu=True)
                i += 2
                continue
            x = layer(x, training=training)
            i += 1
        return x

    def _check_batch_axis(self, shape):
        if not shape:  # a model's input is a batch: a scalar has no batch axis
            raise ValueError(
                f"Input of model '{self.name}' needs a batch axis (rank >= 1). Received: inputs.shape={tuple(shape)}"
            )

    # ------------------------------------------------------------ config

    def get_config(self):
        """Keras 3's Sequential config: name, trainable, dtype, the layers (InputLayer first)."""
        config = super().get_config()
        config["layers"] = []
        for layer in self._layers:
            entry = layers_module.serialize(layer)
            if layer.built and not isinstance(layer, InputLayer) and layer._build_input_shape is not None:
                entry["build_config"] = {"input_shape": list(layer._build_input_shape)}
            config["layers"].append(entry)
        if self._layers and isinstance(self._layers[0], InputLayer):
            config["build_input_shape"] = self._layers[0].batch_shape
        return config

    @classmethod
    def from_config(cls, config):
        """Rebuild a Sequential from :meth:`get_config` output (only gpulayers' own layers)."""
        if not isinstance(config, dict):
            raise ValueError(f"Invalid Sequential config: expected a dict. Received: {config!r:.200}")
        config = dict(config)
        entries = config.pop("layers", [])
        build_shape = config.pop("build_input_shape", None)
        kwargs = {k: config[k] for k in ("name", "trainable", "dtype") if k in config}
        model = cls(**kwargs)
        model._add_all(layers_module.deserialize(entry) for entry in entries)
        if build_shape is not None and not model.built:
            model.build(build_shape)
        return model


def _check_single_positional_input(layer):
    """Keras's rule: a layer of a stack takes its input as its only required positional argument."""
    try:
        parameters = list(inspect.signature(layer.call).parameters.values())
    except (TypeError, ValueError):
        return
    required = [p.name for p in parameters
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    if len(required) > 1:
        raise ValueError(
            "Layers added to a Sequential model can only have a single positional argument, the input tensor. "
            f"Layer '{layer.name}' ({type(layer).__name__}) has several: {required}"
        )


def _built_model_input_shape(layer):
    """The one input's shape (batch axis None) of a built Sequential or Functional model, else None."""
    from gpulayers.models.functional import Functional

    if not isinstance(layer, (Sequential, Functional)) or not layer.built:
        return None
    try:
        shape = layer.input_shape
    except AttributeError:
        return None
    if not isinstance(shape, tuple) or not all(d is None or isinstance(d, int) for d in shape):
        return None  # several inputs: the first layer of a Sequential takes one
    return (None,) + shape[1:]
