"""Model snapshots: one per model, replaced on save, all deleted at once, kept across restarts."""

from __future__ import annotations

import json
from collections.abc import Callable

from flask_shimmie.storage.interface import EventStore, Snapshot
from tests.backends import require_durable


def by_model(snapshots: list[Snapshot]) -> dict[str, Snapshot]:
    assert len({s.model for s in snapshots}) == len(snapshots), "more than one snapshot for a model"
    return {s.model: s for s in snapshots}


def test_saved_snapshots_load_back_exactly(store: EventStore) -> None:
    assert store.load_snapshots() == []
    songs = Snapshot("SongList", 12, 1, json.dumps({"songs": ["ünï 🎵", 2.5, None]}, ensure_ascii=False))
    artists = Snapshot("ArtistIndex", 7, 3, "{}")

    store.save_snapshots([songs, artists])

    assert by_model(store.load_snapshots()) == {"SongList": songs, "ArtistIndex": artists}


def test_saving_a_model_again_replaces_its_snapshot_only(store: EventStore) -> None:
    store.save_snapshots([Snapshot("A", 1, 1, '{"n": 1}'), Snapshot("B", 1, 1, '{"n": 1}')])

    store.save_snapshots([Snapshot("A", 5, 2, '{"n": 5}')])

    assert by_model(store.load_snapshots()) == {
        "A": Snapshot("A", 5, 2, '{"n": 5}'),
        "B": Snapshot("B", 1, 1, '{"n": 1}'),
    }


def test_delete_snapshots_deletes_every_one_and_returns_the_count(store: EventStore) -> None:
    store.save_snapshots([Snapshot("A", 1, 1, "{}"), Snapshot("B", 2, 1, "{}")])

    assert store.delete_snapshots() == 2
    assert store.load_snapshots() == []
    assert store.delete_snapshots() == 0
    store.save_snapshots([])
    assert store.load_snapshots() == []


def test_snapshots_survive_close_and_open(store: EventStore) -> None:
    snapshot = Snapshot("A", 3, 1, '{"x": [1, 2, 3]}')
    store.save_snapshots([snapshot])

    store.close()
    store.open()

    assert store.load_snapshots() == [snapshot]


def test_a_new_store_object_sees_the_snapshots(
    backend: str, store: EventStore, open_store: Callable[[], EventStore]
) -> None:
    require_durable(backend)
    snapshot = Snapshot("A", 3, 1, '{"x": 1}')
    store.save_snapshots([snapshot])

    other = open_store()

    assert other.load_snapshots() == [snapshot]
    assert other.delete_snapshots() == 1
    assert store.load_snapshots() == []
