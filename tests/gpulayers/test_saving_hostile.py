"""Loading hostile files (issue 15): refused before allocating, in bounded time and memory, with ValueError.

Each test pins one defect of the campaign: configs declaring huge layers, decompression bombs, long
and deeply nested configs, oversized optimizer counters, paths that are not files, and the memory a
load may take, measured against the file's size. ``GPULAYERS_STRESS_MUTANTS`` sets how many mutated
files the mutation test tries (a release stress run sets thousands).
"""

import io
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile

import h5py
import numpy as np
import pytest

from gpulayers import initializers, saving, serialization
from gpulayers.layers import Activation, Conv2D, Dense, Flatten, Input
from gpulayers.layers import base as layer_base
from gpulayers.layers.weight_allocation import deferred_initialization
from gpulayers.models import Sequential
from gpulayers.saving import config_checks, weights_file

MUTANTS = int(os.environ.get("GPULAYERS_STRESS_MUTANTS", "24"))
# What a refused load may allocate (tracemalloc counts NumPy's arrays too): the JSON, small arrays.
REFUSAL_BYTES = 16 << 20


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    dense = Sequential([Input(shape=(144,)), Dense(10)], name="dense_model")
    cnn = Sequential([Input(shape=(8, 8, 3)), Conv2D(4, 3), Flatten(), Dense(2)], name="cnn")
    compiled = Sequential([Input(shape=(3,)), Dense(2)])
    compiled.compile(optimizer="sgd", loss="mse")
    compiled.fit(np.zeros((2, 3)), np.zeros((2, 2)), verbose=0)
    out = {}
    for name, model in (("dense", dense), ("cnn", cnn), ("compiled", compiled)):
        out[name] = folder / f"{name}.keras"
        saving.save_model(model, out[name])
    return out


def rewrite(src, dst, config=None, weights=None, compress=zipfile.ZIP_STORED):
    """``src`` with its config edited by ``config(dict)`` and/or its weights member replaced (bytes, or
    an iterable of chunks written through the zip stream: a bomb is never held whole)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "config.json" and config is not None:
                entry = json.loads(data)
                config(entry)
                data = json.dumps(entry).encode()
            info = zipfile.ZipInfo(name)
            if name == "model.weights.h5" and weights is not None:
                info.compress_type = compress
                with zout.open(info, "w", force_zip64=True) as member:
                    for chunk in [weights] if isinstance(weights, bytes) else weights:
                        member.write(chunk)
                continue
            zout.writestr(info, data)
    return dst


def refused(path, *, compile=True, match=None):
    """load_model(path) refuses with ValueError naming the file; returns (message, bytes allocated at peak)."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match) as info:
            saving.load_model(path, compile=compile)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    return str(info.value), peak


def _layer(index, **changes):
    def edit(config):
        layer = config["config"]["layers"][index]
        layer["config"].update(changes)
        layer.pop("build_config", None)

    return edit


def _input_shape(shape):
    def edit(config):
        config["config"]["layers"][0]["config"]["batch_shape"] = shape
        for layer in config["config"]["layers"][1:]:
            layer.pop("build_config", None)

    return edit


ORTHOGONAL = {"module": "keras.initializers", "class_name": "Orthogonal", "config": {"gain": 1.0, "seed": None},
              "registered_name": None}

HUGE_CONFIGS = {  # (file, edit): layers the config declares, far beyond what the file holds
    "dense_units_1e12": ("dense", _layer(1, units=10**12)),
    "dense_units_1e6": ("dense", _layer(1, units=10**6)),  # 576 MB that would fit: allocated, then refused
    "conv_filters_1e9": ("cnn", _layer(1, filters=10**9)),
    "batch_shape_1e15": ("dense", _input_shape([None, 10**15])),
    "orthogonal_4000": ("dense", lambda c: (_input_shape([None, 4000])(c),
                                            _layer(1, units=4000, kernel_initializer=ORTHOGONAL)(c))),
}


# ---------------------------------------------------------------- 1. refuse before allocating


@pytest.mark.parametrize("case", sorted(HUGE_CONFIGS))
def test_declared_sizes_are_checked_against_the_file_before_allocating(files, tmp_path, case):
    """A config declaring more parameters than its weights member can hold is refused while the model is
    built with placeholders: no allocation (was a raw MemoryError, or 1.7 GB then a refusal; an
    Orthogonal QR of 4000 x 4000 first)."""
    source, edit = HUGE_CONFIGS[case]
    path = rewrite(files[source], tmp_path / "huge.keras", config=edit)
    message, peak = refused(path)
    assert peak < REFUSAL_BYTES, (peak, message)
    assert "parameters" in message or "cannot create weight" in message, message


