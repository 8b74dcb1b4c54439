"""The ``.keras`` archive: a zip of ``metadata.json``, ``config.json`` and ``model.weights.h5``.

Reading checks the archive (members, sizes, JSON without duplicate keys,
metadata) before anything is built; writing is atomic: the file is written
next to the target under a temporary name, flushed and fsynced, then moved
over the target with ``os.replace``; if anything fails the old file stays
as it was and the temporary file is removed.
"""

import datetime
import io
import json
import os
import stat
import zipfile

from gpulayers.saving.atomic_files import atomic_write

__all__ = [
    "CONFIG", "KERAS_VERSION", "MAX_EXPANSION", "MAX_JSON_BYTES", "METADATA", "WEIGHTS", "atomic_write",
    "check_metadata", "member_size", "open_archive", "open_regular_file", "parse_json", "read_member", "zip_info",
]

# The Keras release written to metadata.json (Keras does not check it; the
# layout written here is that of the files Keras 3.15 writes).
KERAS_VERSION = "3.15.0"


CONFIG = "config.json"


METADATA = "metadata.json"


WEIGHTS = "model.weights.h5"


MAX_JSON_BYTES = 64 * 1024 * 1024  # config.json and metadata.json


def zip_info(name):
    info = zipfile.ZipInfo(name, date_time=datetime.datetime.now().timetuple()[:6])
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def open_regular_file(path, what):
    """``path`` opened for reading when it is a regular file (following symlinks), with its size.

    Anything else is refused without being opened (a directory: IsADirectoryError; a FIFO, socket or
    device: ValueError), and the open itself never blocks (``O_NONBLOCK``: a FIFO swapped in after the
    check is seen by ``fstat`` and refused, not waited on).
    """
    try:
        _check_regular(os.stat(path).st_mode, path, what)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"No such {what}: {path}") from None
    try:
        info = os.fstat(fd)
        _check_regular(info.st_mode, path, what)
        return os.fdopen(fd, "rb"), info.st_size
    except BaseException:
        os.close(fd)
        raise


def _check_regular(mode, path, what):
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"Cannot load {path}: it is a directory, not a {what}.")
    kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device or other special file"
    raise ValueError(f"Invalid {what} {path}: it is {kind}, not a regular file.")


class _Archive:
    """A validated ``.keras`` zip: opened, its members listed, closed on exit. ``size``: the file's real size."""

    def __init__(self, path, required):
        fileobj, self.size = open_regular_file(path, "model file")
        try:
            self.zip = zipfile.ZipFile(fileobj, "r")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            fileobj.close()
            if isinstance(exc, (FileNotFoundError, PermissionError)):
                raise
            raise ValueError(f"Invalid model file {path}: not a readable .keras (zip) archive ({exc}).") from None
        self.fileobj = fileobj
        names = self.zip.namelist()
        for name in (METADATA, CONFIG, WEIGHTS):
            if names.count(name) > 1:
                self.close()
                raise ValueError(f"Invalid model file {path}: the archive holds '{name}' more than once.")
        if WEIGHTS not in names and "model.weights.npz" in names:
            self.close()
            raise ValueError(
                f"Invalid model file {path}: its weights are in model.weights.npz, a format that can hold "
                "pickled objects; gpulayers reads only model.weights.h5."
            )
        for name in required:
            if name not in names:
                self.close()
                raise ValueError(f"Invalid model file {path}: the archive has no '{name}'.")
        self.zip.archive_size = self.size  # what read_member checks the members' sizes against

    def close(self):
        self.zip.close()
        self.fileobj.close()

    def __enter__(self):
        return self.zip

    def __exit__(self, *exc):
        self.close()


def open_archive(path, required=(METADATA, CONFIG, WEIGHTS)):
    return _Archive(path, required)


# A compressed member may expand to this many times its stored size (or to _SMALL_MEMBER_BYTES). Keras and
# gpulayers store members uncompressed; a re-zipped archive of real weights compresses by a few percent;
# deflate reaches ~1000x only on runs of zeros, which is what a decompression bomb is made of.
MAX_EXPANSION = 16
_SMALL_MEMBER_BYTES = 1 << 20

_CHUNK_BYTES = 1 << 20


def member_size(archive, path, name):
    """The checked uncompressed size of member ``name``: what its header declares, refused unless the
    archive's real size holds its stored bytes and a compressed member expands at most MAX_EXPANSION times."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ValueError(f"Invalid model file {path}: the archive has no '{name}'.") from None
    stored = info.compress_size
    if stored > archive.archive_size:
        raise ValueError(
            f"Invalid model file {path}: '{name}' declares {stored} stored bytes, but the file has "
            f"{archive.archive_size}."
        )
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != stored:
        raise ValueError(
            f"Invalid model file {path}: '{name}' is stored uncompressed but declares {info.file_size} bytes "
            f"for its {stored} stored ones."
        )
    if info.file_size > max(MAX_EXPANSION * stored, _SMALL_MEMBER_BYTES):
        raise ValueError(
            f"Invalid model file {path}: '{name}' declares {info.file_size} bytes compressed into {stored}, "
            f"more than {MAX_EXPANSION} times its stored size (a decompression bomb?). Keras writes archive "
            "members uncompressed: re-zip the file without compression (zip -0)."
        )
    return info.file_size


def read_member(archive, path, name, limit=None):
    """Member ``name`` in memory (a BytesIO at its start), read in chunks that stop at its checked declared
    size (see :func:`member_size`) and at ``limit``: a member that inflates past what it declares is
    refused before it takes more memory than that."""
    size = member_size(archive, path, name)
    if limit is not None and size > limit:
        raise ValueError(
            f"Invalid model file {path}: '{name}' declares {size} bytes, more than the {limit} allowed for it."
        )
    buffer = io.BytesIO()
    try:
        with archive.open(name, "r") as member:
            while buffer.tell() <= size:
                chunk = member.read(min(_CHUNK_BYTES, size + 1 - buffer.tell()))
                if not chunk:
                    break
                buffer.write(chunk)
    except Exception as exc:  # zipfile raises BadZipFile, zlib.error, EOFError, RuntimeError...
        raise ValueError(f"Invalid model file {path}: '{name}' cannot be read ({type(exc).__name__}: {exc}).") from None
    if buffer.tell() != size:
        raise ValueError(f"Invalid model file {path}: '{name}' does not hold the {size} bytes it declares.")
    buffer.seek(0)
    return buffer


def _no_duplicate_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_json(data, path, name):
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"Invalid model file {path}: '{name}' is not valid JSON ({exc}).") from None


def check_metadata(metadata, path):
    if not isinstance(metadata, dict):
        raise ValueError(f"Invalid model file {path}: '{METADATA}' should hold a JSON object.")
    version = metadata.get("keras_version")
    if not isinstance(version, str):
        raise ValueError(f"Invalid model file {path}: '{METADATA}' has no `keras_version` string.")
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) < 3:
        raise ValueError(
            f"Invalid model file {path}: written by Keras {version!r}; gpulayers reads the Keras 3 format only."
        )
