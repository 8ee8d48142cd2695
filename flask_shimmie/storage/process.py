"""Fork safety, in one place: values owned by one process, rebuilt by a forked child.

Connections, pools, lock files and threads cannot cross ``fork()``: a child
must neither use nor close what it inherited (closing could end the parent's
sessions or delete its WAL file). Everything per-process in the package is a
:class:`ProcessLocal`, or checks :func:`fork_generation`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_fork_guard = threading.Lock()
_generation = [0]


def _after_fork_in_child() -> None:
    # The parent's lock may have been held by a thread that does not exist here.
    global _fork_guard
    _fork_guard = threading.Lock()
    _generation[0] += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def fork_generation() -> int:
    """How many forks separate this process from the first one (0 there, then 1, 2...)."""
    return _generation[0]


class ProcessLocal(Generic[T]):
    """A value owned by one process: a forked child builds its own on first use.

    The value inherited from the parent is handed to ``abandon`` (never reused),
    which must not release anything in the parent's name.
    """

    def __init__(self, factory: Callable[[], T], abandon: Callable[[T], None]) -> None:
        self._factory = factory
        self._abandon = abandon
        #: (the fork generation that built it, the value)
        self._value: tuple[int, T] | None = None

    def get(self) -> T:
        """This process's value, built when missing."""
        generation = _generation[0]
        value = self._value
        if value is not None and value[0] == generation:
            return value[1]
        with _fork_guard:
            value = self._value
            if value is None or value[0] != generation:
                if value is not None:
                    self._abandon(value[1])
                value = (generation, self._factory())
                self._value = value
            return value[1]

    def pop(self) -> T | None:
        """Forget this process's value and return it (``None`` when there is none)."""
        with _fork_guard:
            value, self._value = self._value, None
        if value is None:
            return None
        if value[0] != _generation[0]:
            self._abandon(value[1])
            return None
        return value[1]
