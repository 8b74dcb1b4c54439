"""Read the data in a Python pickle without unpickling it (CIFAR's batch files).

gpulayers never unpickles: a pickle is a program, and running one can run
any code. :func:`read_pickle_data` instead walks the opcode stream with
``pickletools.genops`` and rebuilds plain data itself: dicts, lists, tuples,
ints, floats, booleans, None, text and byte strings, and NumPy arrays of
numbers. An array is recognized by the names NumPy's own pickles use
(``numpy.core.multiarray._reconstruct`` or ``numpy._core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``): nothing is imported or called, the
array's raw bytes are taken from the stream, and its shape and size are
checked against them before the array is made. Any other global, and every
opcode that builds or calls an object (``INST``, ``OBJ``, ``NEWOBJ``,
extension codes, persistent ids, out-of-band buffers), makes the file
refused.

Strings are read as ``pickle.load(..., encoding="bytes")`` reads them, which
is how Keras loads CIFAR: a Python 2 ``str`` (the ``STRING`` opcodes) becomes
``bytes``, a ``unicode`` becomes ``str``. Protocols 2 to 4 are read (CIFAR's
files are Python 2 cPickle, protocol 2); protocol 0 and 1 files holding text
only are read too.
"""

import math
import pickletools
import re

import numpy as np

__all__ = ["PickleDataError", "read_pickle_data"]

_RECONSTRUCT = "reconstruct"
_NDARRAY = "ndarray"
_DTYPE = "dtype"
_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DTYPE,
}
_TYPESTR = re.compile(r"[biuf][1248]")  # bool, ints, unsigned ints and floats of 1, 2, 4 or 8 bytes
_MAX_DIM = 2**48


class PickleDataError(ValueError):
    """The file is not a pickle of plain data (or is malformed): it is refused, and nothing in it was run."""


class _Global:
    """One of the allowed NumPy names: a marker on the stack, never the object itself."""

    __slots__ = ("kind",)

    def __init__(self, kind):
        self.kind = kind


class _PendingArray:
    """``_reconstruct(ndarray, ...)``, waiting for the BUILD that gives its shape, dtype and bytes."""


class _PendingDtype:
    __slots__ = ("typestr",)

    def __init__(self, typestr):
        self.typestr = typestr


_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING"}  # Python 2 str: read as bytes
_BYTES_OPS = {"BINBYTES", "SHORT_BINBYTES", "BINBYTES8"}
_TEXT_OPS = {"UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_INT_OPS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_IGNORED_OPS = {"PROTO", "FRAME", "STOP"}


def read_pickle_data(path):
    """The object pickled in the file at ``path``, rebuilt from its opcodes as plain data.

    Returns dicts, lists, tuples, ints, floats, bools, None, ``str``,
    ``bytes`` and read-only NumPy arrays (views of the bytes in the file).

    Raises:
        PickleDataError: The file holds anything but such data (another
            global, an object construction), or is malformed or truncated.
    """
    with open(path, "rb") as f:
        try:
            return _Reader(path).run(f)
        except PickleDataError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError, OverflowError) as exc:
            raise PickleDataError(f"{path} is not a readable pickle of data: {type(exc).__name__}: {exc}") from exc


