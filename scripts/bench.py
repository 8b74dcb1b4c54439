#!/usr/bin/env python3
"""CPU benchmark: gpulayers on NumPy against PyTorch eager (NCHW and channels_last).

Times, at ``--batch`` (default 64), float32 (``--policy mixed_float16`` trains
gpulayers' CNN under that policy instead; torch stays float32), with the same
thread count on both sides (``--threads``, default 2):

* per layer, forward and forward+backward: Conv2D 3x3 stride 1 32->64 at
  32x32, Conv2D 3x3 stride 2, Conv2D 1x1, MaxPooling2D 2x2, AveragePooling2D
  2x2, BatchNormalization (training mode), ReLU, and Dense 4096->128;
* the whole training step of the benchmark CNN (input 32x32x3,
  Conv2D(32,3,same)+BN+ReLU, MaxPool, Conv2D(64,3,same)+BN+ReLU, MaxPool,
  Flatten, Dense(128, relu), Dropout(0.5), Dense(10, softmax); SGD; sparse
  categorical cross-entropy): ``model.train_on_batch`` against torch's
  zero_grad / forward / loss / backward / step;
* the peak memory of training: RSS growth in a fresh subprocess per framework
  (and per torch layout), and NumPy's traced peak (tracemalloc) for gpulayers.

The thread counts are fixed before NumPy or torch is imported
(OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS, GPULAYERS_CPU_THREADS
and ``torch.set_num_threads``). gpulayers and torch run in one process, in
alternating blocks (each block: ``--reps`` timed calls of one contender, the
contenders' order rotating from block to block), so that the machine's noise
hits every contender alike; the reported time is the median over all timed
calls after warm-up. OpenBLAS's idle worker threads spin for about 0.1 s after
each call and would slow a torch op that follows at once, so the script
sleeps ``--gap`` seconds (default 0.3) before each block; ``--openblas-timeout
N`` sets OPENBLAS_THREAD_TIMEOUT=N instead (the output says which was used).

Run from the repository root: ``python scripts/bench.py``. torch comes from the
``bench`` extra: ``pip install -e ".[bench]"`` (here the CPU wheel,
``pip install torch==2.13.0``). ``--write docs/benchmarks/cpu.md`` writes the
tables with the machine's description.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench_models import LAYER_CASES, markdown_table, our_cnn, our_layer_fns, torch_cnn, torch_layer_fns  # noqa: E402 (scripts/)

# A section of the report file that --write keeps (hand-written notes).
NOTES = "## Notes"

# Targets of the CPU performance issue (our time / torch channels_last time).
STEP_TARGET = 1.7
MEMORY_TARGET = 1.5

INSTALL_HINT = (
    "PyTorch is needed for the comparison and is not installed. Install the benchmark extra:\n"
    '    pip install -e ".[bench]"\n'
    "(on a CPU-only machine take the CPU wheel, e.g. `pip install torch==2.13.0` where a local\n"
    "CPU build is offered, or `pip install torch --index-url https://download.pytorch.org/whl/cpu`),\n"
    "or run with --no-torch to time gpulayers alone."
)


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=_positive, default=2, help="threads for both frameworks (default 2)")
    p.add_argument("--batch", type=_positive, default=64, help="batch size (default 64)")
    p.add_argument("--blocks", type=_positive, default=7, help="alternating blocks per contender, per layer (default 7)")
    p.add_argument("--train-blocks", type=_positive, default=15, help="alternating blocks for the training step (default 15)")
    p.add_argument("--reps", type=_positive, default=10, help="timed calls per block (default 10)")
    p.add_argument("--warmup", type=_positive, default=5, help="untimed calls per contender first (default 5)")
    p.add_argument("--gap", type=float, default=0.3, help="seconds of sleep before each block (default 0.3)")
    p.add_argument(
        "--openblas-timeout",
        type=int,
        default=None,
        metavar="N",
        help="set OPENBLAS_THREAD_TIMEOUT=N (idle OpenBLAS threads sleep after 2^N cycles) instead of the gap",
    )
    p.add_argument("--only", default="", help="comma-separated cases (conv3x3s1,...,dense,train,memory)")
    p.add_argument("--no-torch", action="store_true", help="time gpulayers alone")
    p.add_argument(
        "--policy", default="float32", choices=("float32", "mixed_float16"),
        help="gpulayers' dtype policy for the training step (default float32; torch stays float32)",
    )
    p.add_argument("--memory-steps", type=_positive, default=5, help="training steps per memory run (default 5)")
    p.add_argument("--write", default=None, metavar="PATH", help="also write the report (markdown) to PATH")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def set_thread_env(args):
    """Fix every thread pool's size before numpy or torch is imported."""
    n = str(args.threads)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GPULAYERS_CPU_THREADS"):
        os.environ[var] = n
    if args.openblas_timeout is not None:
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(args.openblas_timeout)
    os.environ.setdefault("GPULAYERS_BACKEND", "numpy")


