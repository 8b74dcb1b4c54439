"""The ``.keras`` archive: a zip of ``metadata.json``, ``config.json`` and ``model.weights.h5``.

Reading checks the archive (members, sizes, JSON without duplicate keys,
metadata) before anything is built; writing is atomic: the file is written
next to the target under a temporary name, flushed and fsynced, then moved
over the target with ``os.replace``; if anything fails the old file stays
as it was and the temporary file is removed.
"""

import datetime
import json
import os
import stat
import tempfile
import zipfile

from gpulayers.file_utils import fsync_directory

__all__ = [
    "CONFIG", "KERAS_VERSION", "MAX_JSON_BYTES", "METADATA", "WEIGHTS", "atomic_write", "check_metadata",
    "open_archive", "parse_json", "read_member", "zip_info",
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


def atomic_write(path, write):
    """Write through ``write(fileobj)`` to a temporary file beside ``path``, then move it over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Cannot save to {path}: the directory {directory} does not exist.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"Cannot save to {path}: it is a directory.")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fileobj:
            write(fileobj)
            fileobj.flush()
            os.fsync(fileobj.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(directory)


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _Archive:
    """A validated ``.keras`` zip: opened, its members listed, closed on exit."""

    def __init__(self, path, required):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such model file: {path}")
        try:
            self.zip = zipfile.ZipFile(path, "r")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            if isinstance(exc, (FileNotFoundError, PermissionError)):
                raise
            raise ValueError(f"Invalid model file {path}: not a readable .keras (zip) archive ({exc}).") from None
        names = self.zip.namelist()
        for name in (METADATA, CONFIG, WEIGHTS):
            if names.count(name) > 1:
                self.zip.close()
                raise ValueError(f"Invalid model file {path}: the archive holds '{name}' more than once.")
        if WEIGHTS not in names and "model.weights.npz" in names:
            self.zip.close()
            raise ValueError(
                f"Invalid model file {path}: its weights are in model.weights.npz, a format that can hold "
                "pickled objects; gpulayers reads only model.weights.h5."
            )
        for name in required:
            if name not in names:
                self.zip.close()
                raise ValueError(f"Invalid model file {path}: the archive has no '{name}'.")

    def __enter__(self):
        return self.zip

    def __exit__(self, *exc):
        self.zip.close()


def open_archive(path, required=(METADATA, CONFIG, WEIGHTS)):
    return _Archive(path, required)


def read_member(archive, path, name, limit):
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ValueError(f"Invalid model file {path}: the archive has no '{name}'.") from None
    if info.file_size > limit:
        raise ValueError(
            f"Invalid model file {path}: '{name}' declares {info.file_size} bytes, more than the "
            f"{limit} allowed for it."
        )
    try:
        with archive.open(info, "r") as member:
            data = member.read(limit + 1)
    except Exception as exc:  # zipfile raises BadZipFile, zlib.error, EOFError, RuntimeError...
        raise ValueError(f"Invalid model file {path}: '{name}' cannot be read ({type(exc).__name__}: {exc}).") from None
    if len(data) > limit:
        raise ValueError(f"Invalid model file {path}: '{name}' is larger than the {limit} bytes allowed for it.")
    return data


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
