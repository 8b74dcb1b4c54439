"""CUDA graphs for CupyOps: a function's device work captured once, then replayed by one launch.

:func:`capture` runs ``fn()`` while a private non-blocking stream records
what it asks of the GPU (``cupy.cuda.Stream.begin_capture``, CuPy's relaxed
mode), with every array it makes taken from a private memory pool. Nothing
runs while it records: the values come from :meth:`CapturedGraph.launch`,
which replays the recorded kernels, GEMMs and copies, in order and into the
same memory, on the current stream.

The rules a captured function follows (a replay repeats the recorded work
exactly, so whatever would differ from one call to the next must live in
device memory that the work itself reads and updates):

* nothing comes back to the host and nothing waits (a copy to or from host
  memory or a synchronization fails the capture);
* random numbers come from device-resident streams (``Ops.random_stream``),
  not from a generator seeded on the host, whose draw a replay would repeat;
* the arrays it reads that were made before it (weights, inputs) stay where
  they are: a replay reads the same addresses.

The private pool is never used again but by the graph: a block freed during
the capture may be reused later in the same capture, which the stream order
makes safe, and no array made outside the capture can land where a replay
writes.
"""

__all__ = ["CapturedGraph", "GraphCaptureError", "capture"]


class GraphCaptureError(RuntimeError):
    """The work could not be captured as a CUDA graph (the message says why)."""


class CapturedGraph:
    """A captured graph with the memory pool its arrays came from (kept alive as long as the graph)."""

    def __init__(self, graph, pool, stream):
        self._graph, self._pool, self._stream = graph, pool, stream

    def launch(self):
        """Replay the recorded work on the current stream (asynchronous, as a kernel launch)."""
        self._graph.launch()


def capture(ops, fn):
    """``(CapturedGraph, fn())`` for a CupyOps ``ops``: ``fn``'s device work recorded, not run.

    Raises :class:`GraphCaptureError` (chained to the cause) when the
    capture fails, having ended it: ``fn``'s own exceptions are re-raised as
    they are.
    """
    cupy = ops.xp
    stream = cupy.cuda.Stream(non_blocking=True)
    pool = cupy.cuda.MemoryPool()
    ops._capturing = True
    try:
        with cupy.cuda.using_allocator(pool.malloc), stream:
            stream.begin_capture()
            try:
                result = fn()
            except BaseException:
                _abandon(stream)
                raise
            try:
                graph = stream.end_capture()
            except Exception as exc:  # the driver invalidated the capture (an unsupported call inside)
                raise GraphCaptureError(f"the capture was invalidated: {type(exc).__name__}: {exc}") from exc
    finally:
        ops._capturing = False
    return CapturedGraph(graph, pool, stream), result


def _abandon(stream):
    """End a capture that failed, dropping what it recorded (it may already be invalid)."""
    try:
        stream.end_capture()
    except Exception:  # noqa: BLE001 -- the capture is being abandoned; its own error is the one raised
        pass
