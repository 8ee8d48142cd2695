"""What the stack keeps per app, in ``app.extensions["shimmie"]``."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any

from flask import Flask

from .dispatch import Dispatcher, Receiver
from .errors import PiiNotConfiguredError, ShimmieError
from .events import Event
from .follower import Follower
from .group_commit import GroupCommitter
from .models import Model, readable_name
from .pii import merge_pii
from .recording import EventPreparer
from .runner import SubscriptionRunner
from .settings import Settings
from .snapshots import Snapshotter
from .storage import open_storage
from .storage.interface import AppendBatch, AppendResult, EventStore, PiiRecord, PiiStore
from .storage.process import fork_generation
from .tracing import active_tracer, append_attributes

if TYPE_CHECKING:
    from .extension import ShimmieStack
    from .metrics import Metrics


class AppState:
    """The stores, the dispatcher and the models of one app."""

    def __init__(self, stack: ShimmieStack, app: Flask, settings: Settings, logger: logging.Logger) -> None:
        self.stack = stack
        self.registry = stack.registry
        self.app = app
        self.settings = settings
        self.logger = logger
        self.storage = open_storage(settings, app.instance_path)
        self.event_store: EventStore = self.storage.event_store
        self.pii_store: PiiStore | None = self.storage.pii_store
        self.pii_colocated = self.storage.pii_colocated
        self.dispatcher = Dispatcher(app, self.event_store, self.decode, logger)
        self.committer: GroupCommitter | None = None
        if self.event_store.supports_group_commit:
            write_pii = self.pii_colocated and self.pii_store is not None
            self.committer = GroupCommitter(
                lambda batches: self.event_store.append_batches(batches, write_pii=write_pii),
                self._apply_group,
            )
        self.snapshots = Snapshotter(self, settings.snapshot_every, logger)
        self.dispatcher.checkpoint_every = settings.snapshot_every
        self.dispatcher.on_checkpoint = self.snapshots.take
        types = self.registry.types
        self.preparer = EventPreparer(types.load, types.version, self.pii_store is not None)
        self.models: dict[type[Model], Model] = {}
        self.started = False
        self.starting = False
        self.stores_open = False
        self.start_lock = threading.RLock()
        self.follower: Follower | None = None
        #: Runs this app's reactors and projections in this process (see :mod:`flask_shimmie.runner`).
        self.runner = SubscriptionRunner(self)
        #: What ``SHIMMIE_METRICS`` counts (``None`` when it is off); see :mod:`flask_shimmie.metrics`.
        self.metrics: Metrics | None = None
        #: The fork generation this state was set up in (see :meth:`for_this_process`).
        self.generation = fork_generation()

    def for_this_process(self) -> AppState:
        """This state, first forgetting a parent's threads and locks if the process was forked."""
        if self.generation != fork_generation():
            self.after_fork()
        return self

    def ready(self) -> AppState:
        """This state for this process, started (``SHIMMIE_AUTO_STARTUP``) if it was not yet.

        Raises :class:`ShimmieError` when it has not started and auto-startup is off.
        """
        self.for_this_process()
        if not self.started:
            if not self.settings.auto_startup and not self.starting:
                raise ShimmieError(
                    "The stack has not started and SHIMMIE_AUTO_STARTUP is False; call stack.startup()."
                )
            self.stack.startup(self.app)
        return self

    # -- models and subscriptions ---------------------------------------------

    def add_model(self, model_cls: type[Model]) -> Model:
        """Create ``model_cls``'s instance for this app and connect its handlers."""
        instance = model_cls()
        for event_name, receiver in model_receivers(instance):
            self.dispatcher.connect(event_name, receiver)
        self.models[model_cls] = instance
        return instance

    def add_function(self, event_name: str, handler: Callable[[Event], Any]) -> None:
        """Connect a plain function subscriber."""
        label = readable_name(handler)
        self.dispatcher.connect(event_name, Receiver(handler, label, label))

    # -- storage --------------------------------------------------------------

    def open_stores(self) -> None:
        """Open the event store and the PII store (once); purge orphaned PII rows."""
        if self.stores_open:
            return
        purged = self.storage.open()
        if purged:
            self.logger.warning("Purged %s PII rows whose events were never stored", purged)
        self.stores_open = True

    def close_stores(self) -> None:
        """Close both stores (the colocated PII store closes with the event store)."""
        self.stores_open = False
        self.storage.close()

    def append(self, batch: AppendBatch) -> AppendResult:
        """Append ``batch`` (see :meth:`_append`), counted for the metrics and traced when they are on."""
        tracer = active_tracer()
        if tracer is None:
            return self._counted_append(batch)
        attributes = append_attributes(self.event_store.backend, batch.events)
        with tracer.start_as_current_span("shimmie.append", attributes=attributes):
            return self._counted_append(batch)

    def _counted_append(self, batch: AppendBatch) -> AppendResult:
        metrics = self.metrics
        if metrics is None:
            return self._append(batch)
        start = perf_counter()
        result = self._append(batch)
        metrics.appended(result, perf_counter() - start)
        return result

    def _append(self, batch: AppendBatch) -> AppendResult:
        """Append ``batch`` with its PII: in one transaction when both share a database.

        With a separate PII store, the PII is written first; if the batch is
        then refused, those rows are deleted again (and any left behind by a
        crash are purged at the next startup, never read meanwhile).
        """
        records = [
            PiiRecord(e.event_id, e.stream_id, e.pii_json) for e in batch.events if e.pii_json is not None
        ]
        if records and self.pii_store is None:
            raise PiiNotConfiguredError("SHIMMIE_PII_STORE is False: this app keeps no PII.")
        if self.committer is not None:
            append = self.committer.append
        else:
            append = functools.partial(self.event_store.append, write_pii=self.pii_colocated)
        if not records or self.pii_colocated:
            return append(batch)
        assert self.pii_store is not None
        known = self.event_store.existing_event_ids([r.event_id for r in records])
        fresh = [r for r in records if r.event_id not in known]
        if fresh:
            self.pii_store.put(fresh)
        try:
            return append(batch)
        except BaseException:
            if fresh:
                self.pii_store.delete([r.event_id for r in fresh])
            raise

    def _apply_group(self, results: Sequence[AppendResult]) -> None:
        """Apply a committed group's new events at once, in the committing thread.

        Its writers then find their events applied when they wake, instead
        of each queueing for the dispatch lock: under many threads the
        hand-offs cost more than the work.
        """
        created = [event for result in results if result.created for event in result.events]
        if not created:
            return
        try:
            self.dispatcher.offer(created)
            self.dispatcher.ensure_handled(max(event.sequence_num for event in created))
        except Exception:  # each writer catches up on its own then
            self.logger.exception("Applying a committed group of events failed")

    def reset_models(self) -> None:
        """Replace every model with a fresh instance (after a failed restore)."""
        for model_cls, instance in list(self.models.items()):
            self.dispatcher.disconnect_owner(instance)
            self.add_model(model_cls)

    def after_fork(self) -> None:
        """Forget what belonged to the parent process: threads, locks, started state.

        The models and the position they reached are kept; the next startup
        opens the stores afresh here and catches up from that position.
        """
        self.generation = fork_generation()
        self.follower = None
        self.runner = SubscriptionRunner(self)
        self.started = self.starting = self.stores_open = False
        self.start_lock = threading.RLock()
        self.dispatcher.after_fork()

    def decode(self, events: list[Event], *, with_pii: bool = True) -> list[Event]:
        """Make stored events deliverable: PII merged back, payloads upcast.

        Without ``with_pii``, PII fields keep their placeholders (the values an
        erasure leaves) while ``pii_erased`` is still set where it applies.
        """
        events = self.merge_pii(events, with_values=with_pii)
        types = self.registry.types
        if types.upcasters:
            events = [
                dataclasses.replace(e, data=types.upcast(e.event_name, e.schema_version, e.data))
                if e.event_name in types.upcasters and e.schema_version < types.version(e.event_name)
                else e
                for e in events
            ]
        return events

    def merge_pii(self, events: list[Event], *, with_values: bool = True) -> list[Event]:
        """Put PII back into stored events (unless not ``with_values``); mark those whose PII was erased."""
        wanted = [event.event_id for event in events if event.pii_fields]
        if not wanted:
            return events
        found = self.pii_store.get_json(wanted) if self.pii_store is not None else {}
        merged = []
        for event in events:
            if event.pii_fields:
                values = found.get(event.event_id)
                if values is None:
                    event = dataclasses.replace(event, pii_erased=True)
                elif with_values:
                    merge_pii(event.data, json.loads(values))
            merged.append(event)
        return merged


def model_receivers(instance: Model) -> list[tuple[str, Receiver]]:
    """The ``(event_name, receiver)`` pairs of a model instance's handlers."""
    cls = type(instance)
    return [
        (event_name, Receiver(getattr(instance, method), f"{cls.model_name()}.{method}", cls.model_name()))
        for event_name, method in cls.subscriptions()
    ]
