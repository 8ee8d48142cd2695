"""Read models: plain classes whose methods subscribe to events.

.. code-block:: python

    class SongList(Model):
        def __init__(self) -> None:
            self.songs: list[dict] = []

        @subscribe("SONG_CREATED")
        def created(self, event: Event) -> None:
            self.songs.append(event.data)

The stack makes one instance per app (``stack.register_model(SongList)``),
delivers every event it subscribes to exactly once and in order, and rebuilds
it from scratch on ``stack.replay()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__shimmie_subscriptions__"


def subscribe(*event_names: str) -> Callable[[F], F]:
    """Mark a method as the handler of ``event_names`` (``"*"`` = every event).

    Used on :class:`Model` methods (``fn(self, event)``) and on
    :class:`~flask_shimmie.Projection` methods (``fn(self, event, db)``).
    """
    if not event_names or not all(isinstance(name, str) and name for name in event_names):
        raise TypeError("subscribe() takes one or more event names, e.g. @subscribe('SONG_CREATED').")

    def mark(method: F) -> F:
        setattr(method, _MARK, getattr(method, _MARK, ()) + tuple(event_names))
        return method

    return mark


def marked_handlers(cls: type) -> list[tuple[str, str]]:
    """The ``(event_name, method_name)`` pairs ``@subscribe`` marked on ``cls``.

    In definition order, base classes first; a method overridden without
    ``@subscribe`` is no longer a handler.
    """
    found: dict[str, tuple[str, ...]] = {}
    for klass in reversed(cls.__mro__):
        for name, member in vars(klass).items():
            names = getattr(member, _MARK, None)
            if names is not None:
                found[name] = names
            elif name in found:
                del found[name]
    return [(event_name, method) for method, names in found.items() for event_name in names]


class Model:
    """Base class of read models. Subclasses need a constructor without arguments.

    A model may also implement :meth:`snapshot` and :meth:`restore`; then the
    stack stores its state every ``SHIMMIE_SNAPSHOT_EVERY`` events, and a
    restart replays only the events after the last snapshot. A model that
    implements :meth:`load_entry` can be used with ``stack.load()`` and
    ``stack.load_or_404()``, which record against the version an entry shows.
    """

    #: Bump it when :meth:`snapshot`'s shape or the model's logic changes:
    #: snapshots taken with another version are ignored (a full replay runs).
    snapshot_version: int = 1

    def snapshot(self) -> Any:
        """Return the model's state as JSON-serialisable data (override to enable snapshots)."""
        raise NotImplementedError

    def restore(self, state: Any) -> None:
        """Set the model's state from what :meth:`snapshot` returned."""
        raise NotImplementedError

    def load_entry(self, stream_id: str) -> tuple[Any, int] | None:
        """Return ``(entry, version)`` for ``stream_id``, or ``None`` when the model has no entry.

        Override to use ``stack.load()``. ``version`` is the ``stream_version``
        of the last event of the stream that the entry reflects: keep
        ``event.stream_version`` in the entry from every handler that changes
        it. The stack calls this while no event is being applied and copies the
        entry, so return the live object; it is never called during delivery
        or replay, which therefore cost nothing more. A version that lags the
        stream (a handler that did not keep it) is safe but makes every record
        against the entry conflict (409); one ahead of it would be a bug.
        """
        raise NotImplementedError

    @classmethod
    def supports_loading(cls) -> bool:
        """True if the class implements :meth:`load_entry`."""
        return cls.load_entry is not Model.load_entry

    @classmethod
    def supports_snapshots(cls) -> bool:
        """True if the class implements both :meth:`snapshot` and :meth:`restore`."""
        return cls.snapshot is not Model.snapshot and cls.restore is not Model.restore

    @classmethod
    def subscriptions(cls) -> list[tuple[str, str]]:
        """``(event_name, method_name)`` pairs, in definition order, base classes first."""
        return marked_handlers(cls)

    @classmethod
    def model_name(cls) -> str:
        """The name health reports and errors use for this model."""
        return readable_name(cls)


def readable_name(obj: Any) -> str:
    """``obj``'s qualified name without the ``<locals>`` of enclosing functions."""
    name = getattr(obj, "__qualname__", None) or repr(obj)
    return str(name).rsplit("<locals>.", 1)[-1]
