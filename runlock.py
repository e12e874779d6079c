"""
One writer per directory: an exclusive lock on a lock file, held for a process's whole life.

train.py locks its run directory (RUN/.lock), `sweep.py run` its --out (OUT/.sweep.lock); `sweep.py status`
asks whether a run's lock is held to report it as running (also a run a SLURM task started elsewhere).

The lock is flock(2) on an open file: the kernel releases it when the process dies, however it dies
(kill -9, a node's OOM killer), so a crash leaves no stale lock; the file's text (host, pid, start time)
only names the holder for the refusal message. It needs a filesystem whose locks every host sees: local
disks (one host anyway), NFS mounted with the default local_lock=none (Linux maps flock to NFS byte-range
locks, seen by every client), Lustre mounted with `-o flock`. Where the filesystem refuses locks (ENOLCK,
EOPNOTSUPP, ...) acquire() says so once and the run goes on unguarded. Where the mount makes flock local
to each host (NFS `nolock`, `local_lock=flock` or `local_lock=all`; Lustre `localflock`), a process on
another host gets the same lock too: acquire() warns once per mount (node_local_mount, from
/proc/self/mountinfo); the lock still keeps out a second process on this host.
"""
import errno
import fcntl
import json
import os
import re
import socket
import time
from pathlib import Path

# errno values with which a filesystem says "no locks here" (as opposed to "someone holds it")
UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
RETRY_S = 0.5  # a status probe holds a lock for microseconds: retry this long before calling it held
MOUNTINFO = "/proc/self/mountinfo"
# mount options with which flock(2) is local to each host of a shared filesystem: NFS's local_lock=flock and
# local_lock=all (nolock, on NFSv2/3, means local_lock=all), Lustre's localflock, GFS2's localflocks
NODE_LOCAL_OPTIONS = ("local_lock=flock", "local_lock=all", "nolock", "localflock", "localflocks")
_warned_mounts = set()  # each such mount is warned about once per process


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


def _unescape(field):
    """A mountinfo path field: space, tab, newline and backslash are written as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def node_local_mount(path, mountinfo=None):
    """(mount point, filesystem type, [options]) when the mount holding `path` has options that make flock
    local to each host (NODE_LOCAL_OPTIONS); None otherwise, or where mountinfo cannot be read (not Linux).
    A mountinfo line: id parent major:minor root MOUNT_POINT MOUNT_OPTIONS [optional...] - FSTYPE source
    SUPER_OPTIONS (NFS lists local_lock=... and nolock among the latter)."""
    try:
        lines = Path(mountinfo or MOUNTINFO).read_text().splitlines()
    except OSError:
        return None
    target, best = os.path.realpath(path), None
    for line in lines:
        f = line.split()
        if len(f) < 10 or "-" not in f[6:]:
            continue
        sep = f.index("-", 6)
        mount_point = _unescape(f[4])
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        # the longest mount point holding the path; of equal ones the last (a mount over an earlier one)
        if inside and (best is None or len(mount_point) >= len(best[0])):
            options = f[5].split(",") + (f[sep + 3].split(",") if len(f) > sep + 3 else [])
            best = (mount_point, f[sep + 1], options)
    if best is None:
        return None
    bad = [o for o in NODE_LOCAL_OPTIONS if o in best[2]]
    return (best[0], best[1], bad) if bad else None


def _warn_node_local(path, warn):
    found = node_local_mount(path.parent)
    if found and found[0] not in _warned_mounts:
        _warned_mounts.add(found[0])
        warn(f"warning: {path.parent} is on {found[1]} {found[0]} mounted with {', '.join(found[2])}: flock "
             "there is local to this host, so a process on another host would get the same lock; start every "
             "process on this directory from one host (README: locks on shared filesystems)")


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
    _warn_node_local(path, warn)
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
