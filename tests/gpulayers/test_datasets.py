"""gpulayers.datasets.faces: the bundled LFW subset, split and shaped."""

import sys

import numpy as np
import pytest

from gpulayers import datasets


def test_faces_split_is_fixed_stratified_and_channels_last():
    (x_train, y_train), (x_test, y_test) = datasets.faces(data_format="channels_last")
    assert x_train.shape == (160, 25, 25, 1) and x_test.shape == (40, 25, 25, 1)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() <= 1
    assert y_train.sum() == 80 and y_test.sum() == 20
    (x2, y2), (x3, y3) = datasets.faces(data_format="channels_last")
    np.testing.assert_array_equal(x_train, x2)
    np.testing.assert_array_equal(y_test, y3)
    # No image is in both sets.
    train_rows = {row.tobytes() for row in x_train}
    assert not any(row.tobytes() in train_rows for row in x_test)


def test_faces_labels_follow_the_source_order():
    from skimage import data

    images = data.lfw_subset()
    (x_train, y_train), _ = datasets.faces(data_format="channels_last")
    for image, label in zip(x_train[:10, :, :, 0], y_train[:10]):
        index = int(np.argmin(np.abs(images - image).reshape(200, -1).sum(axis=1)))
        assert label == (1 if index < 100 else 0)


def test_faces_channels_first_and_other_splits():
    (x_train, _), (x_test, y_test) = datasets.faces(test_size=20, seed=3, data_format="channels_first")
    assert x_train.shape == (180, 1, 25, 25) and x_test.shape == (20, 1, 25, 25)
    assert y_test.sum() == 10
    with pytest.raises(ValueError, match="test_size"):
        datasets.faces(test_size=3)
    with pytest.raises(ValueError, match="data_format"):
        datasets.faces(data_format="NHWC")


