"""gpulayers.file_utils.get_file: Keras's cache layout, atomic downloads, hashes, safe extraction.

No test touches the network: downloads come from a local HTTP server on
127.0.0.1 (tests/local_http.py), and KERAS_HOME points into tmp_path.
"""

import hashlib
import io
import os
import tarfile
import zipfile

import pytest

from gpulayers import utils
from gpulayers.file_utils import DownloadError, extract_archive, get_file, hash_file, validate_file
from local_http import LocalServer, refused_url

BODY = bytes(range(256)) * 64


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def server():
    with LocalServer() as s:
        yield s


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def leftovers(directory):
    """Temporary files and directories get_file may have left in ``directory``."""
    return [n for n in os.listdir(directory) if n.startswith(".")] if os.path.isdir(directory) else []


def make_tar(members, mode="w:gz"):
    """A tar archive in memory: ``members`` maps names to bytes (a file), None (a directory) or a TarInfo."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, content in members.items():
            if isinstance(content, tarfile.TarInfo):
                tar.addfile(content)
            elif content is None:
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_exported_from_gpulayers_utils():
    from gpulayers.progbar import Progbar

    assert utils.get_file is get_file and utils.Progbar is Progbar
    assert {"get_file", "to_categorical", "normalize", "Progbar"} <= set(utils.__all__)


def test_download_then_cache(keras_home, server):
    url = server.serve("data/file.bin", BODY)
    path = get_file("file.bin", origin=url, file_hash=sha256(BODY))
    assert path == str(keras_home / "datasets" / "file.bin")
    assert open(path, "rb").read() == BODY
    assert server.requests == ["/data/file.bin"]
    assert get_file("file.bin", origin=url, file_hash=sha256(BODY)) == path
    assert server.requests == ["/data/file.bin"]  # cached: no second request
    assert leftovers(keras_home / "datasets") == []
    # md5 (32 hex digits) is recognised by length, as Keras does; md5_hash is its deprecated spelling.
    assert get_file("file.bin", origin=url, file_hash=hashlib.md5(BODY).hexdigest()) == path
    assert get_file("file.bin", origin=url, md5_hash=hashlib.md5(BODY).hexdigest()) == path
    assert validate_file(path, sha256(BODY)) and not validate_file(path, "0" * 64)
    assert hash_file(path, "md5") == hashlib.md5(BODY).hexdigest()


def test_cache_hit_makes_no_request(keras_home):
    cached = keras_home / "datasets" / "file.bin"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(BODY)
    # The origin refuses connections: a cached file with the right hash never needs it.
    assert get_file("file.bin", origin=refused_url("file.bin"), file_hash=sha256(BODY)) == str(cached)
    assert get_file(origin=refused_url("file.bin")) == str(cached)  # fname from the URL, no hash


def test_cache_dir_subdir_and_name_from_url(tmp_path, server):
    url = server.serve("some/where/name.txt", b"abc")
    assert get_file(origin=url, cache_dir=tmp_path / "c", cache_subdir="sub") == str(tmp_path / "c" / "sub" / "name.txt")
    absolute = tmp_path / "absolute"
    assert get_file("x.txt", origin=url, cache_dir=tmp_path / "c", cache_subdir=str(absolute)) == str(absolute / "x.txt")


def test_cached_file_with_a_wrong_hash_is_downloaded_again(keras_home, server, capsys):
    url = server.serve("file.bin", BODY)
    cached = keras_home / "datasets" / "file.bin"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"stale")
    assert get_file("file.bin", origin=url, file_hash=sha256(BODY)) == str(cached)
    assert cached.read_bytes() == BODY and server.requests == ["/file.bin"]
    assert "downloaded again" in capsys.readouterr().out


def test_force_download(keras_home, server):
    url = server.serve("file.bin", BODY)
    get_file("file.bin", origin=url)
    get_file("file.bin", origin=url, force_download=True)
    assert server.requests == ["/file.bin", "/file.bin"]


def test_hash_mismatch_names_file_and_hashes_and_leaves_nothing(keras_home, server):
    url = server.serve("file.bin", BODY)
    expected = "0" * 64
    with pytest.raises(ValueError) as info:
        get_file("file.bin", origin=url, file_hash=expected)
    message = str(info.value)
    assert str(keras_home / "datasets" / "file.bin") in message
    assert expected in message and sha256(BODY) in message
    assert not (keras_home / "datasets" / "file.bin").exists()
    assert leftovers(keras_home / "datasets") == []


@pytest.mark.parametrize("behaviour", ["error", "missing", "refused"])
def test_offline_error_names_url_and_where_to_place_the_file(keras_home, server, behaviour):
    if behaviour == "refused":
        url = refused_url("file.bin")
    elif behaviour == "missing":
        url = server.url("nothing-here.bin")
    else:
        url = server.serve("file.bin", BODY, behaviour="error")
    with pytest.raises(DownloadError) as info:
        get_file("file.bin", origin=url, file_hash=sha256(BODY))
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, OSError)
    message = str(info.value)
    target = keras_home / "datasets" / "file.bin"
    assert url in message and str(target) in message and "offline" in message and sha256(BODY) in message
    if behaviour != "refused":
        assert ("500" if behaviour == "error" else "404") in message
    assert not target.exists() and leftovers(target.parent) == []


def test_interrupted_download_leaves_nothing(keras_home, server):
    url = server.serve("file.bin", BODY, behaviour="truncate")
    with pytest.raises(DownloadError, match="broke off"):
        get_file("file.bin", origin=url)  # no hash: the Content-Length check alone catches it
    assert not (keras_home / "datasets" / "file.bin").exists()
    assert leftovers(keras_home / "datasets") == []


def test_a_failed_download_keeps_the_previous_file_on_force_download(keras_home, server):
    url = server.serve("file.bin", BODY)
    path = get_file("file.bin", origin=url)
    server.behaviour["/file.bin"] = "truncate"
    with pytest.raises(DownloadError):
        get_file("file.bin", origin=url, force_download=True)
    assert open(path, "rb").read() == BODY  # the rename happens only once the new copy is whole


def test_argument_errors(keras_home):
    with pytest.raises(ValueError, match="origin"):
        get_file("x")
    with pytest.raises(ValueError, match="fname"):
        get_file(os.path.join("a", "b"), origin="http://127.0.0.1/x")
    with pytest.raises(ValueError, match="hash_algorithm"):
        get_file("x", origin="http://127.0.0.1/x", file_hash="ab", hash_algorithm="sha1")
    with pytest.raises(ValueError, match="file_hash"):
        get_file("x", origin="http://127.0.0.1/x", file_hash="not hex")
    with pytest.raises(ValueError, match="archive_format"):
        get_file("x", origin="http://127.0.0.1/x", extract=True, archive_format="rar")
    with pytest.raises(ValueError, match="fname"):
        get_file(origin="http://127.0.0.1/")


ARCHIVE = {"top": None, "top/a.txt": b"alpha", "top/sub/b.txt": b"beta"}


def test_extract_tar_with_keras_names_and_no_reextraction(keras_home, server, monkeypatch):
    url = server.serve("pack.tar.gz", make_tar(ARCHIVE))
    root = keras_home / "datasets"
    # A name without a dot names the directory; the archive is <name>_archive.
    path = get_file("pack", origin=url, extract=True)
    assert path == str(root / "pack") and (root / "pack_archive").is_file()
    assert (root / "pack" / "top" / "sub" / "b.txt").read_bytes() == b"beta"
    # A name with a dot names the archive; the directory is <name before the first dot>_extracted.
    assert get_file("pack.tar.gz", origin=url, extract=True) == str(root / "pack_extracted")
    assert (root / "pack.tar.gz").is_file()
    # No fname: the URL's name is the directory, the archive <name>_archive.
    assert get_file(origin=url, extract=True) == str(root / "pack.tar.gz")
    assert (root / "pack.tar.gz_archive").is_file() and (root / "pack.tar.gz" / "top" / "a.txt").is_file()
    assert leftovers(root) == []
    # Cached archive and directory: neither a request nor a second extraction.
    requests = len(server.requests)
    from gpulayers import file_utils

    monkeypatch.setattr(file_utils, "extract_archive", lambda *a, **k: pytest.fail("extracted again"))
    assert get_file("pack", origin=url, extract=True, file_hash=sha256(server.files["/pack.tar.gz"])) == str(root / "pack")
    # An extracted directory whose archive was deleted is used as it is, with no network.
    os.remove(root / "pack_archive")
    assert get_file("pack", origin=refused_url("pack.tar.gz"), extract=True) == str(root / "pack")
    assert len(server.requests) == requests


def test_untar_and_zip(keras_home, server):
    url = server.serve("p.tar", make_tar(ARCHIVE, mode="w"))
    path = get_file("p", origin=url, untar=True)
    assert open(os.path.join(path, "top", "a.txt"), "rb").read() == b"alpha"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("d/", b"")
        z.writestr("d/z.txt", b"zed")
    url = server.serve("z.zip", buffer.getvalue())
    path = get_file("z", origin=url, extract=True)
    assert open(os.path.join(path, "d", "z.txt"), "rb").read() == b"zed"
    with pytest.warns(UserWarning, match="Could not extract"):
        get_file("z2", origin=url, extract=True, archive_format="tar")


def _special(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    "member, reason",
    [
        ({"../evil.txt": b"x"}, r"'\.\.'"),
        ({"top/../../evil.txt": b"x"}, r"'\.\.'"),
        ({"/tmp/evil.txt": b"x"}, "absolute"),
        ({"top/link": _special("top/link", tarfile.SYMTYPE, "../../etc/passwd")}, "symbolic link"),
        ({"top/hard": _special("top/hard", tarfile.LNKTYPE, "top/a.txt")}, "hard link"),
        ({"top/dev": _special("top/dev", tarfile.CHRTYPE)}, "device"),
        ({"top/fifo": _special("top/fifo", tarfile.FIFOTYPE)}, "FIFO"),
    ],
)
def test_unsafe_tar_members_refuse_the_archive(keras_home, server, member, reason):
    url = server.serve("bad.tar.gz", make_tar({**ARCHIVE, **member}))
    with pytest.raises(ValueError, match=reason):
        get_file("bad", origin=url, extract=True)
    root = keras_home / "datasets"
    assert not (root / "bad").exists() and leftovers(root) == []
    assert not (root / "evil.txt").exists() and not (keras_home / "evil.txt").exists()
    # The (verified) download itself stays cached; only its extraction is refused.
    assert (root / "bad_archive").is_file()


def test_unsafe_zip_member_refused(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ok.txt", b"fine")
        z.writestr("../evil.txt", b"x")
    with pytest.raises(ValueError, match=r"'\.\.'"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_extraction_replaces_a_previous_directory_atomically(tmp_path):
    archive = tmp_path / "a.tar"
    archive.write_bytes(make_tar(ARCHIVE, mode="w"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_bytes(b"old")
    assert extract_archive(archive, out, "tar")
    assert sorted(os.listdir(out)) == ["top"] and leftovers(tmp_path) == []
    assert extract_archive(archive, out, None) is False


def test_same_paths_as_keras_get_file(tmp_path, server):
    """Keras's own get_file, on the same server, returns the same paths (so the caches are shared)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras_file_utils = pytest.importorskip("keras.src.utils.file_utils")
    url = server.serve("pack.tar.gz", make_tar(ARCHIVE))
    cases = [dict(fname="pack", extract=True), dict(fname="pack.tar.gz", extract=True), dict(extract=True),
             dict(fname="plain.bin"), dict(), dict(fname="pack", untar=True)]
    for i, kwargs in enumerate(cases):
        ours, theirs = tmp_path / f"ours{i}", tmp_path / f"keras{i}"
        theirs.mkdir()  # Keras falls back to /tmp/.keras for a cache_dir that does not exist yet
        ours_path = get_file(origin=url, cache_dir=ours, **kwargs)
        theirs_path = keras_file_utils.get_file(origin=url, cache_dir=str(theirs), **kwargs)
        assert os.path.relpath(ours_path, ours) == os.path.relpath(theirs_path, theirs), kwargs
        assert sorted(os.listdir(ours / "datasets")) == sorted(os.listdir(theirs / "datasets")), kwargs


def test_cached_files_are_readable_by_others(keras_home, server):
    url = server.serve("p.tar", make_tar(ARCHIVE, mode="w"))
    path = get_file("p", origin=url, extract=True)
    assert os.stat(path).st_mode & 0o777 == 0o755
    assert os.stat(keras_home / "datasets" / "p_archive").st_mode & 0o777 == 0o644
