"""New event ids: time-ordered UUIDs (version 7, RFC 9562) from a per-thread buffer of OS randomness."""

from __future__ import annotations

import os
import threading
import time

from .storage.process import fork_generation

# UUID version 7: 48 bits of milliseconds, version 0111, variant 10, random bits.
_MS_MASK = (1 << 48) - 1
_VERSION_CLEAR = ~(0xF << 76) & ~(0x3 << 62)
_VERSION_7 = 0x7 << 76 | 0x2 << 62


#: Bytes of OS randomness a thread fetches at once for new ids (10 per id).
_ENTROPY_BYTES = 10 * 256


class _Entropy(threading.local):
    """A thread's buffer of OS randomness for new ids.

    ``os.urandom`` lets go of the GIL for its system call; with many writer
    threads, every id handed the interpreter to another thread. Fetching
    randomness for 256 ids at a time keeps that to one call in 256. A forked
    child refills before its first id, so it never repeats its parent's.
    """

    pool = b""
    offset = _ENTROPY_BYTES
    epoch = -1


_entropy = _Entropy()


def _random_80_bits() -> int:
    entropy = _entropy
    offset = entropy.offset
    if offset >= _ENTROPY_BYTES or entropy.epoch != fork_generation():
        entropy.pool = os.urandom(_ENTROPY_BYTES)
        entropy.epoch = fork_generation()
        offset = 0
    entropy.offset = offset + 10
    return int.from_bytes(entropy.pool[offset : offset + 10], "big")


def new_event_id() -> str:
    """A new event id: a time-ordered UUID (version 7, RFC 9562).

    Its first 48 bits are the time in milliseconds, so ids recorded one after
    another sort together and the stores' event-id index grows at one end
    instead of being written all over; the other 74 bits are random, from
    the operating system, so ids cannot be guessed ahead of time.
    """
    value = (time.time_ns() // 1_000_000 & _MS_MASK) << 80 | _random_80_bits()
    value = value & _VERSION_CLEAR | _VERSION_7
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
