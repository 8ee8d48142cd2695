"""SQLite learns of other processes' events by polling its file: its own commits are no such news."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from flask_shimmie.storage import event_store_from_url
from flask_shimmie.storage.interface import EventStore
from tests.storage.helpers import append_one


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    opened = event_store_from_url(f"sqlite:///{tmp_path}/events.db")
    opened.open()
    yield opened
    opened.close()


def test_a_poll_between_a_commit_and_its_hand_over_is_no_news_of_others(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worst moment for a poll: this store's commit is visible, but its
    # writer has not yet told the signal that the position is its own.
    database: Any = store._db  # type: ignore[attr-defined]
    writing = database.writing
    polled: list[int] = []

    @contextmanager
    def writing_then_polling() -> Iterator[Any]:
        with writing() as connection:
            yield connection
        polled.append(store.last_sequence_num())

    monkeypatch.setattr(database, "writing", writing_then_polling)
    append_one(store, "s")
    monkeypatch.undo()

    assert polled == [1]
    started = time.monotonic()
    assert store.wait_for_events(0, timeout=0.3, others_only=True) == 1
    assert time.monotonic() - started >= 0.25, "a poll took this store's own commit for another writer's"


def test_a_failed_commit_leaves_later_positions_news_of_others(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    database: Any = store._db  # type: ignore[attr-defined]
    writing = database.writing

    @contextmanager
    def failing_commit() -> Iterator[Any]:
        with writing() as connection:
            yield connection
            raise OSError("disk gone")  # rolls the transaction back

    monkeypatch.setattr(database, "writing", failing_commit)
    with pytest.raises(OSError):
        append_one(store, "s")
    monkeypatch.undo()
    other = event_store_from_url(store.describe())
    other.open()
    try:
        append_one(other, "t")  # another writer takes position 1
    finally:
        other.close()

    started = time.monotonic()
    assert store.wait_for_events(0, timeout=2.0, others_only=True) == 1
    assert time.monotonic() - started < 1.0, "another writer's event was taken for this store's own"
