"""``plot_model`` and ``model_to_dot`` (Keras's ``keras.utils.plot_model``): a model's graph of layers in DOT.

The graph is built with ``pydot`` (or its older forks ``pydot_ng`` and
``pydotplus``), imported when first needed; writing an image also needs the
Graphviz programs. Without them the functions raise ImportError saying what
to install, as Keras does.

What is drawn, as Keras draws it: a Sequential model is its layers in a
chain; a functional model is one box per layer (and per op called on its
symbolic tensors), with an edge from the layer that made each input of each
call that belongs to the model; a subclassed model is one box. With
``expand_nested``, a Sequential or functional model used as a layer is drawn
as a dashed cluster of its own layers, and the edges go to the boxes inside.
"""

import os
import sys

__all__ = ["model_to_dot", "plot_model"]

_PYDOT_MISSING = "You must install pydot (`pip install pydot`) for `{}` to work."
_GRAPHVIZ_MISSING = (
    "You must install graphviz (see instructions at https://graphviz.gitlab.io/download/) for `plot_model` to work."
)


def _pydot():
    """The pydot module (or a fork of it), or None."""
    for name in ("pydot", "pydot_ng", "pydotplus"):
        try:
            return __import__(name)
        except ImportError:
            continue
    return None


def _graphviz_works(pydot):
    """Whether Graphviz runs: rendering an empty graph succeeds."""
    try:
        pydot.Dot.create(pydot.Dot())
        return True
    except Exception:  # OSError / FileNotFoundError without the programs; pydot's own errors otherwise
        return False


def _in_notebook():
    return "IPython.core.magics.namespace" in sys.modules


def _kind(model):
    """``'sequential'``, ``'functional'`` or ``'subclassed'``."""
    from gpulayers.models.sequential import Sequential

    if isinstance(model, Sequential):
        return "sequential"
    if getattr(model, "_node_ids", None) is not None and hasattr(model, "_operations"):
        return "functional"
    return "subclassed"


def _graph_of(model):
    """The functional graph behind ``model`` (a Sequential's own, once it has an input), or None."""
    kind = _kind(model)
    if kind == "functional":
        return model
    if kind == "sequential":
        return getattr(model, "_functional", None)
    return None


def _own_nodes(layer, graph):
    """``layer``'s calls that belong to ``graph`` (every call when there is no graph)."""
    nodes = layer.__dict__.get("_inbound_nodes", [])
    if graph is None:
        return list(nodes)
    own = graph._node_ids
    return [n for n in nodes if id(n) in own]


def _shapes(tensors):
    shapes = [tuple(t.shape) for t in tensors]
    if not shapes:
        return None
    return shapes[0] if len(shapes) == 1 else shapes


def _format_shape(shape):
    return "?" if shape is None else str(shape).replace("{", "").replace("}", "")


def _activation_name(layer):
    fn = layer.activation
    for attribute in ("name", "__name__"):
        name = getattr(fn, attribute, None)
        if isinstance(name, str):
            return name
    return str(fn)


def _label(layer, graph, show_shapes, show_dtype, show_layer_names, show_layer_activations, show_trainable):
    """The box of one layer: Graphviz's HTML-like table (title row, then the rows of details asked for)."""
    from html import escape

    class_name = type(layer).__name__
    nodes = _own_nodes(layer, graph)
    cells = []
    if show_shapes:
        input_shape = output_shape = None
        if nodes:
            input_shape = _shapes(nodes[0].input_tensors)
            output_shape = _shapes(nodes[0].output_tensors)
        else:
            try:
                output_shape = tuple(layer.output_shape)
            except (AttributeError, TypeError, ValueError):
                pass
        if class_name != "InputLayer":
            cells.append(("white", "", f"Input shape: <b>{escape(_format_shape(input_shape))}</b>"))
        cells.append(("white", "", f"Output shape: <b>{escape(_format_shape(output_shape))}</b>"))
    if show_dtype:
        dtype = None
        if nodes and nodes[0].output_tensors:
            dtypes = [t.dtype for t in nodes[0].output_tensors]
            dtype = dtypes[0] if len(dtypes) == 1 else dtypes
        cells.append(("white", "", f"Output dtype: <b>{escape(str(dtype or '?'))}</b>"))
    if show_trainable and getattr(layer, "weights", None):
        if layer.trainable:
            cells.append(("forestgreen", ' color="white"', "<b>Trainable</b>"))
        else:
            cells.append(("firebrick", ' color="white"', "<b>Non-trainable</b>"))
    span = max(1, len(cells))
    title = f"<b>{escape(layer.name)}</b> ({escape(class_name)})" if show_layer_names else f"<b>{escape(class_name)}</b>"
    rows = [
        f'<tr><td colspan="{span}" bgcolor="black"><font point-size="16" color="white">{title}</font></td></tr>'
    ]
    if show_layer_activations and getattr(layer, "activation", None) is not None:
        rows.append(
            f'<tr><td colspan="{span}" bgcolor="white"><font point-size="14">'
            f"Activation: <b>{escape(_activation_name(layer))}</b></font></td></tr>"
        )
    if cells:
        rows.append(
            "<tr>"
            + "".join(f'<td bgcolor="{bg}"><font point-size="14"{fg}>{text}</font></td>' for bg, fg, text in cells)
            + "</tr>"
        )
    return '<<table border="0" cellborder="1" bgcolor="black" cellpadding="10">' + "".join(rows) + "</table>>"


