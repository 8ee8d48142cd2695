"""OpenTelemetry spans: ``shimmie.record``, ``.append``, ``.apply``, ``.replay``, ``.subscription.handle``.

The in-process tests trace with a tracer of the SDK's own ``TracerProvider`` and its in-memory
exporter (:func:`flask_shimmie.tracing.set_tracer`), and wrap the app in a WSGI middleware that opens
a request span, as Flask's instrumentation does. Subprocesses check the global provider, no SDK, and
no ``opentelemetry`` at all.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint, Flask

pytest.importorskip(
    "opentelemetry.sdk.trace", reason="opentelemetry-sdk is not installed (pip install -e '.[test]')"
)

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode, Tracer  # noqa: E402

from flask_shimmie import NO_STREAM, NewEvent, ShimmieStack, StreamVersionError, tracing  # noqa: E402
from flask_shimmie.storage.interface import REPLAY_CHUNK_SIZE  # noqa: E402
from tests.backends import fresh_store_url  # noqa: E402
from tests.serving import child_env, run_python  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans finished during the test; the stack traces with this provider's tracer meanwhile."""
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracing.set_tracer(provider.get_tracer("tests"))
    yield exported
    tracing.set_tracer(None)
    provider.shutdown()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Tracer:
    found = tracing.active_tracer()
    assert found is not None
    return found


def with_request_spans(app: Flask, tracer: Tracer) -> None:
    """Open a server span around every request, as opentelemetry-instrumentation-flask does."""
    inner = app.wsgi_app

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        with tracer.start_as_current_span(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}"):
            return list(inner(environ, start_response))

    app.wsgi_app = wsgi  # type: ignore[method-assign]


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def test_a_request_s_record_nests_its_append_and_apply(
    stack: ShimmieStack, make_app: Callable[..., Flask], exporter: InMemorySpanExporter, tracer: Tracer
) -> None:
    songs = Blueprint("songs", __name__)

    @songs.post("/<song_id>")
    def create(song_id: str) -> tuple[str, int]:
        stack.record_event(song_id, "SONG_CREATED", {"title": "t"}, expected_version=NO_STREAM)
        return "", 201

    stack.mount_processor("Songs", "/songs", songs)
    app = make_app()
    with app.app_context():
        stack.startup()
    with_request_spans(app, tracer)
    exporter.clear()

    assert app.test_client().post("/songs/song-1").status_code == 201

    spans = exporter.get_finished_spans()
    (request_span,) = by_name(spans, "POST /songs/song-1")
    (record,) = by_name(spans, "shimmie.record")
    (append,) = by_name(spans, "shimmie.append")
    (apply,) = by_name(spans, "shimmie.apply")
    assert parent_of(record) == span_id(request_span)
    assert parent_of(append) == span_id(record)
    assert parent_of(apply) == span_id(record)
    assert record.context is not None and record.context.trace_id == request_span.context.trace_id  # type: ignore[union-attr]
    assert dict(record.attributes or {}) == {
        "shimmie.store": "memory",
        "shimmie.event_names": ("SONG_CREATED",),
        "shimmie.event_count": 1,
        "shimmie.stream_count": 1,
        "shimmie.last_sequence_num": 1,
    }
    assert dict(append.attributes or {}) == {"shimmie.store": "memory", "shimmie.event_count": 1}
    assert dict(apply.attributes or {}) == {
        "shimmie.event_count": 1,
        "shimmie.first_sequence_num": 1,
        "shimmie.last_sequence_num": 1,
        "shimmie.replay": False,
    }


def test_a_batch_is_one_record_span_naming_each_event_name_once(
    stack: ShimmieStack, make_app: Callable[..., Flask], exporter: InMemorySpanExporter
) -> None:
    app = make_app()
    with app.app_context():
        stack.startup()
        exporter.clear()
        stack.record_unchecked_events(
            [
                NewEvent("song-1", "SONG_CREATED", {}),
                NewEvent("song-1", "SONG_RENAMED", {}),
                NewEvent("song-2", "SONG_CREATED", {}),
            ]
        )

    spans = exporter.get_finished_spans()
    (record,) = by_name(spans, "shimmie.record")
    assert record.attributes is not None
    assert record.attributes["shimmie.event_names"] == ("SONG_CREATED", "SONG_RENAMED")
    assert record.attributes["shimmie.event_count"] == 3
    assert record.attributes["shimmie.stream_count"] == 2
    assert len(by_name(spans, "shimmie.append")) == 1
    (apply,) = by_name(spans, "shimmie.apply")
    assert apply.attributes is not None and apply.attributes["shimmie.event_count"] == 3


def test_a_refused_record_is_an_error_span(
    stack: ShimmieStack, make_app: Callable[..., Flask], exporter: InMemorySpanExporter
) -> None:
    app = make_app()
    with app.app_context():
        stack.record_unchecked_event("song-1", "SONG_CREATED", {})
        exporter.clear()
        with pytest.raises(StreamVersionError):
            stack.record_event("song-1", "SONG_CREATED", {}, expected_version=NO_STREAM)

    (record,) = by_name(exporter.get_finished_spans(), "shimmie.record")
    assert record.status.status_code is StatusCode.ERROR
    assert [event.name for event in record.events] == ["exception"]


