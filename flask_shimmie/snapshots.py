"""Model snapshots: a restart replays only the events after the last snapshot.

Every ``SHIMMIE_SNAPSHOT_EVERY`` events the dispatcher, holding its lock, asks
each model for :meth:`~flask_shimmie.Model.snapshot` and stores them all at
that position in one transaction. At startup, if every receiver is a model
with a usable snapshot at one position, the models are restored and only the
later events are replayed. Plain function subscribers cannot be restored, so
their presence means a full replay. Erasing PII deletes the snapshots, which
may hold the erased values.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from .storage.interface import Snapshot

if TYPE_CHECKING:
    from .state import AppState


class Snapshotter:
    """Takes and restores the snapshots of one app's models."""

    def __init__(self, state: AppState, every: int, logger: logging.Logger) -> None:
        self.state = state
        self.every = every
        self.logger = logger

    def usable(self) -> bool:
        """True when every receiver belongs to a model that implements snapshots."""
        state = self.state
        if not self.every or not state.models:
            return False
        if not all(type(model).supports_snapshots() for model in state.models.values()):
            return False
        owners = {model.model_name() for model in state.models}
        return all(receiver.owner in owners for receiver in state.dispatcher.all_receivers())

    def take(self, position: int) -> None:
        """Store every model's state as of ``position``; log and carry on if one fails."""
        if not self.usable():
            return
        try:
            snapshots = [
                Snapshot(cls.model_name(), position, cls.snapshot_version, json.dumps(model.snapshot()))
                for cls, model in self.state.models.items()
            ]
            self.state.event_store.save_snapshots(snapshots)
        except Exception:
            self.logger.exception("Taking model snapshots at position %s failed; carrying on", position)

    def restore(self) -> int:
        """Restore the models from snapshots at one common position; return it (0: none used)."""
        if not self.usable():
            return 0
        state = self.state
        try:
            stored = {s.model: s for s in state.event_store.load_snapshots()}
            wanted = {cls.model_name(): cls for cls in state.models}
            found = [stored.get(name) for name in wanted]
            usable = [s for s in found if s is not None and s.version == wanted[s.model].snapshot_version]
            positions = {s.position for s in usable}
            if len(usable) != len(wanted) or len(positions) != 1:
                return 0
            (position,) = positions
            if position > state.event_store.last_sequence_num():
                return 0  # snapshots of events this store does not hold: not ours
            for snapshot in usable:
                state.models[wanted[snapshot.model]].restore(json.loads(snapshot.state_json))
        except Exception:
            self.logger.exception("Restoring model snapshots failed; replaying every event instead")
            state.reset_models()
            return 0
        self.logger.info("Restored %s models from snapshots at position %s", len(usable), position)
        return position
