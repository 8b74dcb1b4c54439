"""What ``compile(loss=..., loss_weights=..., metrics=...)`` becomes for a model with one or several outputs,
and the compile arguments as Keras 3's ``compile_config`` holds them.

A model's outputs are flat here, in the order of ``model.outputs``; each has
a key (the dict key for dict outputs, else the output layer's name), which
is what a dict of losses, weights, metrics or targets is keyed by and what
the logs are named after: ``<key>_loss`` for each output's loss when more
than one output has one, ``<key>_<metric>`` for each output's metrics when
the model has several outputs (Keras 3's names).
"""

import copy

from gpulayers import losses as losses_module, metrics as metrics_module

__all__ = [
    "COMPILE_KEYS", "CompileLoss", "CompileMetrics", "compile_entries_ok", "flatten_like_outputs", "function_names",
    "is_per_output", "serialize_nested",
]


# The keys of Keras 3's compile_config.
COMPILE_KEYS = frozenset(
    {"optimizer", "loss", "loss_weights", "metrics", "weighted_metrics", "run_eagerly", "steps_per_execution", "jit_compile"}
)


def function_name(entry):
    """Keras's reference to a built-in function, ``{"class_name": "function", "module": "builtins" or
    "keras...", "config": name}``, as the name, which compile() looks up among gpulayers' own (as Keras
    looks it up in its built-in modules); anything else as it is."""
    if isinstance(entry, dict) and entry.get("class_name") == "function" and isinstance(entry.get("config"), str):
        module = entry.get("module")
        if isinstance(module, str) and (module in ("builtins", "keras") or module.startswith("keras.")):
            return entry["config"]
    return entry


def serialize_compile_entry(value, serialize):
    """A compile argument as Keras's compile_config holds it: names and dicts as given, objects serialized."""
    if value is None or isinstance(value, (str, dict)):
        return value
    return serialize(value)


def compile_entries_ok(value, numbers_only=False, depth=0):
    """A compile_config entry: None, a name or serialized object (a number for loss weights), or lists and
    dicts of them, two levels deep at most."""
    if value is None:
        return True
    if numbers_only and isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    if not numbers_only and (isinstance(value, str) or (isinstance(value, dict) and "class_name" in value)):
        return True
    if depth < 2 and isinstance(value, list):
        return all(compile_entries_ok(v, numbers_only, depth + 1) for v in value)
    if depth < 2 and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return all(compile_entries_ok(v, numbers_only, depth + 1) for v in value.values())
    return False


