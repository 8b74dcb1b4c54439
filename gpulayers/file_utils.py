"""``get_file``: Keras 3's ``keras.utils.get_file``, on Keras's own cache.

Files go to ``<cache_dir>/<cache_subdir>/<fname>``, ``cache_dir`` being
``$KERAS_HOME`` or ``~/.keras`` (read at each call) unless given, with
Keras's names for archives and their extracted directories, so a file that
Keras downloaded is found where Keras put it, and the other way round.

Beyond Keras's behaviour:

- A download is written to a temporary file in the destination directory,
  checked against ``file_hash``, flushed to disk (``fsync``) and only then
  renamed onto its final name (``os.replace``): a failed, interrupted or
  corrupted download leaves nothing at the final path.
- A failure to download raises :class:`DownloadError` (a ConnectionError,
  so an OSError) naming the URL and the exact path where a copy of the file
  can be placed to work offline.
- Archives are extracted into a temporary directory that is renamed into
  place once complete. Only regular files and directories are extracted: an
  absolute member path, a ``..`` component, a link, a device or a FIFO makes
  the whole archive refused (ValueError), where Keras skips the member.
- An archive is extracted when it is downloaded or when its directory is
  missing, not at every call; an extracted directory whose archive is gone
  is used as it is.
"""

import gzip
import hashlib
import http.client
import os
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib

from gpulayers import config
from gpulayers.progbar import Progbar

__all__ = ["DownloadError", "extract_archive", "get_file", "hash_file", "keras_home", "validate_file"]

DOWNLOAD_TIMEOUT = 60.0  # seconds a connection may wait for data before the download is abandoned
_CHUNK = 1 << 20
_HASH_ALGORITHMS = ("auto", "sha256", "md5")
_ARCHIVE_FORMATS = ("tar", "zip")
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile)


class DownloadError(ConnectionError):
    """A file could not be downloaded: the server is unreachable, answered an HTTP error, or the transfer broke off.

    It is a ConnectionError (hence an OSError). The message names the URL and
    the path where a copy of the file can be placed to work offline.
    """


def keras_home():
    """Keras's cache and config directory: ``$KERAS_HOME``, else ``~/.keras`` (it may not exist)."""
    return os.path.dirname(config.keras_config_path())


