"""``stack.load`` / ``stack.load_or_404``: a model entry with the version it reflects, recorded against.

A view that checks the model and then records with ``STREAM_EXISTS`` lets two requests both pass
the check; :class:`~flask_shimmie.Loaded` records against the version the decision saw, so the
second one conflicts. The entry is copied under the dispatch lock: never half-applied, never
shared with the model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Blueprint, Flask

from flask_shimmie import (
    NO_STREAM,
    Event,
    Loaded,
    Model,
    ShimmieStack,
    StreamVersionError,
    no_authorization,
    subscribe,
)


class Counters(Model):
    """Counters by stream: ``{"count": n, "tags": [...], "version": v}``."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[str, Any]] = {}
        #: Set by a test to hold a handler between its two changes.
        self.gate: threading.Event | None = None
        self.halfway = threading.Event()

    @subscribe("COUNTED")
    def counted(self, event: Event) -> None:
        counter = self.counters.setdefault(event.stream_id, {"count": 0, "tags": [], "version": 0})
        counter["count"] += 1
        if self.gate is not None:
            self.halfway.set()
            self.gate.wait(10)
        counter["tags"].append(event.data.get("tag"))
        counter["version"] = event.stream_version

    def load_entry(self, stream_id: str) -> tuple[Any, int] | None:
        counter = self.counters.get(stream_id)
        return None if counter is None else (counter, counter["version"])


class NoLoading(Model):
    """A model without ``load_entry``."""


class BadAnswers(Model):
    """``load_entry`` answers set by the test."""

    answer: Any = None

    def load_entry(self, stream_id: str) -> Any:
        return type(self).answer


@pytest.fixture
def stack() -> ShimmieStack:
    stack = ShimmieStack()
    stack.register_model(Counters)
    stack.register_model(BadAnswers)
    return stack


@pytest.fixture
def app(stack: ShimmieStack) -> Iterator[Flask]:
    app = Flask("loading")
    app.config["TESTING"] = True
    views = Blueprint("counters", __name__)

    @views.post("/counters/<counter_id>/count")
    @no_authorization
    def count(counter_id: str) -> dict[str, Any]:
        loaded = stack.load_or_404(Counters, counter_id, description=f"No counter {counter_id}.")
        event = loaded.record("COUNTED", {"tag": "http"})
        return {"version": event.stream_version}

    @views.get("/counters/<counter_id>")
    @no_authorization
    def show(counter_id: str) -> Any:
        return stack.load_or_404(Counters, counter_id).value

    stack.init_app(app)
    stack.mount_processor("Counters", "/", views)
    with app.app_context():
        yield app
    stack.shutdown(app)


def count(stack: ShimmieStack, stream_id: str, tag: str = "t") -> Event:
    return stack.record_unchecked_event(stream_id, "COUNTED", {"tag": tag})


def test_load_gives_a_private_copy_and_the_version_it_reflects(app: Flask, stack: ShimmieStack) -> None:
    count(stack, "c1", "a")
    count(stack, "c1", "b")
    loaded = stack.load(Counters, "c1")
    assert isinstance(loaded, Loaded)
    assert (loaded.stream_id, loaded.version) == ("c1", 2)
    assert loaded.value == {"count": 2, "tags": ["a", "b"], "version": 2}

    # The copy is deep: changing it leaves the model alone, and the model's changes leave it alone.
    loaded.value["tags"].append("mine")
    count(stack, "c1", "c")
    assert stack.model(Counters).counters["c1"]["tags"] == ["a", "b", "c"]
    assert loaded.value["tags"] == ["a", "b", "mine"]
    assert loaded.version == 2


def test_record_appends_at_the_next_version_and_returns_the_event(app: Flask, stack: ShimmieStack) -> None:
    count(stack, "c1")
    loaded = stack.load(Counters, "c1")
    assert loaded is not None
    event = loaded.record("COUNTED", {"tag": "decided"}, meta={"by": "test"})
    assert (event.stream_id, event.stream_version, event.data, event.meta) == (
        "c1",
        2,
        {"tag": "decided"},
        {"by": "test"},
    )
    assert stack.model(Counters).counters["c1"]["version"] == 2


def test_record_conflicts_when_another_write_landed_since_the_load(app: Flask, stack: ShimmieStack) -> None:
    count(stack, "c1")
    loaded = stack.load(Counters, "c1")
    assert loaded is not None
    count(stack, "c1")  # someone else, after the decision was made
    before = stack.read_events()
    with pytest.raises(StreamVersionError) as raised:
        loaded.record("COUNTED", {"tag": "stale"})
    assert raised.value.conflicts == [{"stream_id": "c1", "expected": 1, "actual": 2}]
    assert stack.read_events() == before

    # Recording twice on one load: the second one is stale too.
    fresh = stack.load(Counters, "c1")
    assert fresh is not None
    fresh.record("COUNTED", {"tag": "once"})
    with pytest.raises(StreamVersionError):
        fresh.record("COUNTED", {"tag": "twice"})


