"""A training step that fails is undone whole: the model, the optimizer and the metrics are as before it.

``fit`` and ``train_on_batch`` run each step through :func:`run_train_step`.
Before the step it notes what a step can change, cheaply: the array each
weight is bound to (a forward pass replaces moving statistics, the
optimizer's per-variable rules replace weights and state: neither writes
into an array in place), the optimizer's state (``_step_snapshot``), each
metric's attributes and variables, and the random streams (the process-wide
generator and each layer's own, so that a retried step draws the same
dropout masks). If the step raises (out of memory, a constraint that raises,
Ctrl-C twice), all of it is put back, and the retried step is bit-identical
to one that never failed. A CUDA-graph step (``models/step_graphs.py``)
writes the new moving statistics into their arrays in place; the graph keeps
their old values, which :meth:`StepGraphs.undo_launch` copies back.

The built-in ``train_step`` updates the metrics before the optimizer runs
(as Keras's JAX trainer, whose metrics see the weights before the update),
so that the GPU's fused optimizer step, which updates weights in place, is
the step's last act.
"""

from backends import array_namespace
from gpulayers import utils
from gpulayers.random import SeedGenerator

__all__ = ["run_train_step"]


def run_train_step(model, data):
    """``model.train_step(data)``; if it raises, the model, optimizer and metrics are put back first."""
    restore = _snapshot(model)
    try:
        return model.train_step(data)
    except BaseException:
        restore()
        raise


def _snapshot(model):
    layers = model._flatten_layers()
    weights = [(v, v.data) for layer in layers for v in layer._trainable_variables + layer._non_trainable_variables]
    metrics = [(m, dict(vars(m)), [(v, v.data) for v in m.variables]) for m in model.metrics]
    optimizer = model.optimizer._step_snapshot() if model.optimizer is not None else None
    randoms = _random_states(layers)
    graphs = model._step_graphs
    launches = None if graphs is None else graphs.launches

    def restore():
        if graphs is not None:
            graphs.undo_launch(launches)
        for v, array in weights:
            v.data = array
        for m, attributes, variables in metrics:
            vars(m).clear()
            vars(m).update(attributes)
            for v, array in variables:
                v.data = array
        if optimizer is not None:
            optimizer()
        randoms()

    return restore


def _random_states(layers):
    """A function that puts back the random streams a step draws from: the process-wide generator (an
    unseeded draw, a layer's first seed) and each layer's own stream or SeedGenerator."""
    host = utils.host_rng()
    host_state = host.bit_generator.state
    streams, counters, generators = [], [], []
    for layer in layers:
        attributes = vars(layer)
        if "_rng" in attributes:
            stream = attributes["_rng"]
            bit_generator = getattr(stream, "bit_generator", None)
            state = bit_generator.state if bit_generator is not None and hasattr(bit_generator, "state") else None
            streams.append((layer, stream, attributes.get("_rng_ops"), state))
            counter = getattr(stream, "state", None)
            if state is None and hasattr(counter, "shape"):
                counters.append(counter)  # a PhiloxStream's device counter (CupyOps), advanced in place
        generator = attributes.get("seed_generator")
        if isinstance(generator, SeedGenerator):
            generators.append((generator, generator._counter))
    # The device counters in one copy (a launch), not one each.
    kept = array_namespace(counters[0]).stack(counters) if counters else None

    def restore():
        host.bit_generator.state = host_state
        for layer, stream, ops, state in streams:
            layer._rng, layer._rng_ops = stream, ops  # None before a first draw: the retry seeds it again
            if state is not None:
                stream.bit_generator.state = state
        for counter, before in zip(counters, () if kept is None else kept):
            counter[...] = before  # in place: a captured CUDA graph reads this array
        for generator, counter in generators:
            generator._counter = counter

    return restore