def _box(pydot, layer, graph, options):
    node = pydot.Node(str(id(layer)), label=_label(layer, graph, **options))
    node.set("fontname", "Helvetica")
    node.set("border", "0")
    node.set("margin", "0")
    return node


def _edge(pydot, dot, source, destination):
    src, dst = str(id(source)), str(id(destination))
    if not dot.get_edge(src, dst):
        edge = pydot.Edge(src, dst)
        edge.set("penwidth", "2")
        dot.add_edge(edge)


def _is_graph_model(layer):
    return _kind(layer) in ("sequential", "functional") if _is_model(layer) else False


def _is_model(layer):
    from gpulayers.models.model import Model

    return isinstance(layer, Model)


def _drawn_layers(model):
    """The boxes of a model: a Sequential's layers, a functional model's layers and ops."""
    if _kind(model) == "sequential":
        return list(model.layers)
    return list(getattr(model, "_operations", model.layers))


def _first_box(layer):
    """The box an edge into a nested model goes to: its first layer (its InputLayer when it has one)."""
    while _is_graph_model(layer):
        if _kind(layer) == "functional":
            layer = layer.inputs[0]._keras_history[0]
        else:
            layer = layer.layers[0]
    return layer


def _input_box(model, input_index):
    """The box inside a nested model that receives the model's input number ``input_index``."""
    if _kind(model) == "functional":
        inputs = model.inputs
        return _first_box(inputs[min(input_index, len(inputs) - 1)]._keras_history[0])
    return _first_box(model.layers[0])


def _output_box(model, output_index):
    """The box inside a nested model that makes its output number ``output_index``."""
    layer = model
    while _is_graph_model(layer):
        graph = _graph_of(layer)
        if graph is None:
            return layer.layers[-1]
        outputs = graph.outputs
        layer, _, output_index = outputs[min(output_index, len(outputs) - 1)]._keras_history
    return layer


