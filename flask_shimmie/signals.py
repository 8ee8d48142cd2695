"""The stack's signals: one private blinker namespace, and every public signal.

Each is sent with the app as sender, so a receiver can connect for one app:
``event_recorded.connect(fn, app)``.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent after an event recorded by this process is stored and applied to the
#: models here. Keyword argument: ``event`` (the :class:`~flask_shimmie.Event`).
event_recorded = _signals.signal("shimmie.event-recorded")
#: Sent before a replay rebuilds the models. Keyword argument: ``from_sequence``.
replay_started = _signals.signal("shimmie.replay-started")
#: Sent after a replay finished. Keyword arguments: ``count`` (events applied)
#: and ``last_sequence_num``.
replay_finished = _signals.signal("shimmie.replay-finished")
#: Sent after a stream's PII was erased. Keyword arguments: ``stream_id``,
#: ``erased_events``.
pii_erased = _signals.signal("shimmie.pii-erased")
