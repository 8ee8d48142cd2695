"""The ``<file>-locks`` sidecar: stream locks and the writers' queue, across processes.

Byte-range ``fcntl`` locks on one sidecar file per database: a byte per stream
(hashed) for :meth:`~flask_shimmie.storage.sqlite.events.SqliteEventStore.lock_stream`,
and one byte past them all that appending processes queue on. The kernel drops
a dead process's locks, so a crash never leaves a stream locked.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from ...errors import StoreUnavailableError
from ..process import ProcessLocal
from ..threads import StreamLocks


class LockFile:
    """A ``<file>-locks`` sidecar, open once in this process, and the thread locks in front of it."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise StoreUnavailableError(f"Cannot open the stream lock file {path}: {error}") from error
        # fcntl locks belong to the process, so they cannot keep two of its
        # threads apart: these locks do that first.
        self.threads = StreamLocks()
        self.writer = threading.Lock()
        self.users = 0


class LockFiles:
    """This process's open lock files, one per path.

    Closing any descriptor of a file drops every fcntl lock the process holds
    on it, so stores on the same file share one descriptor, closed only when
    the last of them closes.
    """

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.files: dict[str, LockFile] = {}

    def acquire(self, path: str) -> LockFile:
        with self.guard:
            lock_file = self.files.get(path)
            if lock_file is None:
                lock_file = self.files[path] = LockFile(path)
            lock_file.users += 1
            return lock_file

    def release(self, lock_file: LockFile) -> None:
        with self.guard:
            lock_file.users -= 1
            if lock_file.users == 0 and self.files.get(lock_file.path) is lock_file:
                del self.files[lock_file.path]
                os.close(lock_file.fd)

    def abandon(self) -> None:
        # A child holds none of its parent's fcntl locks, so closing the
        # inherited descriptors here cannot release them.
        for lock_file in self.files.values():
            os.close(lock_file.fd)
        self.files.clear()


lock_files: ProcessLocal[LockFiles] = ProcessLocal(LockFiles, LockFiles.abandon)


def lock_offset(stream_id: str) -> int:
    """The byte of the lock file that stands for ``stream_id`` (the same in every process)."""
    digest = hashlib.blake2b(stream_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**62 - 1)


#: The byte of the lock file that appending processes queue on (past every stream's byte).
WRITER_GATE_OFFSET = 2**62


@contextmanager
def writer_gate(lock_file: LockFile) -> Iterator[None]:
    """Queue this process's appends behind other processes' in the kernel, not in SQLite.

    ``BEGIN IMMEDIATE`` alone makes a process that finds the file busy sleep
    in SQLite's busy handler (1, 2, 5, 10 ms...), while a commit takes well
    under a millisecond, so two processes writing at once waste most of
    their time asleep. A blocking ``fcntl`` lock wakes the next writer as
    soon as the holder lets go. It is only a queue: ``BEGIN IMMEDIATE``
    still decides, so writers that do not take it (snapshots, PII, other
    tools) stay safe, and a dead holder's lock is dropped by the kernel.
    """
    with lock_file.writer:
        try:
            fcntl.lockf(lock_file.fd, fcntl.LOCK_EX, 1, WRITER_GATE_OFFSET)
            queued = True
        except OSError:  # EDEADLK, or the file went away: go on without the queue
            queued = False
        try:
            yield
        finally:
            if queued:
                with suppress(OSError):
                    fcntl.lockf(lock_file.fd, fcntl.LOCK_UN, 1, WRITER_GATE_OFFSET)
