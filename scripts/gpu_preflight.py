#!/usr/bin/env python3
"""The first phase of scripts/gpu_check.sh: can gpulayers run on this GPU at all?

1. versions of what the GPU machine has (python, numpy, cupy, torch, pytest, NVRTC);
2. cupy sees a usable CUDA device (``backends.cupy_status``);
3. every kernel module of ``backends.cuda_sources.kernel_modules()`` compiles
   (NVRTC, through ``CupyOps`` exactly as training loads them), every name
   expression resolving to a function;
4. one cuBLAS GEMM (512 x 512 float32) agrees with numpy.

Prints one line per check and exits 0 when all pass, 3 when there is no
usable GPU, 1 when a check fails. Run from anywhere; gpulayers need not be
installed.
"""

import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def versions():
    print("python", platform.python_version(), flush=True)
    for name in ("numpy", "cupy", "torch", "pytest", "hypothesis", "h5py", "skimage", "matplotlib"):
        try:
            mod = __import__(name)
            print(f"{name} {getattr(mod, '__version__', '?')}")
        except Exception as exc:  # noqa: BLE001 -- reported, the machine may lack it
            print(f"{name}: not importable ({type(exc).__name__}: {exc})")
    try:
        from cupy_backends.cuda.libs import nvrtc

        print("NVRTC", ".".join(map(str, nvrtc.getVersion())))
    except Exception as exc:  # noqa: BLE001
        print(f"NVRTC: not loadable ({type(exc).__name__}: {exc})")


def compile_kernels(ops):
    from backends.cuda_sources import kernel_modules

    failures = 0
    for spec in kernel_modules():
        t0 = time.perf_counter()
        try:
            for expression in spec.name_expressions:
                ops._kernel(spec.name, expression.split("<", 1)[0], spec.dtypes[expression])
        except Exception as exc:  # noqa: BLE001 -- one line per module, then the next
            failures += 1
            print(f"FAIL compile {spec.name}: {type(exc).__name__}: {exc}", flush=True)
            continue
        print(f"ok   compile {spec.name}: {len(spec.name_expressions)} kernels in {time.perf_counter() - t0:.1f} s",
              flush=True)
    return failures


def gemm(ops):
    import numpy

    cupy = ops.xp
    rng = numpy.random.default_rng(0)
    a, b = (rng.standard_normal((512, 512)).astype("float32") for _ in range(2))
    got = cupy.asnumpy(cupy.asarray(a) @ cupy.asarray(b))
    want = a.astype("float64") @ b.astype("float64")
    err = float(numpy.abs(got - want).max() / numpy.abs(want).max())
    ok = err < 1e-4  # float32 accumulation over 512 terms; TF32 would be ~1e-3
    print(f"{'ok  ' if ok else 'FAIL'} GEMM 512x512 float32 against numpy: max error {err:.1e} of the largest value",
          flush=True)
    return 0 if ok else 1


def main():
    versions()
    import backends

    usable, why = backends.cupy_status()
    if not usable:
        print(f"FAIL no usable CUDA GPU: {why}", flush=True)
        return 3
    from backends.cupy_ops import CupyOps

    ops = CupyOps()
    print(f"ok   device: {ops.device_name()}", flush=True)
    failures = compile_kernels(ops)
    failures += gemm(ops)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
