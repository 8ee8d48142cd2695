"""Prometheus metrics at ``<SHIMMIE_ADMIN_URL>/metrics`` (``SHIMMIE_METRICS = True``).

Counted as the stack works: ``shimmie_events_appended_total{event_name}``,
``shimmie_append_seconds{store}`` (a histogram of the store's appends),
``shimmie_replay_events_total``. Read when scraped: ``shimmie_last_stored_position``,
``shimmie_last_handled_position``, ``shimmie_follower_lag_events`` (stored minus
handled), ``shimmie_store_up``, and per durable subscription (from the store's
``shimmie_subscriptions`` rows) ``shimmie_subscription_position``,
``shimmie_subscription_lag_events`` and ``shimmie_parked_events``.

Each app keeps its counts in plain integers, in a registry of its own, and
turns them into metric families when scraped: that costs an append far less
than ``prometheus_client``'s own metric objects do. With
``PROMETHEUS_MULTIPROC_DIR`` set (several worker processes), each worker also
adds its counts, a few times a second, to ``prometheus_client``'s metrics,
whose values live in per-process files there, so that any worker answers with
the totals of all; those metric objects are shared by every app of the
process, since the files are per process. ``prometheus_client`` is imported
only here, and only when the setting is on.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
import weakref
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from flask import Blueprint, Flask, Response, current_app, request

from .errors import ConfigurationError
from .process_exit import at_process_exit
from .signals import replay_finished

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from .state import AppState
    from .storage.interface import AppendResult

logger = logging.getLogger(__name__)

#: The environment variable that turns on prometheus_client's multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: ``shimmie_append_seconds``' bucket bounds: an append takes ~10 µs in memory, ~0.3 ms on
#: SQLite, ~1 ms on PostgreSQL; slower than a second is an outage.
APPEND_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)

#: Appends (and event names) queued before a writer folds them into the counts.
FOLD_EVERY = 256
FOLD_NAMES = 4096

APPENDED = "shimmie_events_appended_total"
APPEND_SECONDS = "shimmie_append_seconds"
REPLAYED = "shimmie_replay_events_total"
LAST_STORED = "shimmie_last_stored_position"
LAST_HANDLED = "shimmie_last_handled_position"
FOLLOWER_LAG = "shimmie_follower_lag_events"
STORE_UP = "shimmie_store_up"
SUBSCRIPTION_POSITION = "shimmie_subscription_position"
SUBSCRIPTION_LAG = "shimmie_subscription_lag_events"
PARKED = "shimmie_parked_events"

_HELP = {
    APPENDED: "Events this app appended to the event store, by event name.",
    APPEND_SECONDS: "Seconds an append of one batch of events to the store took, by store backend.",
    REPLAYED: "Events applied to the models by replays (startup and stack.replay()).",
    LAST_STORED: "Position of the last event in the event store.",
    LAST_HANDLED: (
        "Position applied to the models of this process (with several worker processes: of the "
        "one furthest behind)."
    ),
    FOLLOWER_LAG: "Events stored but not yet applied to the models (last stored minus last handled).",
    STORE_UP: "1 when the scrape could read the event store, else 0 (the positions are then left out).",
    SUBSCRIPTION_POSITION: "Position of the last event a durable subscription processed.",
    SUBSCRIPTION_LAG: "Events stored after a durable subscription's position.",
    PARKED: "Events a durable subscription parked after its retries.",
}


class Metrics(ABC):
    """What one app counts, and the registry a scrape renders."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        #: The event store's backend kind: the ``store`` label.
        self.store = state.event_store.backend

    @abstractmethod
    def appended(self, result: AppendResult, seconds: float) -> None:
        """Count one append that returned ``result`` after ``seconds``."""

    @abstractmethod
    def replayed(self, count: int) -> None:
        """Count ``count`` events applied by a replay."""

    @abstractmethod
    def followed(self) -> None:
        """The follower thread finished a pass (it calls this a few times a second)."""

    @abstractmethod
    def registry(self) -> CollectorRegistry:
        """The registry a scrape renders."""

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape's body and content type, in the format ``accept`` asks for (text by default)."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry()), content_type

    def _on_replay_finished(self, sender: Any, *, count: int, **_: Any) -> None:
        self.replayed(count)

    def position_families(self, last_handled: int | None) -> Iterator[Metric]:
        """The gauges read from the store at scrape time (``last_handled``: this process's, or ``None``)."""
        from prometheus_client.core import GaugeMetricFamily

        state = self.state
        try:
            stored = state.event_store.last_sequence_num()
            subscriptions = state.event_store.subscription_store()
            rows = [(info, len(subscriptions.parked(info.name))) for info in subscriptions.all()]
        except Exception:  # a scrape must answer, with what it has, when the store is down
            logger.warning("The metrics could not read the event store", exc_info=True)
            yield GaugeMetricFamily(STORE_UP, _HELP[STORE_UP], value=0)
            return
        yield GaugeMetricFamily(STORE_UP, _HELP[STORE_UP], value=1)
        yield GaugeMetricFamily(LAST_STORED, _HELP[LAST_STORED], value=stored)
        if last_handled is not None:
            yield GaugeMetricFamily(LAST_HANDLED, _HELP[LAST_HANDLED], value=last_handled)
            lag = max(stored - last_handled, 0)
            yield GaugeMetricFamily(FOLLOWER_LAG, _HELP[FOLLOWER_LAG], value=lag)
        labels = ["subscription"]
        position = GaugeMetricFamily(SUBSCRIPTION_POSITION, _HELP[SUBSCRIPTION_POSITION], labels=labels)
        lag_family = GaugeMetricFamily(SUBSCRIPTION_LAG, _HELP[SUBSCRIPTION_LAG], labels=labels)
        parked = GaugeMetricFamily(PARKED, _HELP[PARKED], labels=labels)
        for info, count in rows:
            position.add_metric([info.name], info.position)
            lag_family.add_metric([info.name], max(stored - info.position, 0))
            parked.add_metric([info.name], count)
        yield position
        yield lag_family
        yield parked


