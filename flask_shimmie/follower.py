"""The background thread that applies events other processes write."""

from __future__ import annotations

import logging
import threading

from flask import Flask

from .dispatch import Dispatcher

#: Seconds one wait on the store lasts before the stop flag is looked at again.
WAIT_SLICE = 0.2

#: Seconds the follower leaves a local writer to hand over events it just stored.
HANDOVER_PAUSE = 0.005


class Follower:
    """Follows the store and applies new events to this process's models.

    It waits on the store (LISTEN/NOTIFY on PostgreSQL, a cheap poll on
    SQLite), so another process's event is normally applied well within a
    second. Errors are logged and retried with a growing pause; it never dies
    of one.
    """

    def __init__(self, app: Flask, dispatcher: Dispatcher, logger: logging.Logger) -> None:
        self.app = app
        self.dispatcher = dispatcher
        self.logger = logger
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shimmie-follower", daemon=True)

    def start(self) -> None:
        """Start following."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop, and wait for it (at most ``timeout`` seconds)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        pause = 0.1
        with self.app.app_context():
            while not self._stop.is_set():
                try:
                    dispatcher = self.dispatcher
                    # A short wait keeps stop() quick; the store wakes it sooner on news.
                    position = dispatcher.store.wait_for_events(
                        dispatcher.last_handled, WAIT_SLICE, others_only=True
                    )
                    if position > dispatcher.last_handled and not self._stop.is_set():
                        if dispatcher.writes_in_flight:
                            # Likely this process's own write, whose writer is about
                            # to hand the events over: reading them back would be
                            # wasted work. A short pause, then catch up regardless.
                            self._stop.wait(HANDOVER_PAUSE)
                        dispatcher.ensure_handled(position)
                    if dispatcher.on_followed is not None:
                        dispatcher.on_followed()
                    pause = 0.1
                except Exception:
                    self.logger.exception("Following the event store failed; retrying in %.1fs", pause)
                    self._stop.wait(pause)
                    pause = min(pause * 2, 5.0)
