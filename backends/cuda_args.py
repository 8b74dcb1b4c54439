"""The small shared pieces of CupyOps' kernel wrappers: dtypes, the block size, and kernel arguments
checked into the C types the kernels take."""

import numpy

F16 = numpy.dtype("float16")
F32 = numpy.dtype("float32")
F64 = numpy.dtype("float64")
I32 = numpy.dtype("int32")

BLOCK = 256  # threads per block for every launch (kernels accept 1..1024)


def i32(value, what):
    value = int(value)
    if not -(2**31) <= value < 2**31:
        raise ValueError(f"{what}={value} does not fit the CUDA kernels' 32-bit int parameter")
    return numpy.int32(value)


def i64(value):
    return numpy.int64(int(value))


def prod(values):
    out = 1
    for v in values:
        out *= int(v)
    return out
