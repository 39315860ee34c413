"""File locks: an exclusive ``flock`` on a lock file kept next to the file it guards.

One process at a time holds a :class:`FileLock`; it is released by :meth:`FileLock.close` (or
the end of a ``with`` block), and by the process ending. Where there is no ``fcntl`` (not POSIX),
a lock is taken by nobody and always granted.
"""

from __future__ import annotations

__all__ = ["FileLock"]

import os
from collections.abc import Callable
from types import TracebackType

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock
    fcntl = None  # type: ignore[assignment]


class FileLock:
    """Hold the exclusive lock on ``lock_path`` (made, mode 0600, when missing).

    With ``wait`` the lock is waited for; without, a lock held elsewhere raises what ``busy``
    makes (the OSError itself when ``busy`` is None). Check the guarded path before making a
    lock next to it.
    """

    __slots__ = ("_fd", "lock_path")

    def __init__(
        self, lock_path: str, *, wait: bool, busy: Callable[[], BaseException] | None = None
    ) -> None:
        self.lock_path = lock_path
        self._fd: int | None = None
        if fcntl is None:  # pragma: no cover
            return
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            if wait or busy is None:
                raise
            raise busy() from None
        self._fd = fd

    def close(self) -> None:
        """Release the lock (again: nothing)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
