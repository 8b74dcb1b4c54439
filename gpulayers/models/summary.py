"""``model.summary()``: Keras's table of layers, output shapes and parameter counts.

A graph model (Functional, or a Sequential seen as one) gets Keras's
"Connected to" column: for each call of a layer in the graph, the inbound
``layer_name[node_index][tensor_index]`` entries.
"""

import math

import numpy as np

__all__ = ["print_summary"]


def _shape_text(layer):
    nodes = layer.__dict__.get("_inbound_nodes", [])
    if nodes:
        shapes = [t.shape for t in nodes[0].output_tensors]
        return str(shapes[0] if len(shapes) == 1 else shapes)
    try:
        return str(layer.output_shape)
    except (AttributeError, ValueError, TypeError):
        return "?"


def _connections(model, layer):
    """Keras's "Connected to" entries of ``layer``'s calls that belong to ``model``'s graph."""
    own = getattr(model, "_node_ids", None)
    if own is None:
        return []
    out = []
    for node in layer.__dict__.get("_inbound_nodes", []):
        if id(node) not in own:
            continue
        for t in node.input_tensors:
            source, index, tensor_index = t._keras_history
            out.append(f"{source.name}[{model._saved_node_index(source, index)}][{tensor_index}]")
    return out


def _size(count, dtype):
    nbytes = count * np.dtype(dtype).itemsize
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024


def print_summary(model, line_length=None, print_fn=None, show_trainable=False):
    """Print the summary table of ``model`` (one line per layer, then the totals)."""
    print_fn = print_fn or print
    graph = getattr(model, "_node_ids", None) is not None
    rows = []
    # A graph lists its ops too (x + y, ops.mean...), as Keras's summary does.
    for layer in (model._operations if graph else model.layers):
        params = f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"
        row = [f"{layer.name} ({type(layer).__name__})", _shape_text(layer), params]
        if graph:
            row.append(", ".join(_connections(model, layer)) or "-")
        if show_trainable:
            row.append("Y" if layer.trainable else "N")
        rows.append(row)
    headers = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if graph else [])
    headers += ["Trainable"] if show_trainable else []
    widths = [max(len(h), *(len(r[i]) for r in rows)) + 2 if rows else len(h) + 2 for i, h in enumerate(headers)]
    total = sum(widths)
    if line_length is not None:
        total = max(total, int(line_length))

    def line(cells):
        text = ""
        for i, (cell, width) in enumerate(zip(cells, widths)):
            text += cell.rjust(width - 2) + "  " if i == 2 else cell.ljust(width)
        return text.rstrip()

    lines = [f'Model: "{model.name}"', "_" * total, line(headers), "=" * total]
    for i, row in enumerate(rows):
        lines.append(line(row))
        lines.append(("_" if i < len(rows) - 1 else "=") * total)
    if not rows:
        lines.append("=" * total)
    every = sum(math.prod(w.shape) for w in model.weights)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    dtype = model.dtype
    for label, count in (("Total", every), ("Trainable", trainable), ("Non-trainable", every - trainable)):
        lines.append(f" {label} params: {count:,} ({_size(count, dtype)})")
    lines.append("_" * total)
    for text in lines:
        print_fn(text)
