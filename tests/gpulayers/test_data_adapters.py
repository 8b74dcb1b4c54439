"""gpulayers.data_adapters: PyDataset, generators, torch DataLoaders, class weights and Keras's epoch semantics."""

import importlib.util
import os
import subprocess
import sys
import threading
import traceback
import types
import warnings

import numpy as np
import pytest

import gpulayers
from gpulayers import data_adapters as da
from gpulayers.data_adapters import EpochIterator, PyDataset, get_data_adapter


@pytest.fixture(autouse=True)
def no_leftover_threads():
    """Every test ends with as many threads as it began with: no worker outlives its epoch."""
    before = threading.active_count()
    yield
    assert threading.active_count() == before, [t.name for t in threading.enumerate()]


def batches_of(adapter):
    return list(adapter.get_numpy_iterator())


def epochs(iterator, count):
    """Run ``count`` epochs as a trainer would; the x of each batch (its first value) per epoch."""
    seen = []
    with iterator:
        for epoch in range(count):
            if epoch and iterator.out_of_data():
                break
            seen.append([int(np.asarray(x).flat[0]) for _, (x, _, _) in iterator.enumerate_epoch()])
    return seen


def numbered(n, start=0):
    """A generator of ``(x, y)`` batches whose x is filled with the batch's number."""
    for i in range(start, start + n):
        yield np.full((2, 3), i, dtype="float32"), np.full((2,), i % 3)


def endless():
    i = 0
    while True:
        yield np.full((2, 3), i, dtype="float32"), np.zeros((2,))
        i += 1


class Numbered(PyDataset):
    """A PyDataset of ``n`` batches (None: endless) whose x is filled with its index; records its calls."""

    def __init__(self, n=6, fail_at=None, error=ValueError, **kwargs):
        super().__init__(**kwargs)
        self.n, self.fail_at, self.error = n, fail_at, error
        self.calls, self.events = [], []
        self._lock = threading.Lock()

    @property
    def num_batches(self):
        return self.n

    def __getitem__(self, index):
        with self._lock:
            self.calls.append(index)
        if index == self.fail_at:
            raise self.error(f"batch {index} is broken")
        x = np.full((4, 3), index, dtype="float32")
        return x, np.arange(4) % 3

    def on_epoch_begin(self):
        self.events.append("begin")

    def on_epoch_end(self):
        self.events.append("end")


# ---------------------------------------------------------------- generators and iterators


def test_generator_of_tuples_gives_triples():
    def gen():
        yield (np.ones((2, 3)),)
        yield np.ones((2, 3)), np.zeros((2, 1))
        yield np.ones((2, 3)), np.zeros((2, 1)), np.full((2,), 0.5)
        yield [np.ones((2, 3)), np.zeros((2, 1))]  # a list is a tuple, as in unpack_x_y_sample_weight

    adapter = get_data_adapter(gen())
    assert adapter.one_shot and adapter.num_batches is None and adapter.batch_size is None
    out = batches_of(adapter)
    assert [tuple(part is None for part in b) for b in out] == [
        (False, True, True), (False, False, True), (False, False, False), (False, False, True)
    ]
    np.testing.assert_array_equal(out[2][2], [0.5, 0.5])
    assert batches_of(adapter) == []  # one-shot: the stream has ended


def test_generator_of_dicts_and_lists_keeps_the_structure():
    torch = pytest.importorskip("torch")

    def gen():
        for i in range(2):
            x = {"image": np.full((2, 4), i), "extra": [torch.ones(2, 1) * i, [1.0, 2.0]]}
            yield x, {"out": torch.arange(2)}

    out = batches_of(get_data_adapter(gen()))
    x, y, sw = out[1]
    assert set(x) == {"image", "extra"} and isinstance(x["extra"], list) and sw is None
    assert all(isinstance(a, np.ndarray) for a in (x["image"], x["extra"][0], x["extra"][1], y["out"]))
    np.testing.assert_array_equal(x["extra"][0], np.ones((2, 1)))
    np.testing.assert_array_equal(x["extra"][1], [1.0, 2.0])  # a list of numbers is one array
    np.testing.assert_array_equal(y["out"], [0, 1])


