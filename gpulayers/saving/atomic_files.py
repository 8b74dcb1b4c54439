"""Atomic saves: the file at a path is replaced whole, or not at all.

:func:`atomic_write` writes every save (``model.save``, ``save_weights``,
ModelCheckpoint, BackupAndRestore):

- The data go to a temporary file beside the target, named
  ``.NAME.PID-START-HOST-RANDOM.tmp``, are flushed, given the old file's
  owner and group (where permitted) and mode, fsynced, moved over the target
  with ``os.replace``, and the directory is fsynced. A failure, Ctrl-C or
  SIGTERM removes the temporary and leaves the old file as it was.
- The writer holds an exclusive ``flock`` on its temporary until the
  replace. A SIGKILL leaves the temporary behind, so each save first removes
  the temporaries in its directory whose lock is free: the kernel releases a
  dead process's locks, so a free lock means a dead writer, whoever has its
  pid now. Where the file system has no locks, a temporary is stale when its
  writer (PID, START: its start time on Linux, HOST: a hash of the host
  name) no longer runs on this host. Another host's temporary is removed
  when its lock is free (or there are no locks) and it has not been written
  for an hour (``OTHER_HOST_IDLE_SECONDS``): a free lock proves that writer
  dead only where locks are shared between hosts, which NFS mounted with
  ``nolock`` does not do. A live writer's temporary is never removed, and
  temporaries named otherwise (those of earlier versions,
  ``.NAME.XXXXXXXX.tmp``) are left alone: nothing tells whether their writer
  is alive.
- SIGTERM, while its action is the default, acts like Ctrl-C during a save:
  the save is abandoned, its temporary removed, then the process terminates
  by SIGTERM as it would have. A program's own SIGTERM handler runs as
  usual (if it raises, the save is abandoned cleanly; if it returns, the save
  goes on). Only the main thread can install handlers: a save in another
  thread is killed by SIGTERM as before, and the next save removes its
  temporary.
- A symbolic link is followed: the file at the end of the chain is
  replaced and the link stays, as Keras writes through it; a dangling link
  creates the file it names.
- A hard link is broken: the name saved to gets the new file, the other
  names keep the old one, whole (as with ``mv``, git or rsync; backups made
  of hard links rely on it). Keeping the link would mean writing in place,
  which a kill mid-write leaves torn under every name.
- When the directory cannot be written (or, being sticky, does not let
  this user replace the file) but the file can, the file is written in
  place: the new data are first written whole to a temporary file that has
  no name (in ``TMPDIR``), the file's new size is allocated (so a failure
  there or a full disk leaves the file unchanged), then the data are copied
  over the old ones with SIGTERM and Ctrl-C held. Cost: no atomicity (a
  kill, a crash or an I/O error during the copy leaves a torn file; on a
  copy-on-write file system a full disk too) and the data are written twice.
  The file keeps its inode, so its owner, mode and hard links.
"""

import contextlib
import errno
import hashlib
import os
import platform
import re
import signal
import stat
import tempfile
import threading
import time

try:
    import fcntl
except ImportError:  # not POSIX: temporaries are judged by their writer's pid alone
    fcntl = None

from gpulayers.file_utils import fsync_directory

__all__ = ["OTHER_HOST_IDLE_SECONDS", "atomic_write"]

# Another host's temporary whose lock is free is removed once untouched this long.
OTHER_HOST_IDLE_SECONDS = 3600

# .NAME.PID-START-HOST-RANDOM.tmp, RANDOM being mkstemp's.
_TEMPORARY = re.compile(r"\..+\.(\d+)-(\d+)-([0-9a-f]{8})-[a-z0-9_]+\.tmp", re.DOTALL)
_CHUNK = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

# This process's temporaries being written. A lock does not keep out the
# writer's own process everywhere (NFS emulates flock with POSIX locks, which
# are per process), so its other threads look here first.
_live = set()
_live_lock = threading.Lock()


class _Terminated(BaseException):
    """Raised in a save by SIGTERM, to abandon it as Ctrl-C does."""