def model_to_dot(
    model,
    show_shapes=False,
    show_dtype=False,
    show_layer_names=True,
    rankdir="TB",
    expand_nested=False,
    dpi=200,
    subgraph=False,
    show_layer_activations=False,
    show_trainable=False,
    **kwargs,
):
    """The model's graph as a ``pydot.Dot`` (a ``pydot.Cluster`` with ``subgraph=True``), as Keras's.

    Args:
        model: A built model (Sequential, functional or subclassed).
        show_shapes: Show each layer's input and output shapes.
        show_dtype: Show each layer's output dtype.
        show_layer_names: Show the layers' names (else only their classes).
        rankdir: Graphviz's direction: ``"TB"`` (top to bottom) or ``"LR"``.
        expand_nested: Draw nested Sequential and functional models as clusters of their layers.
        dpi: Resolution of a rendered image.
        subgraph: Return a cluster (used for nested models).
        show_layer_activations: Show the activation of layers that have one.
        show_trainable: Mark layers with weights as trainable or not.
        splines: Graphviz's edge style (default ``"ortho"``).

    Raises:
        ValueError: the model is not built, or an unknown keyword argument.
        ImportError: pydot is not installed.
    """
    if not model.built:
        raise ValueError(
            "This model has not yet been built. Build the model first by calling `build()` or by calling the model "
            "on a batch of data."
        )
    pydot = _pydot()
    if pydot is None:
        raise ImportError(_PYDOT_MISSING.format("model_to_dot"))
    splines = kwargs.pop("splines", "ortho")
    if kwargs.pop("layer_range", None) is not None:
        raise ValueError("Argument `layer_range` is no longer supported.")
    if kwargs:
        raise ValueError(f"Unrecognized keyword arguments: {kwargs}")

    if subgraph:
        dot = pydot.Cluster(style="dashed", graph_name=model.name)
        dot.set("label", model.name)
        dot.set("labeljust", "l")
    else:
        dot = pydot.Dot()
        dot.set("rankdir", rankdir)
        dot.set("concentrate", True)
        dot.set("dpi", dpi)
        dot.set("splines", splines)
        dot.set_node_defaults(shape="record")

    options = {
        "show_shapes": show_shapes, "show_dtype": show_dtype, "show_layer_names": show_layer_names,
        "show_layer_activations": show_layer_activations, "show_trainable": show_trainable,
    }
    kind = _kind(model)
    if kind == "subclassed":
        dot.add_node(_box(pydot, model, None, options))
        return dot

    graph = _graph_of(model)
    layers = _drawn_layers(model)
    for layer in layers:
        if expand_nested and _is_graph_model(layer):
            dot.add_subgraph(model_to_dot(
                layer, show_shapes, show_dtype, show_layer_names, rankdir, expand_nested, dpi, subgraph=True,
                show_layer_activations=show_layer_activations, show_trainable=show_trainable,
            ))
        else:
            dot.add_node(_box(pydot, layer, graph, options))

    if kind == "sequential" and not expand_nested:
        for a, b in zip(layers, layers[1:]):
            _edge(pydot, dot, a, b)
        return dot
    if kind == "sequential":
        if graph is None:  # no input yet: the chain, into and out of nested models
            for a, b in zip(layers, layers[1:]):
                _edge(pydot, dot, _output_box(a, 0), _first_box(b))
            return dot
        layers = layers[1:]  # the first layer's edge comes from outside the model

    for layer in layers:
        for node in _own_nodes(layer, graph):
            for input_index, tensor in enumerate(node.input_tensors):
                history = tensor._keras_history
                if history is None:
                    continue
                source, _, output_index = history
                if kind == "sequential" and source.__class__.__name__ == "InputLayer" and source not in layers:
                    continue  # a Sequential's InputLayer is not drawn
                destination = layer
                if expand_nested:
                    if _is_graph_model(source):
                        source = _output_box(source, output_index)
                    if _is_graph_model(destination):
                        destination = _input_box(destination, input_index)
                _edge(pydot, dot, source, destination)
    return dot


def plot_model(
    model,
    to_file="model.png",
    show_shapes=False,
    show_dtype=False,
    show_layer_names=True,
    rankdir="TB",
    expand_nested=False,
    dpi=200,
    show_layer_activations=False,
    show_trainable=False,
    **kwargs,
):
    """Draw the model's graph of layers into an image file, as ``keras.utils.plot_model``.

    The arguments are :func:`model_to_dot`'s; the image format comes from the
    file's extension (``png`` without one). Returns an ``IPython.display.Image``
    of the file when IPython is installed (and the file is not a PDF), else None.

    Raises:
        ImportError: pydot or Graphviz is not installed (in a notebook the
            message is printed instead, as Keras does).
        ValueError: the model is not built, or an unknown keyword argument.
    """
    if not model.built:
        raise ValueError(
            "This model has not yet been built. Build the model first by calling `build()` or by calling the model "
            "on a batch of data."
        )
    pydot = _pydot()
    problem = None
    if pydot is None:
        problem = _PYDOT_MISSING.format("plot_model")
    elif not _graphviz_works(pydot):
        problem = _GRAPHVIZ_MISSING
    if problem is not None:
        if _in_notebook():
            print(problem)
            return None
        raise ImportError(problem)
    if kwargs.pop("layer_range", None) is not None:
        raise ValueError("Argument `layer_range` is no longer supported.")
    splines = kwargs.pop("splines", "ortho")
    if kwargs:
        raise ValueError(f"Unrecognized keyword arguments: {kwargs}")
    dot = model_to_dot(
        model, show_shapes=show_shapes, show_dtype=show_dtype, show_layer_names=show_layer_names, rankdir=rankdir,
        expand_nested=expand_nested, dpi=dpi, show_layer_activations=show_layer_activations,
        show_trainable=show_trainable, splines=splines,
    )
    to_file = os.fspath(to_file)
    extension = os.path.splitext(to_file)[1][1:] or "png"
    dot.write(to_file, format=extension)
    if extension != "pdf":
        try:
            from IPython import display
        except ImportError:
            return None
        return display.Image(filename=to_file)
    return None