# --------------------------------------------------------------- formatting


def _cell(value):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def ratio(ours, theirs):
    return None if ours is None or not theirs else ours / theirs


# ------------------------------------------------------------------ timing


def interleaved(contenders, args, label):
    """Time ``{name: fn}`` in alternating blocks; returns ``{name: median ms}`` and per-block medians."""
    import statistics
    import time

    names = list(contenders)
    for name in names:
        time.sleep(args.gap)
        for _ in range(args.warmup):
            contenders[name]()
    samples = {name: [] for name in names}
    blocks = {name: [] for name in names}
    for b in range(args.blocks):
        order = names[b % len(names) :] + names[: b % len(names)]
        for name in order:
            fn = contenders[name]
            time.sleep(args.gap)
            block = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                fn()
                block.append((time.perf_counter() - t0) * 1e3)
            samples[name] += block
            blocks[name].append(statistics.median(block))
    medians = {name: statistics.median(samples[name]) for name in names}
    shown = ", ".join(f"{name} {ms:.2f} ms" for name, ms in medians.items())
    print(f"  {label}: {shown}", flush=True)
    return medians, blocks


# ------------------------------------------------------------------ models


def our_layer_fns_cpu(kind, params, shape, batch):
    import numpy

    x = numpy.random.default_rng(0).standard_normal((batch,) + shape).astype(numpy.float32)
    return our_layer_fns(kind, params, x)


def batch_data(batch):
    import numpy

    rng = numpy.random.default_rng(0)
    return rng.standard_normal((batch, 32, 32, 3)).astype(numpy.float32), rng.integers(0, 10, batch)


def our_step_fn(batch, policy="float32"):
    import numpy

    from gpulayers import mixed_precision

    mixed_precision.set_global_policy(policy)
    try:
        model = our_cnn()
    finally:
        mixed_precision.set_global_policy("float32")
    x, y = batch_data(batch)
    losses = []

    def step():
        losses.append(model.train_on_batch(x, y))

    step()
    if not numpy.isfinite(losses[-1]):
        raise RuntimeError(f"gpulayers training gave a non-finite loss: {losses[-1]}")
    return step


def torch_step_fn(torch, batch, channels_last):
    torch.manual_seed(0)
    x, y = batch_data(batch)
    net = torch_cnn(torch)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    yt = torch.from_numpy(y).long()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        xt = xt.contiguous(memory_format=torch.channels_last)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss = loss_fn(net(xt), yt)
        loss.backward()
        opt.step()
        return loss.item()

    return step


# ------------------------------------------------------------------ memory


class Interference:
    """CPU time that other processes used while the benchmark ran (from /proc/stat and os.times)."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        import time

        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait
        t = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), t.user + t.system + t.children_user + t.children_system, time.time()

    def describe(self):
        end = self._sample()
        if self.start is None or end is None:
            return "unknown (no /proc/stat)"
        busy, ours, wall = (e - s for e, s in zip(end, self.start))
        other = max(busy - ours, 0.0)
        return f"{other:.1f} s of CPU time over {wall:.0f} s of wall time ({100 * other / max(wall, 1e-9):.0f}% of one core)"


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def memory_child(which, args):
    """Runs in a fresh process: builds one framework's model, trains, prints the growth as JSON."""
    import gc
    import json
    import tracemalloc

    traced = which == "gpulayers-tracemalloc"
    if traced:
        tracemalloc.start()
    if which.startswith("gpulayers"):
        import backends

        backends.set_backend("numpy")
        model = our_cnn()
        x, y = batch_data(args.batch)

        def step():
            model.train_on_batch(x, y)

    else:
        import torch

        torch.set_num_threads(args.threads)
        step = torch_step_fn(torch, args.batch, channels_last=which == "torch-channels_last")
        # torch_step_fn ran nothing yet: the first call below allocates the gradients.
    gc.collect()
    reset = True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak RSS
    except OSError:
        reset = False
    base_rss = _status("VmRSS")
    if traced:
        tracemalloc.reset_peak()
        base_traced = tracemalloc.get_traced_memory()[0]
    for _ in range(args.memory_steps):
        step()
    out = {"which": which, "peak_reset": reset}
    if traced:
        out["traced_growth"] = tracemalloc.get_traced_memory()[1] - base_traced
    else:
        out["rss_growth"] = _status("VmHWM") - base_rss
    print(json.dumps(out))