def atomic_write(path, write):
    """Write through ``write(fileobj)`` to a temporary file beside ``path``, then move it over ``path``.

    Symbolic links in ``path`` are resolved first. See the module docstring
    for ownership, hard links, stale temporaries, SIGTERM and directories
    that cannot be written.
    """
    target = _resolve(path)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Cannot save to {path}: the directory {directory} does not exist.")
    if os.path.isdir(target):
        raise IsADirectoryError(f"Cannot save to {path}: it is a directory.")
    with _SaveSignals() as signals:
        _remove_stale_temporaries(directory)
        try:
            old = os.stat(target)
        except FileNotFoundError:
            old = None
        try:
            fd, tmp = _create_temporary(target)
        except PermissionError:
            _write_in_place(path, target, old, write, signals)
            return
        try:
            # The file stays open until after the replace: closing it releases the lock.
            with os.fdopen(fd, "wb") as fileobj:
                write(fileobj)
                fileobj.flush()
                _copy_owner_and_mode(fileobj.fileno(), old)
                os.fsync(fileobj.fileno())
                try:
                    os.replace(tmp, target)
                except PermissionError:
                    if old is None:
                        raise
                    # A sticky directory lets only the file's owner replace it: copy it in place.
                    fd = _open_in_place(path, target, old)
                    try:
                        _copy_in_place(path, fd, fileobj.fileno(), signals)
                    finally:
                        os.close(fd)
                    os.unlink(tmp)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        finally:
            with _live_lock:
                _live.discard(tmp)
        fsync_directory(directory)


def _resolve(path):
    """``path`` with its symbolic links resolved; a dangling link resolves to the file it names."""
    try:
        return os.path.realpath(path, strict=True)
    except FileNotFoundError:
        return os.path.realpath(path)
    except OSError as exc:  # a loop of links
        raise OSError(exc.errno, f"Cannot save to {path}: {exc.strerror}", os.fspath(path)) from None


# ---------------------------------------------------------------- temporaries


def _writer():
    """This process, as temporaries name it: PID-START-HOST."""
    pid = os.getpid()
    return f"{pid}-{_start_time(pid)}-{_host()}"


def _host():
    return hashlib.sha256(platform.node().encode()).hexdigest()[:8]


def _start_time(pid):
    """When process ``pid`` started (clock ticks after boot; Linux), 0 where unknown, None for a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold anything
    except (OSError, IndexError):
        return 0
    return None if fields[0] == b"Z" else int(fields[19])


def _create_temporary(target):
    """A new temporary file beside ``target``, locked and registered as live: ``(fd, path)``."""
    directory, name = os.path.split(target)
    if len(os.fsencode(name)) > 160:  # leave room in NAME_MAX (255 bytes): 40 characters are at most 160 bytes
        name = name[:40]
    prefix = f".{name}.{_writer()}-"
    while True:
        with _live_lock:
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
            _live.add(tmp)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass  # no locks on this file system: cleaners judge by the pid
        if os.fstat(fd).st_nlink:
            return fd, tmp
        # Another process took it for a dead writer's before it was locked: make another.
        os.close(fd)
        with _live_lock:
            _live.discard(tmp)


def _remove_stale_temporaries(directory):
    """Remove the temporaries in ``directory`` that dead writers left (best effort: it never fails a save)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if match is None:
            continue
        with _live_lock:
            if entry.path in _live:
                continue
        try:
            if entry.is_file(follow_symlinks=False):
                _remove_if_stale(entry.path, int(match[1]), int(match[2]), match[3])
        except OSError:
            pass  # gone meanwhile, or not this user's to judge or remove


