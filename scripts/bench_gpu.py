#!/usr/bin/env python3
"""GPU benchmark: gpulayers on CuPy against PyTorch (cuDNN), same dtype (float32).

Times, at ``--batch`` (default 256), with CUDA events (``cupy.cuda.Event`` for
gpulayers, ``torch.cuda.Event`` for PyTorch) and medians after warm-up:

* per layer, forward and forward+backward: Conv2D 3x3 stride 1 32->64 at
  32x32, Conv2D 3x3 stride 2, Conv2D 1x1, MaxPooling2D 2x2, AveragePooling2D
  2x2, BatchNormalization (training mode) and Dense 4096->128;
* the whole training step (``model.train_step``, no sync inside it) of the
  benchmark CNN with SGD and sparse categorical cross-entropy, eager and with
  ``compile(jit_compile=True)``;
* the achieved memory bandwidth of the pooling, bias-gradient and batch-norm
  kernels (``CupyOps`` called directly) against a measured device-to-device
  copy.

PyTorch runs in NCHW and in channels_last, with cuDNN autotuning on, once with
TF32 off (true float32, the comparison the targets are about) and once with
TF32 on. gpulayers computes in float32 (cuBLAS without TF32 unless CUPY_TF32=1
is set, which the report states).

Prints markdown tables and writes them, with the card, date and versions, to
``<out>/gpu.md`` (``--out``, default ``$OUT`` or ``docs/benchmarks``).
Run from the repository root: ``python3 scripts/bench_gpu.py``; gpulayers need
not be installed. Exits with status 2 and a message when no GPU is usable.
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench_models import LAYER_CASES as _ALL_LAYER_CASES  # noqa: E402 (scripts/)
from bench_models import markdown_table, our_cnn, our_layer_fns, torch_cnn, torch_layer_fns  # noqa: E402

# The GPU report times the shared cases without ReLU.
LAYER_CASES = [case for case in _ALL_LAYER_CASES if case[0] != "relu"]

# Speed targets of the GPU training-step issue: (torch time / our time) at
# least this much, against PyTorch with TF32 off.
TARGETS = {
    ("maxpool", "fwd+bwd"): 1.2,
    ("avgpool", "fwd+bwd"): 1.2,
    ("train", "step"): 1.0,
    ("train-jit", "step"): 1.5,
}
# Memory-bound kernels: at least this share of the measured copy bandwidth.
BANDWIDTH_TARGET = 0.8
BANDWIDTH_TARGETED = ("bias", "batch norm")  # rows whose label starts so


# --------------------------------------------------------------------- CLI


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="bench_gpu.py",
        description="Time gpulayers on CuPy against PyTorch/cuDNN on one CUDA GPU and write <out>/gpu.md.",
    )
    p.add_argument("--batch", type=_positive, default=256, help="batch size for every case (default 256)")
    p.add_argument("--warmup", type=_positive, default=5, help="untimed calls before timing each case (default 5)")
    p.add_argument("--repeats", type=_positive, default=15, help="timed samples per case; the median is reported (default 15)")
    p.add_argument("--inner", type=_positive, default=5, help="calls per timed sample, between two events (default 5)")
    p.add_argument("--train-repeats", type=_positive, default=10, help="timed samples of the training step (default 10)")
    p.add_argument(
        "--out",
        default=os.environ.get("OUT") or os.path.join(ROOT, "docs", "benchmarks"),
        help="folder for gpu.md (default $OUT, else docs/benchmarks)",
    )
    p.add_argument("--report", default=None, help="markdown file to write (default <out>/gpu.md)")
    p.add_argument("--no-torch", action="store_true", help="time gpulayers only (no PyTorch columns)")
    p.add_argument("--skip-train", action="store_true", help="skip the whole training step")
    p.add_argument("--only", default="", help="comma-separated case names to run (e.g. conv3x3s1,maxpool,train,bandwidth)")
    # Runs every code path on the CPU (numpy backend, torch on CPU, wall-clock
    # timers) with tiny sizes, to check the script itself where no GPU exists.
    p.add_argument("--smoke-cpu", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# --------------------------------------------------------------- formatting


def _cell(value):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 100 else f"{value:.1f}"
    return str(value)


def speed(torch_ms, ours_ms):
    """How fast we are relative to torch: torch time / our time (1.0 = parity, higher = faster)."""
    if torch_ms is None or ours_ms is None or ours_ms <= 0:
        return None
    return torch_ms / ours_ms


def verdict(value, target):
    if target is None:
        return ""
    if value is None:
        return f">= {target:g}: n/a"
    return f">= {target:g}: {'met' if value >= target else 'MISSED'}"


def best(*values):
    present = [v for v in values if v is not None]
    return min(present) if present else None


def layer_table(results, with_torch):
    """results: list of dicts with name, label, pass, ours, torch_nchw_off, torch_nhwc_off, torch_best_on."""
    if not with_torch:
        return markdown_table(["case", "pass", "gpulayers ms"], [[r["label"], r["pass"], r["ours"]] for r in results], _cell)
    rows = []
    for r in results:
        off = best(r.get("torch_nchw_off"), r.get("torch_nhwc_off"))
        s_off = speed(off, r["ours"])
        rows.append(
            [
                r["label"],
                r["pass"],
                r["ours"],
                r.get("torch_nchw_off"),
                r.get("torch_nhwc_off"),
                s_off,
                r.get("torch_best_on"),
                speed(r.get("torch_best_on"), r["ours"]),
                verdict(s_off, TARGETS.get((r["name"], r["pass"]))),
            ]
        )
    headers = [
        "case",
        "pass",
        "gpulayers ms",
        "torch NCHW ms (TF32 off)",
        "torch NHWC ms (TF32 off)",
        "speed vs torch, TF32 off",
        "torch best ms (TF32 on)",
        "speed vs torch, TF32 on",
        "target (TF32 off)",
    ]
    return markdown_table(headers, rows, _cell)


def bandwidth_table(rows, copy_gbs):
    """rows: (label, bytes moved, ms)."""
    out = []
    for label, nbytes, ms in rows:
        gbs = nbytes / (ms * 1e-3) / 1e9 if ms else None
        share = None if gbs is None or not copy_gbs else gbs / copy_gbs
        target = BANDWIDTH_TARGET if label.startswith(BANDWIDTH_TARGETED) else None
        out.append([label, nbytes / 2**20, ms, gbs, None if share is None else 100 * share,
                    verdict(None if share is None else share, target)])
    headers = ["kernel (CupyOps)", "MiB moved", "ms", "GB/s", "% of copy bandwidth", "target (share of copy)"]
    return markdown_table(headers, out, _cell)


# ------------------------------------------------------------------ timers


class CupyTimer:
    """Median milliseconds per call, between two cupy.cuda.Events on the current stream."""

    def __init__(self, cupy):
        self.cupy = cupy

    def sync(self):
        self.cupy.cuda.Device().synchronize()

    def __call__(self, fn, warmup, repeats, inner):
        cupy = self.cupy
        for _ in range(warmup):
            fn()
        self.sync()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        samples = []
        for _ in range(repeats):
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            samples.append(cupy.cuda.get_elapsed_time(start, end) / inner)
        return statistics.median(samples)


class TorchTimer:
    """Median milliseconds per call, between two torch.cuda.Events."""

    def __init__(self, torch):
        self.torch = torch

    def sync(self):
        self.torch.cuda.synchronize()

    def __call__(self, fn, warmup, repeats, inner):
        torch = self.torch
        for _ in range(warmup):
            fn()
        self.sync()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        samples = []
        for _ in range(repeats):
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / inner)
        return statistics.median(samples)


class WallTimer:
    """Wall-clock stand-in for the CPU smoke run (no events there)."""

    def sync(self):
        pass

    def __call__(self, fn, warmup, repeats, inner):
        for _ in range(warmup):
            fn()
        samples = []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter() - t) * 1e3 / inner)
        return statistics.median(samples)


# ------------------------------------------------------------------- setup


def fail(message):
    print(f"bench_gpu.py: {message}", file=sys.stderr)
    sys.exit(2)


def setup_ours(smoke):
    """Select the gpulayers backend; returns (ops, timer, xp)."""
    import backends

    if smoke:
        backends.set_backend("numpy")
        return backends.get_ops(), WallTimer(), backends.get_ops().xp
    usable, reason = backends.cupy_status()
    if not usable:
        fail(f"no usable CUDA GPU, so there is nothing to benchmark: {reason}")
    backends.set_backend("cupy")
    ops = backends.get_ops()
    return ops, CupyTimer(ops.xp), ops.xp


def setup_torch(smoke, no_torch):
    """Returns (torch, device, timer, note) or (None, None, None, why not)."""
    if no_torch:
        return None, None, None, "PyTorch columns disabled (--no-torch)"
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken install
        return None, None, None, f"PyTorch does not import here ({type(exc).__name__}: {exc})"
    if smoke:
        return torch, torch.device("cpu"), WallTimer(), ""
    if not torch.cuda.is_available():
        return None, None, None, f"PyTorch {torch.__version__} sees no CUDA device"
    torch.backends.cudnn.benchmark = True
    return torch, torch.device("cuda"), TorchTimer(torch), ""


def set_tf32(torch, on):
    """Allow or forbid TF32 in cuBLAS matmuls and cuDNN convolutions (new API where present)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
        if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
            matmul.fp32_precision = "tf32" if on else "ieee"
            conv.fp32_precision = "tf32" if on else "ieee"
        else:
            matmul.allow_tf32 = on
            torch.backends.cudnn.allow_tf32 = on


