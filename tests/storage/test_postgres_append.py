"""PostgreSQL appends in one round trip: the ``shimmie_append`` function, its schema upgrade, and
what an append sends (one statement, on a live connection, under READ COMMITTED).

The rules an append follows are the contract suite's (run on PostgreSQL too); these tests are
about how this engine keeps them in one statement.
"""

from __future__ import annotations

import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from flask_shimmie.errors import ConfigurationError
from flask_shimmie.events import NO_STREAM
from flask_shimmie.storage import event_store_from_url
from flask_shimmie.storage.interface import EventStore
from tests.backends import backend_param, postgres_base_url, with_query
from tests.storage.helpers import append_one, batch, pending, pending_with_pii, positions, run_in_threads

pytestmark = pytest.mark.parametrize("backend", [backend_param("postgresql")], indirect=True)


def schema_of(url: str) -> str:
    return url.rsplit("schema=", 1)[1].split("&", 1)[0]


@contextmanager
def admin(url: str) -> Iterator[Callable[..., list[Any]]]:
    """Statements on the store's schema from a connection of the test's own."""
    import psycopg

    with psycopg.connect(postgres_base_url(), autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema_of(url)}"')

        def execute(statement: str, params: Any = None) -> list[Any]:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

        yield execute


def make_version_1(url: str) -> None:
    """Turn the schema into what the previous release left: the same tables, no function."""
    with admin(url) as execute:
        execute("DROP FUNCTION shimmie_append")
        execute("UPDATE shimmie_schema_version SET version = 1")


def function_count(url: str) -> int:
    with admin(url) as execute:
        ((count,),) = execute(
            "SELECT count(*) FROM pg_proc WHERE proname = 'shimmie_append'"
            " AND pronamespace = current_schema()::regnamespace"
        )
        return int(count)


def test_a_schema_of_version_1_is_upgraded_when_a_store_opens_it(
    backend: str, store: EventStore, store_url: str, open_store: Callable[[], EventStore]
) -> None:
    written = [append_one(store, "song-1"), append_one(store, "song-2")]
    store.close()
    make_version_1(store_url)
    assert function_count(store_url) == 0

    reopened = open_store()

    with admin(store_url) as execute:
        assert execute("SELECT version FROM shimmie_schema_version") == [(2,)]
    assert function_count(store_url) == 1
    assert reopened.read() == written
    (event,) = reopened.append(batch(pending("song-1"), expected={"song-1": 1})).events
    assert (event.sequence_num, event.stream_version) == (3, 2)


def test_store_objects_opening_a_version_1_schema_at_once_all_upgrade_it_and_append(
    backend: str, store: EventStore, store_url: str
) -> None:
    append_one(store, "s")
    store.close()
    make_version_1(store_url)
    start = threading.Barrier(4)
    opened: list[EventStore] = []
    lock = threading.Lock()

    def open_and_append(index: int) -> int:
        other = event_store_from_url(store_url, key="SHIMMIE_EVENT_STORE")
        with lock:
            opened.append(other)
        start.wait(10)
        other.open()
        return append_one(other, f"p{index}").sequence_num

    try:
        reported = run_in_threads(open_and_append, 4)
    finally:
        for other in opened:
            other.close()

    assert sorted(reported) == [2, 3, 4, 5]
    assert function_count(store_url) == 1
    with admin(store_url) as execute:
        assert execute("SELECT version FROM shimmie_schema_version") == [(2,)]


def test_a_schema_of_a_newer_version_is_refused_and_left_as_it_is(
    backend: str, store: EventStore, store_url: str, open_store: Callable[[], EventStore]
) -> None:
    append_one(store, "s")
    store.close()
    with admin(store_url) as execute:
        execute("DROP FUNCTION shimmie_append")
        execute("UPDATE shimmie_schema_version SET version = 3")

    with pytest.raises(
        ConfigurationError, match="schema version 3; this release of flask_shimmie knows up to 2"
    ):
        open_store()

    assert function_count(store_url) == 0
    with admin(store_url) as execute:
        assert execute("SELECT version FROM shimmie_schema_version") == [(3,)]
        assert execute("SELECT count(*) FROM shimmie_events") == [(1,)]


def frontend_round_trips(trace: str) -> int:
    """Round trips in a libpq trace: the messages that end one (Sync, or a simple Query)."""
    sent = [line.split("\t") for line in trace.splitlines() if line.startswith("F\t")]
    return sum(1 for fields in sent if len(fields) > 2 and fields[2].split(" ")[0] in ("Sync", "Query"))