def serialize_nested(value, serialize):
    """A compile argument (one entry, a list, a list of lists, a dict) with its objects serialized."""
    if isinstance(value, dict) and "class_name" not in value:
        return {k: serialize_nested(v, serialize) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [serialize_nested(v, serialize) for v in value]
    return serialize_compile_entry(value, serialize)


def function_names(value):
    """:func:`function_name` through lists and dicts of entries (Keras's multi-output forms)."""
    if isinstance(value, dict) and "class_name" not in value:
        return {k: function_names(v) for k, v in value.items()}
    if isinstance(value, list):
        return [function_names(v) for v in value]
    return function_name(value)


def is_per_output(value):
    """A list/tuple, or a dict keyed by output (not one serialized object, which has a ``class_name``)."""
    return isinstance(value, (list, tuple)) or (isinstance(value, dict) and "class_name" not in value)


def flatten_like_outputs(value, keys, argument, allow_missing=False):
    """``value`` (one array, a list/tuple, or a dict keyed by output keys) as a flat list, one per output.

    A single value for a single output is a list of one; with several
    outputs a single value is not split (it raises) unless ``allow_missing``
    broadcasting is not wanted: callers broadcast themselves where Keras does.
    """
    n = len(keys)
    if isinstance(value, dict):
        unknown = [k for k in value if k not in keys]
        if unknown:
            raise ValueError(
                f"Invalid keys in `{argument}`: {unknown}. The model's outputs are named {keys}. "
                f"Received: {argument} with keys {sorted(map(str, value))}"
            )
        missing = [k for k in keys if k not in value]
        if missing and not allow_missing:
            raise ValueError(
                f"Expected keys {keys} in {argument} dict, but found {argument}.keys()={sorted(map(str, value))}"
            )
        return [value.get(k) for k in keys]
    if isinstance(value, (list, tuple)) and n > 1:
        if len(value) != n:
            raise ValueError(
                f"Invalid value for `{argument}`: the model has {n} outputs {keys}, so it needs {n} entries. "
                f"Received: {len(value)} entries"
            )
        return list(value)
    if n == 1:
        if isinstance(value, (list, tuple)) and len(value) == 1 and argument != "metrics":
            return [value[0]]
        return [value]
    raise ValueError(
        f"Invalid value for `{argument}`: the model has {n} outputs {keys}; give a list of {n} entries or a dict "
        f"keyed by output name. Received: {type(value).__name__}"
    )


def _loss_object(identifier):
    loss = losses_module.to_loss(identifier)
    if hasattr(loss, "check_labels"):
        # fit/evaluate check every label once up front; skip the per-batch device-to-host check
        # (on a copy: the user's object stays as it was).
        loss = copy.copy(loss)
        loss.check_labels = False
    return loss


class CompileLoss:
    """The compiled loss: one loss (or None) and one weight per output, and the per-output loss trackers.

    Args:
        loss: The ``compile`` argument: one loss (applied to every output),
            a list with one per output, or a dict keyed by output keys
            (every key, as Keras requires; a None entry means no loss).
        loss_weights: None, a list, or a dict keyed by output keys (default 1).
        keys: The outputs' keys.
    """

    def __init__(self, loss, loss_weights, keys):
        n = len(keys)
        if loss is None:
            entries = [None] * n
        elif is_per_output(loss):
            entries = flatten_like_outputs(loss, keys, "loss")
        else:
            entries = [loss] * n
        self.keys = list(keys)
        self.losses = [None if e is None else _loss_object(e) for e in entries]
        if loss_weights is None:
            self.weights = [1.0] * n
        else:
            weights = flatten_like_outputs(loss_weights, keys, "loss_weights", allow_missing=True)
            self.weights = [1.0 if w is None else _weight(w) for w in weights]
        active = [i for i, loss_obj in enumerate(self.losses) if loss_obj is not None]
        self.trackers = {}
        if len(active) > 1:
            self.trackers = {i: metrics_module.Mean(name=f"{keys[i]}_loss") for i in active}
        self.last = {}

    @property
    def active(self):
        return any(loss is not None for loss in self.losses)

    def __call__(self, y_true, y_pred, sample_weight):
        """The weighted sum over the outputs; each output's own value is kept in ``self.last``."""
        total = None
        self.last = {}
        for i, loss_obj in enumerate(self.losses):
            if loss_obj is None:
                continue
            if y_true[i] is None:
                raise ValueError(
                    f"Missing target for output '{self.keys[i]}', which has a loss. Give `y` for every output "
                    "with a loss."
                )
            value = loss_obj(y_true[i], y_pred[i], sample_weight[i])
            self.last[i] = value
            term = value if self.weights[i] == 1.0 else value * self.weights[i]
            total = term if total is None else total + term
        return total

    def update_trackers(self, batch_size):
        for i, tracker in self.trackers.items():
            if i in self.last:
                tracker.update_state(self.last[i].data, sample_weight=batch_size)


def _weight(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Invalid value for `loss_weights`: expected numbers. Received: {value!r}")
    return float(value)


class CompileMetrics:
    """The compiled metrics: ``(output index, metric, weighted, log name)`` entries.

    ``metrics`` / ``weighted_metrics`` take Keras's forms: for one output a
    list; for several a list of lists (or None) per output, or a dict keyed
    by output keys of one metric or a list.
    """

    def __init__(self, metrics, weighted_metrics, keys, loss, output_shapes):
        self.keys = list(keys)
        self.entries = []
        for argument, given, weighted in (("metrics", metrics, False), ("weighted_metrics", weighted_metrics, True)):
            for i, group in enumerate(self._per_output(given, argument)):
                loss_i = loss[i] if isinstance(loss, list) else loss
                for identifier in group:
                    metric = metrics_module.get(identifier, loss=loss_i, y_pred_shape=output_shapes[i])
                    if metric is None:
                        continue
                    name = metric.name if len(self.keys) == 1 else f"{self.keys[i]}_{metric.name}"
                    self.entries.append((i, metric, weighted, name))
        names = [e[3] for e in self.entries]
        if len(set(names)) != len(names):
            raise ValueError(f"Invalid value for `metrics`: metric names must be unique. Received names: {names}")

    def _per_output(self, given, argument):
        n = len(self.keys)
        if given is None:
            return [[] for _ in range(n)]
        if n == 1:
            if isinstance(given, dict) and is_per_output(given):
                given = flatten_like_outputs(given, self.keys, argument, allow_missing=True)[0]
                given = [] if given is None else given
            if isinstance(given, str) or not hasattr(given, "__iter__"):
                raise TypeError(f"Invalid type for `{argument}`: expected a list. Received: {argument}={given!r}")
            return [list(given)]
        if isinstance(given, dict):
            groups = flatten_like_outputs(given, self.keys, argument, allow_missing=True)
        elif isinstance(given, (list, tuple)) and len(given) == n:
            groups = list(given)  # one entry per output: a metric, a list of them, or None (Keras 3.15)
        else:
            raise ValueError(
                f"Invalid `{argument}`. `{argument}` should contain metrics objects and either be a dict or a list "
                f"matching the output names of the functional model {self.keys} or match the output structure of "
                f"the model. Received: {argument}={given!r:.200}"
            )
        out = []
        for g in groups:
            if g is None:
                out.append([])
            elif isinstance(g, (list, tuple)):
                out.append(list(g))
            else:
                out.append([g])
        return out

    @property
    def metrics(self):
        return [e[1] for e in self.entries]

    def log_names(self):
        return {id(e[1]): e[3] for e in self.entries}