def run_memory(args, with_torch):
    import json
    import subprocess

    kinds = ["gpulayers", "gpulayers-tracemalloc"]
    if with_torch:
        kinds += ["torch-nchw", "torch-channels_last"]
    results = {}
    for which in kinds:
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", which, "--threads", str(args.threads),
               "--batch", str(args.batch), "--memory-steps", str(args.memory_steps)]
        if args.openblas_timeout is not None:
            cmd += ["--openblas-timeout", str(args.openblas_timeout)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"memory run {which} failed:\n{done.stderr}")
        results[which] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  memory {which}: {results[which]}", flush=True)
    return results


# ------------------------------------------------------------------ report


def machine_description(torch):
    import datetime
    import platform

    import numpy

    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        model = platform.processor() or platform.machine()
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count()
    blas = "unknown BLAS"
    try:
        info = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{info.get('name', '?')} {info.get('version', '?')}"
        config = info.get("openblas configuration")
        if config:
            blas += f" ({config.split('  ')[0]}, {' '.join(config.split()[-2:])})"
    except Exception:
        pass
    lines = [
        f"- Date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- CPU: {model}, {cores} cores usable ({platform.machine()}, {platform.system()} {platform.release()})",
        f"- Python {platform.python_version()}, NumPy {numpy.__version__} with {blas}",
        f"- PyTorch {torch.__version__ if torch is not None else 'not installed'}",
    ]
    return "\n".join(lines)