def test_plain_iterators_are_accepted():
    items = [(np.full((1, 2), i), np.zeros(1)) for i in range(3)]
    adapter = get_data_adapter(iter(items))
    assert isinstance(adapter, da.GeneratorDataAdapter)
    assert [int(x[0, 0]) for x, _, _ in batches_of(adapter)] == [0, 1, 2]
    mapped = get_data_adapter(map(lambda i: (np.full((1, 2), i),), range(2)))
    assert [int(x[0, 0]) for x, _, _ in batches_of(mapped)] == [0, 1]


def test_generator_errors():
    with pytest.raises(ValueError, match="yielded no batch"):
        get_data_adapter(iter(()))
    with pytest.raises(ValueError, match="must yield tuples"):
        get_data_adapter(iter([{"a": np.ones(2)}]))
    with pytest.raises(ValueError, match="must yield tuples"):
        get_data_adapter(iter([np.ones((2, 2))]))
    adapter = get_data_adapter(iter([(np.ones(2),), (np.ones(2),) * 4]))
    with pytest.raises(ValueError, match="4 items"):
        batches_of(adapter)


def test_endless_generator_with_steps_continues_across_three_epochs():
    seen = epochs(EpochIterator(endless(), steps_per_epoch=2), 3)
    assert seen == [[0, 1], [2, 3], [4, 5]]


def test_finite_generator_with_steps_warns_once_when_it_runs_out():
    it = EpochIterator(numbered(5), steps_per_epoch=2)
    with pytest.warns(UserWarning, match="Your input ran out of data") as record:
        seen = epochs(it, 4)
    assert seen == [[0, 1], [2, 3], [4]]  # the third epoch ends early; the fourth is never started
    assert len(record) == 1 and it.exhausted and it.num_batches == 2


