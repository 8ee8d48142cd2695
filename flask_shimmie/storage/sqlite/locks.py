"""The ``<file>-locks`` sidecar: stream locks, the writers' queue and subscription leases, across processes.

Byte-range ``fcntl`` locks on one sidecar file per database: a byte per stream
(hashed, below 2**62) for :meth:`~flask_shimmie.storage.sqlite.events.SqliteEventStore.lock_stream`,
the byte 2**62 that appending processes queue on, and a byte per subscription
(hashed, above it) for the subscriptions' leases. The kernel drops a dead
process's locks, so a crash never leaves a stream locked or a lease held.
"""

from __future__ import annotations

import errno
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
        self.lease_guard = threading.Lock()
        #: byte offset -> the subscriptions this process holds on it (two names may share a byte).
        self.leases: dict[int, set[str]] = {}


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


#: The first byte of the subscriptions' range (past the writers' queue).
SUBSCRIPTION_LOCKS_OFFSET = WRITER_GATE_OFFSET + 1


def subscription_offset(name: str) -> int:
    """The byte of the lock file that stands for subscription ``name`` (the same in every process)."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    # 2**61 bytes from 2**62 + 1: the range stays well below the largest offset (2**63 - 1).
    return SUBSCRIPTION_LOCKS_OFFSET + (int.from_bytes(digest, "big") & (2**61 - 1))


def try_lock_subscription(lock_file: LockFile, name: str) -> bool:
    """Take subscription ``name``'s byte without waiting; False when another process or store holds ``name``.

    fcntl locks belong to the process, so the process keeps its own account
    of which names it holds: a second taker of the same name in this process
    is refused here, and the byte is unlocked only when the last name on it
    is let go.
    """
    offset = subscription_offset(name)
    with lock_file.lease_guard:
        holders = lock_file.leases.get(offset)
        if holders is not None:
            if name in holders:
                return False
            holders.add(name)
            return True
        try:
            fcntl.lockf(lock_file.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise StoreUnavailableError(
                f"Cannot lock subscription {name!r} in {lock_file.path}: {error}"
            ) from error
        lock_file.leases[offset] = {name}
        return True


def unlock_subscription(lock_file: LockFile, name: str) -> None:
    """Let go of subscription ``name`` taken by :func:`try_lock_subscription` (idempotent)."""
    offset = subscription_offset(name)
    with lock_file.lease_guard:
        holders = lock_file.leases.get(offset)
        if holders is None or name not in holders:
            return
        holders.discard(name)
        if holders:
            return
        del lock_file.leases[offset]
        # Fails only when the file was closed already, which dropped the lock.
        with suppress(OSError):
            fcntl.lockf(lock_file.fd, fcntl.LOCK_UN, 1, offset)


def holds_subscription(lock_file: LockFile, name: str) -> bool:
    """Whether this process holds subscription ``name``'s byte (through :func:`try_lock_subscription`)."""
    with lock_file.lease_guard:
        return name in lock_file.leases.get(subscription_offset(name), ())


class HoldsLockFile:
    """Per-process state of a store that opens its database's lock file on first use.

    Stores on one file share this process's descriptor (see :class:`LockFiles`);
    :meth:`release` lets this store's use of it go, once.
    """

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.lock_file: LockFile | None = None

    def lock_file_for(self, path: str) -> LockFile:
        """The lock file at ``path``, opened (or shared) the first time."""
        with self.guard:
            if self.lock_file is None:
                self.lock_file = lock_files.get().acquire(path)
            return self.lock_file

    def release(self) -> None:
        """Let the lock file go (idempotent); it closes when its last user lets go."""
        with self.guard:
            lock_file, self.lock_file = self.lock_file, None
        if lock_file is not None:
            lock_files.get().release(lock_file)
