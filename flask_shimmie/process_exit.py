"""Work a process does as it ends (short of a kill): stop the subscription runners, flush metrics.

``atexit`` alone is not enough: a worker that ``multiprocessing`` forked
(granian's workers) leaves with ``os._exit()`` once its work is done, and
atexit handlers never run there. Such a process still shuts ``threading``
down first, as every ending interpreter does, so a callback is registered
there too (the hook ``concurrent.futures`` uses); whichever comes first runs
it, once per process.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable

from .storage.process import fork_generation


def at_process_exit(callback: Callable[[], None]) -> None:
    """Call ``callback`` once when this process (or a forked child of it) ends.

    At the threading shutdown of an ending interpreter, and at exit: the
    first of the two that comes runs it, in each process that reaches it.
    Both come one after the other in the thread that ends the interpreter.
    """
    ran_in: set[int] = set()  # the fork generations (processes) it ran in

    def once() -> None:
        generation = fork_generation()
        if generation not in ran_in:
            ran_in.add(generation)
            callback()

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(once)
    atexit.register(once)