def free_memory(xp, torch):
    if xp is not None and xp.__name__ == "cupy":
        xp.get_default_memory_pool().free_all_blocks()
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# -------------------------------------------------------------- the cases


def time_ours_layer(ops, timer, kind, params, shape, args):
    rng = __import__("numpy").random.default_rng(0)
    x = ops.asarray(rng.standard_normal((args.batch,) + shape).astype("float32"))
    forward, forward_backward = our_layer_fns(kind, params, x)
    fwd = timer(forward, args.warmup, args.repeats, args.inner)
    both = timer(forward_backward, args.warmup, args.repeats, args.inner)
    return fwd, both


def time_torch_layer(torch, device, timer, kind, params, shape, args, channels_last):
    forward, forward_backward = torch_layer_fns(torch, kind, params, shape, args.batch, channels_last, device)
    fwd = timer(forward, args.warmup, args.repeats, args.inner)
    both = timer(forward_backward, args.warmup, args.repeats, args.inner)
    return fwd, both


def run_layers(ops, timer, torch, device, ttimer, args, selected):
    results = []
    for name, label, kind, shape, params in LAYER_CASES:
        if not selected(name):
            continue
        print(f"  {label} ...", flush=True)
        fwd, both = time_ours_layer(ops, timer, kind, params, shape, args)
        row_f = dict(name=name, label=label, ours=fwd, **{"pass": "fwd"})
        row_b = dict(name=name, label=label, ours=both, **{"pass": "fwd+bwd"})
        if torch is not None:
            layouts = (False,) if kind == "dense" else (False, True)
            measured = {}
            for tf32 in (False, True):
                set_tf32(torch, tf32)
                for cl in layouts:
                    measured[(tf32, cl)] = time_torch_layer(torch, device, ttimer, kind, params, shape, args, cl)
            set_tf32(torch, False)
            for i, row in enumerate((row_f, row_b)):
                row["torch_nchw_off"] = measured[(False, False)][i]
                row["torch_nhwc_off"] = measured[(False, True)][i] if kind != "dense" else None
                row["torch_best_on"] = best(*(measured[(True, cl)][i] for cl in layouts))
        results += [row_f, row_b]
        free_memory(ops.xp, torch)
    return results