def _remove_if_stale(path, pid, start, host):
    fd = os.open(path, os.O_RDWR | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    try:
        locked = _try_lock(fd)
        if locked is False:
            return
        if host != _host():
            # A free lock proves another host's writer dead only where the file system shares locks between
            # hosts (not NFS mounted with nolock): it must also have stopped writing long ago.
            stale = time.time() - os.fstat(fd).st_mtime > OTHER_HOST_IDLE_SECONDS
        else:
            stale = locked or not _writer_alive(pid, start)
        if stale:
            os.unlink(path)  # while locked: a writer that had not locked it yet sees it gone and makes another
    finally:
        os.close(fd)


def _try_lock(fd):
    """True if the lock of ``fd`` was free (now held), False if a live process holds it, None without locks."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _writer_alive(pid, start):
    """Whether the process of this host that wrote a temporary may still run."""
    if pid == os.getpid():
        return False  # not among this process's live temporaries: an earlier process's with the same pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    running = _start_time(pid)
    if running is None:
        return False
    return running == 0 or start == 0 or running == start  # another start time: the pid was reused


# ---------------------------------------------------------------- ownership and mode


def _copy_owner_and_mode(fd, old):
    """Give the new file the old one's owner and group where permitted, then its mode (new: the umask's)."""
    if old is None:
        os.fchmod(fd, 0o666 & ~_umask())
        return
    new = os.fstat(fd)
    if (new.st_uid, new.st_gid) != (old.st_uid, old.st_gid):
        try:
            os.fchown(fd, old.st_uid, old.st_gid)
        except OSError as exc:
            # Only root may give a file away (EINVAL: an owner this user namespace cannot name);
            # the new file is then the saver's, in the old group if the saver is one of it.
            if not isinstance(exc, PermissionError) and exc.errno != errno.EINVAL:
                raise
            with contextlib.suppress(PermissionError):
                os.fchown(fd, -1, old.st_gid)
    os.fchmod(fd, stat.S_IMODE(old.st_mode))  # after chown, which clears the set-id bits


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- in place


def _write_in_place(path, target, old, write, signals):
    """Write ``target`` in place, its directory being closed to new files; the data are staged elsewhere first."""
    directory = os.path.dirname(target)
    if old is None:
        raise PermissionError(
            errno.EACCES, f"Cannot save to {path}: the directory {directory} is not writable", os.fspath(path)
        )
    fd = _open_in_place(path, target, old)
    try:
        with tempfile.TemporaryFile() as staged:
            write(staged)
            staged.flush()
            _copy_in_place(path, fd, staged.fileno(), signals)
    finally:
        os.close(fd)


def _open_in_place(path, target, old):
    directory = os.path.dirname(target)
    if not stat.S_ISREG(old.st_mode):
        raise OSError(
            f"Cannot save to {path}: no file can be made in its directory {directory}, and it is not a regular "
            "file that could be written in place."
        )
    try:
        return os.open(target, os.O_WRONLY | _NOFOLLOW)  # not truncated: the old data stay until the copy
    except PermissionError:
        raise PermissionError(
            errno.EACCES, f"Cannot save to {path}: neither the file nor its directory {directory} is writable",
            os.fspath(path),
        ) from None


def _copy_in_place(path, fd, source, signals):
    """Copy all of ``source`` (an fd) over the data of ``fd``, whose size is first allocated."""
    size, old_size = os.fstat(source).st_size, os.fstat(fd).st_size
    if size > old_size and hasattr(os, "posix_fallocate"):  # not on macOS
        try:
            os.posix_fallocate(fd, old_size, size - old_size)
        except OSError as exc:
            os.ftruncate(fd, old_size)
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):  # those: nothing can be allocated
                raise OSError(
                    exc.errno, f"Cannot save to {path}: no room for its new size of {size} bytes ({exc.strerror}); "
                    "the file is unchanged", os.fspath(path)
                ) from exc
    done = 0
    with signals.held():
        try:
            while done < size:
                chunk = os.pread(source, min(_CHUNK, size - done), done)
                if not chunk:
                    raise OSError(errno.EIO, "the staged data ended early")
                done += os.pwrite(fd, chunk, done)
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:
            raise OSError(
                exc.errno, f"Cannot save to {path}: writing it in place (its directory cannot be written) failed after "
                f"{done} of {size} bytes, and left it incomplete ({exc.strerror})", os.fspath(path)
            ) from exc


# ---------------------------------------------------------------- signals


class _SaveSignals:
    """SIGTERM during a save: abandon the save like Ctrl-C, or hold the signal while an in-place copy runs;
    then terminate as SIGTERM's default action would.

    Only SIGTERM's default action is replaced (a program's handler, or
    SIG_IGN, stays), and only in the main thread of the main interpreter,
    the only place where handlers can be installed.
    """

    def __init__(self):
        self._installed = False
        self._holding = False
        self._pending = set()

    def __enter__(self):
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            try:
                signal.signal(signal.SIGTERM, self._handle)
                self._installed = True
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, kind, exc, tb):
        if self._installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if signal.SIGTERM in self._pending:
                signal.raise_signal(signal.SIGTERM)  # terminates: the save is finished or abandoned
        return False

    def _handle(self, signum, frame):
        if self._holding:
            self._pending.add(signum)
        elif signum not in self._pending:  # a second SIGTERM must not cut the cleanup short
            self._pending.add(signum)
            raise _Terminated

    @contextlib.contextmanager
    def held(self):
        """Hold SIGTERM, and Ctrl-C while Python's default handler is installed, until the block ends."""
        sigint = signal.getsignal(signal.SIGINT) is signal.default_int_handler
        if sigint:
            try:
                signal.signal(signal.SIGINT, self._handle)
            except ValueError:  # not the main thread
                sigint = False
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            if sigint:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        if signal.SIGINT in self._pending:
            raise KeyboardInterrupt
