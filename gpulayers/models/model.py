"""``Model``: a layer that trains (Keras 3's ``keras.Model``), and how it becomes a functional model.

``Model(inputs, outputs)`` builds a :class:`~gpulayers.models.functional.Functional`
graph model; ``class MyModel(Model)`` with layers assigned in ``__init__``
and a ``call`` is a subclassed model, trained through the tape like any
layer. A subclass constructed with ``inputs``/``outputs`` (Keras's
"functional subclass", as in the guide that overrides ``train_step``) is
both: its class is combined with Functional, once per class.
"""

from gpulayers.layers.base import Layer
from gpulayers.models.summary import print_summary
from gpulayers.models.training import Trainer

__all__ = ["Model"]

_FUNCTIONAL_VARIANTS = {}  # a Model subclass -> that class combined with Functional


def _functional_arguments(args, kwargs):
    """Whether a constructor call gives ``inputs`` and ``outputs`` (Keras's rule: two positional arguments,
    or one and ``outputs=``, or both by name)."""
    return len(args) == 2 or (len(args) == 1 and "outputs" in kwargs) or ("inputs" in kwargs and "outputs" in kwargs)


def _functional_variant(cls):
    """``cls`` with Functional behind it in the MRO (its own methods, e.g. ``train_step``, still first)."""
    from gpulayers.models.functional import Functional

    if issubclass(cls, Functional):
        return cls
    if cls is Model:
        return Functional
    variant = _FUNCTIONAL_VARIANTS.get(cls)
    if variant is None:
        variant = type(cls.__name__, (cls, Functional), {
            "__module__": cls.__module__, "__qualname__": cls.__qualname__, "_functional_of": cls,
        })
        _FUNCTIONAL_VARIANTS[cls] = variant
    return variant


class Model(Trainer, Layer):
    """A layer with the training API: ``compile``, ``fit``, ``evaluate``, ``predict``, ``save``.

    Two ways to make one, as in Keras:

    - Functional: ``Model(inputs, outputs, name=None)`` where ``inputs`` and
      ``outputs`` are KerasTensors (one, a list or a dict) from ``Input`` and
      layer calls.
    - Subclassing: ``class MyModel(Model)`` assigning layers in ``__init__``
      (after ``super().__init__()``; lists and dicts of layers are tracked
      too) and computing in ``call(inputs, training=None)``.

    Example:
        >>> inputs = gpulayers.Input((4,))
        >>> outputs = gpulayers.layers.Dense(1)(inputs)
        >>> model = gpulayers.Model(inputs, outputs)
    """

    input_cast = None  # a model leaves its inputs' dtype alone (as Keras's): each layer casts its own
    _functional_of = None

    def __new__(cls, *args, **kwargs):
        if cls is Model and _functional_arguments(args, kwargs):
            cls = _functional_variant(cls)
        return super().__new__(cls, *args, **kwargs)

    def __init__(self, *args, **kwargs):
        if _functional_arguments(args, kwargs):
            # `super().__init__(inputs, outputs)` inside a subclass's __init__: become functional now.
            from gpulayers.models.functional import Functional

            object.__setattr__(self, "__class__", _functional_variant(type(self)))
            Functional.__init__(self, *args, **kwargs)
            return
        if args:
            raise TypeError(
                f"Invalid arguments for {type(self).__name__}: a model takes `inputs` and `outputs` (KerasTensors "
                f"from `Input` and layer calls) or keyword arguments only. Received positional arguments: "
                f"{[type(a).__name__ for a in args]}"
            )
        super().__init__(**kwargs)

    @property
    def layers(self):
        """The layers the model holds (for a subclassed model: those assigned as attributes, in order)."""
        return list(self._layers)

    @layers.setter
    def layers(self, _):
        raise AttributeError(
            "`Model.layers` attribute is reserved and should not be used. Please use another name."
        )

    def get_layer(self, name=None, index=None):
        """A layer of :attr:`layers` by ``name`` or by ``index`` (one of the two, as Keras)."""
        if index is not None and name is not None:
            raise ValueError(
                f"Provide only a layer name or a layer index. Received: index={index!r}, name={name!r}."
            )
        layers = self.layers
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, int) or not -len(layers) <= index < len(layers):
                raise ValueError(
                    f"Was asked to retrieve layer at index {index!r} but model only has {len(layers)} layers."
                )
            return layers[index]
        if name is not None:
            for layer in layers:
                if layer.name == name:
                    return layer
            raise ValueError(f"No such layer: {name}. Existing layers are: {[l.name for l in layers]}.")
        raise ValueError("Provide either a layer name or layer index at `get_layer`.")

    def build(self, input_shape):
        """Build a subclassed model by running ``call`` once on zeros of ``input_shape`` (as Keras's
        symbolic build): every layer inside creates its weights."""
        if type(self).call is Model.call:
            raise ValueError(f"Model '{self.name}' has no `call` method to build with.")
        self._traced_spec((input_shape,), {}, shapes=True)

    def _traced_spec(self, args, kwargs, shapes=False):
        if not self.built:
            self.built = True  # the trace itself builds the layers inside, through their calls
            try:
                return super()._traced_spec(args, kwargs, shapes)
            except BaseException:
                self.built = False
                raise
        return super()._traced_spec(args, kwargs, shapes)

    def call(self, inputs, training=None):
        raise NotImplementedError(
            f"Model '{self.name}' ({type(self).__name__}) does not define `call()`: a subclassed model computes "
            "its outputs in `call(self, inputs, training=None)`."
        )

    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False, show_trainable=False,
                layer_range=None):
        """Print Keras's table of the model's layers: name (type), output shape, parameters
        (and for a graph model the "Connected to" column), then the totals."""
        print_summary(self, line_length=line_length, print_fn=print_fn, show_trainable=show_trainable)
