"""The "notify-new-songs" reactor: tell someone about each new song, once.

Where the notification goes is pluggable: ``SONGS_NOTIFIER`` in the app's
config may be any object with ``notify(key, message)``; without one, a
:class:`LogNotifier` writes it to the log. The key is the event's
``event_id``: a reactor runs at least once per event, so a retried event
reaches the notifier again, and the notifier is what makes it count once.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Protocol

from flask import current_app

from flask_shimmie import Event

logger = logging.getLogger(__name__)

#: The reactor's durable name.
REACTOR_NAME = "notify-new-songs"


class Notifier(Protocol):
    """Something that delivers a notification, at most once per ``key``."""

    def notify(self, key: str, message: str) -> None:
        """Deliver ``message``; a second call with the same ``key`` delivers nothing."""


class LogNotifier:
    """Writes notifications to the log, skipping the keys among the last ``remember`` it wrote."""

    def __init__(self, remember: int = 10_000) -> None:
        self.remember = remember
        self._sent: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def notify(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._sent:
                return
            self._sent[key] = None
            while len(self._sent) > self.remember:
                self._sent.popitem(last=False)
        logger.info("Notification %s: %s", key, message)


def current_notifier() -> Notifier:
    """The app's ``SONGS_NOTIFIER``, or its own :class:`LogNotifier`."""
    configured: Notifier | None = current_app.config.get("SONGS_NOTIFIER")
    if configured is not None:
        return configured
    found: Notifier = current_app.extensions.setdefault("songs_notifier", LogNotifier())
    return found


def notify_new_song(event: Event) -> None:
    """``SONG_CREATED`` → "New song: <title> by <artist> (<year>)", keyed by the event id."""
    data = event.data
    message = f"New song: {data['title']} by {data['artist']} ({data['year']})"
    current_notifier().notify(event.event_id, message)
