"""
One writer per directory: an exclusive lock on a lock file, held for a process's whole life.

train.py locks its run directory (RUN/.lock), `sweep.py run` its --out (OUT/.sweep.lock); `sweep.py status`
asks whether a run's lock is held to report it as running (also a run a SLURM task started elsewhere).

The lock is flock(2) on an open file: the kernel releases it when the process dies, however it dies
(kill -9, a node's OOM killer), so a crash leaves no stale lock; the file's text (host, pid, start time)
only names the holder for the refusal message. It needs a filesystem with working locks: local disks,
NFSv4 (Linux maps flock to NFS byte-range locks), Lustre mounted with `-o flock`, GPFS. Where the
filesystem refuses locks (ENOLCK, EOPNOTSUPP, ...) acquire() says so once and the run goes on unguarded.
"""
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

# errno values with which a filesystem says "no locks here" (as opposed to "someone holds it")
UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
RETRY_S = 0.5  # a status probe holds a lock for microseconds: retry this long before calling it held


class Held(Exception):
    """Another process holds the lock; str() names it."""


class Lock:
    """An acquired lock (or an unguarded one where the filesystem has no locks: .supported False)."""

    def __init__(self, path, fd, supported):
        self.path, self.fd, self.supported = Path(path), fd, supported

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def _try_lock(fd):
    """True: locked; False: held by another open file; raises OSError where locks are unsupported."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def describe(path):
    """The holder as its lock file names it: 'pid 123 on host-a since 2026-01-01 12:00:00 UTC'."""
    try:
        info = json.loads(Path(path).read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info["start_time"]))
        return f"pid {info['pid']} on {info['host']} since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its lock file names none yet)"


def acquire(path, warn=print):
    """Lock `path` (created if missing) for this process's life; raises Held naming the holder. Where the
    filesystem has no locks: warn once, return an unguarded Lock."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.time() + RETRY_S
        while not _try_lock(fd):
            if time.time() > deadline:
                raise Held(describe(path))
            time.sleep(0.05)
    except OSError as e:
        if e.errno not in UNSUPPORTED:
            os.close(fd)
            raise
        warn(f"warning: {path.parent}: the filesystem refuses file locks ({errno.errorcode.get(e.errno, e.errno)}); "
             "running without the one-writer guard: never start a second process on this directory")
        return Lock(path, fd, supported=False)
    except BaseException:
        os.close(fd)
        raise
    text = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start_time": time.time()}) + "\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode(), 0)
    return Lock(path, fd, supported=True)


def holder(path):
    """None when no process holds the lock at `path` (or there is no lock file), else the holder's
    description. Where locks are unsupported: None (nothing can be known)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR)  # NFS grants an exclusive lock only on a file open for writing
    except OSError:
        return None
    try:
        if _try_lock(fd):
            return None  # closing fd below releases the probe's lock at once
        return describe(path)
    except OSError:
        return None
    finally:
        os.close(fd)