def test_faces_says_how_to_install_scikit_image(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(ImportError, match=r"pip install 'gpulayers\[demo\]'"):
        datasets.faces()


# ------------------------------------------------------------------ Keras's datasets, with no network
#
# A local HTTP server (tests/local_http.py) serves small files built here to look like Keras's
# (mnist.npz, Fashion-MNIST's gzip IDX files, CIFAR tar.gz archives with the real member names and
# Python 2 cPickle batch files); each loader's origin and hash are monkeypatched to it, and
# KERAS_HOME points into tmp_path.

import gzip  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import pickletools  # noqa: E402
import struct  # noqa: E402
import tarfile  # noqa: E402

from gpulayers import config  # noqa: E402
from gpulayers.datasets import cifar, cifar10, cifar100, fashion_mnist, mnist  # noqa: E402
from gpulayers.datasets.pickle_reader import PickleDataError, read_pickle_data  # noqa: E402
from gpulayers.file_utils import DownloadError  # noqa: E402
from local_http import LocalServer, refused_url  # noqa: E402
from helpers import keras_or_skip

RNG = np.random.default_rng(1234)


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def server():
    with LocalServer() as s:
        yield s


@pytest.fixture
def data_format():
    """Set gpulayers' image_data_format for one test, and put it back."""
    before = config.image_data_format()
    yield config.set_image_data_format
    config.set_image_data_format(before)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def leftovers(directory):
    return [n for n in os.listdir(directory) if n.startswith(".")] if os.path.isdir(directory) else []


# ------------------------------------------------------------------ a Python 2 cPickle writer (protocol 2)


class Py2Pickle:
    """Writes what Python 2's cPickle.dump(obj, f, 2) writes for CIFAR's batches.

    ``bytes`` values are Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), ints
    BININT1 / BININT2 / BININT, lists EMPTY_LIST then APPENDS in batches of
    1000, every object memoized (BINPUT, LONG_BINPUT past 255) and a
    repeated string fetched back (BINGET / LONG_BINGET), NumPy arrays as
    NumPy 1.x on Python 2 reduces them (``numpy.core.multiarray._reconstruct``,
    a ``dtype('u1', 0, 1)`` with its version-3 state, the raw bytes as a str).
    """

    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.memo = 0
        self.strings = {}

    def put(self):
        self.out += (b"q" + bytes([self.memo])) if self.memo < 256 else (b"r" + struct.pack("<I", self.memo))
        self.memo += 1

    def string(self, value, shape_override=None):
        if value in self.strings:
            index = self.strings[value]
            self.out += (b"h" + bytes([index])) if index < 256 else (b"j" + struct.pack("<I", index))
            return
        if len(value) < 256:
            self.out += b"U" + bytes([len(value)]) + value
        else:
            self.out += b"T" + struct.pack("<i", len(value)) + value
        self.strings[value] = self.memo
        self.put()

    def int(self, value):
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])
        elif 0 <= value < 65536:
            self.out += b"M" + struct.pack("<H", value)
        else:
            self.out += b"J" + struct.pack("<i", value)

    def array(self, a, shape=None, typestr=b"u1"):
        shape = a.shape if shape is None else shape
        self.out += b"cnumpy.core.multiarray\n_reconstruct\n"
        self.put()
        self.out += b"cnumpy\nndarray\n"
        self.put()
        self.out += b"K\x00\x85"
        self.put()
        self.string(b"b")
        self.out += b"\x87"
        self.put()
        self.out += b"R"
        self.put()
        self.out += b"(K\x01"
        for d in shape:
            self.int(d)
        self.out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(shape)]
        self.put()
        self.out += b"cnumpy\ndtype\n"
        self.put()
        self.string(typestr)
        self.out += b"K\x00K\x01\x87"
        self.put()
        self.out += b"R"
        self.put()
        self.out += b"(K\x03"
        self.string(b"|")
        self.out += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"
        self.put()
        self.out += b"b\x89"
        self.string(a.tobytes())
        self.out += b"t"
        self.put()
        self.out += b"b"

    def value(self, v):
        if isinstance(v, bytes):
            self.string(v)
        elif isinstance(v, int):
            self.int(v)
        elif isinstance(v, np.ndarray):
            self.array(v)
        elif isinstance(v, list):
            self.out += b"]"
            self.put()
            for start in range(0, len(v), 1000):
                chunk = v[start : start + 1000]
                if len(chunk) == 1:
                    self.value(chunk[0])
                    self.out += b"a"
                else:
                    self.out += b"("
                    for item in chunk:
                        self.value(item)
                    self.out += b"e"
        else:
            raise TypeError(type(v))

    def dumps(self, entries):
        self.out += b"}"
        self.put()
        self.out += b"("
        for key, v in entries:
            self.string(key)
            self.value(v)
        self.out += b"u."
        return bytes(self.out)


def py2_dumps(entries):
    return Py2Pickle().dumps(list(entries))