# ------------------------------------------------------------ training step


def time_train(ops, timer, torch, device, ttimer, args):
    import numpy

    from gpulayers import optimizers

    rng = numpy.random.default_rng(0)
    xh = rng.standard_normal((args.batch, 32, 32, 3)).astype("float32")
    yh = rng.integers(0, 10, args.batch)
    x, y = ops.asarray(xh), ops.asarray(yh)
    warm = max(args.warmup, 3)
    rows = []
    for name, jit in (("train", False), ("train-jit", True)):
        model = our_cnn()
        model.compile(optimizer=optimizers.SGD(learning_rate=0.01), loss="sparse_categorical_crossentropy",
                      jit_compile=jit)
        logs = []

        def ours_step(model=model, logs=logs):
            # Keras's train_step on device arrays: the loss stays on the device (no sync inside a step).
            logs.append(model.train_step((x, y))["loss"])

        label = f"training step, benchmark CNN, batch {args.batch}" + (", compile(jit_compile=True)" if jit else "")
        row = dict(name=name, label=label, **{"pass": "step"})
        row["ours"] = timer(ours_step, warm, args.train_repeats, args.inner)
        losses = [float(v) for v in logs[-3:]]
        if not all(numpy.isfinite(losses)):
            raise RuntimeError(f"gpulayers training produced a non-finite loss: {losses}")
        graphs = model._step_graphs
        if jit and (graphs is None or not graphs.captured):
            why = graphs.disabled if graphs is not None else "no graph was made"
            row["label"] += f" (ran eagerly: {why})"
        rows.append(row)
        free_memory(ops.xp, None)
    if torch is not None:
        F = torch.nn.functional
        measured = {}
        for tf32 in (False, True):
            set_tf32(torch, tf32)
            for cl in (False, True):
                torch.manual_seed(0)
                net = torch_cnn(torch).to(device)
                xt = torch.from_numpy(xh.transpose(0, 3, 1, 2).copy()).to(device)
                if cl:
                    net = net.to(memory_format=torch.channels_last)
                    xt = xt.contiguous(memory_format=torch.channels_last)
                yt = torch.from_numpy(yh).to(device)
                opt = torch.optim.SGD(net.parameters(), lr=0.01)
                net.train()

                def torch_step(net=net, xt=xt, yt=yt, opt=opt):
                    opt.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(net(xt), yt)
                    loss.backward()
                    opt.step()
                    return loss  # no .item(): no sync inside a step, as ours

                measured[(tf32, cl)] = ttimer(torch_step, warm, args.train_repeats, args.inner)
        set_tf32(torch, False)
        for row in rows:  # both of our rows against PyTorch eager
            row["torch_nchw_off"] = measured[(False, False)]
            row["torch_nhwc_off"] = measured[(False, True)]
            row["torch_best_on"] = best(measured[(True, False)], measured[(True, True)])
    free_memory(ops.xp, torch)
    return rows