def _shown_args(argv):
    """The command-line arguments without ``--write PATH``."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--write":
            skip = True
        elif not arg.startswith("--write="):
            shown.append(arg)
    return shown


def build_report(args, torch, layer_rows, step_row, memory, spin_note, interference):
    parts = ["## Setup", "", machine_description(torch), ""]
    parts += [
        f"- Threads: {args.threads} for each framework (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS, "
        f"GPULAYERS_CPU_THREADS and torch.set_num_threads set before import).",
        f"- Batch {args.batch}, float32 (gpulayers' training step: policy {args.policy}). One process, alternating blocks of {args.reps} timed calls per contender "
        f"({args.train_blocks} blocks for the training step, timed first; {args.blocks} per layer case), the order "
        f"rotating each block, after {args.warmup} warm-up calls; medians over all timed calls.",
        f"- OpenBLAS idle-thread spinning: {spin_note}.",
        f"- Other processes during the timings: {interference}.",
        "- Command: `" + " ".join(["python scripts/bench.py"] + _shown_args(sys.argv[1:])) + "`",
        "",
    ]
    if step_row:
        parts += ["## Training step (benchmark CNN)", ""]
        headers = ["", "ms per step", "gpulayers / this"]
        rows = [["gpulayers (train_on_batch)", step_row["ours"], None]]
        if torch is not None:
            rows.append(["torch eager NCHW", step_row["nchw"], ratio(step_row["ours"], step_row["nchw"])])
            rows.append(["torch eager channels_last", step_row["cl"], ratio(step_row["ours"], step_row["cl"])])
        parts += [markdown_table(headers, rows, _cell), ""]
        if torch is not None and args.policy == "float32":  # the target is float32's: a CPU has no float16 units
            r = ratio(step_row["ours"], step_row["cl"])
            lo, hi = step_row["block_range"]
            parts += [
                f"Target: at most {STEP_TARGET}x torch channels_last: **{'met' if r <= STEP_TARGET else 'missed'}** "
                f"({r:.2f}x; the ratio of block medians ranged {lo:.2f}-{hi:.2f}x).",
                "",
            ]
    if layer_rows:
        parts += ["## Per layer (ms per call; ratio = gpulayers / torch)", ""]
        headers = ["layer", "pass", "gpulayers", "torch NCHW", "torch channels_last", "ratio vs NCHW", "ratio vs channels_last"]
        rows = [
            [r["label"], r["pass"], r["ours"], r.get("nchw"), r.get("cl"), ratio(r["ours"], r.get("nchw")), ratio(r["ours"], r.get("cl"))]
            for r in layer_rows
        ]
        parts += [markdown_table(headers, rows, _cell), ""]
        parts += [
            "Forward is timed as in training (batch statistics) without recording for backward "
            "(`no_backward()` / `torch.no_grad()`); forward+backward records and computes every gradient, the "
            "input's included. Dense has no layout, so both torch columns hold the same run.",
            "",
        ]
    if memory:
        parts += ["## Peak training memory", ""]
        mib = 2**20
        ours = memory["gpulayers"]["rss_growth"]
        rows = [["gpulayers", ours / mib, None]]
        theirs = {}
        for key, label in (("torch-nchw", "torch eager NCHW"), ("torch-channels_last", "torch eager channels_last")):
            if key in memory:
                theirs[key] = memory[key]["rss_growth"]
                rows.append([label, theirs[key] / mib, ratio(ours, theirs[key])])
        parts += [markdown_table(["", "peak RSS growth, MiB", "gpulayers / this"], rows, _cell), ""]
        parts += [
            f"RSS growth: peak resident memory during {args.memory_steps} training steps (the first included) minus "
            "the resident memory after building the model and the batch, each in a fresh process"
            + ("" if memory["gpulayers"].get("peak_reset") else " (the kernel did not let the peak be reset)")
            + f". NumPy's traced peak (tracemalloc) for gpulayers: "
            f"{memory['gpulayers-tracemalloc']['traced_growth'] / mib:.1f} MiB above the arrays held before the steps.",
            "",
        ]
        if theirs:
            worst = max(ratio(ours, v) for v in theirs.values())
            best = min(ratio(ours, v) for v in theirs.values())
            parts += [
                f"Target: at most {MEMORY_TARGET}x PyTorch's: **{'met' if worst <= MEMORY_TARGET else 'missed'}** "
                f"({best:.2f}-{worst:.2f}x).",
                "",
            ]
    return "\n".join(parts)


# -------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    set_thread_env(args)
    if args.memory_child:
        memory_child(args.memory_child, args)
        return 0
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print(INSTALL_HINT, file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    import backends

    backends.set_backend("numpy")
    only = {s.strip() for s in args.only.split(",") if s.strip()}

    def selected(name):
        return not only or name in only

    spin_note = (
        f"OPENBLAS_THREAD_TIMEOUT={args.openblas_timeout}, {args.gap} s gap before each block"
        if args.openblas_timeout is not None
        else f"{args.gap} s sleep before each block (OPENBLAS_THREAD_TIMEOUT unset)"
    )
    print(f"threads={args.threads}, batch={args.batch}; {spin_note}", flush=True)
    interference = Interference()
    step_row = None
    if selected("train"):
        # First, in a fresh process state: the headline number.
        fns = {"gpulayers": our_step_fn(args.batch, args.policy)}
        if torch is not None:
            fns["torch-nchw"] = torch_step_fn(torch, args.batch, False)
            fns["torch-cl"] = torch_step_fn(torch, args.batch, True)
        step_args = argparse.Namespace(**{**vars(args), "blocks": args.train_blocks})
        med, blocks = interleaved(fns, step_args, "training step")
        step_row = {"ours": med["gpulayers"]}
        if torch is not None:
            step_row["nchw"], step_row["cl"] = med["torch-nchw"], med["torch-cl"]
            per_block = [o / t for o, t in zip(blocks["gpulayers"], blocks["torch-cl"])]
            step_row["block_range"] = (min(per_block), max(per_block))
        del fns
    layer_rows = []
    for name, label, kind, shape, params in LAYER_CASES:
        if not selected(name):
            continue
        ours_f, ours_b = our_layer_fns_cpu(kind, params, shape, args.batch)
        fwd = {"gpulayers": ours_f}
        both = {"gpulayers": ours_b}
        if torch is not None:
            layouts = (False,) if kind == "dense" else (False, True)
            for cl in layouts:
                f, b = torch_layer_fns(torch, kind, params, shape, args.batch, cl)
                fwd["torch-cl" if cl else "torch-nchw"] = f
                both["torch-cl" if cl else "torch-nchw"] = b
        for pass_, fns in (("fwd", fwd), ("fwd+bwd", both)):
            med, _ = interleaved(fns, args, f"{label} {pass_}")
            row = {"name": name, "label": label, "pass": pass_, "ours": med["gpulayers"]}
            if torch is not None:
                row["nchw"] = med["torch-nchw"]
                row["cl"] = med.get("torch-cl", med["torch-nchw"])
            layer_rows.append(row)
    busy = interference.describe()
    memory = run_memory(args, torch is not None) if selected("memory") else None
    report = build_report(args, torch, layer_rows, step_row, memory, spin_note, busy)
    print()
    print(report)
    if args.write:
        header = (
            "# CPU benchmark: gpulayers (NumPy) against PyTorch eager\n\n"
            "Written by `scripts/bench.py --write`; see the script's docstring for the method. "
            f"A `{NOTES}` section at the end of the file is kept when it is rewritten.\n\n"
        )
        notes = ""
        try:
            with open(args.write) as f:
                old = f.read()
            heading = "\n" + NOTES + "\n"  # the heading at the start of a line (the header names it too)
            if heading in old:
                notes = old[old.index(heading) :]
        except OSError:
            pass
        os.makedirs(os.path.dirname(os.path.abspath(args.write)), exist_ok=True)
        with open(args.write, "w") as f:
            f.write(header + report + "\n" + notes)
        print(f"\nwrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
