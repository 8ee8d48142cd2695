"""What every store backend has in common, event stores and PII stores alike."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Backend(ABC):
    """A store built from its URL, opened in the process that uses it, closed at shutdown.

    Never open one before a fork: connections are not shared across processes.
    Every method of a backend is thread-safe.
    """

    #: The backend's name: ``memory``, ``sqlite`` or ``postgresql``.
    backend: str = ""

    @abstractmethod
    def open(self) -> None:
        """Connect, and create the tables that are missing (idempotent)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and threads. A closed store may be opened again."""

    @abstractmethod
    def describe(self) -> str:
        """The store's URL without credentials, for logs and health reports."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`~flask_shimmie.errors.StoreUnavailableError` if unreachable."""
