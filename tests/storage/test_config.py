"""Bad store URLs fail at build time with ConfigurationError; an unreachable server at open()."""

from __future__ import annotations

import time
import uuid

import pytest

from flask_shimmie.errors import ConfigurationError, StoreUnavailableError
from flask_shimmie.storage import event_store_from_url, pii_store_from_url
from tests.backends import BACKEND_MODULES, postgres_base_url, require_backend, require_modules, with_query

BAD_URLS = [
    pytest.param("mysql://user@localhost/db", None, id="unknown-scheme"),
    pytest.param("events.db", None, id="not-a-url"),
    pytest.param("sqlite:///", "sqlite", id="sqlite-no-file"),
    pytest.param("sqlite://", "sqlite", id="sqlite-nothing"),
    pytest.param("sqlite:///:memory:", "sqlite", id="sqlite-in-memory"),
]


@pytest.mark.parametrize(("url", "needs"), BAD_URLS)
def test_a_bad_event_store_url_is_a_configuration_error(url: str, needs: str | None) -> None:
    if needs:
        require_backend(needs)

    with pytest.raises(ConfigurationError) as caught:
        event_store_from_url(url)

    assert "SHIMMIE_EVENT_STORE" in str(caught.value)
    assert url in str(caught.value)


@pytest.mark.parametrize(("url", "needs"), BAD_URLS)
def test_a_bad_pii_store_url_is_a_configuration_error(url: str, needs: str | None) -> None:
    if needs:
        require_backend(needs)

    with pytest.raises(ConfigurationError) as caught:
        pii_store_from_url(url)

    assert "SHIMMIE_PII_STORE" in str(caught.value)


UNREACHABLE = "postgresql://postgres:s3cret-pw@127.0.0.1:1/test"


def _import_postgres_modules() -> None:
    require_modules(*BACKEND_MODULES["postgresql"])


@pytest.mark.postgres
def test_an_unreachable_postgres_event_store_fails_at_open_naming_the_url() -> None:
    _import_postgres_modules()
    store = event_store_from_url(UNREACHABLE)

    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as caught:
        store.open()
    elapsed = time.monotonic() - started
    store.close()

    message = str(caught.value)
    assert "127.0.0.1:1/test" in message, message
    assert "s3cret-pw" not in message, message
    assert elapsed < 5, elapsed


@pytest.mark.postgres
def test_an_unreachable_postgres_pii_store_fails_at_open_naming_the_url() -> None:
    _import_postgres_modules()
    pii = pii_store_from_url(UNREACHABLE)

    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as caught:
        pii.open()
    elapsed = time.monotonic() - started
    pii.close()

    message = str(caught.value)
    assert "127.0.0.1:1/test" in message, message
    assert "s3cret-pw" not in message, message
    assert elapsed < 5, elapsed


def test_describe_names_the_store(store_url: str, backend: str) -> None:
    store = event_store_from_url(store_url)

    described = store.describe()

    assert isinstance(described, str) and described
    if backend == "sqlite":
        assert store_url.split(":///", 1)[1] in described
    if backend == "postgresql":
        assert postgres_base_url().split("@", 1)[-1].split("?")[0] in described


@pytest.mark.postgres
def test_describe_leaves_the_password_out() -> None:
    _import_postgres_modules()
    url = "postgresql://shimmie:s3cret-pw@db.example.com:5433/songs?schema=app"

    for described in (event_store_from_url(url).describe(), pii_store_from_url(url).describe()):
        assert "s3cret-pw" not in described, described
        assert "db.example.com:5433/songs" in described, described


@pytest.mark.postgres
def test_libpq_parameters_in_the_url_reach_the_server_as_written() -> None:
    # libpq reads %20 as a space and keeps + as it is: a space used to arrive as "+" (so that
    # options=-c%20search_path%3Dx failed to connect), and a + as a space.
    require_backend("postgresql")
    import psycopg

    tag = uuid.uuid4().hex[:8]
    store = event_store_from_url(with_query(postgres_base_url(), application_name=f"shimmie+test%20{tag}"))
    store.open()
    try:
        store.last_sequence_num()  # a pooled session is open
        with psycopg.connect(postgres_base_url(), autocommit=True) as conn:
            names = conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s", (f"%{tag}",)
            ).fetchall()
        assert names and {name for (name,) in names} == {f"shimmie+test {tag}"}, names
    finally:
        store.close()