def test_load_of_a_missing_entry_is_none(app: Flask, stack: ShimmieStack) -> None:
    assert stack.load(Counters, "nobody") is None
    assert stack.load(Counters, "x" * 10_000) is None  # no stream can have that id: no entry either


def test_load_or_404_answers_a_json_404_and_a_conflict_answers_409(app: Flask, stack: ShimmieStack) -> None:
    client = app.test_client()
    missing = client.post("/counters/nobody/count")
    assert missing.status_code == 404
    assert missing.get_json() == {"code": 404, "status": "Not Found", "message": "No counter nobody."}
    default = client.get("/counters/nobody")
    assert default.status_code == 404 and "'nobody'" in default.get_json()["message"]
    assert stack.read_events() == []

    count(stack, "c1")
    assert client.post("/counters/c1/count").get_json() == {"version": 2}
    assert client.get("/counters/c1").get_json() == {"count": 2, "tags": ["t", "http"], "version": 2}


def test_load_needs_a_model_that_implements_load_entry(app: Flask, stack: ShimmieStack) -> None:
    with pytest.raises(TypeError, match=r"NoLoading does not implement load_entry"):
        stack.load(NoLoading, "c1")
    with pytest.raises(TypeError, match="Model subclass"):
        stack.load(dict, "c1")  # type: ignore[arg-type]

    class Unregistered(Counters):
        pass

    with pytest.raises(LookupError, match="Unregistered"):
        stack.load(Unregistered, "c1")


@pytest.mark.parametrize(
    "answer", [{"count": 1}, ({"count": 1},), ({}, 0), ({}, "1"), ({}, True), ({}, -1), [{}, 1]]
)
def test_a_load_entry_answer_that_is_not_entry_and_version_is_a_type_error(
    app: Flask, stack: ShimmieStack, monkeypatch: pytest.MonkeyPatch, answer: Any
) -> None:
    monkeypatch.setattr(BadAnswers, "answer", answer)
    with pytest.raises(TypeError, match=r"BadAnswers\.load_entry\('c1'\)"):
        stack.load(BadAnswers, "c1")


def test_load_waits_for_the_event_being_applied(app: Flask, stack: ShimmieStack) -> None:
    """A handler is held between its two changes; a load meanwhile waits and then sees both."""
    count(stack, "c1", "first")
    model = stack.model(Counters)
    model.gate = threading.Event()
    loads: list[Loaded | None] = []
    failures: list[BaseException] = []

    def write() -> None:
        try:
            with app.app_context():
                count(stack, "c1", "second")
        except BaseException as error:
            failures.append(error)

    def load() -> None:
        try:
            with app.app_context():
                loads.append(stack.load(Counters, "c1"))
        except BaseException as error:
            failures.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    assert model.halfway.wait(5), "the handler did not start"
    loader = threading.Thread(target=load)
    loader.start()
    loader.join(0.3)
    assert loader.is_alive(), "load() returned while an event was half applied"
    model.gate.set()
    writer.join(5)
    loader.join(5)
    assert not failures, failures
    (loaded,) = loads
    assert loaded is not None
    assert loaded.value == {"count": 2, "tags": ["first", "second"], "version": 2}
    assert loaded.version == 2


def test_load_from_a_handler_does_not_wait_for_itself(app: Flask, stack: ShimmieStack) -> None:
    seen: list[Any] = []

    @stack.subscribe("COUNTED")
    def look(event: Event) -> None:
        loaded = stack.load(Counters, event.stream_id)
        seen.append(None if loaded is None else loaded.version)

    count(stack, "c1")
    count(stack, "c1")
    # The model's handler ran first (subscription order), so each load saw the event applied.
    assert seen == [1, 2]


def test_loaded_erase_pii_erases_only_at_the_loaded_version(app: Flask, stack: ShimmieStack) -> None:
    stack.record_event(
        "c1", "COUNTED", {"tag": "t", "who": "Pat Secret"}, expected_version=NO_STREAM, pii_fields=["who"]
    )
    loaded = stack.load(Counters, "c1")
    assert loaded is not None
    count(stack, "c1")
    with pytest.raises(StreamVersionError):
        loaded.erase_pii()
    assert stack.history("c1")["history"][0].data["who"] == "Pat Secret"  # nothing erased

    fresh = stack.load(Counters, "c1")
    assert fresh is not None
    assert fresh.erase_pii() == 1
    first = stack.history("c1")["history"][0]
    assert first.pii_erased and first.data["who"] == ""