# --------------------------------------------------------------- bandwidth


def copy_bandwidth(xp, timer, args, smoke):
    """Device-to-device copy, in GB/s counting the read and the write."""
    n = (1 << 16) if smoke else (1 << 28) // 4  # 256 MiB of float32
    src = xp.ones(n, dtype="float32")
    dst = xp.empty_like(src)
    ms = timer(lambda: xp.copyto(dst, src), args.warmup, args.repeats, args.inner)
    return 2 * src.nbytes / (ms * 1e-3) / 1e9, src.nbytes


def kernel_bandwidth(ops, timer, args):
    """(label, bytes moved at least once, ms) for the memory-bound kernels on (N, 32, 32, 64)."""
    import numpy

    rng = numpy.random.default_rng(0)
    x = ops.asarray(rng.standard_normal((args.batch, 32, 32, 64)).astype("float32"))
    geo = ((2, 2), (2, 2), (0, 0, 0, 0), "channels_last")
    y, arg = ops.max_pool2d_forward(x, *geo)
    dy = ops.asarray(rng.standard_normal(tuple(y.shape)).astype("float32"))
    rows = []

    def add(label, fn, nbytes):
        rows.append((label, nbytes, timer(fn, args.warmup, args.repeats, args.inner)))

    add("max pool 2x2 forward (y + argmax)", lambda: ops.max_pool2d_forward(x, *geo), x.nbytes + y.nbytes + arg.nbytes)
    add(
        "max pool 2x2 backward",
        lambda: ops.max_pool2d_backward(dy, arg, x.shape, *geo),
        dy.nbytes + arg.nbytes + x.nbytes,
    )
    add("avg pool 2x2 forward", lambda: ops.avg_pool2d_forward(x, *geo), x.nbytes + y.nbytes)
    add("avg pool 2x2 backward", lambda: ops.avg_pool2d_backward(dy, x.shape, *geo), dy.nbytes + x.nbytes)
    # The conv bias gradient and batch normalization (training): each array read or written once at least.
    add("bias gradient (channel sum over N, H, W)", lambda: ops.channel_sum(x, 3), x.nbytes)
    gamma, beta = (ops.asarray(numpy.ones(64, "float32")) for _ in range(2))
    _, _, _, cache = ops.batch_norm_forward_training(x, gamma, beta, 3, 1e-3)
    add("batch norm forward (training)", lambda: ops.batch_norm_forward_training(x, gamma, beta, 3, 1e-3),
        2 * x.nbytes)
    add("batch norm backward (training)", lambda: ops.batch_norm_backward_training(x, cache), 3 * x.nbytes)
    return rows


# ------------------------------------------------------------------ report