def get_file(
    fname=None,
    origin=None,
    untar=False,
    md5_hash=None,
    file_hash=None,
    cache_subdir="datasets",
    hash_algorithm="auto",
    extract=False,
    archive_format="auto",
    cache_dir=None,
    force_download=False,
):
    """Download a file from ``origin`` unless it is already in the cache, and return its path.

    As ``keras.utils.get_file``: the file is ``<cache_dir>/<cache_subdir>/<fname>``
    (``cache_dir`` defaults to ``$KERAS_HOME`` or ``~/.keras``; an absolute
    ``cache_subdir`` is used as it is; when ``cache_dir`` cannot be written
    and the file is not already there, ``<tempdir>/.keras`` is used).

    Args:
        fname: The file's name in the cache (not a path); None takes the last
            component of ``origin``'s path. With ``extract``, a name without a
            dot names the extraction directory (the archive is stored as
            ``<fname>_archive``); a name with a dot names the archive, and
            the directory is ``<fname up to its first dot>_extracted``.
        origin: The URL of the file (any scheme ``urllib.request`` opens).
        untar: Deprecated: ``extract=True`` with ``archive_format="tar"``.
        md5_hash: Deprecated: ``file_hash`` with ``hash_algorithm="md5"``.
        file_hash: The expected hex digest of the file. A cached file that
            does not match is removed and downloaded again; a download that
            does not match raises ValueError.
        cache_subdir: The subdirectory of ``cache_dir`` (default ``"datasets"``).
        hash_algorithm: ``"sha256"``, ``"md5"`` or ``"auto"`` (sha256 for a
            64-character ``file_hash``, md5 otherwise).
        extract: Whether to extract the file as an archive.
        archive_format: ``"auto"`` (tar, then zip), ``"tar"`` (tar, tar.gz,
            tar.bz2, tar.xz), ``"zip"``, a list of those, or None (no format:
            nothing is extracted).
        cache_dir: The cache directory (default: Keras's).
        force_download: Download again even if the file is cached.

    Returns:
        The path of the file, or with ``extract`` the extraction directory.

    Raises:
        DownloadError: The file is not cached and cannot be downloaded (its
            message says where to place a copy to work offline).
        ValueError: Invalid arguments, a downloaded file whose hash does not
            match ``file_hash``, or an unsafe or corrupted archive.
    """
    if origin is None or not isinstance(origin, str) or not origin:
        raise ValueError(f"Invalid value for `origin`: expected the URL of the file to download. Received: origin={origin!r}")
    if md5_hash is not None and file_hash is None:
        file_hash, hash_algorithm = md5_hash, "md5"
    if file_hash is not None and (not isinstance(file_hash, str) or not re.fullmatch(r"[0-9a-fA-F]+", file_hash)):
        raise ValueError(f"Invalid value for `file_hash`: expected a hex digest string. Received: file_hash={file_hash!r}")
    algorithm = _resolve_algorithm(hash_algorithm, file_hash)
    if not isinstance(cache_subdir, (str, os.PathLike)):
        raise ValueError(f"Invalid value for `cache_subdir`: expected a directory name. Received: cache_subdir={cache_subdir!r}")
    if fname is not None and not isinstance(fname, (str, os.PathLike)):
        raise ValueError(f"Invalid value for `fname`: expected a file name or None. Received: fname={fname!r}")
    provided = fname is not None and os.fspath(fname) != ""
    if provided:
        fname = os.fspath(fname)
        if not isinstance(fname, str) or os.sep in fname or (os.altsep and os.altsep in fname) or fname in (".", ".."):
            raise ValueError(
                "Invalid value for `fname`: expected a file name, not a path (use `cache_dir` and `cache_subdir` "
                f"to choose the directory). Received: fname={fname!r}"
            )
    else:
        fname = os.path.basename(urllib.parse.urlsplit(origin).path)
        if not fname or fname in (".", ".."):
            raise ValueError(f"Cannot take a file name from origin={origin!r}: pass `fname`.")
    if untar:
        extract, archive_format = True, "tar"
    formats = _archive_formats(archive_format) if extract else []

    if extract and provided and "." in fname:
        target_name, directory_name = fname, fname[: fname.find(".")] + "_extracted"
    elif extract:
        target_name, directory_name = fname + "_archive", fname
    else:
        target_name, directory_name = fname, None
    datadir = _cache_directory(cache_dir, os.fspath(cache_subdir), [n for n in (target_name, directory_name) if n])
    target = os.path.join(datadir, target_name)
    extraction_dir = os.path.join(datadir, directory_name) if extract else None

    download = bool(force_download)
    if not download:
        if os.path.exists(target):
            if file_hash is not None:
                actual = hash_file(target, algorithm)
                if actual != file_hash.lower():
                    print(
                        f"A local file was found at {target}, but its {algorithm} hash is {actual} where {file_hash.lower()} "
                        "was expected (it is incomplete or outdated): it is removed and downloaded again."
                    )
                    os.remove(target)
                    download = True
        elif extract and os.path.isdir(extraction_dir):
            return extraction_dir  # extracted earlier, the archive since removed: used as it is
        else:
            download = True
    if download:
        _download(origin, target, file_hash, algorithm, extraction_dir)
    if not extract:
        return target
    if download or not os.path.isdir(extraction_dir):
        if not extract_archive(target, extraction_dir, formats):
            warnings.warn(f"Could not extract {target}: it is not an archive of the format(s) {formats}.", stacklevel=2)
    return extraction_dir