@pytest.mark.parametrize("with_pii", [False, True], ids=["events", "events-and-pii"])
def test_an_append_is_one_round_trip(
    backend: str, store_url: str, open_store: Callable[[], EventStore], with_pii: bool
) -> None:
    """Checks, positions, the insert, the PII rows, the notification and the commit: one
    statement, answered once (traced on the pool's only connection)."""
    import psycopg.pq

    store = event_store_from_url(with_query(store_url, pool_min_size="1", pool_max_size="1"), key="K")
    store.open()
    try:
        append_one(store, "s")  # the pool's connection exists and is configured
        pool = store._db.pool()  # type: ignore[attr-defined]
        if with_pii:
            event = pending_with_pii("s", {"title": "t"}, {"email": "a@example.com"})
        else:
            event = pending("s")
        with tempfile.TemporaryFile("w+") as trace:
            with pool.connection() as conn:
                conn.pgconn.trace(trace.fileno())
                conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            try:
                (stored,) = store.append(batch(event, expected={"s": 1}), write_pii=with_pii).events
            finally:
                with pool.connection() as conn:
                    conn.pgconn.untrace()
            trace.seek(0)
            sent = trace.read()
        assert frontend_round_trips(sent) == 1, sent
    finally:
        store.close()
    other = open_store()
    assert (stored.sequence_num, stored.stream_version) == (2, 2)
    assert [e.event_id for e in other.read(1)] == [event.event_id]
    assert other.existing_event_ids([event.event_id]) == {event.event_id}
    assert bool(other.colocated_pii_store().get([event.event_id])) is with_pii


def test_an_append_after_the_server_ended_the_pooled_sessions_is_stored_once_on_a_fresh_one(
    backend: str, store_url: str
) -> None:
    """The server ended the session (a restart, ``pg_terminate_backend``) while it sat in the
    pool: the append finds that out before sending, so it runs on a new connection rather than
    failing with an unknown outcome."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    store = event_store_from_url(with_query(store_url, application_name=name), key="K")
    store.open()
    try:
        append_one(store, "s")
        with admin(store_url) as execute:
            ended = execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s",
                [name],
            )
        assert ended and all(row[0] for row in ended)

        event = pending("s")
        (stored,) = store.append(batch(event, expected={"s": 1})).events

        assert (stored.sequence_num, stored.stream_version) == (2, 2)
        assert positions(store.read()) == [1, 2]
        assert store.existing_event_ids([event.event_id]) == {event.event_id}
    finally:
        store.close()


def test_appends_stay_gap_free_where_sessions_default_to_serializable(
    backend: str, store_url: str, open_store: Callable[[], EventStore]
) -> None:
    """A server (or role) whose default isolation is SERIALIZABLE: an append's statement would take
    its snapshot before the writers' lock, and number its events after a stale last position (or
    fail to serialise). Two store objects (as two processes would) race to append."""
    url = with_query(store_url, options="--default_transaction_isolation%3Dserializable")
    stores = [event_store_from_url(url, key="K") for _ in range(2)]
    for each in stores:
        each.open()
    try:
        # The URL's options reach the sessions: a plain one of the store's starts so.
        with stores[0]._db.connect() as conn:  # type: ignore[attr-defined]
            assert conn.execute("SHOW default_transaction_isolation").fetchone() == ("serializable",)

        def writer(index: int) -> list[int]:
            own = stores[index % 2]
            found = []
            for n in range(40):
                stream = f"w{index}-{n}"
                (event,) = own.append(batch(pending(stream), expected={stream: NO_STREAM})).events
                found.append(event.sequence_num)
            return found

        reported = sorted(p for found in run_in_threads(writer, 4) for p in found)
    finally:
        for each in stores:
            each.close()

    assert reported == list(range(1, 161))
    assert positions(open_store().read()) == list(range(1, 161))


def test_recorded_at_follows_the_positions_of_writers_racing_from_two_store_objects(
    backend: str, store_url: str, open_store: Callable[[], EventStore]
) -> None:
    """The time is read once the writers' lock is held, so a writer that waited for it never
    stamps its events earlier than those committed before them."""
    stores = [open_store(), open_store()]

    def writer(index: int) -> None:
        for n in range(30):
            append_one(stores[index % 2], f"w{index}-{n}")

    run_in_threads(writer, 4)

    events = stores[0].read()
    assert positions(events) == list(range(1, 121))
    stamps = [event.recorded_at for event in events]
    assert stamps == sorted(stamps)
