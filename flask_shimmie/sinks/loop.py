"""A private asyncio event loop on a thread of its own, for a client library that is asyncio only.

The caller's thread (a relay's, a request's) stays synchronous: it hands a
coroutine to the loop and blocks on the result, with a deadline. The loop
never runs the application's code, only the client's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread; :meth:`run` executes a coroutine on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coroutine`` on the loop; return its result or raise its exception.

        Raises :class:`TimeoutError` after ``timeout`` seconds, and cancels it.
        """
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done():  # the coroutine's own timeout, not ours
                raise
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g}s") from None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and wait (at most ``timeout`` s) for its thread to end."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
