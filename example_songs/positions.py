"""An index of values by increasing position, for paging by cursor without scanning.

``GET /v1/songs?after=<position>`` must find the first song after a position
among many, and songs go (deletes) while pages are read. A sorted list would
make each delete cost O(n); a dict in insertion order cannot seek. Here the
positions sit in sorted chunks of at most :data:`CHUNK`: adding (always at
the end: positions only grow) is an append, removing copies one chunk, and
seeking bisects the chunks' first positions, then one chunk. (An add before
the end, which event order never makes, copies one chunk.)

One thread changes the index (the model's handlers, one event at a time);
request threads read it at the same time, without a lock. That is safe
because a reader only ever sees whole objects: a chunk is changed in place
only by appending at its end, every other change builds a new chunk (or a
new chunk list) and swaps it in with one assignment, which CPython's GIL
makes atomic.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

#: Positions per chunk: small enough that copying one on a delete is cheap.
CHUNK = 512


class PositionIndex:
    """Values by position, in position order."""

    def __init__(self) -> None:
        #: (chunks, first position of each chunk), swapped as one object when chunks come or go.
        self._chunks: tuple[list[list[int]], list[int]] = ([], [])
        self._values: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._values)

    def add(self, position: int, value: str) -> None:
        """Index ``value`` at ``position``; :class:`ValueError` if the position is taken.

        Past the last position (the usual case) this is an append; anywhere
        else it copies one chunk.
        """
        if position in self._values:
            raise ValueError(f"position {position} is indexed already")
        self._values[position] = value
        chunks, firsts = self._chunks
        if not chunks or position > chunks[-1][-1]:
            if chunks and len(chunks[-1]) < CHUNK:
                chunks[-1].append(position)
            else:
                self._chunks = ([*chunks, [position]], [*firsts, position])
            return
        index = max(bisect_right(firsts, position) - 1, 0)
        chunk = chunks[index]
        at = bisect_left(chunk, position)
        grown = [*chunk[:at], position, *chunk[at:]]
        if len(grown) > 2 * CHUNK:
            halves = [grown[:CHUNK], grown[CHUNK:]]
            self._chunks = (
                [*chunks[:index], *halves, *chunks[index + 1 :]],
                [*firsts[:index], halves[0][0], halves[1][0], *firsts[index + 1 :]],
            )
            return
        chunks[index] = grown
        firsts[index] = grown[0]

    def remove(self, position: int) -> None:
        """Forget ``position`` (nothing happens if it is not indexed)."""
        if self._values.pop(position, None) is None:
            return
        chunks, firsts = self._chunks
        index = bisect_right(firsts, position) - 1
        chunk = chunks[index]
        at = bisect_left(chunk, position)
        rest = chunk[:at] + chunk[at + 1 :]
        if not rest:
            self._chunks = (chunks[:index] + chunks[index + 1 :], firsts[:index] + firsts[index + 1 :])
            return
        chunks[index] = rest
        firsts[index] = rest[0]

    def after(self, position: int) -> Iterator[tuple[int, str]]:
        """``(position, value)`` pairs past ``position``, in order.

        Costs a bisection, then the pairs taken. A value removed while the
        iteration runs may still come out; the caller checks it is still there.
        """
        chunks, firsts = self._chunks
        index = max(bisect_right(firsts, position) - 1, 0)
        values = self._values
        while index < len(chunks):
            chunk = chunks[index]
            for found in chunk[bisect_right(chunk, position) :]:
                value = values.get(found)
                if value is not None:
                    yield found, value
            index += 1