def hash_file(fpath, algorithm="sha256", chunk_size=65535):
    """The hex digest of the file at ``fpath``: ``algorithm`` is ``"sha256"``, ``"md5"`` (``"auto"``, as Keras's) or a hashlib object."""
    hasher = _hasher(_resolve_algorithm(algorithm, None)) if isinstance(algorithm, str) else algorithm
    with open(fpath, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def validate_file(fpath, file_hash, algorithm="auto", chunk_size=65535):
    """Whether the file at ``fpath`` has the hex digest ``file_hash`` (``algorithm`` as in :func:`get_file`)."""
    algorithm = _resolve_algorithm(algorithm, file_hash)
    return hash_file(fpath, algorithm, chunk_size) == str(file_hash).lower()


def extract_archive(file_path, path=".", archive_format="auto"):
    """Extract the archive ``file_path`` into the directory ``path``; whether it was of one of the formats.

    ``archive_format`` is ``"auto"`` (``["tar", "zip"]``), ``"tar"``, ``"zip"``,
    a list of those, or None (nothing is tried). The archive is extracted into
    a temporary directory next to ``path``, renamed onto ``path`` when complete
    (replacing what was there). An unsafe member (absolute path, ``..``, link,
    device, FIFO) makes the archive refused with ValueError, as does a
    corrupted archive; nothing is left behind then.
    """
    file_path, path = os.fspath(file_path), os.fspath(path)
    for kind in _archive_formats(archive_format):
        if kind == "tar" and tarfile.is_tarfile(file_path):
            _extract_atomically(file_path, path, _extract_tar)
            return True
        if kind == "zip" and zipfile.is_zipfile(file_path):
            _extract_atomically(file_path, path, _extract_zip)
            return True
    return False


# ---------------------------------------------------------------- arguments


def _resolve_algorithm(hash_algorithm, file_hash):
    if hash_algorithm not in _HASH_ALGORITHMS:
        raise ValueError(f"Invalid value for `hash_algorithm`: expected one of {_HASH_ALGORITHMS}. Received: hash_algorithm={hash_algorithm!r}")
    if hash_algorithm == "auto":
        return "sha256" if file_hash is not None and len(str(file_hash)) == 64 else "md5"
    return hash_algorithm


def _hasher(algorithm):
    if algorithm == "md5":
        return hashlib.md5(usedforsecurity=False)
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"Invalid value for `algorithm`: expected 'sha256' or 'md5'. Received: algorithm={algorithm!r}")


def _archive_formats(archive_format):
    if archive_format is None:
        return []
    if archive_format == "auto":
        return list(_ARCHIVE_FORMATS)
    formats = [archive_format] if isinstance(archive_format, str) else archive_format
    try:
        formats = list(formats)
    except TypeError:
        formats = [archive_format]
    if any(kind not in _ARCHIVE_FORMATS for kind in formats):
        raise ValueError(
            "Invalid value for `archive_format`: expected 'auto', 'tar', 'zip', a list of those, or None. "
            f"Received: archive_format={archive_format!r}"
        )
    return formats


def _cache_directory(cache_dir, cache_subdir, names):
    """``<cache_dir>/<cache_subdir>``, created; ``<tempdir>/.keras/<cache_subdir>`` when it cannot be written.

    A directory that already holds one of ``names`` is used even if it is read-only.
    """
    base = keras_home() if cache_dir is None else os.fspath(cache_dir)
    datadir = os.path.join(os.path.expanduser(base), cache_subdir)
    if any(os.path.exists(os.path.join(datadir, name)) for name in names):
        return datadir
    try:
        os.makedirs(datadir, exist_ok=True)
    except OSError:
        pass
    if os.path.isdir(datadir) and os.access(datadir, os.W_OK | os.X_OK):
        return datadir
    fallback = os.path.join(tempfile.gettempdir(), ".keras", cache_subdir)
    os.makedirs(fallback, exist_ok=True)
    return fallback


# ---------------------------------------------------------------- download


def _offline_hint(origin, target, extraction_dir, file_hash, algorithm):
    hint = f"To work offline, download {origin} where it can be reached and save it as {target}"
    if file_hash is not None:
        hint += f" (its {algorithm} hash is {file_hash.lower()})"
    if extraction_dir is not None:
        hint += f", or put its extracted contents in the directory {extraction_dir}"
    return hint + "."


