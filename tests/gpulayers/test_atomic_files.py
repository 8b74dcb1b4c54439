"""atomic_write: stale temporaries, live writers, links, owner and mode, directories that cannot be written, signals.

Tests that need a user without root's permissions run in a forked child
that drops to ``nobody`` when the tests run as root (a fresh interpreter
could not, as the one here may live under root's home); files owned by
another user can only be made as root, so those tests skip otherwise.
"""

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import numpy as np
import pytest

from gpulayers.layers import Dense, Input
from gpulayers.models import Sequential, load_model
from gpulayers.saving import atomic_files
from gpulayers.saving.atomic_files import atomic_write

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX file semantics")

ROOT = os.geteuid() == 0
LINUX = os.path.exists("/proc/self/stat")
NOBODY = 65534
OTHER = 12345  # an owner and a group nobody here has


def writes(data):
    return lambda fileobj: fileobj.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def temporaries(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


def temporary(directory, target_name, pid, start=0, host=None, data=b"left by a killed save"):
    """A temporary in atomic_write's naming, as writer ``pid`` would have left it."""
    path = os.path.join(directory, f".{target_name}.{pid}-{start}-{host or atomic_files._host()}-ab12cd34.tmp")
    with open(path, "wb") as f:
        f.write(data)
    return path


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def in_child(body, unprivileged=False):
    """Run ``body()`` in a forked child, as ``nobody`` (with the group OTHER too) when asked and root; its wait status."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if unprivileged and ROOT:
                os.setgroups([NOBODY, OTHER])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            body()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def assert_succeeded(status):
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"the child failed (wait status {status}): see its stderr"


@pytest.fixture
def shared_dir():
    """A directory the unprivileged child can reach (pytest's tmp_path lies in a directory only its owner can)."""
    path = tempfile.mkdtemp(prefix="gpulayers-atomic-")
    os.chmod(path, 0o755)
    yield path
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    shutil.rmtree(path)


# ---------------------------------------------------------------- stale temporaries


def test_a_dead_writers_temporaries_are_removed_by_the_next_save(tmp_path):
    pid = dead_pid()
    same = temporary(tmp_path, "m.keras", pid, data=b"x" * 100_000)
    # ModelCheckpoint saves each epoch under another name: those are removed too.
    other = temporary(tmp_path, "m.01.keras", pid)
    reused = temporary(tmp_path, "m.keras", os.getpid())  # an earlier process had this pid
    # Another host's: its free lock may not prove it dead (NFS with nolock), so it must also be idle long.
    idle = temporary(tmp_path, "m.keras", os.getpid(), host="0badc0de")
    recent = temporary(tmp_path, "n.keras", os.getpid(), host="0badc0de")
    long_ago = time.time() - atomic_files.OTHER_HOST_IDLE_SECONDS - 60
    os.utime(idle, (long_ago, long_ago))
    atomic_write(tmp_path / "m.keras", writes(b"new"))
    assert not any(os.path.exists(p) for p in (same, other, reused, idle))
    assert sorted(os.listdir(tmp_path)) == sorted(["m.keras", os.path.basename(recent)])
    assert (tmp_path / "m.keras").read_bytes() == b"new"


HOLD_A_LOCK = (
    "import fcntl, sys; f = open(sys.argv[1], 'rb+'); fcntl.flock(f, fcntl.LOCK_EX); "
    "print('locked', flush=True); sys.stdin.read()"
)


def test_a_locked_temporary_is_kept_whatever_pid_it_names(tmp_path):
    path = temporary(tmp_path, "m.keras", dead_pid())
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_LOCK, path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        atomic_write(tmp_path / "m.keras", writes(b"new"))
        assert os.path.exists(path)
    finally:
        holder.stdin.close()
        holder.wait()
        holder.stdout.close()
    atomic_write(tmp_path / "m.keras", writes(b"newer"))  # its writer is gone now
    assert os.listdir(tmp_path) == ["m.keras"]


@pytest.mark.parametrize("locks", ["flock", "per-process locks"])
def test_another_thread_saving_to_the_same_file_keeps_its_temporary(tmp_path, monkeypatch, locks):
    if locks == "per-process locks":
        # As on NFS, where flock is emulated with POSIX locks: this process's own lock does not exclude it.
        monkeypatch.setattr(atomic_files, "_try_lock", lambda fd: True)
    target = tmp_path / "m.keras"
    inside, finish, errors = threading.Event(), threading.Event(), []

    def slow(fileobj):
        fileobj.write(b"from the thread")
        inside.set()
        finish.wait(10)

    def save():
        try:
            atomic_write(target, slow)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=save)
    thread.start()
    assert inside.wait(10)
    atomic_write(target, writes(b"from the main thread"))
    assert target.read_bytes() == b"from the main thread" and len(temporaries(tmp_path)) == 1
    finish.set()
    thread.join(10)
    assert errors == [] and target.read_bytes() == b"from the thread" and temporaries(tmp_path) == []


@pytest.mark.parametrize("no_locks", ["no fcntl", "flock fails"])
def test_without_locks_the_writers_pid_and_start_time_decide(tmp_path, monkeypatch, no_locks):
    if no_locks == "no fcntl":
        monkeypatch.setattr(atomic_files, "fcntl", None)
    else:
        def flock(fd, operation):
            raise OSError(errno.ENOLCK, "No locks available")

        monkeypatch.setattr(atomic_files.fcntl, "flock", flock)
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        start = atomic_files._start_time(sleeper.pid)
        kept = [
            temporary(tmp_path, "a.keras", sleeper.pid, start),
            temporary(tmp_path, "b.keras", sleeper.pid, 0),  # start time unknown: it may be the writer
            temporary(tmp_path, "c.keras", dead_pid(), host="0badc0de"),  # another host's: its pid means nothing here
        ]
        idle = temporary(tmp_path, "h.keras", dead_pid(), host="0badc0de")
        long_ago = time.time() - atomic_files.OTHER_HOST_IDLE_SECONDS - 60
        os.utime(idle, (long_ago, long_ago))
        removed = [
            idle,  # another host's, idle long
            temporary(tmp_path, "d.keras", dead_pid()),
            # This process's pid, but none of its live temporaries: an earlier process's with the same pid.
            temporary(tmp_path, "g.keras", os.getpid(), atomic_files._start_time(os.getpid())),
        ]
        if LINUX:
            os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
            removed.append(temporary(tmp_path, "e.keras", zombie.pid))
            removed.append(temporary(tmp_path, "f.keras", sleeper.pid, start + 1))  # a live pid, reused
        atomic_write(tmp_path / "m.keras", writes(b"new"))
        assert all(os.path.exists(p) for p in kept)
        assert not any(os.path.exists(p) for p in removed)
    finally:
        sleeper.stdin.close()
        sleeper.wait()
        zombie.wait()


def test_a_temporary_removed_before_it_was_locked_is_made_again(tmp_path, monkeypatch):
    real, made = tempfile.mkstemp, []

    def mkstemp(*args, **kwargs):
        fd, path = real(*args, **kwargs)
        made.append(path)
        if len(made) == 1:
            os.unlink(path)  # another process's save took it for a dead writer's
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    atomic_write(tmp_path / "m.keras", writes(b"new"))
    assert len(made) == 2 and os.listdir(tmp_path) == ["m.keras"]


def test_other_files_are_left_alone(tmp_path):
    pid = dead_pid()
    old_style = tmp_path / ".m.keras.k3j4l5m6.tmp"  # earlier versions': their writer cannot be judged
    old_style.write_bytes(b"x")
    (tmp_path / f".m.keras.{pid}-0-{atomic_files._host()}-dir12345.tmp").mkdir()
    (tmp_path / "data").write_bytes(b"mine")
    os.symlink(tmp_path / "data", tmp_path / f".m.keras.{pid}-0-{atomic_files._host()}-lnk12345.tmp")
    os.mkfifo(tmp_path / f".m.keras.{pid}-0-{atomic_files._host()}-fif12345.tmp")
    before = sorted(os.listdir(tmp_path))
    atomic_write(tmp_path / "m.keras", writes(b"new"))
    assert sorted(os.listdir(tmp_path)) == sorted(before + ["m.keras"])
    assert (tmp_path / "data").read_bytes() == b"mine"


def test_a_long_name_fits_in_the_temporary(tmp_path):
    target = tmp_path / ("m" * 240 + ".keras")
    atomic_write(target, writes(b"new"))
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == [target.name]


# ---------------------------------------------------------------- links


def test_save_through_a_symbolic_link_replaces_the_file_it_points_to(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "model.keras").write_bytes(b"old")
    os.symlink("runs/model.keras", tmp_path / "latest.keras")
    os.symlink("latest.keras", tmp_path / "chain.keras")

    def write(fileobj):
        # The temporary lies beside the final target, not beside the links.
        assert len(temporaries(runs)) == 1 and temporaries(tmp_path) == []
        fileobj.write(b"new")

    atomic_write(tmp_path / "latest.keras", write)
    assert os.readlink(tmp_path / "latest.keras") == "runs/model.keras"
    assert (runs / "model.keras").read_bytes() == b"new"
    atomic_write(tmp_path / "chain.keras", writes(b"newer"))
    assert os.path.islink(tmp_path / "chain.keras") and os.path.islink(tmp_path / "latest.keras")
    assert (runs / "model.keras").read_bytes() == b"newer"
    assert sorted(os.listdir(tmp_path)) == ["chain.keras", "latest.keras", "runs"] and os.listdir(runs) == ["model.keras"]


def test_model_save_through_a_symbolic_link(tmp_path):
    model = Sequential([Input((3,)), Dense(2)])
    model.save(tmp_path / "model.keras")
    os.symlink("model.keras", tmp_path / "latest.keras")
    model.set_weights([np.ones_like(w) for w in model.get_weights()])
    model.save(tmp_path / "latest.keras")
    assert os.path.islink(tmp_path / "latest.keras")
    assert all((w == 1).all() for w in load_model(tmp_path / "model.keras").get_weights())


def test_a_dangling_link_creates_its_file_and_a_loop_is_refused(tmp_path):
    os.symlink("made.keras", tmp_path / "link.keras")
    atomic_write(tmp_path / "link.keras", writes(b"new"))
    assert os.path.islink(tmp_path / "link.keras") and (tmp_path / "made.keras").read_bytes() == b"new"
    os.symlink("loop2.keras", tmp_path / "loop1.keras")
    os.symlink("loop1.keras", tmp_path / "loop2.keras")
    with pytest.raises(OSError, match="loop1.keras") as info:
        atomic_write(tmp_path / "loop1.keras", writes(b"new"))
    assert info.value.errno == errno.ELOOP
    (tmp_path / "dir").mkdir()
    os.symlink("dir", tmp_path / "dir.keras")
    with pytest.raises(IsADirectoryError, match="dir.keras"):
        atomic_write(tmp_path / "dir.keras", writes(b"new"))
    assert temporaries(tmp_path) == []


def test_a_hard_link_is_broken_and_the_other_name_keeps_the_old_file(tmp_path):
    # The rule: a save replaces the name it is given, atomically; hard links are peers, not pointers.
    (tmp_path / "a.keras").write_bytes(b"old")
    os.chmod(tmp_path / "a.keras", 0o640)
    os.link(tmp_path / "a.keras", tmp_path / "b.keras")
    atomic_write(tmp_path / "a.keras", writes(b"new"))
    assert (tmp_path / "a.keras").read_bytes() == b"new" and (tmp_path / "b.keras").read_bytes() == b"old"
    assert os.stat(tmp_path / "a.keras").st_nlink == 1 and os.stat(tmp_path / "b.keras").st_nlink == 1
    assert os.stat(tmp_path / "a.keras").st_mode & 0o777 == 0o640


# ---------------------------------------------------------------- owner and mode


def test_a_new_file_gets_the_umask_mode_and_an_old_one_keeps_its_mode(tmp_path):
    mask = os.umask(0o027)
    try:
        atomic_write(tmp_path / "new.keras", writes(b"new"))
    finally:
        os.umask(mask)
    assert os.stat(tmp_path / "new.keras").st_mode & 0o777 == 0o640
    os.chmod(tmp_path / "new.keras", 0o604)
    atomic_write(tmp_path / "new.keras", writes(b"newer"))
    assert os.stat(tmp_path / "new.keras").st_mode & 0o777 == 0o604


@pytest.mark.skipif(not ROOT, reason="only root can make a file owned by another user")
def test_the_owner_and_group_are_kept(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(b"old")
    os.chown(path, OTHER, OTHER)
    os.chmod(path, 0o640)
    atomic_write(path, writes(b"new"))
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (OTHER, OTHER, 0o640) and path.read_bytes() == b"new"


@pytest.mark.skipif(not ROOT, reason="only root can make a file owned by another user")
def test_an_owner_that_cannot_be_kept_becomes_the_savers_and_the_group_is_kept(shared_dir):
    os.chmod(shared_dir, 0o777)
    path = os.path.join(shared_dir, "m.keras")
    with open(path, "wb") as f:
        f.write(b"old")
    os.chown(path, 0, OTHER)  # root's, in a group the saver belongs to
    os.chmod(path, 0o664)
    assert_succeeded(in_child(lambda: atomic_write(path, writes(b"new")), unprivileged=True))
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (NOBODY, OTHER, 0o664)
    assert read(path) == b"new" and os.listdir(shared_dir) == ["m.keras"]


@pytest.mark.skipif(not ROOT, reason="only root can make a file owned by another user")
@pytest.mark.parametrize("error, kept", [(errno.EINVAL, True), (errno.EIO, False)])
def test_chown_errors_other_than_permission_fail_the_save(tmp_path, monkeypatch, error, kept):
    path = tmp_path / "m.keras"
    path.write_bytes(b"old")
    os.chown(path, OTHER, OTHER)
    real, calls = os.fchown, []

    def fchown(fd, uid, gid):
        calls.append((uid, gid))
        if uid != -1:
            raise OSError(error, os.strerror(error))
        real(fd, uid, gid)

    monkeypatch.setattr(os, "fchown", fchown)
    if kept:  # EINVAL: an owner this user namespace cannot name, treated as not permitted
        atomic_write(path, writes(b"new"))
        assert calls == [(OTHER, OTHER), (-1, OTHER)] and path.read_bytes() == b"new"
    else:
        with pytest.raises(OSError) as info:
            atomic_write(path, writes(b"new"))
        assert info.value.errno == errno.EIO and path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["m.keras"]


# ---------------------------------------------------------------- directories that cannot be written


@pytest.fixture
def closed_dir(shared_dir):
    """A directory the (unprivileged) saver cannot write, holding a file it can: ``(directory, file, other name)``."""
    path = os.path.join(shared_dir, "m.keras")
    with open(path, "wb") as f:
        f.write(b"old" * 1000)
    os.chmod(path, 0o666)
    os.link(path, os.path.join(shared_dir, "hard.keras"))
    os.chmod(shared_dir, 0o555)
    return shared_dir, path


def test_a_writable_file_in_a_directory_that_cannot_be_written_is_written_in_place(closed_dir):
    directory, path = closed_dir
    before = os.stat(path)
    assert_succeeded(in_child(lambda: atomic_write(path, writes(b"new")), unprivileged=True))
    after = os.stat(path)
    assert read(path) == b"new" and read(os.path.join(directory, "hard.keras")) == b"new"
    assert (after.st_ino, after.st_uid, after.st_gid, after.st_mode) == (before.st_ino, before.st_uid, before.st_gid, before.st_mode)
    assert sorted(os.listdir(directory)) == ["hard.keras", "m.keras"]


def test_in_place_failures_before_the_copy_leave_the_file_unchanged(closed_dir, monkeypatch):
    directory, path = closed_dir

    def broken(fileobj):
        fileobj.write(b"partial")
        raise OSError("disk full (injected)")

    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    def body():
        with pytest.raises(OSError, match="injected"):
            atomic_write(path, broken)
        if hasattr(os, "posix_fallocate"):
            monkeypatch.setattr(os, "posix_fallocate", no_room)
            with pytest.raises(OSError, match="no room for its new size.*the file is unchanged") as info:
                atomic_write(path, writes(b"n" * 10_000))
            assert info.value.errno == errno.ENOSPC
        with pytest.raises(PermissionError, match="new.keras.*is not writable"):
            atomic_write(os.path.join(directory, "new.keras"), writes(b"new"))

    assert_succeeded(in_child(body, unprivileged=True))
    assert read(path) == b"old" * 1000 and sorted(os.listdir(directory)) == ["hard.keras", "m.keras"]


def test_neither_file_nor_directory_writable_is_a_permission_error_naming_the_file(closed_dir):
    _, path = closed_dir
    os.chmod(path, 0o444)

    def body():
        with pytest.raises(PermissionError, match="m.keras: neither the file nor its directory"):
            atomic_write(path, writes(b"new"))

    assert_succeeded(in_child(body, unprivileged=True))
    assert read(path) == b"old" * 1000


@pytest.mark.skipif(not ROOT, reason="only root can make a file owned by another user")
def test_a_file_a_sticky_directory_does_not_let_the_saver_replace_is_written_in_place(shared_dir):
    os.chmod(shared_dir, 0o1777)
    path = os.path.join(shared_dir, "m.keras")
    with open(path, "wb") as f:
        f.write(b"old")
    os.chmod(path, 0o666)
    assert_succeeded(in_child(lambda: atomic_write(path, writes(b"new")), unprivileged=True))
    assert read(path) == b"new" and os.stat(path).st_uid == 0 and os.listdir(shared_dir) == ["m.keras"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_wait_for_the_in_place_copy(closed_dir, monkeypatch, signum):
    _, path = closed_dir
    real = os.pwrite

    def pwrite(fd, data, offset):
        signal.raise_signal(signum)  # in the middle of the copy
        return real(fd, data[:10], offset)

    def body():
        monkeypatch.setattr(os, "pwrite", pwrite)
        try:
            atomic_write(path, writes(b"n" * 100))
        except KeyboardInterrupt:
            os._exit(3)

    status = in_child(body, unprivileged=True)
    if signum == signal.SIGTERM:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    else:
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3
    assert read(path) == b"n" * 100


# ---------------------------------------------------------------- signals


def test_sigterm_abandons_the_save_removes_the_temporary_and_terminates(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(b"old")

    def write(fileobj):
        fileobj.write(b"part of the new file")
        signal.raise_signal(signal.SIGTERM)
        fileobj.write(b"never written")

    status = in_child(lambda: atomic_write(path, write))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.keras"]


def test_ctrl_c_abandons_the_save_and_the_sigterm_default_is_restored(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(b"old")

    def write(fileobj):
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        fileobj.write(b"part")
        raise KeyboardInterrupt

    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, write)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.keras"]


def test_a_programs_own_sigterm_handler_runs_and_stays(tmp_path):
    received = []

    def handler(signum, frame):
        received.append(signum)

    def write(fileobj):
        signal.raise_signal(signal.SIGTERM)
        fileobj.write(b"new")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        atomic_write(tmp_path / "m.keras", write)
        assert signal.getsignal(signal.SIGTERM) is handler
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        atomic_write(tmp_path / "m.keras", write)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM] and (tmp_path / "m.keras").read_bytes() == b"new"


def test_a_save_in_another_thread_installs_no_handler(tmp_path):
    seen, errors = [], []

    def write(fileobj):
        seen.append(signal.getsignal(signal.SIGTERM))
        fileobj.write(b"new")

    def save():
        try:
            atomic_write(tmp_path / "m.keras", write)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=save)
    thread.start()
    thread.join(10)
    assert errors == [] and seen == [signal.SIG_DFL] and (tmp_path / "m.keras").read_bytes() == b"new"