def cifar_batch(n, label_keys, classes, style, seed):
    """A CIFAR batch file of ``n`` images: (bytes of the file, data (n, 3072), {label_key: labels})."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = {key: [int(v) for v in rng.integers(0, c, n)] for key, c in zip(label_keys, classes)}
    filenames = [f"image_{seed}_{i}.png".encode() for i in range(n)]
    if style == "py2":
        entries = [(b"batch_label", b"training batch 1 of 5"), *[(k.encode(), v) for k, v in labels.items()],
                   (b"data", data), (b"filenames", filenames)]
        return py2_dumps(entries), data, labels
    # Python 3 pickles: bytes keys (as a Python 3 rewrite of the batches has them) or str keys.
    key = (lambda k: k.encode()) if style.startswith("py3bytes") else (lambda k: k)
    obj = {key("batch_label"): b"training batch 1 of 5", key("data"): data, key("filenames"): filenames}
    obj.update({key(k): v for k, v in labels.items()})
    return pickle.dumps(obj, protocol=int(style[-1])), data, labels


STYLES = ["py2", "py3bytes3", "py3bytes4", "py3str4"]


def cifar10_archive(style, n=4):
    members, train_x, train_y = {}, [], []
    for i in range(1, 6):
        raw, data, labels = cifar_batch(n + i % 2, ["labels"], [10], style, seed=i)
        members[f"cifar-10-batches-py/data_batch_{i}"] = raw
        train_x.append(data)
        train_y += labels["labels"]
    raw, test_x, test_labels = cifar_batch(n, ["labels"], [10], style, seed=9)
    members["cifar-10-batches-py/test_batch"] = raw
    members["cifar-10-batches-py/batches.meta"] = py2_dumps([(b"num_cases_per_batch", n)])
    members["cifar-10-batches-py/readme.html"] = b"<html></html>"
    expected = (np.concatenate(train_x), np.array(train_y)), (test_x, np.array(test_labels["labels"]))
    return make_tar(members), expected


def cifar100_archive(style, n=5):
    members, expected = {}, {}
    for split, seed in (("train", 1), ("test", 2)):
        raw, data, labels = cifar_batch(n * seed, ["fine_labels", "coarse_labels"], [100, 20], style, seed)
        members[f"cifar-100-python/{split}"] = raw
        expected[split] = data, labels
    members["cifar-100-python/meta"] = py2_dumps([(b"fine_label_names", [b"apple"])])
    return make_tar(members), expected


def make_tar(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        directories = sorted({name.split("/")[0] for name in members})
        for d in directories:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def mnist_npz():
    arrays = {
        "x_train": RNG.integers(0, 256, (6, 28, 28), dtype=np.uint8), "y_train": RNG.integers(0, 10, 6).astype(np.uint8),
        "x_test": RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8), "y_test": RNG.integers(0, 10, 3).astype(np.uint8),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue(), arrays


def idx_gz(array):
    header = bytes((0, 0, 8, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.tobytes(), mtime=0)


def fashion_files():
    arrays = {
        "train-labels-idx1-ubyte.gz": RNG.integers(0, 10, 7).astype(np.uint8),
        "train-images-idx3-ubyte.gz": RNG.integers(0, 256, (7, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": RNG.integers(0, 10, 2).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": RNG.integers(0, 256, (2, 28, 28), dtype=np.uint8),
    }
    return {name: idx_gz(a) for name, a in arrays.items()}, arrays


# ------------------------------------------------------------------ the pickle reader


@pytest.mark.parametrize("style", STYLES)
def test_pickle_reader_reads_cifar_batches_as_data(tmp_path, style):
    raw, data, labels = cifar_batch(3, ["labels"], [10], style, seed=5)
    path = tmp_path / "batch"
    path.write_bytes(raw)
    batch = read_pickle_data(path)
    key = (lambda k: k) if style == "py3str4" else (lambda k: k.encode())
    np.testing.assert_array_equal(batch[key("data")], data)
    assert batch[key("data")].dtype == np.uint8 and batch[key("labels")] == labels["labels"]
    assert batch[key("filenames")][0] == b"image_5_0.png" and batch[key("batch_label")] == b"training batch 1 of 5"
    x, y = cifar.load_batch(str(path), num_classes=10)
    assert x.shape == (3, 3, 32, 32) and y.dtype == np.int64
    np.testing.assert_array_equal(x.reshape(3, -1), data)


def test_py2_fixture_uses_the_opcodes_of_python2_cpickle(tmp_path):
    data = RNG.integers(0, 256, (300, 3072), dtype=np.uint8)
    filenames = [f"f{i}.png".encode() for i in range(300)]
    labels = [int(v) for v in RNG.integers(0, 10, 300)] + [70000]  # BININT for the last
    # A string seen before comes back from the memo, as cPickle does for a repeated str object.
    raw = py2_dumps([(b"batch_label", b"f0.png"), (b"labels", labels), (b"data", data),
                     (b"filenames", filenames + [b"f299.png", b"f0.png"]), (b"one", [b"single"])])
    names = {op.name for op, _, _ in pickletools.genops(raw)}
    assert {"PROTO", "GLOBAL", "REDUCE", "BUILD", "BINSTRING", "SHORT_BINSTRING", "BINPUT", "LONG_BINPUT",
            "BINGET", "LONG_BINGET", "APPEND", "APPENDS", "SETITEMS", "NEWFALSE", "TUPLE", "TUPLE1", "TUPLE2",
            "TUPLE3", "BININT1", "BININT", "NONE", "MARK"} <= names
    # What Keras's own loader reads (pickle with encoding="bytes"), ours reads too.
    path = tmp_path / "batch"
    path.write_bytes(raw)
    theirs = pickle.loads(raw, encoding="bytes")  # a fixture written by this test: trusted
    ours = read_pickle_data(path)
    assert sorted(ours) == sorted(theirs) and ours[b"labels"] == theirs[b"labels"]
    assert ours[b"filenames"] == theirs[b"filenames"]
    np.testing.assert_array_equal(ours[b"data"], theirs[b"data"])


class _Gadget:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "payload, message",
    [
        (pickle.dumps({"data": _Gadget()}, protocol=2), "system"),
        (pickle.dumps(_Gadget(), protocol=4), "system"),
        (pickle.dumps(_Gadget(), protocol=0), "system"),
        (pickle.dumps({b"data": np.zeros(2, np.uint8)}, protocol=2), "_codecs.encode"),  # Python 3's protocol-2 bytes
        (b"\x80\x02cmymodule\nPlain\nq\x00)\x81q\x01.", "mymodule.Plain; only NumPy"),  # an instance
        (b"\x80\x02cnumpy\nndarray\nq\x00)\x81q\x01.", "NEWOBJ"),  # an allowed name, built by NEWOBJ
        (b"\x80\x02cnumpy\nndarray\nq\x00)Rq\x01.", "REDUCE calls"),  # ndarray() called directly
        (pickle.dumps(np.array([1, "a"], dtype=object), protocol=3), "dtype"),
        (pickle.dumps(np.zeros(2, dtype=[("a", "u1")]), protocol=3), "dtype"),
        (pickle.dumps(np.zeros(2, np.uint8), protocol=5), "_frombuffer"),
        (pickle.dumps({"a": [1, 2]}, protocol=2)[:-3], "truncated|STOP|readable"),
        (b"not a pickle at all", "readable"),
    ],
)
def test_pickle_reader_refuses_everything_but_data(tmp_path, payload, message):
    path = tmp_path / "evil"
    path.write_bytes(payload)
    with pytest.raises(PickleDataError, match=message):
        read_pickle_data(path)


def test_pickle_reader_checks_array_sizes_before_making_arrays(tmp_path):
    w = Py2Pickle()
    raw = w.dumps([(b"data", np.zeros((2, 3), np.uint8))])
    path = tmp_path / "batch"
    # The declared shape says 2 * 3072 bytes where the stream holds 6: refused before anything is allocated.
    w = Py2Pickle()
    w.out += b"}"
    w.put()
    w.out += b"("
    w.string(b"data")
    w.array(np.zeros((2, 3), np.uint8), shape=(2, 3072))
    w.out += b"u."
    path.write_bytes(bytes(w.out))
    with pytest.raises(PickleDataError, match="needs 6144 bytes but holds 6"):
        read_pickle_data(path)
    path.write_bytes(raw.replace(b"U\x02u1", b"U\x02O8"))
    with pytest.raises(PickleDataError, match="dtype"):
        read_pickle_data(path)


def test_load_batch_validates_the_batch(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(py2_dumps([(b"data", np.zeros((2, 3072), np.uint8)), (b"labels", [1])]))
    with pytest.raises(ValueError, match="list of 2 labels"):
        cifar.load_batch(str(path))
    path.write_bytes(py2_dumps([(b"data", np.zeros((2, 100), np.uint8)), (b"labels", [1, 2])]))
    with pytest.raises(ValueError, match="3072"):
        cifar.load_batch(str(path))
    path.write_bytes(py2_dumps([(b"data", np.zeros((2, 3072), np.uint8)), (b"labels", [1, 12])]))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        cifar.load_batch(str(path), num_classes=10)
    with pytest.raises(ValueError, match="fine_labels"):
        cifar.load_batch(str(path), label_key="fine_labels")
    with pytest.raises(FileNotFoundError, match="incomplete"):
        cifar.load_batch(str(tmp_path / "missing"))


# ------------------------------------------------------------------ MNIST


def test_mnist_downloads_then_uses_the_cache(keras_home, server, monkeypatch):
    body, arrays = mnist_npz()
    server.serve("tf-keras-datasets/mnist.npz", body)
    monkeypatch.setattr(mnist, "ORIGIN_FOLDER", server.url("tf-keras-datasets/"))
    monkeypatch.setattr(mnist, "FILE_HASH", sha256(body))
    for _ in range(2):
        (x_train, y_train), (x_test, y_test) = mnist.load_data()
        for name, got in zip(("x_train", "y_train", "x_test", "y_test"), (x_train, y_train, x_test, y_test)):
            np.testing.assert_array_equal(got, arrays[name])
            assert got.dtype == np.uint8
    assert server.requests == ["/tf-keras-datasets/mnist.npz"]
    assert (keras_home / "datasets" / "mnist.npz").read_bytes() == body


def test_mnist_uses_a_keras_download_with_no_network(keras_home, monkeypatch):
    body, arrays = mnist_npz()
    (keras_home / "datasets").mkdir(parents=True)
    (keras_home / "datasets" / "mnist.npz").write_bytes(body)
    monkeypatch.setattr(mnist, "ORIGIN_FOLDER", refused_url("")[:-1] + "/")
    monkeypatch.setattr(mnist, "FILE_HASH", sha256(body))
    (x_train, _), _ = mnist.load_data()
    np.testing.assert_array_equal(x_train, arrays["x_train"])


def test_mnist_offline_says_which_file_to_place_where(keras_home, monkeypatch):
    origin = refused_url("")
    monkeypatch.setattr(mnist, "ORIGIN_FOLDER", origin)
    with pytest.raises(DownloadError) as info:
        mnist.load_data()
    message = str(info.value)
    assert origin + "mnist.npz" in message and str(keras_home / "datasets" / "mnist.npz") in message
    assert mnist.FILE_HASH in message  # the real hash: the file to place is Keras's own


def test_mnist_hash_mismatch_removes_the_file(keras_home, server, monkeypatch):
    body, _ = mnist_npz()
    server.serve("mnist.npz", body)
    monkeypatch.setattr(mnist, "ORIGIN_FOLDER", server.base_url)  # the real FILE_HASH stays: a mismatch
    with pytest.raises(ValueError) as info:
        mnist.load_data()
    message = str(info.value)
    assert "mnist.npz" in message and mnist.FILE_HASH in message and sha256(body) in message
    assert not (keras_home / "datasets" / "mnist.npz").exists() and leftovers(keras_home / "datasets") == []


def test_mnist_interrupted_download_leaves_nothing(keras_home, server, monkeypatch):
    body, _ = mnist_npz()
    server.serve("mnist.npz", body, behaviour="truncate")
    monkeypatch.setattr(mnist, "ORIGIN_FOLDER", server.base_url)
    monkeypatch.setattr(mnist, "FILE_HASH", sha256(body))
    with pytest.raises(DownloadError, match="broke off"):
        mnist.load_data()
    assert not (keras_home / "datasets" / "mnist.npz").exists() and leftovers(keras_home / "datasets") == []


# ------------------------------------------------------------------ Fashion-MNIST


def test_fashion_mnist_downloads_into_keras_subdirectory(keras_home, server, monkeypatch):
    files, arrays = fashion_files()
    for name, body in files.items():
        server.serve(name, body)
    monkeypatch.setattr(fashion_mnist, "ORIGIN_FOLDER", server.base_url)
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    assert x_train.shape == (7, 28, 28) and y_train.shape == (7,) and x_test.shape == (2, 28, 28)
    assert x_train.dtype == y_test.dtype == np.uint8
    np.testing.assert_array_equal(x_test, arrays["t10k-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte.gz"])
    assert sorted(os.listdir(keras_home / "datasets" / "fashion-mnist")) == sorted(files)
    fashion_mnist.load_data()
    assert len(server.requests) == 4  # the second load is all cache


def test_fashion_mnist_checks_the_idx_header(keras_home, monkeypatch):
    files, _ = fashion_files()
    folder = keras_home / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    for name, body in files.items():
        (folder / name).write_bytes(body)
    monkeypatch.setattr(fashion_mnist, "ORIGIN_FOLDER", refused_url("")[:-1] + "/")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(idx_gz(np.zeros(3, np.uint8)))  # 3 labels for 2 images
    with pytest.raises(ValueError, match="shape"):
        fashion_mnist.load_data()
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abc"))
    with pytest.raises(ValueError, match="truncated"):
        fashion_mnist.load_data()
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03\x00\x00\x00\x00"))
    with pytest.raises(ValueError, match="IDX"):
        fashion_mnist.load_data()
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"plain")
    with pytest.raises(ValueError, match="gzip"):
        fashion_mnist.load_data()


# ------------------------------------------------------------------ CIFAR


def serve_cifar(server, monkeypatch, module, archive):
    server.serve("~kriz/" + module.ARCHIVE_NAME, archive)
    monkeypatch.setattr(module, "ORIGIN_FOLDER", server.url("~kriz/"))
    monkeypatch.setattr(module, "FILE_HASH", sha256(archive))


@pytest.mark.parametrize("style", STYLES)
def test_cifar10_shapes_order_and_data_formats(keras_home, server, monkeypatch, data_format, style):
    archive, ((x_train_rows, y_train_list), (x_test_rows, y_test_list)) = cifar10_archive(style)
    serve_cifar(server, monkeypatch, cifar10, archive)
    data_format("channels_first")
    (x_train, y_train), (x_test, y_test) = cifar10.load_data()
    n_train, n_test = len(y_train_list), len(y_test_list)
    assert x_train.shape == (n_train, 3, 32, 32) and x_test.shape == (n_test, 3, 32, 32)
    assert y_train.shape == (n_train, 1) and y_test.shape == (n_test, 1)
    assert x_train.dtype == x_test.dtype == y_train.dtype == y_test.dtype == np.uint8
    np.testing.assert_array_equal(x_train.reshape(n_train, -1), x_train_rows)
    np.testing.assert_array_equal(y_train[:, 0], y_train_list)
    np.testing.assert_array_equal(x_test.reshape(n_test, -1), x_test_rows)
    data_format("channels_last")
    (x_train_last, _), (x_test_last, y_test_last) = cifar10.load_data()
    assert x_train_last.shape == (n_train, 32, 32, 3)
    np.testing.assert_array_equal(x_train_last, x_train.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(y_test_last[:, 0], y_test_list)
    assert x_train_last.flags.writeable and x_test_last.flags.writeable
    root = keras_home / "datasets"
    assert (root / "cifar-10-batches-py-target_archive").is_file()
    assert (root / "cifar-10-batches-py-target" / "cifar-10-batches-py" / "test_batch").is_file()
    assert len(server.requests) == 1 and leftovers(root) == []


@pytest.mark.parametrize("style", ["py2", "py3bytes4"])
def test_cifar100_label_modes(keras_home, server, monkeypatch, data_format, style):
    archive, expected = cifar100_archive(style)
    serve_cifar(server, monkeypatch, cifar100, archive)
    data_format("channels_last")
    (x_train, y_train), (x_test, y_test) = cifar100.load_data()
    train_rows, train_labels = expected["train"]
    assert x_train.shape == (5, 32, 32, 3) and x_test.shape == (10, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64 and y_train.shape == (5, 1)
    np.testing.assert_array_equal(x_train.transpose(0, 3, 1, 2).reshape(5, -1), train_rows)
    np.testing.assert_array_equal(y_train[:, 0], train_labels["fine_labels"])
    _, (_, y_coarse) = cifar100.load_data(label_mode="coarse")
    np.testing.assert_array_equal(y_coarse[:, 0], expected["test"][1]["coarse_labels"])
    assert len(server.requests) == 1


def test_cifar100_label_mode_is_checked_before_any_download(keras_home):
    with pytest.raises(ValueError, match=r"label_mode.*Received: label_mode='medium'"):
        cifar100.load_data(label_mode="medium")
    assert not (keras_home / "datasets").exists()


def test_cifar_offline_says_which_archive_to_place_where(keras_home, monkeypatch):
    origin = refused_url("")
    monkeypatch.setattr(cifar10, "ORIGIN_FOLDER", origin)
    with pytest.raises(DownloadError) as info:
        cifar10.load_data()
    message = str(info.value)
    root = keras_home / "datasets"
    assert origin + "cifar-10-python.tar.gz" in message
    assert str(root / "cifar-10-batches-py-target_archive") in message and str(root / "cifar-10-batches-py-target") in message


def test_cifar_archive_with_an_unsafe_member_is_refused(keras_home, server, monkeypatch):
    archive, _ = cifar10_archive("py2")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, tarfile.open(fileobj=buffer, mode="w:gz") as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
        info = tarfile.TarInfo("cifar-10-batches-py/../../../escaped")
        info.size = 1
        dst.addfile(info, io.BytesIO(b"x"))
    serve_cifar(server, monkeypatch, cifar10, buffer.getvalue())
    with pytest.raises(ValueError, match=r"'\.\.'"):
        cifar10.load_data()
    assert not (keras_home / "datasets" / "cifar-10-batches-py-target").exists()
    assert not any(p.name == "escaped" for p in keras_home.parent.rglob("escaped"))


# ------------------------------------------------------------------ the same arrays as Keras's loaders




def _assert_same(ours, theirs):
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            assert x.shape == y.shape and x.dtype == y.dtype and x.strides == y.strides
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("data_format_name", ["channels_last", "channels_first"])
def test_same_arrays_as_keras_loaders(keras_home, server, monkeypatch, data_format, data_format_name):
    """Keras's own loaders, given our fixture files as their get_file results, return what ours return.

    Keras's cifar10.load_data hard-codes 10,000 images a batch, so for CIFAR-10 its load_batch is
    compared batch by batch instead; MNIST, Fashion-MNIST and CIFAR-100 are compared whole.
    """
    keras = keras_or_skip()
    from keras.src.datasets import cifar as k_cifar
    from keras.src.datasets import cifar100 as k_cifar100
    from keras.src.datasets import fashion_mnist as k_fashion
    from keras.src.datasets import mnist as k_mnist

    body, _ = mnist_npz()
    server.serve("mnist.npz", body)
    files, _ = fashion_files()
    for name, b in files.items():
        server.serve(name, b)
    monkeypatch.setattr(mnist, "ORIGIN_FOLDER", server.base_url)
    monkeypatch.setattr(mnist, "FILE_HASH", sha256(body))
    monkeypatch.setattr(fashion_mnist, "ORIGIN_FOLDER", server.base_url)
    serve_cifar(server, monkeypatch, cifar10, cifar10_archive("py2")[0])
    serve_cifar(server, monkeypatch, cifar100, cifar100_archive("py3bytes4")[0])
    data_format(data_format_name)
    before = keras.config.image_data_format()
    keras.config.set_image_data_format(data_format_name)
    try:
        ours = {"mnist": mnist.load_data(), "fashion": fashion_mnist.load_data(),
                "cifar100": cifar100.load_data(), "coarse": cifar100.load_data("coarse")}

        def cached(fname, origin=None, cache_subdir="datasets", **kwargs):
            return str(keras_home / cache_subdir / fname)

        for module in (k_mnist, k_fashion, k_cifar100):
            monkeypatch.setattr(module, "get_file", cached)
        theirs = {"mnist": k_mnist.load_data(), "fashion": k_fashion.load_data(),
                  "cifar100": k_cifar100.load_data(), "coarse": k_cifar100.load_data("coarse")}
    finally:
        keras.config.set_image_data_format(before)
    for name in ours:
        _assert_same(ours[name], theirs[name])
    cifar10.load_data()
    batches = keras_home / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x, y = cifar.load_batch(str(batches / name))
        kx, ky = k_cifar.load_batch(str(batches / name))
        np.testing.assert_array_equal(x, kx)
        assert x.dtype == kx.dtype and x.shape == kx.shape and list(y) == ky