def _download(origin, target, file_hash, algorithm, extraction_dir):
    """Fetch ``origin`` into a temporary file next to ``target``, check it, fsync it, rename it onto ``target``."""
    print(f"Downloading data from {origin}")
    directory, name = os.path.split(target)
    hint = _offline_hint(origin, target, extraction_dir, file_hash, algorithm)
    hasher = _hasher(algorithm) if file_hash is not None else None
    fd, part = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(origin, out, hasher, hint)
            out.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(out.fileno(), 0o644)  # mkstemp's 0600 would make a shared cache private
            os.fsync(out.fileno())
        if hasher is not None:
            actual = hasher.hexdigest()
            if actual != file_hash.lower():
                raise ValueError(
                    f"The file downloaded from {origin} for {target} is incomplete or corrupted: its {algorithm} hash is "
                    f"{actual}, but {file_hash.lower()} was expected. It was removed."
                )
        os.replace(part, target)
    except BaseException:
        try:
            os.remove(part)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(directory)


def _fetch(origin, out, hasher, hint):
    try:
        response = urllib.request.urlopen(origin, timeout=DOWNLOAD_TIMEOUT)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"Could not download {origin}: the server answered HTTP {exc.code} {exc.reason}. {hint}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"Could not download {origin}: {getattr(exc, 'reason', exc)}. {hint}") from exc
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None and length.strip().isdigit() else None
        bar = Progbar(total)
        received = 0
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(f"The download of {origin} broke off after {received} bytes: {exc}. {hint}") from exc
            if not chunk:
                break
            out.write(chunk)
            if hasher is not None:
                hasher.update(chunk)
            received += len(chunk)
            bar.update(received)
        if total is not None and received != total:
            raise DownloadError(f"The download of {origin} broke off after {received} of {total} bytes. {hint}")
        if total is None:
            bar.update(received, finalize=True)


def fsync_directory(directory):
    """Make a rename in ``directory`` durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- extraction


def _extract_atomically(file_path, path, extract_into):
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".extracting", dir=parent)
    try:
        try:
            extract_into(file_path, staging)
        except _ARCHIVE_ERRORS as exc:
            raise ValueError(f"Cannot extract {file_path}: the archive is corrupted ({exc}). Delete it to download it again.") from exc
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would make a shared cache private
        if os.path.lexists(path):
            # Move the previous copy into a directory of its own, swap the new one in, then delete the old.
            trash = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
            os.rename(path, os.path.join(trash, "previous"))
            try:
                os.rename(staging, path)
            except BaseException:
                os.rename(os.path.join(trash, "previous"), path)
                raise
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _member_parts(name, archive):
    """The path components of archive member ``name``, refusing absolute paths and ``..``."""
    if "\x00" in name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"Refusing to extract {archive}: member {name!r} has an absolute path.")
    parts = [part for part in re.split(r"[/\\]", name) if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"Refusing to extract {archive}: member {name!r} leads outside the extraction directory ('..').")
    return parts


def _tar_kind(member):
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a FIFO"
    return "not a regular file or directory"


def _extract_tar(file_path, destination):
    with tarfile.open(file_path, "r:*") as archive:
        for member in archive:
            parts = _member_parts(member.name, file_path)
            if member.isdir():
                os.makedirs(os.path.join(destination, *parts), exist_ok=True)
                continue
            if not member.isreg():
                raise ValueError(
                    f"Refusing to extract {file_path}: member {member.name!r} is {_tar_kind(member)}; "
                    "only regular files and directories are extracted."
                )
            if not parts:
                raise ValueError(f"Refusing to extract {file_path}: a file member has the empty name {member.name!r}.")
            _write_member(archive.extractfile(member), os.path.join(destination, *parts))


def _extract_zip(file_path, destination):
    with zipfile.ZipFile(file_path) as archive:
        for info in archive.infolist():
            parts = _member_parts(info.filename, file_path)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ValueError(f"Refusing to extract {file_path}: member {info.filename!r} is a symbolic link.")
            if info.is_dir() or stat.S_ISDIR(mode):
                os.makedirs(os.path.join(destination, *parts), exist_ok=True)
                continue
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                raise ValueError(f"Refusing to extract {file_path}: member {info.filename!r} is not a regular file or directory.")
            if not parts:
                raise ValueError(f"Refusing to extract {file_path}: a file member has the empty name {info.filename!r}.")
            _write_member(archive.open(info), os.path.join(destination, *parts))


def _write_member(source, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with source, open(path, "wb") as out:
        shutil.copyfileobj(source, out, _CHUNK)
