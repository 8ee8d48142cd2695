"""Positions, stream versions, reads, counts and payload round trips."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

from flask_shimmie.storage.interface import REPLAY_CHUNK_SIZE, REPLAY_PAGE_SIZE, EventStore, PendingEvent
from tests.storage.helpers import append_one, batch, new_event_id, pending, positions, versions_by_stream


def fill(store: EventStore) -> None:
    """Seven events: a1 b1 a2 c1 b2 a3 c2, names alternating by stream."""
    for stream_id in ["a", "b", "a", "c", "b", "a", "c"]:
        append_one(store, stream_id, f"{stream_id.upper()}_HAPPENED")


def test_positions_start_at_one_and_increase_by_one(store: EventStore) -> None:
    first = store.append(batch(pending("s1"), pending("s2"))).events
    second = store.append(batch(pending("s1"))).events
    third = store.append(batch(pending("s3"), pending("s3"), pending("s1"))).events

    assert positions(first) == [1, 2]
    assert positions(second) == [3]
    assert positions(third) == [4, 5, 6]
    assert positions(store.read()) == [1, 2, 3, 4, 5, 6]


def test_stream_versions_count_from_one_per_stream_independently(store: EventStore) -> None:
    fill(store)

    events = store.read()

    assert versions_by_stream(events) == {"a": [1, 2, 3], "b": [1, 2], "c": [1, 2]}
    assert [(e.stream_id, e.stream_version) for e in events] == [
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("c", 1),
        ("b", 2),
        ("a", 3),
        ("c", 2),
    ]


def test_append_returns_new_events_as_read_returns_them(store: EventStore) -> None:
    result = store.append(
        batch(pending("s", "FIRST", {"x": [1, 2]}), pending("t", "SECOND", {"y": {"z": None}}))
    )

    assert result.created is True
    assert result.events == store.read()
    assert [e.data for e in result.events] == [{"x": [1, 2]}, {"y": {"z": None}}]


def test_read_after_and_limit(store: EventStore) -> None:
    fill(store)

    assert positions(store.read(after=0)) == [1, 2, 3, 4, 5, 6, 7]
    assert positions(store.read(after=3)) == [4, 5, 6, 7]
    assert positions(store.read(after=3, limit=2)) == [4, 5]
    assert positions(store.read(limit=3)) == [1, 2, 3]
    assert positions(store.read(after=6, limit=10)) == [7]
    assert store.read(after=7) == []
    assert store.read(after=100) == []
    assert store.read(after=2, limit=0) == []


def test_read_on_an_empty_store_is_empty(store: EventStore) -> None:
    assert store.read() == []
    assert store.read(after=5, limit=3, stream_ids=["x"], event_names=["Y"]) == []


def test_read_filters_by_stream_ids(store: EventStore) -> None:
    fill(store)

    assert positions(store.read(stream_ids=None)) == [1, 2, 3, 4, 5, 6, 7]
    assert positions(store.read(stream_ids=["a"])) == [1, 3, 6]
    assert positions(store.read(stream_ids=["c", "a"])) == [1, 3, 4, 6, 7]
    assert positions(store.read(stream_ids={"b"})) == [2, 5]
    assert positions(store.read(stream_ids=["nope"])) == []
    assert store.read(stream_ids=[]) == []


def test_read_filters_by_event_names(store: EventStore) -> None:
    fill(store)

    assert positions(store.read(event_names=None)) == [1, 2, 3, 4, 5, 6, 7]
    assert positions(store.read(event_names=["B_HAPPENED"])) == [2, 5]
    assert positions(store.read(event_names=("A_HAPPENED", "C_HAPPENED"))) == [1, 3, 4, 6, 7]
    assert positions(store.read(event_names=["NOTHING"])) == []
    assert store.read(event_names=[]) == []


def test_read_filters_combine_with_each_other_and_with_after_and_limit(store: EventStore) -> None:
    fill(store)

    assert positions(store.read(stream_ids=["a", "b"], event_names=["A_HAPPENED"])) == [1, 3, 6]
    assert positions(store.read(stream_ids=["b"], event_names=["A_HAPPENED"])) == []
    assert positions(store.read(after=1, stream_ids=["a", "c"])) == [3, 4, 6, 7]
    # the limit counts matching events, not scanned ones
    assert positions(store.read(after=1, limit=2, stream_ids=["a", "c"])) == [3, 4]
    assert positions(store.read(limit=2, event_names=["C_HAPPENED"])) == [4, 7]
    assert positions(store.read(after=3, limit=1, stream_ids=["a"], event_names=["A_HAPPENED"])) == [6]
    assert store.read(stream_ids=[], event_names=["A_HAPPENED"]) == []
    assert store.read(stream_ids=["a"], event_names=[]) == []


def test_iter_events_pages_across_page_boundaries(store: EventStore) -> None:
    fill(store)

    for page_size in (1, 2, 3, 7, 8, 1000):
        assert positions(store.iter_events(page_size=page_size)) == [1, 2, 3, 4, 5, 6, 7], page_size
        assert positions(store.iter_events(after=2, page_size=page_size)) == [3, 4, 5, 6, 7], page_size
    assert list(store.iter_events(after=7, page_size=2)) == []
    assert [e.event_id for e in store.iter_events(page_size=3)] == [e.event_id for e in store.read()]


def test_iter_events_stops_at_upto(store: EventStore) -> None:
    fill(store)

    assert positions(store.iter_events(upto=5, page_size=2)) == [1, 2, 3, 4, 5]
    assert positions(store.iter_events(after=2, upto=4, page_size=3)) == [3, 4]
    assert positions(store.iter_events(upto=100, page_size=3)) == [1, 2, 3, 4, 5, 6, 7]
    assert list(store.iter_events(after=4, upto=4)) == []


def test_read_for_replay_gives_the_next_page_in_small_chunks_marked_replay(store: EventStore) -> None:
    total = REPLAY_PAGE_SIZE + REPLAY_CHUNK_SIZE + 7
    for start in range(0, total, 500):
        store.append(
            batch(*(pending(f"s{n % 13}", data={"n": n}) for n in range(start, min(start + 500, total))))
        )

    chunks = list(store.read_for_replay(0))
    assert [len(chunk) for chunk in chunks] == [REPLAY_CHUNK_SIZE] * (REPLAY_PAGE_SIZE // REPLAY_CHUNK_SIZE)
    replayed = [event for chunk in chunks for event in chunk]
    assert positions(replayed) == list(range(1, REPLAY_PAGE_SIZE + 1))
    assert all(event.replay for event in replayed)
    assert [e.data for e in replayed[:3]] == [{"n": 0}, {"n": 1}, {"n": 2}]
    # Apart from the flag, the events are what read() returns.
    read = store.read(0, 5)
    assert [dataclasses.replace(e, replay=False) for e in replayed[:5]] == read and not read[0].replay
    rest = [event for chunk in store.read_for_replay(REPLAY_PAGE_SIZE) for event in chunk]
    assert positions(rest) == list(range(REPLAY_PAGE_SIZE + 1, total + 1))
    assert list(store.read_for_replay(total)) == []


def test_last_sequence_num_follows_appends(store: EventStore) -> None:
    assert store.last_sequence_num() == 0
    append_one(store, "s")
    assert store.last_sequence_num() == 1
    store.append(batch(pending("s"), pending("t"), pending("u")))
    assert store.last_sequence_num() == 4


def test_stream_versions_are_zero_for_unknown_streams(store: EventStore) -> None:
    assert store.stream_versions(["a", "b"]) == {"a": 0, "b": 0}
    fill(store)

    assert store.stream_versions(["a", "b", "c", "unknown"]) == {"a": 3, "b": 2, "c": 2, "unknown": 0}
    assert store.stream_versions(["c"]) == {"c": 2}
    assert store.stream_versions([]) == {}


def test_existing_event_ids_names_only_stored_ids(store: EventStore) -> None:
    stored = store.append(batch(pending("s"), pending("t"))).events
    unknown = new_event_id()

    assert store.existing_event_ids([stored[0].event_id, unknown, stored[1].event_id]) == {
        stored[0].event_id,
        stored[1].event_id,
    }
    assert store.existing_event_ids([unknown]) == set()
    assert store.existing_event_ids([]) == set()


def test_count_by_event_name(store: EventStore) -> None:
    assert store.count_by_event_name() == {}
    fill(store)
    append_one(store, "d", "A_HAPPENED")

    assert store.count_by_event_name() == {"A_HAPPENED": 4, "B_HAPPENED": 2, "C_HAPPENED": 2}


def test_count_streams(store: EventStore) -> None:
    assert store.count_streams() == 0
    fill(store)

    assert store.count_streams() == 3
    append_one(store, "a")
    assert store.count_streams() == 3
    append_one(store, "z")
    assert store.count_streams() == 4


def test_data_and_meta_round_trip_exactly(store: EventStore) -> None:
    data = {
        "text": 'ünïcödé ✓ 🎵 日本語 "quoted" back\\slash\nnew line\ttab',
        "nested": {"list": [1, "two", [3.5, {"deep": True}], None, False], "empty": {}, "none": []},
        "floats": [0.1, 1.0, -2.5, 1e-07, 6.02214076e23, 0.30000000000000004, -0.0],
        "ints": [0, -1, 2**31, 2**53 + 1, 2**64 + 1, -(2**70)],
        "null": None,
        "bool": True,
        "ключ": "значение",
    }
    meta = {"user": {"name": "Zoë", "roles": ["admin"]}, "agent": "curl/8 🚀", "score": 99.5, "n": None}
    event = PendingEvent(
        stream_id="round-trip-ü🎵",
        event_name="ROUND_TRIPPED",
        event_id=new_event_id(),
        data=data,
        data_json=json.dumps(data, ensure_ascii=False),
        meta=meta,
        meta_json=json.dumps(meta),
        schema_version=3,
        pii_fields=("text", "nested.list"),
    )
    store.append(batch(event))

    (stored,) = store.read()

    # sort_keys: key order is free, but values and their JSON types (1.0 vs 1) must survive
    assert json.dumps(stored.data, sort_keys=True) == json.dumps(data, sort_keys=True)
    assert json.dumps(stored.meta, sort_keys=True) == json.dumps(meta, sort_keys=True)
    assert stored.data == data
    assert stored.meta == meta
    assert stored.stream_id == "round-trip-ü🎵"
    assert stored.event_name == "ROUND_TRIPPED"
    assert stored.event_id == event.event_id
    assert stored.schema_version == 3
    assert stored.pii_fields == ("text", "nested.list")
    assert stored.replay is False
    assert stored.pii_erased is False


def test_stream_ids_up_to_255_characters_are_kept(store: EventStore) -> None:
    long_id = "s" * 254 + "é"
    append_one(store, long_id)

    assert [e.stream_id for e in store.read(stream_ids=[long_id])] == [long_id]
    assert store.stream_versions([long_id]) == {long_id: 1}


def test_recorded_at_is_utc_aware_now_and_non_decreasing(store: EventStore) -> None:
    before = datetime.now(timezone.utc)
    for index in range(5):
        append_one(store, f"s{index % 2}")
    after = datetime.now(timezone.utc)

    stamps = [e.recorded_at for e in store.read()]

    for stamp in stamps:
        assert stamp.tzinfo is not None, stamp
        assert stamp.utcoffset() == timedelta(0), stamp
        assert before - timedelta(seconds=1) <= stamp <= after + timedelta(seconds=1), stamp
    assert stamps == sorted(stamps)
