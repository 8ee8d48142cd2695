"""The app the subscription process tests run in other processes: a journaling reactor and a projection.

``flask --app tests.subscription_app:create_app shimmie subscriptions run`` (config from ``FLASK_*``
variables, e.g. ``FLASK_SHIMMIE_EVENT_STORE``). The reactor ``journal`` appends one line per event
it handles, ``<pid> <sequence_num> <event_id>``, to the file ``$SUBS_JOURNAL`` (one ``write()`` of
an ``O_APPEND`` file: a line is whole or absent, even under SIGKILL). The projection ``tally``
(:class:`tests.subscription_harness.Tally`) writes one row per event, and sleeps
``$SUBS_TALLY_DELAY`` seconds per event so that a kill often lands inside a transaction.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask

from flask_shimmie import Event, ShimmieStack, subscribe
from tests.subscription_harness import Tally

JOURNAL_ENV = "SUBS_JOURNAL"
DELAY_ENV = "SUBS_TALLY_DELAY"

stack = ShimmieStack()


@stack.reactor("journal", start="beginning")
def journal(event: Event) -> None:
    """Append ``<pid> <sequence_num> <event_id>`` to the journal file."""
    line = f"{os.getpid()} {event.sequence_num} {event.event_id}\n".encode()
    fd = os.open(os.environ[JOURNAL_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@stack.register_projection
class SlowTally(Tally):
    """:class:`Tally`, taking ``$SUBS_TALLY_DELAY`` seconds per event."""

    @subscribe("*")
    def count(self, event: Event, db: Any) -> None:
        delay = float(os.environ.get(DELAY_ENV) or 0)
        if delay:
            time.sleep(delay)
        super().count(event, db)


def create_app() -> Flask:
    """The app, configured from the ``FLASK_*`` environment variables."""
    app = Flask(__name__)
    app.config.from_prefixed_env()
    stack.init_app(app)
    return app