def versions(ops, torch, smoke):
    import numpy

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "device": ops.device_name(),
    }
    if not smoke:
        cupy = ops.xp
        rt = cupy.cuda.runtime
        props = rt.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        info["card"] = f"{name}, {props['multiProcessorCount']} SMs, {props['totalGlobalMem'] / 2**30:.0f} GiB"
        info["cupy"] = cupy.__version__
        info["CUDA runtime / driver"] = f"{_cuda_version(rt.runtimeGetVersion())} / {_cuda_version(rt.driverGetVersion())}"
        info["CUPY_TF32"] = os.environ.get("CUPY_TF32", "unset (float32 matmuls)")
    else:
        info["card"] = "none (CPU smoke run: the numbers mean nothing)"
    if torch is not None:
        info["torch"] = torch.__version__
        if not smoke:
            info["cuDNN"] = str(torch.backends.cudnn.version())
            info["torch settings"] = "cudnn.benchmark=True; TF32 off = cuBLAS and cuDNN fp32_precision 'ieee'"
    return info


def _cuda_version(v):
    return f"{v // 1000}.{(v % 1000) // 10}"


def report(info, args, torch_note, layer_rows, train_rows, bandwidth, copy):
    lines = ["# GPU benchmark: gpulayers on CuPy against PyTorch", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [
        f"- batch {args.batch}; float32; each number is the median of {args.repeats} samples "
        f"({args.train_repeats} for the training step) of {args.inner} calls between two CUDA events, "
        f"after {args.warmup} warm-up calls",
        "- speed = PyTorch time / gpulayers time (1.0 = parity, higher = gpulayers faster); "
        "'TF32 off' compares with the faster of PyTorch's NCHW and channels_last runs",
        "- gpulayers runs NHWC (channels_last); forward = the layer in training mode without keeping "
        "a backward cache (torch: under no_grad); forward+backward includes the input gradient",
    ]
    if torch_note:
        lines.append(f"- PyTorch: {torch_note}")
    lines.append("")
    with_torch = not torch_note
    if layer_rows:
        lines += ["## Layers", "", layer_table(layer_rows, with_torch), ""]
    if train_rows:
        lines += [
            "## Training step",
            "",
            "Conv2D(32,3,same)+BN+ReLU, MaxPool, Conv2D(64,3,same)+BN+ReLU, MaxPool, Flatten, Dense(128, relu), "
            "Dropout(0.5), Dense(10, softmax); SGD(0.01); sparse categorical cross-entropy. gpulayers: "
            "`model.train_step` on device arrays (the loss stays on the device); PyTorch eager with cuDNN: "
            "zero_grad, forward, cross_entropy, backward, step, no `loss.item()`. Both rows are against "
            "the same PyTorch eager step.",
            "",
            layer_table(train_rows, with_torch),
            "",
        ]
    if bandwidth:
        copy_gbs, copy_bytes = copy
        lines += [
            "## Memory-bound kernels",
            "",
            f"Device-to-device copy of {copy_bytes / 2**20:.0f} MiB: {copy_gbs:.0f} GB/s (read + write). "
            "Bytes moved count each input read once and each output written once.",
            "",
            bandwidth_table(bandwidth, copy_gbs),
            "",
        ]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    smoke = args.smoke_cpu
    if smoke:
        args.batch, args.warmup, args.repeats, args.inner, args.train_repeats = min(args.batch, 4), 1, 2, 1, 2
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    known = {c[0] for c in LAYER_CASES} | {"train", "bandwidth"}
    if wanted - known:
        fail(f"unknown case(s) in --only: {', '.join(sorted(wanted - known))}; known: {', '.join(sorted(known))}")

    def selected(name):
        return not wanted or name in wanted

    ops, timer, xp = setup_ours(smoke)
    torch, device, ttimer, torch_note = setup_torch(smoke, args.no_torch)
    if torch_note:
        print(f"note: {torch_note}; timing gpulayers only", flush=True)
    info = versions(ops, torch, smoke)
    print(f"device: {info['card']}", flush=True)
    t0 = time.perf_counter()

    print("layers:", flush=True)
    layer_rows = run_layers(ops, timer, torch, device, ttimer, args, selected)
    train_rows = []
    if selected("train") and not args.skip_train:
        print("training step ...", flush=True)
        train_rows = time_train(ops, timer, torch, device, ttimer, args)
    bandwidth, copy = [], (None, 0)
    if selected("bandwidth"):
        print("bandwidth ...", flush=True)
        copy = copy_bandwidth(xp, timer, args, smoke)
        bandwidth = kernel_bandwidth(ops, timer, args)
        free_memory(xp, None)

    text = report(info, args, torch_note, layer_rows, train_rows, bandwidth, copy)
    text += f"\n_Benchmark wall time: {time.perf_counter() - t0:.0f} s._\n"
    print()
    print(text)
    path = args.report or os.path.join(args.out, "gpu.md")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
