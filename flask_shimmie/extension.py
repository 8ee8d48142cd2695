"""The :class:`ShimmieStack` extension: configuration, mounting, lifecycle, recording."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, overload

import click
from flask import Blueprint, Flask, current_app
from flask.cli import run_command
from marshmallow import Schema
from werkzeug.exceptions import NotFound
from werkzeug.local import LocalProxy

from .auth import AuthorizationNotImplemented, undeclared_views
from .cli import shimmie_cli
from .declarations import NO_EXAMPLE, SchemaLike
from .declarations import doc as declare_doc
from .declarations import response as declare_response
from .dispatch import Receiver
from .errors import (
    PiiNotConfiguredError,
    StoreUnavailableError,
    StreamNotFoundError,
    StreamVersionError,
    register_error_handlers,
)
from .events import ANY, Event, Expected, NewEvent
from .follower import Follower
from .loading import Loaded, load_entry
from .models import Model
from .projections import Projection
from .recording import (
    check_expected,
    check_expected_versions,
    check_name,
    check_names,
    check_position,
)
from .registry import Registry
from .relay import close_sinks, relay_spec
from .request_hooks import install_request_hooks
from .schemas import Upcaster, arguments
from .settings import Settings, normalise_prefix
from .signals import event_recorded, pii_erased, replay_finished, replay_started
from .sinks.base import Sink
from .state import AppState, model_receivers
from .storage.interface import AppendBatch, PendingEvent
from .storage.planner import check_versions
from .subscriptions import Subscription, check_policy, check_subscription_name, projection_spec, reactor_spec
from .tracing import EVENT_COUNT, FROM_SEQUENCE, active_tracer, traced_record
from .tracing import span as traced

M = TypeVar("M", bound=Model)
P = TypeVar("P", bound=Projection)
F = TypeVar("F", bound=Callable[..., Any])

#: The event recorded on a stream when its PII is erased.
PII_ERASED_EVENT = "shimmie.pii_erased"

#: How many times :meth:`ShimmieStack.erase_pii` erases again when a write lands meanwhile.
ERASE_ATTEMPTS = 10

_MISSING: Any = object()


@dataclass(frozen=True)
class _Mount:
    name: str
    mount_point: str
    blueprint: Blueprint
    api_version: str | None


class ShimmieStack:
    """An event-sourced service on Flask: processors, models, an event store.

    ``ShimmieStack(app)`` or ``stack = ShimmieStack()`` then
    ``stack.init_app(app)``. Registrations (processors, models, subscribers,
    schemas, init functions) apply to every app the stack is, or will be,
    initialised on. Per-app state lives in ``app.extensions["shimmie"]``.
    """

    def __init__(self, app: Flask | None = None, *, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(__name__)
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        self._api_version: str | None = None
        self._mounts: list[_Mount] = []
        #: The models, subscribers, payload types and auth hooks every app of this stack uses.
        self.registry = Registry()
        self._pre_init: list[Callable[[], Any]] = []
        self._post_init: list[Callable[[], Any]] = []
        if app is not None:
            self.init_app(app)

    # -- set-up ---------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Read the ``SHIMMIE_*`` config of ``app`` and attach the stack to it.

        Builds (but does not open) the stores, creates the model instances,
        registers the processors mounted so far, the JSON error handlers and
        the request hooks. Raises :class:`ConfigurationError` for a bad value.
        """
        if "shimmie" in app.extensions:
            raise RuntimeError(
                f"A ShimmieStack is already initialised on app {app.name!r}. Call init_app() once per "
                "app; to start over, create a new app (an app factory does)."
            )
        settings = Settings.from_config(app.config)
        state = AppState(self, app, settings, self.logger)
        app.extensions["shimmie"] = state
        register_error_handlers(app)
        app.cli.add_command(shimmie_cli)
        install_request_hooks(app, self, state)
        for model_cls in self.registry.models:
            state.add_model(model_cls)
        for event_name, handler in self.registry.functions:
            state.add_function(event_name, handler)
        for mount in self._mounts:
            self._register_mount(app, settings, mount)
        if settings.admin_url is not None:
            from .admin import create_admin_blueprint

            app.register_blueprint(create_admin_blueprint(), url_prefix=settings.admin_url)
            if settings.metrics:
                from .metrics import install_metrics

                install_metrics(app, state, settings.admin_url, settings.metrics_public)
            if settings.console:
                from .console import create_console_blueprint

                app.register_blueprint(
                    create_console_blueprint(settings.admin_url), url_prefix=settings.admin_url
                )
        if settings.openapi.enabled:
            from .apidocs import create_openapi_blueprint

            app.register_blueprint(
                create_openapi_blueprint(settings.openapi), url_prefix=settings.openapi.url_prefix or None
            )
        self._apps.add(app)

    def set_logger(self, logger: logging.Logger) -> ShimmieStack:
        """Log through ``logger`` instead of the package's own (``flask_shimmie.extension``). Chainable."""
        self.logger = logger
        for app in list(self._apps):
            state = app.extensions["shimmie"]
            state.logger = state.dispatcher.logger = logger
        return self

    def set_api_version(self, version: str) -> ShimmieStack:
        """Prefix the processors mounted from now on with ``version`` (``"/v1"``). Chainable.

        ``""`` clears it. Without it, ``SHIMMIE_API_VERSION`` applies.
        """
        self._api_version = normalise_prefix(version, "api version")
        return self

    def mount_processor(self, name: str, mount_point: str, blueprint: Blueprint) -> ShimmieStack:
        """Register ``blueprint`` at ``<api version><mount_point>`` on every app. Chainable.

        Several processors may share a mount point (a command and a query
        blueprint both at ``/songs``). Mount before an app's first request.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError("mount_processor() needs a processor name, e.g. 'Song Command'.")
        if not isinstance(mount_point, str) or not mount_point.strip():
            raise ValueError(f"mount_processor({name!r}) needs a mount point, e.g. '/songs'.")
        if not isinstance(blueprint, Blueprint):
            raise TypeError(f"mount_processor({name!r}) needs a flask.Blueprint, not {blueprint!r}.")
        mount = _Mount(
            name.strip(), normalise_prefix(mount_point, "mount point"), blueprint, self._api_version
        )
        self._mounts.append(mount)
        self.registry.processors.setdefault(blueprint.name, mount.name)
        for app in list(self._apps):
            self._register_mount(app, app.extensions["shimmie"].settings, mount)
        return self

    def _register_mount(self, app: Flask, settings: Settings, mount: _Mount) -> None:
        version = settings.api_version if mount.api_version is None else mount.api_version
        prefix = f"{version}{mount.mount_point}" or None
        if settings.enforce_authorization:
            missing = undeclared_views(mount.blueprint, prefix)
            if missing:
                raise AuthorizationNotImplemented(mount.name, missing)
        app.register_blueprint(mount.blueprint, url_prefix=prefix)

    def register_model(self, model_cls: type[M]) -> type[M]:
        """Give every app one instance of ``model_cls``; usable as a class decorator.

        Registered after an app started, the new instance is filled from the
        events stored so far before it receives live ones.
        """
        if not (isinstance(model_cls, type) and issubclass(model_cls, Model)):
            raise TypeError(f"register_model() needs a Model subclass, not {model_cls!r}.")
        if model_cls in self.registry.models:
            raise ValueError(f"{model_cls.__qualname__} is already registered.")
        self.registry.models.append(model_cls)
        for app in list(self._apps):
            state: AppState = app.extensions["shimmie"]
            if not state.started:
                state.add_model(model_cls)
                continue
            instance = model_cls()
            pairs = model_receivers(instance)

            def connect(
                state: AppState = state, instance: Model = instance, pairs: list[tuple[str, Receiver]] = pairs
            ) -> None:
                for event_name, receiver in pairs:
                    state.dispatcher.connect(event_name, receiver)
                state.models[model_cls] = instance

            state.dispatcher.rebuild(_by_name(pairs), 1, connect)
        return model_cls

    def model(self, model_cls: type[M]) -> M:
        """The instance of ``model_cls`` for the current app."""
        state = self._state(start=False)
        try:
            return state.models[model_cls]  # type: ignore[return-value]
        except KeyError:
            raise LookupError(
                f"No registered model {getattr(model_cls, '__qualname__', model_cls)!r}; "
                "call stack.register_model() first."
            ) from None

    def load(self, model_cls: type[Model], stream_id: str) -> Loaded | None:
        """``model_cls``'s entry for ``stream_id`` with the stream version it reflects, or ``None``.

        The model implements :meth:`~flask_shimmie.Model.load_entry`.
        The entry is deep-copied while no event is being applied, so
        ``.value`` is consistent and private; ``.record(...)`` records
        against ``.version``, and raises
        :class:`~flask_shimmie.errors.StreamVersionError` (409) when another
        write landed since. Decide on ``.value``, record with ``.record``,
        answer from the event it returns::

            loaded = stack.load_or_404(SongList, song_id)
            event = loaded.record("SONG_DELETED", {})

        Raises :class:`TypeError` for a model without ``load_entry``.
        """
        state = self._state()
        # No check of stream_id: one no stream can have (too long, say) has no entry either.
        return load_entry(self, state, model_cls, stream_id)

    def load_or_404(
        self, model_cls: type[Model], stream_id: str, *, description: str | None = None
    ) -> Loaded:
        """:meth:`load`, or abort with 404 (JSON, ``message`` = ``description``) when there is no entry."""
        loaded = self.load(model_cls, stream_id)
        if loaded is None:
            raise NotFound(description or f"No {model_cls.model_name()} entry for {stream_id!r}.")
        return loaded

    @overload
    def subscribe(self, event_name: str) -> Callable[[F], F]: ...

    @overload
    def subscribe(self, event_name: str, handler: F) -> F: ...

    def subscribe(self, event_name: str, handler: Any = None) -> Any:
        """Call ``handler(event)`` for every ``event_name`` event (``"*"``: every event).

        Usable as ``@stack.subscribe("SONG_CREATED")``. A function receives the
        events of startup replay, and live events, but is not called again by
        :meth:`replay`, which rebuilds models only.
        """
        check_name(event_name, "event_name")

        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"subscribe() needs a callable, not {fn!r}.")
            self.registry.functions.append((event_name, fn))
            for app in list(self._apps):
                app.extensions["shimmie"].add_function(event_name, fn)
            return fn

        return register if handler is None else register(handler)

    def reactor(
        self,
        name: str,
        events: Sequence[str] | None = None,
        *,
        start: str = "now",
        max_attempts: int = 5,
        on_failure: str = "park",
    ) -> Callable[[F], F]:
        """Register the decorated ``fn(event)`` as a durable reactor called ``name``.

        Across every process on the store, one runs it (the lease holder),
        with the events named in ``events`` (``None`` or ``["*"]``: every event) in order,
        at least once each: its position is saved after it returns, so use
        ``event.event_id`` as the idempotency key of its side effect.
        ``start="now"`` begins after the last event stored when the reactor
        is first registered, ``"beginning"`` from the first event. A failing
        call is retried with backoff up to ``max_attempts`` times; then the
        event is parked (``on_failure="park"``) or the reactor stops
        (``"stop"``). Never called by replays. Raises ValueError for a name
        already taken (reactors, projections and relays share one namespace) or a
        choice not offered.
        """
        what = f"reactor {check_subscription_name(name)!r}"
        check_policy(what, start, max_attempts, on_failure)

        def register(fn: F) -> F:
            self._add_subscription(
                reactor_spec(
                    name, fn, events=events, start=start, max_attempts=max_attempts, on_failure=on_failure
                )
            )
            return fn

        return register

    def relay(
        self,
        name: str,
        sink: Sink,
        events: Sequence[str] | None = None,
        *,
        start: str = "beginning",
        max_attempts: int = 5,
        on_failure: str = "park",
        with_pii: bool = False,
    ) -> ShimmieStack:
        """Register a relay called ``name``: a subscription publishing each event through ``sink``.

        Like a reactor (one runner across the processes, a stored position,
        listed by ``flask shimmie subscriptions`` with kind ``relay``), it
        takes the events named in ``events`` (``None``: every event) in order
        from ``start`` (``"beginning"`` by default, or ``"now"``), hands them
        to the sink in batches, and moves its position past those the broker
        confirmed only. A broker outage is waited out for as long as it
        lasts (nothing is parked or skipped); an event the broker refuses for
        good (``SinkError.refused``) is tried ``max_attempts`` times, then
        parked or, with ``on_failure="stop"``, the relay stops there. PII is
        published as placeholders unless ``with_pii``. The sink is closed by
        :meth:`shutdown`. Chainable. Raises ValueError for a name already
        taken or a choice not offered, TypeError for something not a sink.
        """
        self._add_subscription(
            relay_spec(
                name,
                sink,
                events=events,
                start=start,
                max_attempts=max_attempts,
                on_failure=on_failure,
                with_pii=with_pii,
            )
        )
        return self

    def register_projection(self, projection_cls: type[P]) -> type[P]:
        """Register a :class:`~flask_shimmie.Projection` subclass; usable as a class decorator.

        One process at a time applies each event to it exactly once: its
        handlers' writes and its position commit in one transaction. Raises
        ValueError (TypeError for a class that is no Projection) when the
        class has no ``name``, no handler, a bad policy, or a name already taken.
        """
        self._add_subscription(projection_spec(projection_cls))
        return projection_cls

    def _add_subscription(self, spec: Subscription) -> None:
        self.registry.add_subscription(spec)
        for app in list(self._apps):
            state: AppState = app.extensions["shimmie"]
            if state.started:
                self._start_runner(app, state)

    def projection_db(self) -> AbstractContextManager[Any]:
        """A read connection to the projections' tables (the event store's database), for views.

        ``with stack.projection_db() as db: db.execute(sql, params)``: the same
        kind of connection the projections write with (``sqlite3.Connection``
        or ``psycopg.Connection``; placeholders ``?`` / ``%s``).
        """
        return self._state().runner.store.projection_reader()

    def run_subscriptions(self, names: str | Collection[str] | None = None) -> dict[str, int]:
        """Run the subscriptions (or those named) in this thread up to the store's last event.

        For tests and scripts: returns how many events each one's handlers
        took. Failures follow each subscription's policy (retries, then park
        or stop); nothing is raised for them. A subscription another process
        runs right now is left out of the result.
        """
        if isinstance(names, str):
            names = [names]
        return self._state().runner.run_until_caught_up(names)

    def authenticator(self, fn: F) -> F:
        """Register ``fn() -> identity | None``, run at most once per request, when first needed.

        Usable as a decorator. ``flask_shimmie.current_identity`` is its result.
        """
        if not callable(fn):
            raise TypeError(f"authenticator() needs a function, not {fn!r}.")
        self.registry.authenticator = fn
        return fn

    def admin_authorizer(self, check: F) -> F:
        """Register ``check(identity) -> bool`` guarding the admin API (all but ``/health``).

        Usable as a decorator. Without one, the admin API answers 403.
        """
        if not callable(check):
            raise TypeError(f"admin_authorizer() needs a check(identity) -> bool function, not {check!r}.")
        self.registry.admin_authorizer = check
        return check

    def register_pre_init(self, fn: Callable[[], Any]) -> ShimmieStack:
        """Run ``fn()`` at startup, after the stores open and before the replay. Chainable."""
        self._pre_init.append(fn)
        return self

    def register_post_init(self, fn: Callable[[], Any]) -> ShimmieStack:
        """Run ``fn()`` at startup, once the models are up to date. Chainable."""
        self._post_init.append(fn)
        return self

    def event_schema(self, event_name: str, schema: Schema | type[Schema]) -> ShimmieStack:
        """Validate ``event_name`` payloads with a marshmallow ``schema``. Chainable.

        What is stored is ``schema.dump(schema.load(data))``; fields with
        ``metadata={"pii": True}`` are PII. Invalid data raises
        :class:`marshmallow.ValidationError` (422 in a request).
        """
        self.registry.types.set_schema(check_name(event_name, "event_name"), schema)
        return self

    def upcaster(self, event_name: str, from_version: int, fn: Upcaster) -> ShimmieStack:
        """Register ``fn(data) -> data`` upgrading payloads of ``from_version`` by one. Chainable."""
        self.registry.types.add_upcaster(check_name(event_name, "event_name"), from_version, fn)
        return self

    def arguments(self, schema: Schema | type[Schema], location: str = "json") -> Callable[[F], F]:
        """Decorate a view: validate the request's ``location`` and pass the loaded data.

        The loaded data is the view's first positional argument, the URL's
        arguments follow as keywords (as flask-smorest does); invalid data
        answers 422 with ``errors`` nested by location.
        """
        return arguments(schema, location)

    def response(
        self,
        status: int | SchemaLike,
        schema: SchemaLike | int | None = None,
        *,
        description: str | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, Any] | None = None,
        example: Any = NO_EXAMPLE,
    ) -> Callable[[F], F]:
        """Decorate a view: declare that it answers ``status`` with a body ``schema`` describes.

        For the API description (``SHIMMIE_OPENAPI``) only: the view is
        returned unchanged and what it answers is what it returns (nothing is
        dumped through ``schema``). ``response(200, SongSchema)`` as in
        flask-smorest, or ``response(SongSchema, 200)``; ``schema=None`` for no
        body; a JSON Schema dict for a body marshmallow does not describe
        (``{"type": "string"}`` with ``content_type="text/plain"``). See
        ``flask_shimmie.declarations.response``.
        """
        return declare_response(
            status,
            schema,
            description=description,
            content_type=content_type,
            headers=headers,
            example=example,
        )

    def doc(self, **fields: Any) -> Callable[[F], F]:
        """Decorate a view: merge OpenAPI operation ``fields`` into its description (flask-smorest's ``doc``).

        For what the stack cannot see, e.g. a body the view reads itself:
        ``@stack.doc(requestBody={"content": {"application/json": {"schema": SongCreated}}})``.
        """
        return declare_doc(**fields)

    # -- lifecycle ------------------------------------------------------------

    def startup(self, app: Flask | None = None, *, progress: Callable[[int], None] | None = None) -> None:
        """Open the stores, run the pre-init functions, replay, run the post-init functions.

        Every stored event is applied to the models with ``replay=True``. A
        model error aborts startup with :class:`~flask_shimmie.errors.ReplayError`
        naming the event and the model. Idempotent. ``progress(n)`` is called
        after each page of ``n`` replayed events.

        After the replay, each subscription gets its stored row and each
        projection whose lease is free its tables (``setup``); at the very
        end, after the post-init functions, the subscription thread starts
        (see ``SHIMMIE_RUN_SUBSCRIPTIONS``).
        """
        app = self._app(app)
        state = self._state_of(app)
        with state.start_lock:
            if state.started or state.starting:
                return
            state.starting = True
            try:
                with app.app_context():
                    self._start(app, state, progress)
            except BaseException:
                state.close_stores()
                raise
            finally:
                state.starting = False

    def _start(self, app: Flask, state: AppState, progress: Callable[[int], None] | None) -> None:
        state.open_stores()
        for fn in self._pre_init:
            fn()
        if state.dispatcher.last_handled == 0:
            state.dispatcher.last_handled = state.snapshots.restore()
        if replay_started.receivers:
            replay_started.send(app, from_sequence=state.dispatcher.last_handled + 1)
        with traced("shimmie.replay", {FROM_SEQUENCE: state.dispatcher.last_handled + 1}) as span:
            count = state.dispatcher.replay_into_live(progress)
            span.set_attribute(EVENT_COUNT, count)
        self.logger.info("Replayed %s events into %s models", count, len(state.models))
        if replay_finished.receivers:
            replay_finished.send(app, count=count, last_sequence_num=state.dispatcher.last_handled)
        state.runner.prepare()
        state.started = True
        for fn in self._post_init:
            fn()
        if state.event_store.needs_follower:
            state.follower = Follower(app, state.dispatcher, self.logger)
            state.follower.start()
        self._start_runner(app, state)

    def _start_runner(self, app: Flask, state: AppState) -> None:
        """Start the app's subscription thread, unless this process should not run one.

        Not when ``SHIMMIE_RUN_SUBSCRIPTIONS`` is False, nor for a testing app
        (tests call :meth:`run_subscriptions`), nor inside a ``flask``
        command other than ``flask run`` (``flask shimmie subscriptions run``
        runs them in the foreground).
        """
        if not (state.settings.run_subscriptions and self.registry.subscriptions) or app.testing:
            return
        command = click.get_current_context(silent=True)
        if command is not None and command.command is not run_command:
            return
        state.runner.start()

    def shutdown(self, app: Flask | None = None) -> None:
        """Stop the subscriptions and the follower, close the store's connections. ``startup()`` reopens.

        The subscription thread finishes the handler in flight, saves its
        position and releases its leases first.
        """
        app = self._app(app)
        state = self._state_of(app)
        with state.start_lock:
            state.runner.stop()
            close_sinks(self.registry)
            if state.follower is not None:
                state.follower.stop()
                state.follower = None
            state.close_stores()
            state.started = False
            state.dispatcher.live = False

    def replay(self, from_sequence: int = 1, *, progress: Callable[[int], None] | None = None) -> int:
        """Rebuild the models; return how many events were applied.

        ``from_sequence=1`` builds fresh model instances from every stored
        event and swaps them in only if the whole replay succeeded (a model
        error raises :class:`~flask_shimmie.errors.ReplayError` and leaves the
        previous instances in place). A later ``from_sequence`` applies the
        events from there on onto the current instances. ``progress(n)`` is
        called after each page of ``n`` events.
        """
        if not isinstance(from_sequence, int) or isinstance(from_sequence, bool) or from_sequence < 1:
            raise ValueError(f"from_sequence must be a position >= 1, not {from_sequence!r}.")
        state = self._state()
        app = state.app
        if replay_started.receivers:
            replay_started.send(app, from_sequence=from_sequence)
        if from_sequence == 1:
            fresh = {cls: cls() for cls in state.models}
            pairs = [pair for instance in fresh.values() for pair in model_receivers(instance)]

            def swap() -> None:
                for instance in state.models.values():
                    state.dispatcher.disconnect_owner(instance)
                for event_name, receiver in pairs:
                    state.dispatcher.connect(event_name, receiver)
                state.models = fresh
                for cls in fresh:
                    state.dispatcher.degraded.pop(cls.model_name(), None)

        else:
            pairs = [pair for instance in state.models.values() for pair in model_receivers(instance)]

            def swap() -> None:
                pass

        with traced("shimmie.replay", {FROM_SEQUENCE: from_sequence}) as span:
            count = state.dispatcher.rebuild(_by_name(pairs), from_sequence, swap, progress)
            span.set_attribute(EVENT_COUNT, count)
        if replay_finished.receivers:
            replay_finished.send(app, count=count, last_sequence_num=state.dispatcher.last_handled)
        return count

    # -- recording ------------------------------------------------------------

    def record_event(
        self,
        stream_id: str,
        event_name: str,
        data: Mapping[str, Any],
        *,
        expected_version: Expected = _MISSING,
        expected_versions: Mapping[str, Expected] | None = None,
        meta: Mapping[str, Any] | None = None,
        pii_fields: Sequence[str] | None = None,
        event_id: str | None = None,
    ) -> Event:
        """Record one event if the streams are at the expected versions.

        Give exactly one of ``expected_version`` (for ``stream_id``) or
        ``expected_versions`` (``{stream_id: expected}`` over any streams).
        Raises :class:`StreamVersionError` (409) on a mismatch and writes
        nothing. Returns the event once the models here have applied it.
        """
        if (expected_version is _MISSING) == (expected_versions is None):
            raise TypeError(
                "record_event() needs exactly one of expected_version= or expected_versions=; "
                "use record_unchecked_event() to write without a check."
            )
        if expected_versions is not None:
            expected = check_expected_versions(expected_versions)
        else:
            expected = {check_name(stream_id, "stream_id"): check_expected(stream_id, expected_version)}
        state = self._state()
        pending = state.preparer.prepare_fields(stream_id, event_name, data, meta, pii_fields, event_id)
        return self._record_prepared(state, (pending,), expected)[0]

    def record_unchecked_event(
        self,
        stream_id: str,
        event_name: str,
        data: Mapping[str, Any],
        *,
        meta: Mapping[str, Any] | None = None,
        pii_fields: Sequence[str] | None = None,
        event_id: str | None = None,
    ) -> Event:
        """Record one event without a version check."""
        state = self._state()
        pending = state.preparer.prepare_fields(stream_id, event_name, data, meta, pii_fields, event_id)
        return self._record_prepared(state, (pending,), {})[0]

    def record_events(
        self, events: Sequence[NewEvent], expected_versions: Mapping[str, Expected] | None = None
    ) -> list[Event]:
        """Record a batch atomically: all of it, or (on a failed check) none."""
        expected = check_expected_versions(expected_versions) if expected_versions is not None else {}
        return self._record(list(events), expected)

    def record_unchecked_events(self, events: Sequence[NewEvent]) -> list[Event]:
        """Record a batch atomically, without version checks."""
        return self._record(list(events), {})

    def _record(self, events: list[NewEvent], expected: dict[str, Expected]) -> list[Event]:
        state = self._state()
        return self._record_prepared(state, state.preparer.prepare_all(events), expected)

    def _record_prepared(
        self, state: AppState, pending: tuple[PendingEvent, ...], expected: dict[str, Expected]
    ) -> list[Event]:
        tracer = active_tracer()
        if tracer is None or not pending:
            return self._record_now(state, pending, expected)
        return traced_record(
            tracer, state.event_store.backend, pending, lambda: self._record_now(state, pending, expected)
        )

    def _record_now(
        self, state: AppState, pending: tuple[PendingEvent, ...], expected: dict[str, Expected]
    ) -> list[Event]:
        if not pending:
            return []
        dispatcher = state.dispatcher
        batch = AppendBatch(pending, expected)
        quick = state.committer is None and dispatcher.append_and_apply(lambda: state.append(batch))
        if quick:
            result = quick
            stored = result.events
        else:
            with dispatcher.writing():
                result = state.append(batch)
                stored = result.events
                if result.created:
                    dispatcher.offer(stored)
        if not result.created:
            stored = state.decode(stored)
        dispatcher.ensure_handled(stored[-1].sequence_num)
        if result.created and event_recorded.receivers:
            for event in stored:
                event_recorded.send(state.app, event=event)
        return stored

    def lock_stream(self, stream_id: str, timeout: float = 5.0) -> AbstractContextManager[None]:
        """Hold a pessimistic lock on ``stream_id`` (across processes on PostgreSQL and SQLite).

        Raises :class:`ObjectLockedError` (409) if it is not obtained within
        ``timeout`` seconds. Only other ``lock_stream`` callers wait on it.
        """
        lock: AbstractContextManager[None] = self._state().event_store.lock_stream(
            check_name(stream_id, "stream_id"), timeout
        )
        return lock

    # -- reading --------------------------------------------------------------

    def history(
        self, stream_ids: str | Collection[str], event_names: str | Collection[str] | None = None
    ) -> dict[str, Any]:
        """The events of ``stream_ids`` in order, with ``created_at`` / ``updated_at``."""
        ids = check_names(stream_ids, "stream_id") or []
        names = check_names(event_names, "event_name")
        state = self._state()
        events = state.decode(state.event_store.read(0, stream_ids=ids, event_names=names))
        created: datetime | None = events[0].recorded_at if events else None
        updated: datetime | None = events[-1].recorded_at if events else None
        return {"history": events, "created_at": created, "updated_at": updated}

    def read_events(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        stream_ids: str | Collection[str] | None = None,
        event_names: str | Collection[str] | None = None,
        with_pii: bool = True,
    ) -> list[Event]:
        """Stored events after position ``after`` (at most ``limit``), PII merged.

        ``stream_ids`` / ``event_names`` filter (a name or a list of names).
        With ``with_pii=False`` the PII fields hold the anonymised values an
        erasure leaves (``""``, ``0``, ...), for readers that must not see PII.
        """
        after = check_position(after, "after")
        limit = None if limit is None else check_position(limit, "limit")
        ids = check_names(stream_ids, "stream_id")
        names = check_names(event_names, "event_name")
        state = self._state()
        rows = state.event_store.read(after, limit, stream_ids=ids, event_names=names)
        return state.decode(rows, with_pii=with_pii)

    def erase_pii(self, stream_id: str, *, expected_version: Expected = ANY, vacuum: bool = False) -> int:
        """Erase every event's PII on ``stream_id`` for good; return how many events it erased.

        Records a ``shimmie.pii_erased`` event ``{"erased_events": n}`` on the
        stream; from then on its PII fields read as anonymised values. ``n``
        counts the events with PII recorded since the stream's previous
        erasure (orphaned PII rows, whose event never committed, are deleted
        but not counted). Then the deleted bytes leave the database files: on
        SQLite nothing readable is left; on PostgreSQL a plain VACUUM runs,
        or, with ``vacuum``, a VACUUM FULL of the PII table, which guarantees
        the table's files hold no copy but locks the table while it rewrites
        it (see ``flask_shimmie.storage.interface.Backend.purge_residue``).

        With ``expected_version``, nothing is erased unless the stream is at
        that version: :class:`StreamVersionError` (409) otherwise. The
        ``shimmie.pii_erased`` event is recorded against the version read just
        before erasing, so it always directly follows the events whose PII is
        gone; when another write lands meanwhile, the erasure is done again
        and recorded against the new version (up to ``ERASE_ATTEMPTS``
        times, then :class:`StreamVersionError`).

        Raises :class:`StreamNotFoundError` (404) for a stream without events,
        and records nothing then. Raises :class:`StoreUnavailableError` when
        the clean-up of the files could not complete; the PII is erased and the
        event recorded all the same, and erasing again retries the clean-up.
        """
        state = self._state()
        check_name(stream_id, "stream_id")
        expected = check_expected(stream_id, expected_version)
        if state.pii_store is None:
            raise PiiNotConfiguredError("SHIMMIE_PII_STORE is False: there is no PII to erase.")
        conflict: StreamVersionError | None = None
        for attempt in range(ERASE_ATTEMPTS):
            events = state.event_store.read(0, stream_ids=[stream_id])
            if not events:
                raise StreamNotFoundError(stream_id, "erase")
            version = events[-1].stream_version
            if attempt == 0:
                refused = check_versions({stream_id: expected}, {stream_id: version})
                if refused:
                    raise StreamVersionError(refused)
            count = _events_with_pii_since_last_erasure(events)
            state.pii_store.erase_stream(stream_id)
            state.event_store.delete_snapshots()  # they may hold the erased values
            # The stream exists: its id is accepted even if it predates check_stream_id,
            # since erasure must stay possible for every stream.
            pending = state.preparer.prepare_fields(
                stream_id, PII_ERASED_EVENT, {"erased_events": count}, None, None, None, existing_stream=True
            )
            try:
                self._record_prepared(state, (pending,), {stream_id: version})
            except StreamVersionError as error:
                conflict = error
                continue
            # Again: a snapshot taken since the first deletion (at a checkpoint of another
            # write) holds the erased values; one taken from now on has the erasure applied.
            state.event_store.delete_snapshots()
            if pii_erased.receivers:
                pii_erased.send(state.app, stream_id=stream_id, erased_events=count)
            break
        else:
            assert conflict is not None
            raise conflict
        # Last, as it is the part that can wait on other connections: the
        # erasure above stands whether or not the files could be cleaned.
        try:
            state.pii_store.purge_residue(vacuum=vacuum)
            state.event_store.purge_residue(vacuum=vacuum)
        except StoreUnavailableError as error:
            raise StoreUnavailableError(
                f"The PII of {count} events on stream {stream_id!r} is erased, but copies of it may "
                f"remain in the database files: {error} Erase the stream again to retry."
            ) from error
        return count

    @property
    def last_handled_sequence_num(self) -> int:
        """The position applied to this process's models, for the current app."""
        return self._state().dispatcher.last_handled

    def ensure_handled(self, min_sequence_num: int | None = None) -> int:
        """Apply stored events up to ``min_sequence_num`` (default: the store's last).

        Returns the last handled position.
        """
        return self._state().dispatcher.ensure_handled(min_sequence_num)

    # -- app and state lookup -------------------------------------------------

    def _app(self, app: Flask | None) -> Flask:
        if app is not None:
            return app
        try:
            found: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        except RuntimeError:
            raise RuntimeError(
                "This ShimmieStack call needs an app: call it inside an app context "
                "(with app.app_context(): ...) or pass app=."
            ) from None
        return found

    def _state_of(self, app: Flask) -> AppState:
        state = app.extensions.get("shimmie")
        if state is None or state.stack is not self:
            raise RuntimeError(
                f"This ShimmieStack is not initialised on app {app.name!r}. "
                "Did you forget to call init_app(app)?"
            )
        return state  # type: ignore[no-any-return]

    def _state(self, app: Flask | None = None, *, start: bool = True) -> AppState:
        state = self._state_of(self._app(app))
        return state.ready() if start else state.for_this_process()


def _by_name(pairs: list[tuple[str, Receiver]]) -> dict[str, tuple[Receiver, ...]]:
    table: dict[str, tuple[Receiver, ...]] = {}
    for event_name, receiver in pairs:
        table[event_name] = table.get(event_name, ()) + (receiver,)
    return table


def _events_with_pii_since_last_erasure(events: list[Event]) -> int:
    """How many of a stream's ``events`` carry PII recorded after its last ``shimmie.pii_erased``.

    Every erasure is recorded right after the events it erased (see
    :meth:`ShimmieStack.erase_pii`), so these are the ones the next erases.
    """
    count = 0
    for event in events:
        if event.event_name == PII_ERASED_EVENT:
            count = 0
        elif event.pii_fields:
            count += 1
    return count


def _current_stack() -> ShimmieStack:
    state = current_app.extensions.get("shimmie")
    if state is None:
        raise RuntimeError("No ShimmieStack is initialised on the current app. Did you call init_app(app)?")
    stack: ShimmieStack = state.stack
    return stack


#: The :class:`ShimmieStack` of ``current_app``.
current_stack: ShimmieStack = LocalProxy(_current_stack)  # type: ignore[assignment]
