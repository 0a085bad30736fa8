"""An exclusive lock on a file, for processes on one machine: fcntl on POSIX, msvcrt on Windows.

Why an OS lock and not a lock file created with O_EXCL: the operating system
drops the lock when the holding process dies, however it dies, so there is no
stale lock to detect or break by guessing from ages or process ids.
The lock file itself stays on disk; holding the lock is what counts.
"""

import os
import time

from torchwin.errors import Failure

if os.name == "nt":
    import msvcrt

    def _try_lock(fd):
        # Lock the first byte (locking past the end of a file is allowed on Windows).
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd):
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd):
        fcntl.flock(fd, fcntl.LOCK_UN)


class FileLock:
    """`with FileLock(path):` waits (polling) until this process holds the lock on path.

    timeout: seconds to wait before giving up with a Failure; on_wait(path) is
    called once when the lock is busy, so the caller can say it is waiting.
    Not re-entrant: one FileLock object per critical section.
    """

    def __init__(self, path, timeout=3600.0, poll=0.05, on_wait=None):
        self.path = path
        self.timeout = timeout
        self.poll = poll
        self.on_wait = on_wait
        self._fd = None

    def acquire(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        told = False
        while not _try_lock(fd):
            if not told and self.on_wait is not None:
                self.on_wait(self.path)
                told = True
            if time.monotonic() > deadline:
                os.close(fd)
                raise Failure(f"timed out after {self.timeout:.0f} s waiting for the lock {self.path}")
            time.sleep(self.poll)
        self._fd = fd

    def release(self):
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                _unlock(fd)
            finally:
                os.close(fd)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
