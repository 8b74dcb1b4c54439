"""How much memory a layer's weight may take, and weights created without initial values.

``Layer.add_weight`` checks each weight's size against
:func:`weight_byte_limit` before drawing anything, and inside
:func:`deferred_initialization` (a model being loaded from a file, whose
values come from the file) gives it a placeholder that holds no memory
instead of running its initializer.
"""

import contextlib
import math
import os
import sys
import threading

try:
    import resource
except ImportError:  # Windows
    resource = None

import numpy as np

from backends import get_ops

__all__ = ["active_deferral", "check_weight_size", "deferred_initialization", "weight_byte_limit"]

_state = threading.local()  # the deferral of this thread's loader


def active_deferral():
    """The :func:`deferred_initialization` record of this thread, or None."""
    return getattr(_state, "deferred", None)


def weight_byte_limit():
    """The most bytes one weight may take: the machine's physical memory, or, under an address-space
    limit (``RLIMIT_AS``), the address space left. The initial values are drawn on the host, so a larger
    weight can never be held; refusing it up front gives a ValueError instead of a MemoryError (or the
    OOM killer) later."""
    limit = sys.maxsize  # what NumPy can index at all
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        limit = min(limit, page * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): NumPy's bound alone
        return limit
    if resource is not None:
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limit = min(limit, max(soft - _mapped_pages() * page, 0))
    return limit


def _mapped_pages():
    """The pages the process maps now (Linux's /proc/self/statm; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def check_weight_size(layer, name, shape, dtype):
    """Refuse, with ValueError naming the layer, a weight of more bytes than :func:`weight_byte_limit`."""
    count = math.prod(shape)
    size = count * np.dtype(dtype).itemsize
    limit = weight_byte_limit()
    if size > limit:
        raise ValueError(
            f"Layer '{layer.name}' cannot create weight '{name}' of shape {tuple(shape)} ({dtype}): {count} "
            f"elements, {size} bytes, more than the {limit} bytes one weight may take here (the physical "
            "memory, or the address space left under RLIMIT_AS)."
        )


class _Deferred:
    """The weights created inside :func:`deferred_initialization`: placeholders without storage."""

    def __init__(self, max_elements, source):
        self.max_elements, self.source = max_elements, source
        self.elements = 0
        self.pending = []  # (variable, its placeholder, its initializer)

    def placeholder(self, layer, name, shape, dtype):
        self.elements += math.prod(shape)
        if self.max_elements is not None and self.elements > self.max_elements:
            raise ValueError(
                f"weight '{name}' of layer '{layer.name}' (shape {tuple(shape)}) brings the model to "
                f"{self.elements} parameters, more than the {self.max_elements} that {self.source} can hold "
                "(2 bytes each at least)."
            )
        # A zero-stride view of one zero: the shape and dtype of the weight, no memory, read-only.
        return np.broadcast_to(np.zeros((), dtype=dtype), tuple(shape))

    def initialize_remaining(self):
        """Draw the initial values of the weights nothing assigned (a variable the file does not hold)."""
        for var, placeholder, initializer in self.pending:
            if var.data is placeholder:
                shape = tuple(var.shape)
                var.value = get_ops().asarray(np.asarray(initializer(shape, dtype=var.dtype), dtype=var.dtype))
        self.pending = []


@contextlib.contextmanager
def deferred_initialization(max_elements=None, source="the file"):
    """Build layers without drawing initial values (a model loaded from a file gets them from the file).

    Inside the block ``add_weight`` gives each weight a placeholder of its shape and dtype that holds no
    memory (a read-only zero-stride view), so building what a config declares costs nothing whatever
    the sizes; with ``max_elements`` it refuses, with ValueError, the weight that brings the total past
    it (a config declaring more parameters than its ``source`` can hold). The loader then assigns every
    weight and calls ``initialize_remaining()`` for any it did not reach. Yields the record.
    """
    previous = active_deferral()
    _state.deferred = deferred = _Deferred(max_elements, source)
    try:
        yield deferred
    finally:
        _state.deferred = previous
