#!/usr/bin/env python3
"""A/B benchmark: the CPU training step of this checkout against another commit, side by side.

Times ``model.train_on_batch`` of the benchmark CNN (``bench_models.our_cnn``,
batch ``--batch`` of 32x32x3, SGD, sparse categorical cross-entropy) in two
worker processes, one per tree: this checkout, and ``REF`` checked out into a
temporary git worktree (removed afterwards). The workers run in alternating
blocks (``--reps`` timed steps each, the order rotating), after a warm-up, so
the machine's noise hits both alike; the report gives each side's median and
the ratio. Both workers get the same thread settings (``--threads``).

    python scripts/bench_ab.py fd7bfb9            # this checkout against fd7bfb9
    python scripts/bench_ab.py HEAD~3 --blocks 30
    python scripts/bench_ab.py fd7bfb9 --env GPULAYERS_MALLOC_TUNING=0   # an environment for this side only

Check ``uptime`` first: on a busy machine the figures mean nothing.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The worker: builds the step in its own tree, then answers "N" with N step times (seconds), one per line.
WORKER = r"""
import sys, time
root = sys.argv[1]
sys.path[:0] = [root, root + "/scripts"]
from bench_models import our_cnn
import numpy
batch = int(sys.argv[2])
rng = numpy.random.default_rng(0)
x = rng.standard_normal((batch, 32, 32, 3)).astype(numpy.float32)
y = rng.integers(0, 10, batch)
model = our_cnn()
for _ in range(int(sys.argv[3])):
    model.train_on_batch(x, y)
print("ready", flush=True)
for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    print(" ".join(repr(t) for t in times), flush=True)
"""


def worker_env(threads, extra=()):
    env = dict(os.environ)
    env.update(extra)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GPULAYERS_CPU_THREADS"):
        env[name] = str(threads)
    env["GPULAYERS_BACKEND"] = "numpy"
    env.pop("PYTHONPATH", None)
    return env


def start(root, args, extra=()):
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, root, str(args.batch), str(args.warmup)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=worker_env(args.threads, extra), cwd=root,
    )
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the worker for {root} did not start")
    return proc


def run_block(proc, reps):
    proc.stdin.write(f"{reps}\n")
    proc.stdin.flush()
    return [float(t) for t in proc.stdout.readline().split()]


def main(argv=None):
    p = argparse.ArgumentParser(prog="bench_ab.py", description=__doc__.split("\n\n")[0])
    p.add_argument("ref", help="the commit to compare with (e.g. fd7bfb9)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--blocks", type=int, default=20, help="alternating blocks per side (default 20)")
    p.add_argument("--reps", type=int, default=10, help="timed steps per block (default 10)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per side first (default 10)")
    p.add_argument("--gap", type=float, default=0.3, help="seconds of sleep before each block (default 0.3)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for this checkout's worker only (repeatable)")
    args = p.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    tmp = tempfile.mkdtemp(prefix="gpulayers-ab-")
    base = os.path.join(tmp, "tree")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", base, args.ref], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        commit = subprocess.run(["git", "-C", base, "rev-parse", "--short", "HEAD"], check=True,
                                capture_output=True, text=True).stdout.strip()
        label = "this checkout" + "".join(f" {k}={v}" for k, v in extra.items())
        sides = {label: start(ROOT, args, extra), f"{args.ref} ({commit})": start(base, args)}
        times = {name: [] for name in sides}
        names = list(sides)
        for block in range(args.blocks):
            for name in names[block % 2:] + names[: block % 2]:
                time.sleep(args.gap)
                times[name] += run_block(sides[name], args.reps)
        for proc in sides.values():
            proc.stdin.close()
            proc.wait()
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", base], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    new, old = (medians[n] for n in names)
    print(f"training step of the benchmark CNN, batch {args.batch}, {args.threads} threads, "
          f"{args.blocks} alternating blocks of {args.reps} steps per side (median ms per step):")
    for name in names:
        print(f"  {name:40s} {medians[name]:8.2f} ms")
    print(f"  ratio this/ref: {new / old:.3f}")


if __name__ == "__main__":
    main()
