"""Atomic file writes: a temporary file beside the target, flushed,
fsync'ed and renamed over it, so a crash leaves the old file or the new
one, never half of either.  Knows nothing of networks; the model files of
bpcore.io and Network.save go through :func:`write`.
"""
import os
import re
import secrets
import stat

__all__ = ["write"]


def write(path, data):
    """Write data to path via a temporary file, fsync and os.replace.

    The temporary file is ``.<name>.<pid>.<random>.tmp``, locked (flock)
    while written; a process killed mid-save leaves it behind, and the next
    write to the same path removes such files whose process is gone and
    that no process holds locked.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot save to {path!r}: it is a "
                                f"directory; give a file name")
    folder, base = os.path.split(os.path.abspath(path))
    _remove_stale_temporaries(folder, base)
    tmp, fd = _create_temporary(folder, base)
    try:
        _lock(fd)  # held until the file is closed: "a live save owns it"
        try:
            f = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
        with f:
            _keep_mode(f.fileno(), path)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)


def _create_temporary(folder, base):
    """(path, fd) of a new temporary file for base in folder, opened for
    writing (exclusive create, so two saves never share one)."""
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL
             | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
    for _ in range(100):
        tmp = os.path.join(folder, f".{base}.{os.getpid()}."
                                   f"{secrets.token_hex(8)}.tmp")
        try:
            # 0o666 so the process umask applies, as for a plain open().
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    # pragma: no cover - 100 collisions of 64 random bits
    raise FileExistsError(f"could not create a temporary file in {folder}")


def _lock(fd):
    """An exclusive flock on a temporary file while it is written (POSIX;
    best effort: some file systems have no locks)."""
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):
        pass


def _pid_alive(pid):
    """Whether process pid may still exist (True when unsure)."""
    if pid == os.getpid():
        return True  # another thread of ours may be saving
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, OSError):
        return True  # exists (another user's), or cannot tell: keep
    return True


def _unlocked(path):
    """True when no process holds a lock on path (the file stays as is)."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _remove_stale_temporaries(folder, base):
    """Remove what saves to the same target killed mid-write (kill -9, power
    loss) left beside it: ``.<base>.<pid>.<16 hex>.tmp`` files whose pid is
    not a live process and that no process holds a lock on.  Best effort:
    any error leaves the file."""
    pattern = re.compile(r"\." + re.escape(base) + r"\.([0-9]{1,10})\."
                         r"[0-9a-f]{16}\.tmp")
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return
    for name in names:
        m = pattern.fullmatch(name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        full = os.path.join(folder, name)
        try:
            if stat.S_ISREG(os.lstat(full).st_mode) and _unlocked(full):
                os.unlink(full)
        except OSError:
            pass


def _keep_mode(fd, path):
    """Give the new file the permission bits of the file it replaces."""
    if not hasattr(os, "fchmod"):
        return
    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode):
        try:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
        except OSError:
            pass


def _fsync_folder(folder):
    """Make the rename durable (POSIX); harmless where unsupported."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
