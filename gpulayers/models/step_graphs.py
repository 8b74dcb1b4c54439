"""``compile(jit_compile=True)`` on the GPU: the training step's forward and backward pass as a CUDA graph.

:class:`StepGraphs` serves :meth:`Trainer.train_step`. For each input
signature (the structure, shapes and dtypes of ``x``, ``y`` and
``sample_weight``, and which weights train) the first step runs eagerly: it
builds the model and the optimizer's slots, compiles the kernels and fills
the caches. The second copies its batch into fixed input buffers and
captures the differentiation (forward, loss, gradients) on them
(``Ops.capture_graph``), then launches the graph; every later step copies
its batch into those buffers and launches the graph again: one launch in
place of the step's kernels, GEMMs and Python. The optimizer's update, the
loss tracker and the metrics then run as usual, on the graph's outputs
(their per-step scalars, the learning rate and the step count, stay the
host's).

What the captured pass reads must stay where it was: before each launch
every weight still bound to another array (``set_weights``, an optimizer
that assigned a new one) is copied back into the array the graph reads. A
non-trainable weight that the pass itself replaces (batch normalization's
moving statistics) is copied into its old array at the end of the graph,
so the next launch reads the new values; the graph first copies the old
values aside, and :meth:`StepGraphs.undo_launch` puts them back when the
rest of the step fails (``models/step_undo.py``).

A step that cannot be captured (a sync or a host copy inside the model, a
host-seeded random draw, a ``LossScaleOptimizer``'s per-step scale) runs
eagerly, with one warning per model; so does everything on a backend without
graphs (the CPU). At most :data:`MAX_GRAPHS` signatures keep a graph (the
oldest is dropped), each with its own memory for the step's activations.
"""

import collections
import warnings

from gpulayers.tree import flatten, map_structure

__all__ = ["MAX_GRAPHS", "StepGraphs"]

MAX_GRAPHS = 4


class _Graph:
    __slots__ = ("graph", "inputs", "outputs", "pinned", "replaced")

    def __init__(self, graph, inputs, outputs, pinned, replaced):
        self.graph, self.inputs, self.outputs, self.pinned = graph, inputs, outputs, pinned
        self.replaced = replaced  # (array the pass overwrites, its values before the launch), per such weight


def _signature(arrays, weights):
    return (tuple(None if a is None else (tuple(a.shape), a.dtype.str) for a in arrays), tuple(map(id, weights)))


class StepGraphs:
    """The captured training steps of one model (see the module docstring)."""

    def __init__(self):
        self._graphs = collections.OrderedDict()  # signature -> _Graph, or None after the eager first step
        self._disabled = None  # why graphs are off for this model (warned once)
        self.launches = 0  # graphs launched so far
        self._last = None  # the graph launched last

    @property
    def captured(self):
        """How many signatures have a graph now."""
        return sum(entry is not None for entry in self._graphs.values())

    @property
    def disabled(self):
        """Why the steps run eagerly (the warning's reason), or None."""
        return self._disabled

    def run(self, model, ops, differentiate, weights, x, y, sample_weight):
        """``((x, y, sample_weight), differentiate(weights, x, y, sample_weight))``, replayed from a graph
        where one is captured; the returned data are the arrays the results were computed from."""
        data = (x, y, sample_weight)
        leaves = flatten(data)
        if self._disabled is not None or any(a is not None and not isinstance(a, ops.xp.ndarray) for a in leaves):
            return data, differentiate(weights, x, y, sample_weight)
        from gpulayers.optimizers import LossScaleOptimizer

        if isinstance(model.optimizer, LossScaleOptimizer):
            return data, self._eager(
                "a LossScaleOptimizer's scale changes from step to step", differentiate, weights, data
            )
        key = _signature(leaves, weights)
        if key not in self._graphs:
            self._graphs[key] = None  # the eager first step of this signature
            while len(self._graphs) > MAX_GRAPHS:
                self._graphs.popitem(last=False)
            return data, differentiate(weights, x, y, sample_weight)
        entry = self._graphs[key]
        if entry is None:
            entry = self._capture(model, ops, differentiate, weights, data, leaves)
            if entry is None:
                return data, differentiate(weights, x, y, sample_weight)
            self._graphs[key] = entry
        else:
            self._graphs.move_to_end(key)
            for fixed, given in zip(entry.inputs, leaves):
                if fixed is not None:
                    fixed[...] = given
            _repin(entry.pinned)
        self.launches += 1
        self._last = entry
        entry.graph.launch()
        return entry.outputs

    def undo_launch(self, launches):
        """Put back the weights a graph launched since ``launches`` (a value of :attr:`launches`) overwrote
        in place, with the values they had before it: the step it served failed later."""
        if self.launches != launches and self._last is not None:
            for array, before in self._last.replaced:
                array[...] = before

    def _eager(self, why, differentiate, weights, data):
        self._disable(why)
        return differentiate(weights, *data)

    def _disable(self, why):
        if self._disabled is None:
            self._disabled = why
            self._graphs.clear()
            warnings.warn(f"jit_compile: the training step runs eagerly: {why}.", stacklevel=4)

    def _capture(self, model, ops, differentiate, weights, data, leaves):
        inputs = [None if a is None else a.copy() for a in leaves]
        fixed = iter(inputs)
        fixed_data = _rebuild(data, fixed)
        variables = model.weights
        before = [(v, v.data) for v in variables]
        replaced = []

        def step():
            result = differentiate(weights, *fixed_data)
            # A weight the pass replaced (moving statistics): the graph copies the new values into the
            # array it reads next time, and the weight goes back to that array.
            for v, old in before:
                if v.data is not old:
                    new = v.data
                    if new.shape != old.shape or new.dtype != old.dtype:
                        raise ValueError(f"the step changed the shape or dtype of variable {v.path!r}")
                    kept = ops.xp.empty_like(old)
                    kept[...] = old  # each launch keeps the values it overwrites, for undo_launch
                    replaced.append((old, kept))
                    old[...] = new
                    v.data = old
            return result

        try:
            graph, result = ops.capture_graph(step)
        except Exception as exc:  # noqa: BLE001 -- the step then runs eagerly, and raises again if it must
            for v, old in before:
                v.data = old
            self._disable(f"it could not be captured as a CUDA graph ({type(exc).__name__}: {exc})")
            return None
        return _Graph(graph, inputs, (fixed_data, result), [(v, v.data) for v in variables], replaced)


def _rebuild(data, fixed):
    """``data`` (x, y, sample_weight: arrays, structures of arrays, None) with its leaves, in order, from
    the iterator ``fixed``."""
    return map_structure(lambda a: next(fixed), data)


def _repin(pinned):
    """Put each weight back on the array the graph reads, with its current value."""
    for v, array in pinned:
        current = v.data
        if current is not array:
            if current.shape != array.shape:
                raise ValueError(
                    f"jit_compile: variable {v.path!r} changed shape from {array.shape} to {current.shape} "
                    "after its training step was captured; compile the model again"
                )
            array[...] = current
            v.data = array
