"""Run Keras 3's own unit tests against gpulayers, by hand (not in CI: CI has no keras).

The tests ship inside the keras wheel (``keras/src/**/*_test.py``). Each chosen
file is copied to a scratch directory with its imports of the public families
(layers, losses, metrics, optimizers, ...) pointed at gpulayers; Keras's own
``testing.TestCase`` and ``backend`` stay, since they only compare arrays.
Tests that go through ``run_layer_test`` drive Keras's symbolic internals
(KerasTensor, tracing, its own serialization) rather than the layer's
behaviour, so they are counted apart as "harness".

    KERAS_BACKEND=jax .venv/bin/python scripts/keras_unit_tests.py [--failures] [FILE ...]

FILE is a path under ``keras/src`` (e.g. ``losses/losses_test.py``); with none
given, the files of the families gpulayers implements are run. Prints one line
per file (passed / failed / wording: the right exception with other words /
harness / skipped) and the totals; ``--failures`` lists every failing test id.
"""

import argparse
import ast
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

FILES = [
    "activations/activations_test.py",
    "callbacks/csv_logger_test.py",
    "callbacks/early_stopping_test.py",
    "callbacks/lambda_callback_test.py",
    "callbacks/learning_rate_scheduler_test.py",
    "callbacks/model_checkpoint_test.py",
    "callbacks/reduce_lr_on_plateau_test.py",
    "callbacks/terminate_on_nan_test.py",
    "callbacks/backup_and_restore_test.py",
    "constraints/constraints_test.py",
    "initializers/constant_initializers_test.py",
    "initializers/random_initializers_test.py",
    "layers/activations/activation_test.py",
    "layers/convolutional/conv_test.py",
    "layers/core/dense_test.py",
    "layers/core/input_layer_test.py",
    "layers/normalization/batch_normalization_test.py",
    "layers/pooling/average_pooling_test.py",
    "layers/pooling/global_average_pooling_test.py",
    "layers/pooling/global_max_pooling_test.py",
    "layers/pooling/max_pooling_test.py",
    "layers/regularization/dropout_test.py",
    "layers/reshaping/flatten_test.py",
    "losses/losses_test.py",
    "metrics/accuracy_metrics_test.py",
    "metrics/confusion_metrics_test.py",
    "metrics/f_score_metrics_test.py",
    "metrics/hinge_metrics_test.py",
    "metrics/iou_metrics_test.py",
    "metrics/probabilistic_metrics_test.py",
    "metrics/reduction_metrics_test.py",
    "metrics/regression_metrics_test.py",
    "models/sequential_test.py",
    "optimizers/adadelta_test.py",
    "optimizers/adagrad_test.py",
    "optimizers/adam_test.py",
    "optimizers/adamax_test.py",
    "optimizers/adamw_test.py",
    "optimizers/ftrl_test.py",
    "optimizers/lion_test.py",
    "optimizers/nadam_test.py",
    "optimizers/rmsprop_test.py",
    "optimizers/sgd_test.py",
    "optimizers/schedules/learning_rate_schedule_test.py",
    "regularizers/regularizers_test.py",
]

# Families whose Keras modules are replaced by gpulayers'.
FAMILIES = {
    "activations", "callbacks", "constraints", "initializers", "layers", "losses", "metrics", "models",
    "ops", "optimizers", "regularizers", "random",
}

# A Keras conftest helper some test files import, and TestCase's serialization
# round trip pointed at gpulayers' serializer (it imports these at call time).
CONFTEST = '''
import pytest
from keras.src import backend
import keras.src.saving
import gpulayers.saving

for _name in ("custom_object_scope", "serialize_keras_object", "deserialize_keras_object"):
    setattr(keras.src.saving, _name, getattr(gpulayers.saving, _name))


def skip_if_backend(given_backend, reason):
    return pytest.mark.skipif(backend.backend() == given_backend, reason=reason)
'''


# `backend` in Keras's tests: gpulayers' variables and conversions, Keras's
# own for the rest (backend names, dtype helpers the tests compare with).
BACKEND_SHIM = '''
import keras.src.backend as _keras_backend
import gpulayers
from gpulayers import ops as _ops

Variable = gpulayers.Variable
KerasTensor = gpulayers.KerasTensor
convert_to_numpy = _ops.convert_to_numpy
convert_to_tensor = _ops.convert_to_tensor
floatx = gpulayers.backend.floatx


def __getattr__(name):
    return getattr(_keras_backend, name)
'''


def rewrite(source):
    """The test file's source with its imports of the public families pointed at gpulayers."""
    return "\n".join(_rewrite_line(line) for line in source.splitlines()) + "\n"