class _Collector:
    """Hands a registry the families of a callable, at each scrape."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return list(self._families())


class _Counts(NamedTuple):
    by_name: dict[str, int]
    buckets: list[int]
    seconds: float
    replayed: int


class LocalMetrics(Metrics):
    """One process: the counts are plain integers of this app, made metric families when scraped.

    An append only queues its duration and its events' names, on two deques
    (thread-safe without a lock); every :data:`FOLD_EVERY` appends, and at
    each scrape, the queues are folded into the counts under a lock. An
    append's few touches of two deques cost it about 30 % less than counting
    at once, whose counters are cold in the CPU's caches by then.
    """

    def __init__(self, state: AppState) -> None:
        super().__init__(state)
        from prometheus_client.registry import CollectorRegistry

        self._times: deque[float] = deque()
        self._names: deque[str] = deque()
        self._lock = threading.Lock()
        self._by_name: dict[str, int] = {}
        #: Appends per bucket (not cumulative); the last one is ``+Inf``.
        self._buckets = [0] * (len(APPEND_BUCKETS) + 1)
        self._seconds = 0.0
        self._replayed = 0
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(self._families))

    def appended(self, result: AppendResult, seconds: float) -> None:
        times = self._times
        times.append(seconds)
        if result.created:
            events = result.events
            if len(events) == 1:
                self._names.append(events[0].event_name)
            else:
                names = self._names
                names.extend([event.event_name for event in events])
                if len(names) >= FOLD_NAMES:
                    self._fold()
                    return
        if len(times) >= FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        """Count what the queues hold: only a folder takes from them, one at a time."""
        with self._lock:
            times, names = self._times, self._names
            buckets, counts = self._buckets, self._by_name
            seconds = self._seconds
            for _ in range(len(times)):
                took = times.popleft()
                buckets[bisect_left(APPEND_BUCKETS, took)] += 1
                seconds += took
            self._seconds = seconds
            for _ in range(len(names)):
                name = names.popleft()
                counts[name] = counts.get(name, 0) + 1

    def replayed(self, count: int) -> None:
        with self._lock:
            self._replayed += count

    def followed(self) -> None:
        """Nothing to publish: a scrape reads this process's position itself."""

    def registry(self) -> CollectorRegistry:
        return self._registry

    def snapshot(self) -> _Counts:
        """A copy of the counts so far."""
        self._fold()
        with self._lock:
            return _Counts(dict(self._by_name), list(self._buckets), self._seconds, self._replayed)

    def _families(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        by_name, buckets, seconds, replayed = self.snapshot()
        appended = CounterMetricFamily(APPENDED, _HELP[APPENDED], labels=["event_name"])
        for name in sorted(by_name):
            appended.add_metric([name], by_name[name])
        yield appended
        cumulative, total = [], 0
        for bound, count in zip((*APPEND_BUCKETS, float("inf")), buckets, strict=True):
            total += count
            cumulative.append((_bound(bound), total))
        histogram = HistogramMetricFamily(APPEND_SECONDS, _HELP[APPEND_SECONDS], labels=["store"])
        histogram.add_metric([self.store], cumulative, seconds)
        yield histogram
        yield CounterMetricFamily(REPLAYED, _HELP[REPLAYED], value=replayed)
        yield from self.position_families(self.state.dispatcher.last_handled)


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


def _build_meter(name: str) -> Any:
    from prometheus_client import Counter, Gauge, Histogram

    if name == APPENDED:
        return Counter(APPENDED, _HELP[APPENDED], ["event_name"], registry=None)
    if name == APPEND_SECONDS:
        help_text = _HELP[APPEND_SECONDS]
        return Histogram(APPEND_SECONDS, help_text, ["store"], buckets=APPEND_BUCKETS, registry=None)
    if name == REPLAYED:
        return Counter(REPLAYED, _HELP[REPLAYED], registry=None)
    # The slowest live worker's position; the lag is worked out from it at scrape time.
    return Gauge(LAST_HANDLED, _HELP[LAST_HANDLED], registry=None, multiprocess_mode="livemin")


_meters: dict[str, Any] = {}
_meters_lock = threading.Lock()


def _shared_meter(name: str) -> Any:
    """The process's prometheus_client metric ``name``, built when first used.

    One per process, whatever the number of apps: the files are per process.
    Built lazily, so that a gunicorn master that loads the app (``--preload``)
    and forks its workers writes no file itself: a live master's position of
    0 would otherwise be the lowest of every scrape.
    """
    meter = _meters.get(name)
    if meter is None:
        with _meters_lock:
            meter = _meters.get(name)
            if meter is None:
                meter = _meters[name] = _build_meter(name)
    return meter


#: A live gauge's file in the multiprocess directory: ``gauge_livemin_<pid>.db``.
_LIVE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db$")


class MultiprocessMetrics(LocalMetrics):
    """Several worker processes: counts in prometheus_client's files under ``PROMETHEUS_MULTIPROC_DIR``.

    A worker counts as :class:`LocalMetrics` does, and adds what it counted
    since to prometheus_client's metrics (whose values live in that
    directory, one file per process) from its follower thread a few times a
    second, when it answers a scrape, and when it exits: written at every
    append, they would cost it several times as much. A scrape sums the
    counters of every process that ever wrote there, so the directory must
    start empty with each server run; a worker killed outright loses what it
    counted in its last fraction of a second. The histogram's buckets are
    added whole, through ``Histogram``'s per-bucket values (``observe()``
    takes one observation at a time).

    Each worker also publishes its handled position then;
    ``shimmie_last_handled_position`` is the lowest of the live workers', the
    lag is the store's last position minus that. Workers that died are
    forgotten at the next scrape.
    """

    def __init__(self, state: AppState, directory: str) -> None:
        super().__init__(state)
        self.directory = directory
        self._flush_lock = threading.Lock()
        #: What was added to prometheus_client's metrics so far, by this process.
        self._sent = self.snapshot()
        #: The counter's child per event name (``labels()`` costs more than the increment).
        self._children: dict[str, Any] = {}
        self._histogram: Any = None
        flush = weakref.WeakMethod(self.flush)
        forked = weakref.WeakMethod(self._forked)
        at_process_exit(lambda: _call(flush))
        os.register_at_fork(after_in_child=lambda: _call(forked))

    def _forked(self) -> None:
        # A parent's counts are the parent's to send; the child starts from them. A parent's
        # thread may have held the locks at the fork: the child's copies would stay locked.
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._sent = self.snapshot()

    def flush(self) -> None:
        """Add what this process counted since the last flush to prometheus_client's metrics."""
        with self._flush_lock:
            now, sent = self.snapshot(), self._sent
            for name, count in now.by_name.items():
                if count > sent.by_name.get(name, 0):
                    child = self._children.get(name)
                    if child is None:
                        child = self._children[name] = _shared_meter(APPENDED).labels(name)
                    child.inc(count - sent.by_name.get(name, 0))
            if now.buckets != sent.buckets:
                if self._histogram is None:
                    self._histogram = _shared_meter(APPEND_SECONDS).labels(self.store)
                buckets = self._histogram._buckets
                for value, count, before in zip(buckets, now.buckets, sent.buckets, strict=True):
                    if count > before:
                        value.inc(count - before)
                self._histogram._sum.inc(now.seconds - sent.seconds)
            # Built at the first flush even when there is nothing to add: a replay of an empty
            # store is a 0 the scraper should see.
            _shared_meter(REPLAYED).inc(now.replayed - sent.replayed)
            self._sent = now

    def followed(self) -> None:
        self.flush()
        _shared_meter(LAST_HANDLED).set(self.state.dispatcher.last_handled)

    def registry(self) -> CollectorRegistry:
        from prometheus_client.multiprocess import MultiProcessCollector
        from prometheus_client.registry import CollectorRegistry

        self.followed()
        self._forget_dead_workers()
        merged = MultiProcessCollector.merge(_readable_files(self.directory))  # type: ignore[no-untyped-call]
        families = list(merged)

        def every_family() -> Iterator[Metric]:
            handled: int | None = None
            for family in families:
                if family.name == LAST_HANDLED:
                    handled = min((int(sample.value) for sample in family.samples), default=None)
                else:
                    yield family
            yield from self.position_families(handled)

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(every_family))
        return registry

    def _forget_dead_workers(self) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        pids = set()
        for path in glob.glob(os.path.join(glob.escape(self.directory), "gauge_live*_*.db")):
            found = _LIVE_FILE.search(path)
            if found:
                pids.add(int(found.group(1)))
        for pid in pids:
            if not _alive(pid):
                mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]


