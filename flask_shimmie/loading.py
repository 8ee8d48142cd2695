"""Deciding on what a model shows, and recording against the version the decision saw.

A view that reads a model, decides, then records with ``STREAM_EXISTS`` (or
reads the model again to answer) races every other writer of the stream: two
DELETEs both pass the check and both record. :meth:`ShimmieStack.load`
returns a :class:`Loaded`: a private copy of one model entry, the stream
version it reflects, and :meth:`Loaded.record`, which records against exactly
that version, so a write that landed in between makes the record fail with
:class:`~flask_shimmie.errors.StreamVersionError` (409) instead.

The entry and its version come from the model's
:meth:`~flask_shimmie.Model.load_entry`, called only here, so models
that do not use loading pay nothing, and delivery and replay do no extra work.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .events import Event
from .models import Model

if TYPE_CHECKING:
    from .extension import ShimmieStack
    from .state import AppState


@dataclass(frozen=True)
class Loaded:
    """One model entry as it stood at one stream version; record a decision against that version.

    ``value`` is a deep copy taken while no event was being applied, so it is
    consistent and yours to change. ``version`` is the version of the last
    event of ``stream_id`` that the entry reflects. Use it in the app context
    (and normally the request) it was loaded in.
    """

    stream_id: str
    value: Any
    version: int
    _stack: ShimmieStack = field(repr=False, compare=False)

    def record(
        self,
        event_name: str,
        data: Mapping[str, Any],
        *,
        meta: Mapping[str, Any] | None = None,
        pii_fields: Sequence[str] | None = None,
        event_id: str | None = None,
    ) -> Event:
        """Record one event on ``stream_id`` if the stream is still at :attr:`version`.

        Raises :class:`~flask_shimmie.errors.StreamVersionError` (409) and
        records nothing when another event landed since the entry was loaded.
        Returns the stored event (answer from it, not from a new read of the
        model, which a later write may already have changed). A second call
        on the same :class:`Loaded` conflicts with the first: to record
        several events on one decision, pass
        ``expected_versions={loaded.stream_id: loaded.version}`` to
        :meth:`ShimmieStack.record_events`.
        """
        return self._stack.record_event(
            self.stream_id,
            event_name,
            data,
            expected_version=self.version,
            meta=meta,
            pii_fields=pii_fields,
            event_id=event_id,
        )

    def erase_pii(self) -> int:
        """Erase the stream's PII (see :meth:`ShimmieStack.erase_pii`) if it is still at :attr:`version`.

        Raises :class:`~flask_shimmie.errors.StreamVersionError` (409) and
        erases nothing when another event landed since the entry was loaded.
        """
        return self._stack.erase_pii(self.stream_id, expected_version=self.version)


def load_entry(stack: ShimmieStack, state: AppState, model_cls: type[Model], stream_id: str) -> Loaded | None:
    """Ask ``model_cls``'s instance for ``stream_id``'s entry while no event is applied; copy it.

    The instance is looked up under the dispatch lock too: a replay swaps
    fresh instances in under it. Raises :class:`TypeError` for a model without
    :meth:`~flask_shimmie.Model.load_entry` or one whose answer is not
    ``(value, version >= 1)``, and :class:`LookupError` for an unregistered model.
    """
    if not (isinstance(model_cls, type) and issubclass(model_cls, Model)):
        raise TypeError(f"load() needs a Model subclass, not {model_cls!r}.")
    if not model_cls.supports_loading():
        raise TypeError(
            f"{model_cls.model_name()} does not implement load_entry(stream_id); give it one that "
            "returns (entry, stream version the entry reflects) or None, to use stack.load()."
        )
    with state.dispatcher.paused():
        instance = state.models.get(model_cls)
        if instance is None:
            raise LookupError(
                f"No registered model {model_cls.model_name()!r}; call stack.register_model() first."
            )
        found = instance.load_entry(stream_id)
        if found is None:
            return None
        if not (isinstance(found, tuple) and len(found) == 2):
            raise TypeError(
                f"{model_cls.model_name()}.load_entry({stream_id!r}) must return (entry, version) or None, "
                f"not {found!r:.80}."
            )
        value, version = found
        value = copy.deepcopy(value)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TypeError(
            f"{model_cls.model_name()}.load_entry({stream_id!r}) returned version {version!r:.40}; it must "
            "be the stream_version (an int >= 1) of the last event of the stream that the entry reflects."
        )
    return Loaded(stream_id, value, version, stack)