class _Reader:
    def __init__(self, path):
        self.path = path
        self.stack = []
        self.marks = []
        self.memo = {}
        self.pending_keys = {}  # id of a pending NumPy object -> the memo keys holding it (updated by its BUILD)

    def fail(self, message, pos):
        raise PickleDataError(f"Refusing to read {self.path}: {message} (at byte {pos}). Nothing in it was run.")

    def pop_mark(self):
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def run(self, f):
        stack, memo = self.stack, self.memo
        result = None
        stopped = False
        for opcode, arg, pos in pickletools.genops(f):
            name = opcode.name
            if name in _IGNORED_OPS:
                if name == "STOP":
                    result = stack.pop()
                    stopped = True
                continue
            if name == "MARK":
                self.marks.append(len(stack))
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                self.pop_mark()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name == "NONE":
                stack.append(None)
            elif name == "NEWTRUE":
                stack.append(True)
            elif name == "NEWFALSE":
                stack.append(False)
            elif name in _INT_OPS:
                stack.append(arg)
            elif name in ("FLOAT", "BINFLOAT"):
                stack.append(float(arg))
            elif name in _STRING_OPS:
                stack.append(arg.encode("latin-1"))
            elif name in _BYTES_OPS:
                stack.append(bytes(arg))
            elif name in _TEXT_OPS:
                stack.append(str(arg))
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "DICT":
                items = self.pop_mark()
                stack.append(self.set_items({}, items, pos))
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                self.set_items(stack[-1], [key, value], pos)
            elif name == "SETITEMS":
                items = self.pop_mark()
                self.set_items(stack[-1], items, pos)
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "LIST":
                stack.append(self.pop_mark())
            elif name == "APPEND":
                value = stack.pop()
                self.target_list(pos).append(value)
            elif name == "APPENDS":
                items = self.pop_mark()
                self.target_list(pos).extend(items)
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "TUPLE":
                stack.append(tuple(self.pop_mark()))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = tuple(stack[-n:])
                if len(items) != n:
                    raise IndexError("stack underflow")
                del stack[-n:]
                stack.append(items)
            elif name in _PUT_OPS:
                self.put(arg, stack[-1])
            elif name == "MEMOIZE":
                self.put(len(memo), stack[-1])
            elif name in _GET_OPS:
                stack.append(memo[arg])
            elif name == "GLOBAL":
                module, _, attr = arg.partition(" ")
                stack.append(self.allowed_global(module, attr, pos))
            elif name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                if not isinstance(module, str) or not isinstance(attr, str):
                    self.fail("STACK_GLOBAL names that are not strings", pos)
                stack.append(self.allowed_global(module, attr, pos))
            elif name == "REDUCE":
                args, fn = stack.pop(), stack.pop()
                stack.append(self.reduce(fn, args, pos))
            elif name == "BUILD":
                state = stack.pop()
                self.build(stack[-1], state, pos)
            else:
                self.fail(f"opcode {name} builds or calls an object, which a data file never needs", pos)
        if not stopped:
            raise PickleDataError(f"{self.path} is truncated: its pickle has no STOP opcode.")
        if isinstance(result, (_Global, _PendingArray, _PendingDtype)):
            raise PickleDataError(f"{self.path} does not hold data: its pickle ends on an unfinished NumPy object.")
        return result

    def put(self, key, value):
        self.memo[key] = value
        if isinstance(value, (_PendingArray, _PendingDtype)):
            self.pending_keys.setdefault(id(value), []).append(key)

    # ------------------------------------------------------------ containers
    def set_items(self, target, items, pos):
        if not isinstance(target, dict):
            self.fail("SETITEM(S) on something that is not a dict", pos)
        if len(items) % 2:
            self.fail("SETITEMS with an odd number of items", pos)
        for i in range(0, len(items), 2):
            key = items[i]
            if not isinstance(key, (str, bytes, int, float, bool, type(None), tuple)):
                self.fail(f"a dict key of type {type(key).__name__}", pos)
            target[key] = items[i + 1]
        return target

    def target_list(self, pos):
        if not self.stack or not isinstance(self.stack[-1], list):
            self.fail("APPEND(S) on something that is not a list", pos)
        return self.stack[-1]

    # ------------------------------------------------------------ NumPy
    def allowed_global(self, module, attr, pos):
        kind = _GLOBALS.get((module, attr))
        if kind is None:
            self.fail(f"it names the global {module}.{attr}; only NumPy's array reconstruction names are allowed", pos)
        return _Global(kind)

    def reduce(self, fn, args, pos):
        if not isinstance(fn, _Global) or fn.kind == _NDARRAY:
            self.fail("REDUCE calls something other than NumPy's array or dtype reconstruction", pos)
        if not isinstance(args, tuple) or len(args) != 3:
            self.fail(f"{fn.kind} is given {args!r} instead of three arguments", pos)
        if fn.kind == _RECONSTRUCT:
            cls, shape, typecode = args
            if not (isinstance(cls, _Global) and cls.kind == _NDARRAY) or not isinstance(shape, tuple):
                self.fail("_reconstruct of something other than numpy.ndarray", pos)
            if _text(typecode) != "b":
                self.fail(f"_reconstruct with the type code {typecode!r}", pos)
            return _PendingArray()
        typestr = _text(args[0])
        if typestr is None or not _TYPESTR.fullmatch(typestr):
            self.fail(f"the dtype {args[0]!r}; only bool, int, uint and float dtypes are read", pos)
        return _PendingDtype(typestr)

    def build(self, obj, state, pos):
        if isinstance(obj, _PendingDtype):
            result = self.build_dtype(obj, state, pos)
        elif isinstance(obj, _PendingArray):
            result = self.build_array(state, pos)
        else:
            self.fail(f"BUILD on a {type(obj).__name__}, which only NumPy objects need", pos)
        self.stack[-1] = result
        for key in self.pending_keys.pop(id(obj), ()):
            if self.memo.get(key) is obj:
                self.memo[key] = result

    def build_dtype(self, pending, state, pos):
        # NumPy's dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata]),
        # or the older (byteorder, subarray, fields, elsize, alignment).
        if not isinstance(state, tuple) or not 5 <= len(state) <= 9:
            self.fail(f"a dtype state {state!r} of an unknown form", pos)
        order_at = 0 if len(state) == 5 else 1
        order = _text(state[order_at])
        if order not in ("<", ">", "|", "="):
            self.fail(f"a dtype byte order {state[order_at]!r}", pos)
        rest = state[:order_at] + state[order_at + 1 :]
        if not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in rest):
            self.fail("a structured, sub-array or annotated dtype; only plain numeric dtypes are read", pos)
        dtype = np.dtype(pending.typestr)
        if order in "<>" and dtype.itemsize > 1:
            dtype = dtype.newbyteorder(order)
        return dtype

    def build_array(self, state, pos):
        # NumPy's array state: (version, shape, dtype, is_fortran, raw bytes), or the same without the version.
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            self.fail("an array state of an unknown form", pos)
        shape, dtype, fortran, raw = state[-4:]
        if isinstance(dtype, _PendingDtype):
            dtype = np.dtype(dtype.typestr)
        if not isinstance(dtype, np.dtype):
            self.fail("an array whose dtype is not a plain numeric dtype", pos)
        if not isinstance(raw, bytes):
            self.fail(f"an array whose data is a {type(raw).__name__}, not raw bytes (an object array)", pos)
        if not isinstance(shape, tuple) or len(shape) > 32 or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= _MAX_DIM for d in shape
        ):
            self.fail(f"an array shape {shape!r}", pos)
        count = math.prod(shape)
        if count * dtype.itemsize != len(raw):
            self.fail(
                f"an array of shape {shape} and dtype {dtype} needs {count * dtype.itemsize} bytes but holds {len(raw)}", pos
            )
        flat = np.frombuffer(raw, dtype=dtype) if count else np.zeros(0, dtype=dtype)
        return flat.reshape(shape, order="F" if fortran else "C")


def _text(value):
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None