def test_finite_generator_without_steps_is_one_pass_then_out_of_data():
    it = EpochIterator(numbered(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a full pass ending is no cause for a warning...
        assert [[int(x[0, 0]) for _, (x, _, _) in it.enumerate_epoch()]] == [[0, 1, 2]]
    assert it.exhausted and it.num_batches == 3  # the count is known after the pass
    with pytest.warns(UserWarning, match="ran out of data"):  # ...but another epoch is wanted
        assert it.out_of_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert it.out_of_data()  # warned once
    it.close()


def test_a_single_pass_of_a_generator_needs_no_warning():
    """evaluate/predict: one epoch over a finite generator, no steps: it ends quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert epochs(EpochIterator(numbered(2)), 1) == [[0, 1]]


def test_an_epoch_started_on_exhausted_data_warns_and_yields_nothing():
    it = EpochIterator(numbered(2), steps_per_epoch=2)
    assert epochs(it, 1) == [[0, 1]]
    with pytest.warns(UserWarning, match="ran out of data"):
        assert list(it.enumerate_epoch()) == []
    assert it.exhausted


def test_peek_shows_the_next_epochs_first_batch_without_taking_it():
    it = EpochIterator(numbered(3))
    x, y, sw = it.peek()
    assert int(x[0, 0]) == 0 and it.peek()[0] is x and sw is None
    assert epochs(it, 1) == [[0, 1, 2]]
    assert it.peek() is None  # the generator has ended

    start = threading.active_count()
    gpulayers.set_random_seed(3)
    shuffled = EpochIterator(Numbered(8, workers=3), shuffle=True)
    first = int(shuffled.peek()[0][0, 0])
    assert threading.active_count() == start  # peeking leaves no worker running
    assert shuffled.data_adapter.py_dataset.events == []  # nor calls the epoch hooks
    seen = epochs(shuffled, 2)
    assert seen[0][0] == first and sorted(seen[0]) == sorted(seen[1]) == list(range(8))

    stepped = EpochIterator(Numbered(5), steps_per_epoch=2)
    for epoch in range(3):
        expected = [[0, 1], [2, 3], [4]][epoch]
        assert int(stepped.peek()[0][0, 0]) == expected[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert [int(x[0, 0]) for _, (x, _, _) in stepped.enumerate_epoch()] == expected
    assert int(stepped.peek()[0][0, 0]) == 0  # a new pass
    stepped.close()


def test_steps_per_epoch_is_validated():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="steps_per_epoch"):
            EpochIterator(numbered(1), steps_per_epoch=bad)


# ---------------------------------------------------------------- PyDataset


def test_pydataset_basics_and_aliases():
    ds = Numbered(3)
    assert ds.workers == 1 and ds.use_multiprocessing is False and ds.max_queue_size == 10
    assert gpulayers.utils.PyDataset is PyDataset and gpulayers.utils.Sequence is PyDataset
    assert [int(x[0, 0]) for x, _ in ds] == [0, 1, 2]  # direct iteration, no threads

    class Sized(PyDataset):
        def __len__(self):
            return 4

    class Forgetful(Sized):
        def __init__(self, **kwargs):
            self.kwargs = kwargs  # no super().__init__(**kwargs)

    with pytest.warns(UserWarning, match=r"super\(\).__init__"):
        assert Forgetful(workers=4).workers == 1
    assert Sized(workers=2).workers == 2 and Sized().num_batches == 4

    class Nothing(PyDataset):
        pass

    with pytest.raises(NotImplementedError, match="num_batches"):
        Nothing().num_batches
    with pytest.raises(NotImplementedError, match="__getitem__"):
        Nothing()[0]


@pytest.mark.parametrize("shuffle", [False, True])
def test_pydataset_workers_give_the_same_batches_in_the_same_order(shuffle):
    def run(workers, multiprocessing=False):
        gpulayers.set_random_seed(7)
        ds = Numbered(9, workers=workers, use_multiprocessing=multiprocessing, max_queue_size=4)
        it = EpochIterator(ds, shuffle=shuffle)
        return epochs(it, 2), ds

    (single, ds1), (threaded, ds3), (processes, _) = run(1), run(3), run(2, True)
    assert single == threaded == processes
    assert sorted(single[0]) == list(range(9)) and (single[0] != single[1]) == shuffle
    assert sorted(ds1.calls) == sorted(ds3.calls)  # every batch fetched once per epoch
    assert ds3.events == ["begin", "end", "begin", "end"]


def test_pydataset_prefetch_is_bounded_by_max_queue_size():
    ds = Numbered(12, workers=3, max_queue_size=2)
    iterator = get_data_adapter(ds).get_numpy_iterator()
    for taken in range(1, 13):
        next(iterator)
        assert len(ds.calls) <= taken + 2  # at most two batches ahead of the consumer
    with pytest.raises(StopIteration):
        next(iterator)
    assert sorted(ds.calls) == list(range(12))


@pytest.mark.parametrize("workers", [1, 3])
def test_an_exception_in_getitem_reaches_the_loop_with_its_traceback(workers):
    ds = Numbered(8, fail_at=3, workers=workers)
    it = EpochIterator(ds)
    seen = []
    with pytest.raises(ValueError, match="batch 3 is broken") as info:
        with it:
            for _, (x, _, _) in it.enumerate_epoch():
                seen.append(int(x[0, 0]))
    assert seen == [0, 1, 2]
    assert "__getitem__" in [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "end" not in ds.events  # the epoch did not end normally


def test_keyboard_interrupt_in_a_worker_stops_every_thread():
    ds = Numbered(8, fail_at=2, error=KeyboardInterrupt, workers=4)
    with pytest.raises(KeyboardInterrupt):
        epochs(EpochIterator(ds), 1)


def test_leaving_an_epoch_early_or_closing_stops_the_workers():
    start = threading.active_count()
    ds = Numbered(20, workers=3)
    it = EpochIterator(ds)
    for step, _ in it.enumerate_epoch():
        if step == 2:
            break  # stop_training: the epoch's generator is dropped, so it ends
    assert threading.active_count() == start
    assert ds.events == ["begin", "end"]
    epoch = it.enumerate_epoch()
    next(epoch)
    it.close()  # an error elsewhere in the trainer: close() in its finally
    assert ds.events == ["begin", "end", "begin"]  # closing is not a normal epoch end


def test_pydataset_with_steps_continues_its_pass_across_epochs_with_workers():
    def run(workers):
        ds = Numbered(5, workers=workers, max_queue_size=3)
        with pytest.warns(UserWarning, match="ran out of data"):
            seen = epochs(EpochIterator(ds, steps_per_epoch=3), 4)
        return seen, ds.events

    (single, events), (threaded, _) = run(1), run(3)
    # as Keras: the pass continues into the next epoch, ends it early when used up, then starts afresh
    assert single == threaded == [[0, 1, 2], [3, 4], [0, 1, 2], [3, 4]]
    assert events == ["begin", "end"] * 4


def test_endless_pydataset_continues_its_indices_and_ignores_shuffle():
    ds = Numbered(None, workers=2)
    with pytest.warns(UserWarning, match="endless PyDataset"):
        it = EpochIterator(ds, steps_per_epoch=2, shuffle=True)
    assert it.num_batches == 2
    assert epochs(it, 3) == [[0, 1], [2, 3], [4, 5]]


def test_pydataset_batch_forms_and_errors():
    class Forms(PyDataset):
        def __init__(self, batches, **kwargs):
            super().__init__(**kwargs)
            self.batches = batches

        def __len__(self):
            return len(self.batches)

        def __getitem__(self, index):
            return self.batches[index]

    a = np.ones((2, 2))
    out = batches_of(get_data_adapter(Forms([a, {"in": a}, [a, a], (a, a, a[:, 0])])))
    assert out[0][1] is None and isinstance(out[1][0], dict) and out[1][1] is None
    assert out[2][1] is not None and out[3][2].shape == (2,)
    with pytest.raises(ValueError, match=r"PyDataset.__getitem__\(\) must return"):
        batches_of(get_data_adapter(Forms(["text"])))
    with pytest.raises(ValueError, match="has no batches"):
        get_data_adapter(Forms([]))
    with pytest.raises(ValueError, match="workers"):
        get_data_adapter(Forms([a], workers=-1))
    adapter = get_data_adapter(Forms([a]))
    adapter.on_epoch_begin()
    with pytest.raises(ValueError, match="twice"):
        adapter.on_epoch_begin()


# ---------------------------------------------------------------- class weights


def test_class_weight_on_a_pydataset():
    class Labels(PyDataset):
        def __init__(self, y, sw=None):
            super().__init__()
            self.y, self.sw = y, sw

        def __len__(self):
            return 1

        def __getitem__(self, index):
            x = np.zeros((len(self.y), 2))
            return (x, self.y) if self.sw is None else (x, self.y, self.sw)

    weights = {0: 0.5, 2: 3.0}
    for y in (np.array([0, 1, 2, 2]), np.array([[0], [1], [2], [2]]), np.eye(3)[[0, 1, 2, 2]], np.array([0.0, 1.2, 1.9, 2.0])):
        (_, _, sw), = batches_of(get_data_adapter(Labels(y), class_weight=weights))
        assert sw.dtype == np.float32
        np.testing.assert_array_equal(sw, [0.5, 1.0, 3.0, 3.0])
    with pytest.raises(ValueError, match="both `class_weight` and sample weights"):
        batches_of(get_data_adapter(Labels(np.array([0, 1]), sw=np.ones(2)), class_weight=weights))
    with pytest.raises(ValueError, match="single output"):
        batches_of(get_data_adapter(Labels([np.array([0, 1]), np.array([1, 0])]), class_weight=weights))
    with pytest.raises(ValueError, match="one class per sample"):
        da.class_weight_to_sample_weights(np.zeros((2, 3, 4)), weights)
    with pytest.raises(TypeError, match="class_weight"):
        get_data_adapter(Labels(np.array([0])), class_weight=[1.0, 2.0])


# ---------------------------------------------------------------- choosing an adapter


def test_errors_for_what_such_inputs_do_not_take():
    for make, kind in ((lambda: numbered(2), "generator"), (lambda: Numbered(2), "PyDataset")):
        with pytest.raises(ValueError, match=f"When `x` is a {kind}, do not pass `y`"):
            get_data_adapter(make(), y=np.zeros(2))
        with pytest.raises(ValueError, match="do not pass `sample_weight`"):
            get_data_adapter(make(), sample_weight=np.ones(2))
    with pytest.raises(ValueError, match="`class_weight` is not supported with a Python generator"):
        get_data_adapter(numbered(2), class_weight={0: 1.0})
    with pytest.warns(UserWarning, match="`shuffle=True` is ignored"):
        get_data_adapter(numbered(2), shuffle=True)
    with pytest.raises(ValueError, match="`validation_split` is only supported for arrays"):
        da.check_validation_split(numbered(2), 0.2)
    da.check_validation_split(numbered(2), 0.0)
    da.check_validation_split(np.zeros((4, 2)), 0.5)
    # As in Keras 3, batch_size and steps_per_epoch are not the adapter's business.
    assert get_data_adapter(numbered(2), batch_size=32, steps_per_epoch=4).num_batches is None


def test_unknown_types_and_arrays():
    with pytest.raises(TypeError, match="Unrecognized data type"):
        get_data_adapter(object())
    with pytest.raises(TypeError, match="Unrecognized data type"):
        get_data_adapter("text")
    with pytest.raises(TypeError, match="array path"):
        get_data_adapter(np.zeros((4, 2)))
    for arrays in (np.zeros(3), [np.zeros(3), np.ones(3)], {"a": np.zeros(3)}, [[1.0, 2.0]], 3.0, (np.zeros(2), None)):
        assert da.is_array_like(arrays)
    for other in (numbered(1), Numbered(1), iter([1]), None, "text", object(), {"a": object()}):
        assert not da.is_array_like(other)
    adapter = da.GeneratorDataAdapter(numbered(1))
    assert get_data_adapter(adapter) is adapter  # an adapter passes through


def test_importing_touches_neither_torch_nor_cupy():
    code = "import sys, gpulayers.data_adapters; print(sorted({'torch', 'cupy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=os.getcwd())
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- torch


def test_torch_dataloader_over_a_tensor_dataset():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.arange(30, dtype=torch.float32).reshape(10, 3).requires_grad_()
    y = torch.arange(10) % 2
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    adapter = get_data_adapter(loader)
    assert isinstance(adapter, da.TorchDataLoaderAdapter)
    assert (adapter.num_batches, adapter.batch_size, adapter.has_partial_batch, adapter.partial_batch_size) == (3, 4, True, 2)
    out = batches_of(adapter)
    assert [b[0].shape for b in out] == [(4, 3), (4, 3), (2, 3)] and all(b[2] is None for b in out)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in out]), x.detach().numpy())
    np.testing.assert_array_equal(np.concatenate([b[1] for b in out]), y.numpy())
    assert len(batches_of(adapter)) == 3  # a DataLoader gives a new pass each time

    dropped = get_data_adapter(DataLoader(TensorDataset(x, y), batch_size=5, drop_last=True))
    assert (dropped.has_partial_batch, dropped.partial_batch_size) == (False, 0)
    with pytest.warns(UserWarning, match="ran out of data"):
        assert epochs(EpochIterator(loader, steps_per_epoch=2), 3) == [[0, 12], [24], [0, 12]]

    with pytest.raises(ValueError, match="When `x` is a torch DataLoader, do not pass `y`"):
        get_data_adapter(loader, y=np.zeros(10))
    with pytest.raises(ValueError, match="`class_weight` is not supported with a torch DataLoader"):
        get_data_adapter(loader, class_weight={0: 2.0})
    with pytest.warns(UserWarning, match="shuffle in the DataLoader"):
        get_data_adapter(loader, shuffle=True)


def test_torch_dataloader_with_dict_batches_and_odd_dtypes():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    class Dicts(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            inputs = {"a": torch.full((2,), float(i)), "b": torch.tensor([i], dtype=torch.bfloat16)}
            return inputs, torch.tensor(i % 2), torch.tensor(0.5)

    x, y, sw = batches_of(get_data_adapter(DataLoader(Dicts(), batch_size=2)))[0]
    assert set(x) == {"a", "b"} and x["b"].dtype == np.float32  # bfloat16 widened: NumPy has none
    np.testing.assert_array_equal(x["a"], [[0, 0], [1, 1]])
    np.testing.assert_array_equal(y, [0, 1])
    np.testing.assert_array_equal(sw, [0.5, 0.5])

    only_inputs = DataLoader([{"a": torch.ones(2)}] * 3, batch_size=2)
    x, y, _ = batches_of(get_data_adapter(only_inputs))[1]
    assert isinstance(x, dict) and x["a"].shape == (1, 2) and y is None

    class Stream(IterableDataset):
        def __iter__(self):
            return iter([(torch.ones(3), torch.zeros(1))] * 3)

    adapter = get_data_adapter(DataLoader(Stream(), batch_size=2))
    assert adapter.num_batches is None and adapter.has_partial_batch is None
    it = EpochIterator(DataLoader(Stream(), batch_size=2))
    assert epochs(it, 2) == [[1, 1], [1, 1]] and it.num_batches == 2 and not it.exhausted


def test_torch_to_cupy_takes_cuda_tensors_through_dlpack(monkeypatch):
    torch = pytest.importorskip("torch")
    from gpulayers.data_adapters import conversion

    calls = []
    fake_cupy = types.SimpleNamespace(
        from_dlpack=lambda t: calls.append(("dlpack", t.dtype)) or "cupy-from-dlpack",
        asarray=lambda a: calls.append(("asarray", a.dtype)) or "cupy-copy",
    )
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    assert da.torch_to_cupy(torch.ones(2)) == "cupy-copy"  # a CPU tensor is copied
    assert da.to_device_leaf(torch.ones(2)).__class__ is np.ndarray  # a CPU tensor stays on the host path
    monkeypatch.setattr(conversion, "_on_cuda", lambda tensor: True)
    assert da.torch_to_cupy(torch.ones(2, dtype=torch.bfloat16)) == "cupy-from-dlpack"
    assert da.to_device_leaf(torch.ones(2)) == "cupy-from-dlpack"
    assert calls == [("asarray", np.float32), ("dlpack", torch.float32), ("dlpack", torch.float32)]
    # EpochIterator(device_arrays=True) takes the adapter's device iterator; structures are kept
    it = EpochIterator(iter([({"a": torch.ones(2, 1)}, np.zeros(2))]), device_arrays=True)
    (_, (x, y, _)), = list(it.enumerate_epoch())
    assert x == {"a": "cupy-from-dlpack"} and isinstance(y, np.ndarray)
    with pytest.raises(TypeError, match="torch.Tensor"):
        da.torch_to_cupy(np.ones(2))


@pytest.mark.gpu
def test_device_iterator_keeps_gpu_arrays_on_the_gpu():
    import backends

    usable, reason = backends.cupy_status()
    if not usable:
        pytest.skip(f"needs a usable CUDA device: {reason}")
    import cupy

    def gen():
        yield cupy.ones((2, 3)), np.zeros(2)

    (x, y, _), = list(get_data_adapter(gen()).get_device_iterator())
    assert isinstance(x, cupy.ndarray) and isinstance(y, np.ndarray)
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        t = torch.arange(6, device="cuda", dtype=torch.float32)
        out = da.torch_to_cupy(t)
        assert isinstance(out, cupy.ndarray) and out.data.ptr == t.data_ptr()  # shared, not copied


# ---------------------------------------------------------------- against Keras's own adapters


@pytest.fixture(scope="module")
def keras_adapters():
    if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("torch") is not None:
        os.environ["KERAS_BACKEND"] = "torch"  # Keras's numpy backend needs jax
    pytest.importorskip("keras", reason="Keras 3 is not installed: the comparison needs it")
    try:
        from keras.src.trainers import epoch_iterator
        from keras.src.trainers.data_adapters import data_adapter_utils, py_dataset_adapter
    except ImportError as exc:
        pytest.skip(f"Keras's data adapters cannot be imported here: {exc}")
    return types.SimpleNamespace(epoch_iterator=epoch_iterator, utils=data_adapter_utils, py=py_dataset_adapter)


def _twin_datasets(keras_base, n, **kwargs):
    """The same dataset on gpulayers' PyDataset and on Keras's."""

    def getitem(self, index):
        rng = np.random.default_rng(index)
        return rng.normal(size=(3, 2)).astype("float32"), rng.integers(0, 3, size=(3,))

    body = {"__len__": lambda self: n, "__getitem__": getitem}
    ours = type("Ours", (PyDataset,), dict(body))(**kwargs)
    theirs = type("Theirs", (keras_base,), dict(body))(**kwargs)
    return ours, theirs


def test_same_batches_and_class_weights_as_keras(keras_adapters):
    k = keras_adapters
    weights = {0: 0.25, 1: 2.0}
    ours, theirs = _twin_datasets(k.py.PyDataset, 5, workers=2)
    mine = batches_of(get_data_adapter(ours, class_weight=weights))
    keras_adapter = k.py.PyDatasetAdapter(theirs, class_weight=weights)
    keras_adapter.on_epoch_begin()
    reference = list(keras_adapter.get_numpy_iterator())
    keras_adapter.on_epoch_end()
    assert len(mine) == len(reference) == 5
    for (x, y, sw), (kx, ky, ksw) in zip(mine, reference):
        np.testing.assert_array_equal(x, kx)
        np.testing.assert_array_equal(y, ky)
        assert sw.dtype == ksw.dtype
        np.testing.assert_array_equal(sw, ksw)
    for y in (np.array([0, 1, 2, 1]), np.eye(3)[[2, 0, 1]], np.array([[1], [0]])):
        np.testing.assert_array_equal(da.class_weight_to_sample_weights(y, weights), k.utils.class_weight_to_sample_weights(y, weights))
    # Keras's PyDataset itself is accepted
    assert len(batches_of(get_data_adapter(theirs))) == 5


def _keras_epochs(k, x, steps, count):
    it = k.epoch_iterator.EpochIterator(x, steps_per_epoch=steps)
    seen = []
    for _ in range(count):
        seen.append([int(np.asarray(b[0][0]).flat[0]) for _, _, b in it])
    return seen


@pytest.mark.parametrize(
    "make, steps, count",
    [
        (lambda base: numbered(5), 2, 3),  # a generator that runs out in the third epoch
        (lambda base: endless(), 3, 2),
        (lambda base: _Indexed(base, 3), 2, 3),  # a PyDataset shorter than the steps asked
        (lambda base: _Indexed(base, 3), 5, 2),
        (lambda base: _Indexed(base, 4), None, 2),
        (lambda base: _Indexed(base, 4), 2, 3),  # a pass ending exactly at an epoch's end
    ],
)
def test_same_epochs_as_kerass_epoch_iterator(keras_adapters, make, steps, count):
    k = keras_adapters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = _keras_epochs(k, make(k.py.PyDataset), steps, count)
        mine = epochs(EpochIterator(make(PyDataset), steps_per_epoch=steps), count)
    assert mine == reference[: len(mine)] and all(r == [] for r in reference[len(mine):])


def _Indexed(base, n):
    cls = type(
        "Indexed", (base,), {"__len__": lambda self: n, "__getitem__": lambda self, i: (np.full((2, 2), i, "float32"),)}
    )
    return cls()