def _rewrite_line(line):
    if re.match(r"^import keras\s*$", line):  # the mission's one-line change
        return "import gpulayers as keras"
    m = re.match(r"^from keras\.src\.backend(?:\.common\.keras_tensor)? import KerasTensor\s*$", line)
    if m:  # the symbolic tensor a test builds inputs from: gpulayers' own
        return "from gpulayers import KerasTensor"
    m = re.match(r"^from keras\.src import (\w+)(\s+as\s+\w+)?\s*$", line)
    if m and m.group(1) == "backend":
        return f"import backend_shim{m.group(2) or ' as backend'}"
    if m and m.group(1) in FAMILIES:
        return f"from gpulayers import {m.group(1)}{m.group(2) or ''}"
    # from keras.src.<family>[.sub.module] import NAME[ as ALIAS][, ...]
    m = re.match(r"^from (keras\.src\.(\w+)((?:\.\w+)*)) import ([\w ,]+)$", line)
    if not m or m.group(2) not in FAMILIES:
        return line
    keras_module, family, sub = m.group(1), m.group(2), m.group(3)
    target = f"gpulayers.{family}" + (".schedules" if sub.startswith(".schedules") else "")
    ours = importlib.import_module(target)
    out = []
    for item in m.group(4).split(","):
        name, _, alias = (part.strip() for part in item.partition(" as "))
        alias = alias or name
        if hasattr(ours, name):
            out.append(f"from {target} import {name} as {alias}")
        elif not sub and name.islower() and importlib.util.find_spec(f"{keras_module}.{name}"):
            # a Keras submodule (`from keras.src.metrics import accuracy_metrics`): the family itself
            out.append(f"import {target} as {alias}")
        else:
            # a helper gpulayers does not have (e.g. a validation function the test calls): Keras's own
            out.append(f"from {keras_module} import {name} as {alias}")
    return "; ".join(out)


def run(files, show_failures):
    keras_src = os.path.dirname(__import__("keras.src", fromlist=["_"]).__file__)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    totals = dict(passed=0, failed=0, wording=0, harness=0, skipped=0)
    failures = []
    with tempfile.TemporaryDirectory() as scratch:
        with open(os.path.join(scratch, "conftest.py"), "w") as f:
            f.write(CONFTEST)
        with open(os.path.join(scratch, "backend_shim.py"), "w") as f:
            f.write(BACKEND_SHIM)
        for rel in files:
            with open(os.path.join(keras_src, rel)) as f:
                source = f.read()
            name = rel.replace("/", "__")
            with open(os.path.join(scratch, name), "w") as f:
                f.write(rewrite(source))
            report = os.path.join(scratch, name + ".xml")
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, scratch]))
            env.setdefault("KERAS_BACKEND", "jax")
            subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 f"--junitxml={report}", "--rootdir", scratch, os.path.join(scratch, name)],
                cwd=scratch, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            counts, failed = _summarize(report, source)
            for k in totals:
                totals[k] += counts[k]
            failures += [f"{rel}::{t}" for t in failed]
            print(f"{rel:58s} " + " ".join(f"{k} {v:3d}" for k, v in counts.items()), flush=True)
    print("total" + " " * 54 + " ".join(f"{k} {v:3d}" for k, v in totals.items()))
    applicable = totals["passed"] + totals["failed"] + totals["wording"]
    if applicable:
        print(f"of {applicable} applicable tests: {totals['failed']} fail on behaviour or API "
              f"({100 * totals['failed'] / applicable:.1f}%), {totals['wording']} only on an error message's words")
    if show_failures:
        print("\n".join(failures))


def _summarize(report, source):
    counts = dict(passed=0, failed=0, wording=0, harness=0, skipped=0)
    failed = []
    if not os.path.exists(report):
        counts["failed"] = 1
        return counts, ["<collection failed>"]
    functions = _test_functions(source)
    for case in ET.parse(report).getroot().iter("testcase"):
        test = case.get("name")
        owner = case.get("classname", "").rsplit(".", 1)[-1]
        label = f"{owner}::{test}"
        defined = functions.get(owner, functions.get("", {}))
        if case.find("skipped") is not None:
            counts["skipped"] += 1
        elif defined.get(_defining_test(test.split("[")[0], defined)):
            counts["harness"] += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            problem = case.find("failure") if case.find("failure") is not None else case.find("error")
            message = (problem.get("message") or "").strip()
            first = message.splitlines()[0] if message else ""
            # assertRaisesRegex saw the right exception type, worded otherwise
            wording = first.startswith('AssertionError: "') and '" does not match "' in first
            counts["wording" if wording else "failed"] += 1
            failed.append(f"{label}: {'(wording) ' if wording else ''}{first[:160]}")
        else:
            counts["passed"] += 1
    return counts, failed


def _defining_test(name, defined):
    """The test function a collected name comes from: itself, or for absl's parameterized names
    (``test_x0``, ``test_x_dense``) the longest defined name it extends."""
    if name in defined:
        return name
    candidates = [d for d in defined if name.startswith(d)]
    return max(candidates, key=len) if candidates else name


def _test_functions(source):
    """``{class name: {test name: whether its body calls Keras's run_layer_test}}`` ("" for module level)."""
    tree = ast.parse(source)
    out = {}

    def tests_of(body, owner):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                calls = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", None)
                         for n in ast.walk(node) if isinstance(n, ast.Call)}
                out.setdefault(owner, {})[node.name] = "run_layer_test" in calls

    tests_of(tree.body, "")
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            tests_of(node.body, node.name)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="test files under keras/src (default: the implemented families)")
    parser.add_argument("--failures", action="store_true", help="list every failing test id")
    args = parser.parse_args()
    run(args.files or FILES, args.failures)


if __name__ == "__main__":
    main()