def test_loading_runs_no_initializer_and_keeps_the_file_values(files, monkeypatch):
    """Loaded weights are assigned from the file: no initial values are drawn first."""
    calls = []
    real = initializers.get

    def spying(identifier, argument=None):
        initializer = real(identifier, argument=argument)
        return lambda *args, **kwargs: calls.append(args) or initializer(*args, **kwargs)

    expected = saving.load_model(files["cnn"]).get_weights()
    monkeypatch.setattr(layer_base.initializers, "get", spying)
    model = saving.load_model(files["cnn"])
    assert calls == []
    for a, b in zip(model.get_weights(), expected):
        np.testing.assert_array_equal(a, b)
    assert all(w.value.strides[-1] for w in model.weights if w.value.ndim)  # real arrays, no placeholder left


def test_deferred_weights_hold_no_memory_until_given_values():
    """The mechanism behind it: placeholders of the weights' shapes, initialized on demand."""
    with deferred_initialization() as deferred:
        layer = Dense(3, kernel_initializer="ones")
        layer.build((None, 10**6))
    assert layer.kernel.shape == (10**6, 3) and layer.kernel.value.strides == (0, 0)
    assert deferred.elements == 3 * 10**6 + 3
    deferred.initialize_remaining()
    np.testing.assert_array_equal(layer.kernel.numpy(), np.ones((10**6, 3), np.float32))
    with deferred_initialization(max_elements=100, source="a test") as deferred:
        with pytest.raises(ValueError, match="more than the 100 that a test can hold"):
            Dense(200).build((None, 1))


