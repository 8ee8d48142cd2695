"""The sinks without a broker: templates, optional client libraries, lazy exports."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone

import pytest

import flask_shimmie
from flask_shimmie import ConfigurationError, Event
from flask_shimmie.sinks import NatsJetStreamSink, RabbitMqSink, SubjectTemplate, event_body
from flask_shimmie.sinks.base import redact_url
from flask_shimmie.sinks.jetstream import subject_covers
from tests.brokers import DEFAULT_NATS_URL, DEFAULT_RABBITMQ_URL
from tests.serving import REPO_ROOT


def an_event(stream_id: str = "song-1", event_name: str = "SONG_CREATED", sequence_num: int = 42) -> Event:
    return Event(
        sequence_num,
        stream_id,
        3,
        str(uuid.uuid4()),
        event_name,
        {"title": "Hé"},
        {"user": "u"},
        datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
    )


def test_a_template_is_filled_in_from_the_events_fields() -> None:
    event = an_event()
    template = SubjectTemplate("songs.{event_name}.{stream_id}.v{stream_version}.{sequence_num:08d}")
    assert template.render(event) == "songs.SONG_CREATED.song-1.v3.00000042"
    assert SubjectTemplate("{event_id}").render(event) == event.event_id
    assert template.fields == ("event_name", "stream_id", "stream_version", "sequence_num")


def test_values_cannot_add_words_or_wildcards() -> None:
    template = SubjectTemplate("songs.{stream_id}.{event_name}")
    event = an_event(stream_id="a.b *>#", event_name="shimmie.pii_erased")
    assert template.render(event) == "songs.a%2Eb%20%2A%3E%23.shimmie%2Epii_erased"
    assert SubjectTemplate("{stream_id}").render(an_event(stream_id="é")) == "%C3%A9"


@pytest.mark.parametrize(
    ("template", "complaint"),
    [
        ("songs.{evnt_name}", "names {evnt_name}"),
        ("songs.{data}", "names {data}"),
        ("songs.{data[title]}", "names {data[title]}"),
        ("songs.{}", "names {}"),
        ("songs.{0}", "names {0}"),
        ("songs.{event_name", "malformed"),
        ("songs.{sequence_num:q}", "cannot be filled in"),
        ("", "non-empty"),
    ],
)
def test_a_bad_template_fails_when_built(template: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        SubjectTemplate(template, "routing key")
    assert complaint in str(raised.value) and "routing key" in str(raised.value)


def test_the_wildcard_form_covers_every_subject_the_template_makes() -> None:
    assert SubjectTemplate("songs.{event_name}").wildcard("*") == "songs.*"
    assert SubjectTemplate("songs.x{stream_id}y.{event_name}.all").wildcard("*") == "songs.*.*.all"
    assert subject_covers("songs.*", "songs.*") and subject_covers("songs.>", "songs.*.*")
    assert subject_covers(">", "a.b") and subject_covers("songs.*.all", "songs.*.all")
    assert not subject_covers("songs.CREATED", "songs.*")
    assert not subject_covers("songs.*", "songs.*.*")
    assert not subject_covers("songs.*.*", "songs.*")
    assert not subject_covers("other.>", "songs.*")


def test_the_body_is_the_event_as_json() -> None:
    import json

    event = an_event()
    assert json.loads(event_body(event)) == event.to_json()
    assert "Hé".encode() in event_body(event)


def test_the_sinks_check_what_they_are_given() -> None:
    with pytest.raises(ConfigurationError, match="subject template"):
        NatsJetStreamSink(DEFAULT_NATS_URL, "songs.{nope}")
    with pytest.raises(ConfigurationError, match="NATS subject"):
        NatsJetStreamSink(DEFAULT_NATS_URL, "songs..{event_name}")
    with pytest.raises(ConfigurationError, match="NATS subject"):
        NatsJetStreamSink(DEFAULT_NATS_URL, "songs.*")
    with pytest.raises(ConfigurationError, match="stream name"):
        NatsJetStreamSink(DEFAULT_NATS_URL, "songs.{event_name}", stream="a.b")
    with pytest.raises(ConfigurationError, match="timeout"):
        NatsJetStreamSink(DEFAULT_NATS_URL, "songs.{event_name}", timeout=0)
    with pytest.raises(ConfigurationError, match="routing key template"):
        RabbitMqSink(DEFAULT_RABBITMQ_URL, "songs", "songs.{nope}")
    with pytest.raises(ConfigurationError, match="not an AMQP URL"):
        RabbitMqSink("http://[::1", "songs", "songs.{event_name}")


def test_urls_in_messages_hide_credentials() -> None:
    assert redact_url("nats://user:secret@broker:4222") == "nats://***@broker:4222"
    assert redact_url("nats://token@broker") == "nats://***@broker"
    assert redact_url("nats://broker:4222") == "nats://broker:4222"
    assert "secret" not in repr(NatsJetStreamSink("nats://u:secret@h:4222", "s.{event_name}"))
    assert "guest" not in repr(RabbitMqSink("amqp://guest:guest@h:5672/%2F", "x", "s.{event_name}"))


@pytest.mark.parametrize(
    ("build", "module", "extra"),
    [
        (lambda: NatsJetStreamSink(DEFAULT_NATS_URL, "s.{event_name}"), "nats", "nats"),
        (lambda: RabbitMqSink(DEFAULT_RABBITMQ_URL, "x", "s.{event_name}"), "pika", "rabbitmq"),
    ],
    ids=["nats", "rabbitmq"],
)
def test_a_missing_client_library_names_the_extra(
    build: object, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError) as raised:
        build()  # type: ignore[operator]
    assert f'pip install "flask-shimmie[{extra}]"' in str(raised.value)


def test_importing_the_package_imports_no_broker_client() -> None:
    code = (
        "import sys, flask_shimmie\n"
        "assert 'nats' not in sys.modules and 'pika' not in sys.modules, 'imported too early'\n"
        "from flask_shimmie import NatsJetStreamSink, RabbitMqSink\n"
        "assert 'nats' not in sys.modules and 'pika' not in sys.modules, 'imported by the names'\n"
        "print(NatsJetStreamSink.__module__, RabbitMqSink.__module__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["flask_shimmie.sinks.jetstream", "flask_shimmie.sinks.rabbitmq"]
    assert flask_shimmie.NatsJetStreamSink is NatsJetStreamSink
    with pytest.raises(AttributeError):
        flask_shimmie.NoSuchSink  # noqa: B018
