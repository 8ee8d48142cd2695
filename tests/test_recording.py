"""The record API: checks, batches, idempotency, locks, history, bad input."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from typing import Any

import pytest
from flask import Flask

from flask_shimmie import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Event,
    InvalidEventError,
    NewEvent,
    ObjectLockedError,
    ShimmieError,
    ShimmieStack,
    StreamVersionError,
)
from tests.helpers import Journal


def test_record_event_returns_the_stored_event(app: Flask, stack: ShimmieStack) -> None:
    event = stack.record_event("song-1", "SONG_CREATED", {"title": "Hound Dog"}, expected_version=NO_STREAM,
                               meta={"user": "bob"})  # fmt: skip
    assert (event.sequence_num, event.stream_id, event.stream_version) == (1, "song-1", 1)
    assert event.event_name == "SONG_CREATED"
    assert event.data == {"title": "Hound Dog"}
    assert event.meta == {"user": "bob"}
    assert uuid.UUID(event.event_id)
    assert event.recorded_at.tzinfo is not None
    assert event.replay is False and event.pii_erased is False and event.schema_version == 1


def test_stored_events_are_ordinary_frozen_events(app: Flask, stack: ShimmieStack) -> None:
    event = stack.record_unchecked_event("song-1", "SONG_CREATED", {"title": "Hound Dog"})
    (read,) = stack.read_events()
    assert type(event) is Event and type(read) is Event
    assert read == event and dataclasses.astuple(read) == dataclasses.astuple(event)
    assert dataclasses.replace(read, replay=True).replay is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.stream_id = "other"  # type: ignore[misc]
    assert read == Event(**{f.name: getattr(read, f.name) for f in dataclasses.fields(Event)})


def test_positions_and_versions(app: Flask, stack: ShimmieStack) -> None:
    a1 = stack.record_unchecked_event("a", "E", {})
    b1 = stack.record_unchecked_event("b", "E", {})
    a2 = stack.record_event("a", "E", {}, expected_version=1)
    assert [(e.sequence_num, e.stream_version) for e in (a1, b1, a2)] == [(1, 1), (2, 1), (3, 2)]


@pytest.mark.parametrize(
    ("existing", "expected", "ok"),
    [
        (0, NO_STREAM, True),
        (1, NO_STREAM, False),
        (0, STREAM_EXISTS, False),
        (2, STREAM_EXISTS, True),
        (0, ANY, True),
        (3, ANY, True),
        (2, 2, True),
        (2, 1, False),
        (0, 0, True),
        (0, 1, False),
    ],
)
def test_expected_version_rules(
    app: Flask, stack: ShimmieStack, existing: int, expected: Any, ok: bool
) -> None:
    for _ in range(existing):
        stack.record_unchecked_event("s", "E", {})
    if ok:
        assert stack.record_event("s", "E", {}, expected_version=expected).stream_version == existing + 1
    else:
        with pytest.raises(StreamVersionError) as caught:
            stack.record_event("s", "E", {}, expected_version=expected)
        assert caught.value.conflicts == [{"stream_id": "s", "expected": expected, "actual": existing}]
        assert stack.last_handled_sequence_num == existing


def test_expected_versions_over_several_streams(app: Flask, stack: ShimmieStack) -> None:
    stack.record_unchecked_event("song-1", "E", {})
    stack.record_unchecked_event("song-1", "E", {})
    event = stack.record_event("artist-9", "E", {}, expected_versions={"song-1": 2, "artist-9": NO_STREAM})
    assert event.stream_version == 1
    with pytest.raises(StreamVersionError) as caught:
        stack.record_event("other", "E", {}, expected_versions={"song-1": 1, "artist-9": NO_STREAM, "x": ANY})
    assert caught.value.conflicts == [
        {"stream_id": "song-1", "expected": 1, "actual": 2},
        {"stream_id": "artist-9", "expected": NO_STREAM, "actual": 1},
    ]
    assert caught.value.conflicts_json()[1]["expected"] == "NO_STREAM"
    assert stack.history("other")["history"] == []


def test_exactly_one_of_expected_version_and_expected_versions(app: Flask, stack: ShimmieStack) -> None:
    with pytest.raises(TypeError, match="exactly one"):
        stack.record_event("s", "E", {})  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="exactly one"):
        stack.record_event("s", "E", {}, expected_version=ANY, expected_versions={"s": ANY})


def test_batch_is_atomic(app: Flask, stack: ShimmieStack) -> None:
    stack.record_unchecked_event("b", "E", {})
    batch = [NewEvent("a", "E", {"n": 1}), NewEvent("b", "E", {"n": 2}), NewEvent("a", "E", {"n": 3})]
    with pytest.raises(StreamVersionError):
        stack.record_events(batch, expected_versions={"a": NO_STREAM, "b": NO_STREAM})
    assert stack.read_events() == stack.read_events(0, 10)
    assert len(stack.read_events()) == 1
    stored = stack.record_events(batch, expected_versions={"a": NO_STREAM, "b": 1})
    assert [(e.sequence_num, e.stream_id, e.stream_version, e.data["n"]) for e in stored] == [
        (2, "a", 1, 1),
        (3, "b", 2, 2),
        (4, "a", 2, 3),
    ]
    assert [e.sequence_num for e in stack.model(Journal).events] == [1, 2, 3, 4]


def test_unchecked_batch_and_empty_batch(app: Flask, stack: ShimmieStack) -> None:
    assert stack.record_unchecked_events([]) == []
    events = stack.record_unchecked_events([NewEvent("a", "E", {}), NewEvent("a", "E", {})])
    assert [e.stream_version for e in events] == [1, 2]


def test_bad_item_in_a_batch_records_nothing(app: Flask, stack: ShimmieStack) -> None:
    with pytest.raises(InvalidEventError, match="Item 1"):
        stack.record_unchecked_events([NewEvent("a", "E", {}), {"stream_id": "a"}])  # type: ignore[list-item]
    with pytest.raises(InvalidEventError, match="stream_id"):
        stack.record_unchecked_events([NewEvent("a", "E", {}), NewEvent("", "E", {})])
    assert stack.read_events() == []


def test_retry_with_known_event_id_returns_the_stored_event(app: Flask, stack: ShimmieStack) -> None:
    event_id = str(uuid.uuid4())
    first = stack.record_event("s", "E", {"n": 1}, expected_version=NO_STREAM, event_id=event_id)
    again = stack.record_event("s", "E", {"n": 1}, expected_version=NO_STREAM, event_id=event_id)
    assert again.sequence_num == first.sequence_num == 1
    assert again.event_id == event_id and again.data == {"n": 1}
    assert len(stack.read_events()) == 1
    assert len(stack.model(Journal).events) == 1


def test_batch_with_some_known_event_ids_writes_nothing(app: Flask, stack: ShimmieStack) -> None:
    known = str(uuid.uuid4())
    stack.record_unchecked_event("s", "E", {}, event_id=known)
    with pytest.raises(ShimmieError, match="already stored"):
        stack.record_unchecked_events([NewEvent("s", "E", {}, event_id=known), NewEvent("s", "E", {})])
    assert len(stack.read_events()) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stream_id": ""}, "stream_id must be 1 to 255"),
        ({"stream_id": "x" * 256}, "stream_id must be 1 to 255"),
        ({"stream_id": 7}, "stream_id must be a string"),
        ({"stream_id": "a\x00b"}, "NUL"),
        ({"event_name": ""}, "event_name must be 1 to 255"),
        ({"event_name": None}, "event_name must be a string"),
        ({"data": [1, 2]}, "data must be a JSON object"),
        ({"data": "text"}, "data must be a JSON object"),
        ({"data": {"when": object()}}, "not JSON-serialisable"),
        ({"data": {"nan": float("nan")}}, "not JSON-serialisable"),
        ({"meta": ["x"]}, "meta must be a JSON object"),
        ({"event_id": "not-a-uuid"}, "event_id must be a UUID"),
        ({"event_id": 12}, "event_id must be a UUID"),
    ],
)
def test_bad_input_is_refused_and_nothing_recorded(
    app: Flask, stack: ShimmieStack, kwargs: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {"stream_id": "s", "event_name": "E", "data": {}, **kwargs}
    with pytest.raises(InvalidEventError, match=message):
        stack.record_unchecked_event(args.pop("stream_id"), args.pop("event_name"), args.pop("data"), **args)
    assert stack.read_events() == []


@pytest.mark.parametrize("bad", [-1, True, 1.5, "3", None])
def test_bad_expected_version_is_refused(app: Flask, stack: ShimmieStack, bad: Any) -> None:
    with pytest.raises(InvalidEventError, match="Expected version"):
        stack.record_event("s", "E", {}, expected_version=bad)
    with pytest.raises(InvalidEventError):
        stack.record_event("s", "E", {}, expected_versions={"s": bad})
    assert stack.read_events() == []


def test_data_is_copied_not_shared(app: Flask, stack: ShimmieStack) -> None:
    data: dict[str, Any] = {"tags": ["a"]}
    event = stack.record_unchecked_event("s", "E", data)
    data["tags"].append("b")
    event.data["tags"].append("c")
    assert stack.read_events()[0].data == {"tags": ["a"]}


def test_history_of_one_or_several_streams(app: Flask, stack: ShimmieStack) -> None:
    empty = stack.history("nothing")
    assert empty == {"history": [], "created_at": None, "updated_at": None}
    stack.record_unchecked_event("a", "CREATED", {})
    stack.record_unchecked_event("b", "CREATED", {})
    stack.record_unchecked_event("c", "CREATED", {})
    stack.record_unchecked_event("a", "RENAMED", {})
    both = stack.history(["a", "b"])
    assert [(e.sequence_num, e.stream_id) for e in both["history"]] == [(1, "a"), (2, "b"), (4, "a")]
    assert both["created_at"] == both["history"][0].recorded_at
    assert both["updated_at"] == both["history"][-1].recorded_at
    renamed = stack.history("a", event_names=["RENAMED"])
    assert [e.sequence_num for e in renamed["history"]] == [4]
    assert renamed["created_at"] == renamed["updated_at"] == renamed["history"][0].recorded_at


def test_lock_stream_waits_then_times_out(app: Flask, stack: ShimmieStack) -> None:
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with app.app_context(), stack.lock_stream("song-1"):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    started = time.monotonic()
    with pytest.raises(ObjectLockedError, match="song-1"):
        with stack.lock_stream("song-1", timeout=0.2):
            pass
    assert time.monotonic() - started >= 0.19
    with stack.lock_stream("song-2", timeout=0.2):
        pass  # another stream is free
    release.set()
    thread.join(5)
    with stack.lock_stream("song-1", timeout=0.2):
        pass


def test_lock_stream_serialises_read_decide_write(app: Flask, stack: ShimmieStack) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with app.app_context():
                for _ in range(20):
                    with stack.lock_stream("counter", timeout=10):
                        version = len(stack.history("counter")["history"])
                        expected = version if version else NO_STREAM
                        stack.record_event("counter", "INC", {}, expected_version=expected)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert [e.stream_version for e in stack.history("counter")["history"]] == list(range(1, 81))


def test_new_event_ids_are_time_ordered_uuids(app: Flask, stack: ShimmieStack) -> None:
    events = [stack.record_unchecked_event("s", "E", {}) for _ in range(50)]
    ids = [uuid.UUID(event.event_id) for event in events]
    assert {i.version for i in ids} == {7} and len(set(ids)) == 50
    prefixes = [event.event_id[:13] for event in events]  # the milliseconds
    assert prefixes == sorted(prefixes)
    supplied = str(uuid.uuid4())
    assert stack.record_unchecked_event("s", "E", {}, event_id=supplied).event_id == supplied


def _ids_in_child(pipe: Any) -> None:
    from flask_shimmie.ids import new_event_id

    pipe.send([new_event_id() for _ in range(300)])
    pipe.close()


def test_new_event_ids_never_repeat_across_threads_or_a_fork() -> None:
    """Ids draw on a per-thread buffer of OS randomness; no two threads or processes share one."""
    import multiprocessing

    from flask_shimmie.ids import new_event_id

    before_fork = new_event_id()  # fills this thread's buffer
    per_thread: list[list[str]] = [[] for _ in range(8)]

    def make(n: int) -> None:
        per_thread[n].extend(new_event_id() for _ in range(1000))

    threads = [threading.Thread(target=make, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    receiver, sender = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_ids_in_child, args=(sender,))
    child.start()
    from_child = receiver.recv()
    child.join(30)
    in_parent = [new_event_id() for _ in range(300)]  # the rest of the buffer the child inherited

    everything = [before_fork, *(i for ids in per_thread for i in ids), *from_child, *in_parent]
    assert len(everything) == 1 + 8000 + 600 and len(set(everything)) == len(everything)
    assert {uuid.UUID(i).version for i in everything} == {7}