def _zeros(total, chunk=1 << 24):
    for _ in range(total // chunk):
        yield bytes(chunk)


def test_weights_member_bomb_is_refused_unread(files, tmp_path):
    """A deflate bomb as model.weights.h5 (256 MB of zeros in 250 KB) under a config that allows it: the
    member's declared size is checked against its stored size, nothing is inflated (was read whole)."""
    path = rewrite(files["dense"], tmp_path / "bomb.keras", config=_layer(1, units=10**6),
                   weights=_zeros(256 << 20), compress=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(path) < 1 << 20
    message, peak = refused(path, match="decompression bomb")
    assert peak < REFUSAL_BYTES, peak


def test_recompressed_archive_still_loads(files, tmp_path):
    """A .keras re-zipped with deflate (real weights compress little) loads as before."""
    with zipfile.ZipFile(files["cnn"]) as zin:
        weights = zin.read("model.weights.h5")
    path = rewrite(files["cnn"], tmp_path / "deflated.keras", weights=weights, compress=zipfile.ZIP_DEFLATED)
    expected = saving.load_model(files["cnn"]).get_weights()
    for a, b in zip(saving.load_model(path).get_weights(), expected):
        np.testing.assert_array_equal(a, b)


def test_memory_error_while_loading_names_the_file(files, monkeypatch):
    def out_of_memory(ds):
        raise MemoryError("Unable to allocate 3.6 GiB")

    monkeypatch.setattr(weights_file, "_read_array", out_of_memory)
    message, _ = refused(files["cnn"], match="ran out of memory")


# ---------------------------------------------------------------- 2. long configs


def test_long_sequential_loads_in_linear_time(tmp_path, monkeypatch):
    """Each layer added by from_config used to recompute the whole stack's output shape and graph:
    quadratic (16000 layers 16 s). Counted in compute_output_shape calls, which must grow linearly."""
    calls = []
    real = Activation.compute_output_shape
    monkeypatch.setattr(Activation, "compute_output_shape", lambda self, s: calls.append(1) or real(self, s))
    counts = {}
    for n in (100, 400):
        model = Sequential([Input(shape=(3,))] + [Activation("linear") for _ in range(n)])
        saving.save_model(model, tmp_path / f"long{n}.keras")
        calls.clear()
        assert len(saving.load_model(tmp_path / f"long{n}.keras").layers) == n
        counts[n] = len(calls)
    assert counts[400] <= 5 * counts[100], counts
    assert counts[400] <= 10 * 400, counts


def test_layer_count_is_capped(files, tmp_path, monkeypatch):
    act = {"module": "keras.layers", "class_name": "Activation", "registered_name": None,
           "config": {"name": "a", "activation": "linear", "trainable": True, "dtype": "float32"}}

    def many(config):
        config["config"]["layers"] += [dict(act, config=dict(act["config"], name=f"a{i}"))
                                       for i in range(config_checks.MAX_LAYERS)]

    path = rewrite(files["dense"], tmp_path / "many.keras", config=many)
    built = []
    monkeypatch.setattr(serialization, "deserialize", lambda *a, **k: built.append(a))
    refused(path, match=f"more than {config_checks.MAX_LAYERS} layers")
    assert built == []


def test_refusal_lists_a_few_names_and_counts_the_rest(files, tmp_path):
    """A weights file with 3000 unexpected groups used to put all of them in the message (1 MB for 100k)."""
    with zipfile.ZipFile(files["dense"]) as zin:
        buffer = io.BytesIO(zin.read("model.weights.h5"))
    with h5py.File(buffer, "a") as h5:
        for i in range(3000):
            h5["layers"].create_group(f"extra_{i:05d}")
    path = rewrite(files["dense"], tmp_path / "groups.keras", weights=buffer.getvalue())
    message, _ = refused(path, match="and 2990 more")
    assert len(message) < 1000, len(message)


# ---------------------------------------------------------------- 5. nesting


def _deep_object(config):
    deep = {}
    node = deep
    for _ in range(600):
        node["a"] = {}
        node = node["a"]
    config["config"]["layers"][1]["config"]["kernel_regularizer"] = deep


def _deep_sequential(depth):
    def edit(config):
        inner = dict(config)
        for i in range(depth):
            inner = {"module": "keras", "class_name": "Sequential", "registered_name": None,
                     "config": {"name": f"s{i}", "layers": [inner]}}
        config.clear()
        config.update(inner)

    return edit


@pytest.mark.parametrize("edit", [_deep_object, _deep_sequential(200)], ids=["object_600", "sequential_200"])
def test_deeply_nested_config_refused(files, tmp_path, edit):
    """Both 20 KB files used to raise RecursionError."""
    path = rewrite(files["dense"], tmp_path / "deep.keras", config=edit)
    refused(path, match=f"more than {config_checks.MAX_CONFIG_DEPTH} levels")


def test_nested_sequentials_within_the_depth_limit_load(tmp_path):
    model = Sequential([Input(shape=(3,)), Dense(2)])
    for _ in range(20):
        model = Sequential([model])
    saving.save_model(model, tmp_path / "nested.keras")
    loaded = saving.load_model(tmp_path / "nested.keras")
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- 6. optimizer iterations


@pytest.mark.parametrize("iterations", [2**63, 2**64 - 1])
def test_iterations_beyond_int64_refused(files, tmp_path, iterations):
    """They used to load, then every later save failed with OverflowError."""
    with zipfile.ZipFile(files["compiled"]) as zin:
        buffer = io.BytesIO(zin.read("model.weights.h5"))
    with h5py.File(buffer, "a") as h5:
        del h5["optimizer/vars/0"]
        h5["optimizer/vars/0"] = np.array(iterations, dtype=np.uint64)
    path = rewrite(files["compiled"], tmp_path / "iterations.keras", weights=buffer.getvalue())
    refused(path, match=f"iterations = {iterations}")


# ---------------------------------------------------------------- 9. not a file


@pytest.fixture
def alarm():
    """Fail, instead of hanging, when a call blocks (opening a FIFO waits for a writer)."""

    def fire(signum, frame):
        raise TimeoutError("blocked")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_directory_and_fifo_say_what_they_are_and_never_block(tmp_path, alarm):
    """Both used to say "No such file"; opening a FIFO could wait for a writer forever."""
    (tmp_path / "dir.keras").mkdir()
    with pytest.raises(IsADirectoryError, match="dir.keras: it is a directory"):
        saving.load_model(tmp_path / "dir.keras")
    model = Sequential([Input(shape=(3,)), Dense(2)])
    for name, load in (("f.keras", saving.load_model), ("f.weights.h5", lambda p: saving.load_weights(model, p))):
        os.mkfifo(tmp_path / name)
        with pytest.raises(ValueError, match=f"{name}: it is a FIFO"):
            load(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="No such model file"):
        saving.load_model(tmp_path / "missing.keras")


# ---------------------------------------------------------------- mutants


def _mutant(data, rng):
    """A mutated copy of an archive: a config number made huge, or bytes of the file changed."""
    if rng.random() < 0.5:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            config = json.loads(z.read("config.json"))
        spots = []

        def walk(value):
            for key, item in (value.items() if isinstance(value, dict) else enumerate(value)):
                if isinstance(item, int) and not isinstance(item, bool):
                    spots.append((value, key))
                elif isinstance(item, (dict, list)):
                    walk(item)

        walk(config)
        value, key = rng.choice(spots)
        value[key] = rng.choice([10**6, 10**9, 2**31 - 1, 2**63 - 1, 10**15, 0, -1])
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w") as zout:
            for name in zin.namelist():
                zout.writestr(name, json.dumps(config) if name == "config.json" else zin.read(name))
        return out.getvalue()
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def test_mutated_files_are_loaded_or_refused_with_value_error_in_bounded_memory(files, tmp_path):
    rng = random.Random(15)
    sources = [files[name].read_bytes() for name in ("dense", "cnn", "compiled")]
    path = tmp_path / "mutant.keras"
    for i in range(MUTANTS):
        path.write_bytes(_mutant(rng.choice(sources), rng))
        tracemalloc.start()
        try:
            saving.load_model(path)
        except ValueError as exc:
            assert str(path) in str(exc), exc
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < REFUSAL_BYTES, (i, peak)


# ---------------------------------------------------------------- memory bound

# The documented bound (docs/RELIABILITY.md): a load's peak memory above the interpreter's stays under
# LOAD_MEMORY_MULTIPLE times the file's size plus LOAD_MEMORY_SLACK. Parsed JSON is what costs most per
# byte (a dict of short keys: ~29 x its text); weights cost ~2.2 x (the bytes, then the arrays).
LOAD_MEMORY_MULTIPLE = 32
WEIGHTS_MEMORY_MULTIPLE = 3
LOAD_MEMORY_SLACK = 64 << 20

_MEASURE = textwrap.dedent("""
    import sys
    from gpulayers import saving

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    saving.load_model(sys.argv[1])  # warm: the first load imports and fills caches
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current RSS
    base = status("VmRSS:")
    try:
        saving.load_model(sys.argv[2])
    except ValueError:
        pass
    print(status("VmHWM:") - base)
""")


def _json_dict_bomb(config):
    config["config"]["layers"][1]["config"]["junk"] = {f"{i:x}": 0 for i in range(200_000)}


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="measures the peak RSS through Linux's /proc")
def test_load_memory_is_bounded_by_the_file_size(files, tmp_path):
    """Peak RSS of loads, each in a fresh process: hostile files (a deflate bomb, huge layers, a config of
    short keys) and a 64 MB model stay under LOAD_MEMORY_MULTIPLE x their size plus the slack; the model's
    weights under WEIGHTS_MEMORY_MULTIPLE x."""
    big = Sequential([Input(shape=(2048,)), Dense(4096), Dense(2048)])
    saving.save_model(big, tmp_path / "big.keras")
    cases = {"big": tmp_path / "big.keras",
             "bomb": rewrite(files["dense"], tmp_path / "bomb.keras", config=_layer(1, units=10**6),
                             weights=_zeros(256 << 20), compress=zipfile.ZIP_DEFLATED),
             "json": rewrite(files["dense"], tmp_path / "json.keras", config=_json_dict_bomb)}
    source, edit = HUGE_CONFIGS["dense_units_1e6"]
    cases["dense_units_1e6"] = rewrite(files[source], tmp_path / "dense_units_1e6.keras", config=edit)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    runs = {case: subprocess.Popen([sys.executable, "-c", _MEASURE, str(files["cnn"]), str(path)], cwd=root,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for case, path in cases.items()}
    growth = {}
    for case, run in runs.items():
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        growth[case], size = int(out), os.path.getsize(cases[case])
        print(f"{case}: {size >> 10} KiB file, +{growth[case] >> 20} MiB ({growth[case] / size:.1f} x)")
        assert growth[case] < LOAD_MEMORY_MULTIPLE * size + LOAD_MEMORY_SLACK, (case, growth[case], size)
    assert growth["big"] < WEIGHTS_MEMORY_MULTIPLE * os.path.getsize(cases["big"]) + LOAD_MEMORY_SLACK, growth
