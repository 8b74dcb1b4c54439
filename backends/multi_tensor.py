"""Multi-tensor optimizer steps: the rules the fused kernels know, and their launch tables.

:meth:`backends.ops.Ops.multi_tensor_update` updates every variable of an
optimizer step in place, in one kernel launch per :data:`MAX_TENSORS`
variables (``backends/kernels/optimizer.cu``). The optimizer describes its
step as a rule name, its constants and one group per variable,
``(variable, gradient, *state)``, with the state in the rule's slot order
(:data:`RULES`; None for a slot the configuration does not use). The
arithmetic is ``gpulayers/optimizers/algorithms.py``'s, in the variable's
dtype, with every constant rounded to that dtype first, as numpy rounds a
Python float meeting a float32 array.

The variables and their state are passed to the kernel in an ``MtTable``
struct by value (:data:`TABLE_DTYPE` is its layout), so a step copies nothing
to the device and reads nothing back.
"""

import numpy

__all__ = ["CHUNK", "MAX_TENSORS", "RULES", "SLOTS", "TABLE_DTYPE", "check_groups", "tables"]

MAX_TENSORS = 32  # MT_MAX_TENSORS in optimizer.cu
SLOTS = 5  # MT_SLOTS: variable, gradient and up to three state arrays
CHUNK = 2048  # elements per work unit (a block strides over one unit at a time)

# rule -> (state slot names in kernel order, the kernel's constants after (table, chunk) in order).
# Names ending in "?" are int flags; the others are constants of the variable's dtype.
RULES = {
    "sgd": (("momentum",), ("lr", "wd", "momentum", "use_momentum?", "nesterov?")),
    "adam": (("momentum", "velocity", "velocity_hat"),
             ("lr", "wd", "alpha", "one_minus_beta_1", "one_minus_beta_2", "epsilon", "amsgrad?")),
    "rmsprop": (("velocity", "momentum", "average_gradient"),
                ("lr", "wd", "rho", "one_minus_rho", "epsilon", "momentum", "use_momentum?", "centered?")),
    "adagrad": (("accumulator",), ("lr", "wd", "epsilon")),
}

# struct MtTable of optimizer.cu: naturally aligned fields, so numpy's packed layout is C's.
TABLE_DTYPE = numpy.dtype([
    ("ptr", numpy.uint64, (SLOTS, MAX_TENSORS)),
    ("size", numpy.int64, (MAX_TENSORS,)),
    ("chunk_start", numpy.int64, (MAX_TENSORS + 1,)),
    ("decay_mask", numpy.uint32),
    ("count", numpy.int32),
])
_FLOATS = (numpy.dtype("float32"), numpy.dtype("float64"))


def check_groups(rule, groups, constants, decay):
    """Validate a multi-tensor step's arguments (see :meth:`backends.ops.Ops.multi_tensor_update`).

    Returns the common dtype of the variables.
    """
    if rule not in RULES:
        raise ValueError(f"Invalid value for `rule`: expected one of {sorted(RULES)}. Received: rule={rule!r}")
    slots, names = RULES[rule]
    missing = [n.rstrip("?") for n in names if n.rstrip("?") not in constants]
    if missing:
        raise ValueError(f"Missing constants {missing} for rule {rule!r}. Received: constants={sorted(constants)}")
    if len(decay) != len(groups):
        raise ValueError(f"`decay` needs one flag per group: {len(groups)} groups, {len(decay)} flags")
    dtype = None
    for i, group in enumerate(groups):
        if len(group) != 2 + len(slots):
            raise ValueError(
                f"Invalid value for `groups[{i}]`: rule {rule!r} takes (variable, gradient, {', '.join(slots)}); "
                f"received {len(group)} arrays"
            )
        w = group[0]
        if w is None or group[1] is None:
            raise ValueError(f"Invalid value for `groups[{i}]`: the variable and its gradient are required")
        dtype = w.dtype if dtype is None else dtype
        if w.dtype not in _FLOATS or w.dtype != dtype:
            raise TypeError(f"Invalid dtype for `groups[{i}]`: expected float32 or float64 like group 0 ({dtype}). "
                            f"Received: {w.dtype}")
        for j, a in enumerate(group):
            if a is None:
                continue
            if tuple(a.shape) != tuple(w.shape) or a.dtype != dtype:
                raise ValueError(
                    f"Invalid value for `groups[{i}][{j}]`: expected shape {tuple(w.shape)} and dtype {dtype}. "
                    f"Received: shape {tuple(a.shape)}, dtype {a.dtype}"
                )
            if not a.flags.c_contiguous:
                raise ValueError(f"Invalid value for `groups[{i}][{j}]`: the kernels need C-contiguous arrays")
    return dtype


def kernel_constants(rule, constants, dtype):
    """The kernel's arguments after (table, chunk): constants rounded to ``dtype``, flags as int32."""
    t = numpy.dtype(dtype).type
    return tuple(
        numpy.int32(bool(constants[n[:-1]])) if n.endswith("?") else t(constants[n]) for n in RULES[rule][1]
    )


def tables(groups, decay, pointer, chunk=CHUNK):
    """One ``(MtTable scalar, chunk count)`` per launch, for groups of arrays with C-contiguous storage.

    ``pointer(array)`` gives an array's device address; a None slot gets 0
    (the kernel does not read it). Empty variables are left out.
    """
    out = []
    live = [(g, d) for g, d in zip(groups, decay) if g[0].size]
    for start in range(0, len(live), MAX_TENSORS):
        part = live[start:start + MAX_TENSORS]
        table = numpy.zeros((), TABLE_DTYPE)
        chunks = 0
        for t, (group, decayed) in enumerate(part):
            for s, a in enumerate(group):
                table["ptr"][s, t] = 0 if a is None else pointer(a)
            n = int(group[0].size)
            table["size"][t] = n
            table["chunk_start"][t] = chunks
            chunks += -(-n // chunk)
            if decayed:
                table["decay_mask"] |= numpy.uint32(1 << t)
        table["chunk_start"][len(part):] = chunks
        table["count"] = len(part)
        out.append((table[()], chunks))
    return out