def test_a_replay_is_one_span_with_an_apply_span_per_batch(
    stack: ShimmieStack, make_app: Callable[..., Flask], exporter: InMemorySpanExporter
) -> None:
    total = 2 * REPLAY_CHUNK_SIZE + 10
    app = make_app()
    with app.app_context():
        stack.record_unchecked_events([NewEvent(f"s{n}", "E", {}) for n in range(total)])
        exporter.clear()
        stack.replay()

    spans = exporter.get_finished_spans()
    (replay,) = by_name(spans, "shimmie.replay")
    assert dict(replay.attributes or {}) == {"shimmie.from_sequence": 1, "shimmie.event_count": total}
    applies = by_name(spans, "shimmie.apply")
    assert [dict(span.attributes or {})["shimmie.event_count"] for span in applies] == [
        REPLAY_CHUNK_SIZE,
        REPLAY_CHUNK_SIZE,
        10,
    ]
    assert all(parent_of(span) == span_id(replay) for span in applies)
    assert all(dict(span.attributes or {})["shimmie.replay"] is True for span in applies)


def test_a_startup_replay_is_traced_too(
    stack: ShimmieStack, make_app: Callable[..., Flask], exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    with fresh_store_url("sqlite", tmp_path, "events") as url:
        writer = make_app(SHIMMIE_EVENT_STORE=url)
        with writer.app_context():
            stack.record_unchecked_events([NewEvent(f"s{n}", "E", {}) for n in range(5)])
        stack.shutdown(writer)
        exporter.clear()

        reader = make_app(SHIMMIE_EVENT_STORE=url)
        stack.startup(reader)

    spans = exporter.get_finished_spans()
    (replay,) = by_name(spans, "shimmie.replay")
    assert dict(replay.attributes or {}) == {"shimmie.from_sequence": 1, "shimmie.event_count": 5}
    (apply,) = by_name(spans, "shimmie.apply")
    assert parent_of(apply) == span_id(replay)
    assert dict(apply.attributes or {})["shimmie.replay"] is True


def test_the_subscription_hook_nests_the_handler_s_work(
    stack: ShimmieStack, make_app: Callable[..., Flask], exporter: InMemorySpanExporter, tracer: Tracer
) -> None:
    app = make_app()
    with app.app_context():
        events = [stack.record_unchecked_event(f"s{n}", name, {}) for n, name in enumerate("ABA")]
    exporter.clear()

    with tracing.subscription_span("email-new-songs", "reactor", events) as span:
        span.set_attribute("test.handled", True)
        with tracer.start_as_current_span("send mail"):
            pass

    spans = exporter.get_finished_spans()
    (handle,) = by_name(spans, "shimmie.subscription.handle")
    (mail,) = by_name(spans, "send mail")
    assert parent_of(mail) == span_id(handle)
    assert dict(handle.attributes or {}) == {
        "shimmie.subscription": "email-new-songs",
        "shimmie.subscription.kind": "reactor",
        "shimmie.event_names": ("A", "B"),
        "shimmie.event_count": 3,
        "shimmie.first_sequence_num": 1,
        "shimmie.last_sequence_num": 3,
        "test.handled": True,
    }


def test_without_a_tracer_the_hooks_hand_out_a_stand_in() -> None:
    assert tracing.active_tracer() is None  # this test process sets no global provider
    with tracing.subscription_span("s", "reactor", []) as span:
        span.set_attribute("ignored", 1)


# -- in processes of their own ----------------------------------------------------------------------

RECORD_AND_REPLAY = """
from flask import Flask
from flask_shimmie import ShimmieStack, tracing
stack = ShimmieStack()
app = Flask("traced")
stack.init_app(app)
with app.app_context():
    stack.record_unchecked_event("s", "E", {})
    stack.replay()
"""


def _run(script: str, *, block_opentelemetry: bool = False) -> str:
    prelude = "import sys\n"
    if block_opentelemetry:
        # None in sys.modules makes every import of the package fail, as if it were not installed.
        prelude += "sys.modules['opentelemetry'] = None\n"
    env = child_env({})
    env.pop("OTEL_PYTHON_TRACER_PROVIDER", None)
    return run_python(prelude + textwrap.dedent(script), env).strip()


def test_the_global_tracer_provider_is_found_when_set_after_the_app_started() -> None:
    out = _run(
        RECORD_AND_REPLAY
        + """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
assert tracing.active_tracer() is None  # imported, but no provider yet: nothing is traced
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
with app.app_context():
    stack.record_unchecked_event("s", "E", {})
print(sorted({span.name for span in exporter.get_finished_spans()}))
print(exporter.get_finished_spans()[0].instrumentation_scope.name)
"""
    )
    assert out.splitlines() == ["['shimmie.append', 'shimmie.apply', 'shimmie.record']", "flask_shimmie"]


def test_the_api_without_an_sdk_records_nothing() -> None:
    out = _run(
        "import opentelemetry.trace\n"
        + RECORD_AND_REPLAY
        + "print(tracing.active_tracer(), 'opentelemetry.trace' in sys.modules)"
    )
    assert out == "None True"


def test_nothing_of_opentelemetry_is_imported_by_the_stack() -> None:
    out = _run(RECORD_AND_REPLAY + "print(sorted(n for n in sys.modules if n.startswith('opentelemetry')))")
    assert out == "[]"


def test_without_opentelemetry_installed_everything_works() -> None:
    out = _run(
        RECORD_AND_REPLAY
        + """
with app.app_context():
    events = stack.history("s")["history"]
with tracing.subscription_span("s", "reactor", events) as span:
    span.set_attribute("x", 1)
print(len(events), tracing.active_tracer())
""",
        block_opentelemetry=True,
    )
    assert out == "1 None"