#: The header of a values file: how much of it is used, then padding.
_HEADER_BYTES = 8


def _readable_files(directory: str) -> list[str]:
    """The values files in ``directory``, but those another process is creating this moment.

    A process opens its file, then sizes it: read in between, the file is
    empty and prometheus_client's reader raises (a scrape answered 500). An
    empty file holds no value yet, so leaving it out loses nothing; files
    never shrink, so one that had its header when listed still has it.
    """
    found = []
    for path in glob.glob(os.path.join(glob.escape(directory), "*.db")):
        try:
            if os.stat(path).st_size >= _HEADER_BYTES:
                found.append(path)
        except FileNotFoundError:  # a dead worker's live gauge, removed since the listing
            continue
    return found


def _call(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    bound = method()
    if bound is not None:
        bound()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def build_metrics(state: AppState) -> Metrics:
    """The app's :class:`Metrics`: multiprocess when ``PROMETHEUS_MULTIPROC_DIR`` is set.

    Raises :class:`ConfigurationError` when prometheus_client is missing, or
    when the directory is not one, or when prometheus_client was imported
    before the variable was set (its counts would stay in each process).
    """
    try:
        from prometheus_client import values
    except ImportError:
        raise ConfigurationError(
            "SHIMMIE_METRICS = True needs prometheus_client: pip install 'flask-shimmie[metrics]'."
        ) from None
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return LocalMetrics(state)
    if not os.path.isdir(directory):
        raise ConfigurationError(
            f"{MULTIPROC_ENV} = {directory!r} is not a directory: create it, empty, before the server starts."
        )
    if values.ValueClass is values.MutexValue:
        raise ConfigurationError(
            f"{MULTIPROC_ENV} was set after prometheus_client was imported, so its counts would stay in "
            "each process: set it in the environment the server starts with."
        )
    return MultiprocessMetrics(state, directory)


def install_metrics(app: Flask, state: AppState, admin_url: str, public: bool) -> Metrics:
    """Count ``app``'s appends and replays, and serve ``GET <admin_url>/metrics``.

    ``public``: the route is open (``SHIMMIE_METRICS_PUBLIC``); else the admin
    authorizer decides, as for the rest of the admin API.
    """
    metrics = build_metrics(state)
    state.metrics = metrics
    state.dispatcher.on_followed = metrics.followed
    # Connected weakly: the receiver lives as long as the app's state does.
    replay_finished.connect(metrics._on_replay_finished, sender=app)
    app.register_blueprint(create_metrics_blueprint(public), url_prefix=admin_url)
    return metrics


def create_metrics_blueprint(public: bool) -> Blueprint:
    """The blueprint of ``GET /metrics`` (mounted at ``SHIMMIE_ADMIN_URL``)."""
    from .admin import require_admin

    blueprint = Blueprint("shimmie_metrics", __name__)

    @blueprint.get("/metrics")
    def metrics() -> Response:
        """The Prometheus exposition of the app's metrics (OpenMetrics when the scraper asks for it)."""
        if not public:
            require_admin()
        state: AppState = current_app.extensions["shimmie"]
        assert state.metrics is not None
        body, content_type = state.metrics.render(request.headers.get("Accept"))
        return Response(body, content_type=content_type)

    return blueprint
