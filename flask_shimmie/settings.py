"""The ``SHIMMIE_*`` configuration keys: defaults, and validation of their values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Config

from .errors import ConfigurationError

#: Every key with its default, in the order the README's table lists them.
DEFAULTS: dict[str, Any] = {
    "SHIMMIE_EVENT_STORE": "memory://",
    "SHIMMIE_PII_STORE": None,
    "SHIMMIE_API_VERSION": "",
    "SHIMMIE_ENFORCE_AUTHORIZATION": False,
    "SHIMMIE_CORS": None,
    "SHIMMIE_MAX_REQUEST_SIZE": 1024 * 1024,
    "SHIMMIE_ADMIN_URL": None,
    "SHIMMIE_AUTO_STARTUP": True,
    "SHIMMIE_SEQ_WAIT_TIMEOUT": 5.0,
    "SHIMMIE_MAX_SEQ_WAITERS": 16,
    "SHIMMIE_SNAPSHOT_EVERY": 10_000,
    "SHIMMIE_RUN_SUBSCRIPTIONS": True,
    "SHIMMIE_SUBSCRIPTION_TAKEOVER": 5.0,
    "SHIMMIE_SUBSCRIPTION_MAX_LAG": 1000,
    "SHIMMIE_METRICS": False,
    "SHIMMIE_METRICS_PUBLIC": False,
    "SHIMMIE_SSE_HEARTBEAT": 15.0,
    "SHIMMIE_SSE_MAX_CLIENTS": 32,
    "SHIMMIE_SSE_ACCESS": "admin",
}

#: The longest pause between an idle event stream's heartbeats (seconds).
MAX_HEARTBEAT = 3600

#: Who may open ``<admin>/events/stream`` (see :mod:`flask_shimmie.sse`).
SSE_ACCESS = ("admin", "authenticated")


def normalise_prefix(value: str, key: str = "SHIMMIE_API_VERSION") -> str:
    """``" v1/ "`` → ``"/v1"``; ``""`` stays ``""``."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{key} = {value!r} must be a string such as '/v1'.")
    value = value.strip().strip("/")
    return f"/{value}" if value else ""


@dataclass(frozen=True)
class Settings:
    """The validated ``SHIMMIE_*`` values of one app, read once by ``init_app``."""

    event_store: str
    pii_store: str | bool | None
    api_version: str
    enforce_authorization: bool
    cors: Mapping[str, Any] | None
    max_request_size: int | None
    admin_url: str | None
    auto_startup: bool
    seq_wait_timeout: float
    max_seq_waiters: int
    snapshot_every: int
    #: Whether each web process runs the subscriptions in a background thread.
    run_subscriptions: bool = True
    #: Seconds within which another process takes over a subscription whose runner died.
    subscription_takeover: float = 5.0
    #: Events a subscription may lag behind the store before health is degraded (None: no limit).
    subscription_max_lag: int | None = 1000
    metrics: bool = False
    metrics_public: bool = False
    #: Seconds between heartbeat comments on an idle event stream.
    sse_heartbeat: float = 15.0
    #: Event streams one process serves at a time.
    sse_max_clients: int = 32
    #: ``"admin"`` or ``"authenticated"``: who may open an event stream.
    sse_access: str = "admin"

    @classmethod
    def from_config(cls, config: Config) -> Settings:
        """Fill in defaults on ``config`` and validate every key."""
        for key, default in DEFAULTS.items():
            config.setdefault(key, default)
        pii = config["SHIMMIE_PII_STORE"]
        if pii is True or not (pii is None or pii is False or isinstance(pii, str)):
            raise ConfigurationError(
                f"SHIMMIE_PII_STORE = {pii!r}: use None (same place as the event store), a store URL, "
                "or False (no PII)."
            )
        cors = config["SHIMMIE_CORS"]
        if cors is not None and not isinstance(cors, Mapping):
            raise ConfigurationError(f"SHIMMIE_CORS = {cors!r} must be a dict of flask-cors options or None.")
        size = config["SHIMMIE_MAX_REQUEST_SIZE"]
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
            raise ConfigurationError(f"SHIMMIE_MAX_REQUEST_SIZE = {size!r} must be a number of bytes > 0.")
        timeout = config["SHIMMIE_SEQ_WAIT_TIMEOUT"]
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
            raise ConfigurationError(f"SHIMMIE_SEQ_WAIT_TIMEOUT = {timeout!r} must be seconds >= 0.")
        waiters = config["SHIMMIE_MAX_SEQ_WAITERS"]
        if not isinstance(waiters, int) or isinstance(waiters, bool) or waiters < 1:
            raise ConfigurationError(
                f"SHIMMIE_MAX_SEQ_WAITERS = {waiters!r} must be a number of requests >= 1 "
                "(SHIMMIE_SEQ_WAIT_TIMEOUT = 0 makes no request wait)."
            )
        admin = config["SHIMMIE_ADMIN_URL"]
        if admin is not None and not (
            isinstance(admin, str) and normalise_prefix(admin, "SHIMMIE_ADMIN_URL")
        ):
            raise ConfigurationError(
                f"SHIMMIE_ADMIN_URL = {admin!r} must be a path such as '/admin' or None."
            )
        every = config["SHIMMIE_SNAPSHOT_EVERY"]
        if every is None or every is False:
            every = 0
        if not isinstance(every, int) or isinstance(every, bool) or every < 0:
            raise ConfigurationError(
                f"SHIMMIE_SNAPSHOT_EVERY = {every!r} must be a number of events (0 or None: no snapshots)."
            )
        run = config["SHIMMIE_RUN_SUBSCRIPTIONS"]
        if not isinstance(run, bool):
            raise ConfigurationError(
                f"SHIMMIE_RUN_SUBSCRIPTIONS = {run!r} must be True (web processes run them) or False "
                "(run `flask shimmie subscriptions run` instead)."
            )
        takeover = config["SHIMMIE_SUBSCRIPTION_TAKEOVER"]
        if not isinstance(takeover, (int, float)) or isinstance(takeover, bool) or not 0 < takeover < 3600:
            raise ConfigurationError(
                f"SHIMMIE_SUBSCRIPTION_TAKEOVER = {takeover!r} must be seconds > 0 (and under an hour)."
            )
        max_lag = config["SHIMMIE_SUBSCRIPTION_MAX_LAG"]
        if max_lag is not None and (not isinstance(max_lag, int) or isinstance(max_lag, bool) or max_lag < 0):
            raise ConfigurationError(
                f"SHIMMIE_SUBSCRIPTION_MAX_LAG = {max_lag!r} must be a number of events >= 0, or None "
                "(no limit)."
            )
        metrics, metrics_public = _metrics_flags(config)
        heartbeat = config["SHIMMIE_SSE_HEARTBEAT"]
        if (
            not isinstance(heartbeat, (int, float))
            or isinstance(heartbeat, bool)
            or not 0 < heartbeat <= MAX_HEARTBEAT
        ):
            raise ConfigurationError(
                f"SHIMMIE_SSE_HEARTBEAT = {heartbeat!r} must be seconds > 0 (at most 3600)."
            )
        clients = config["SHIMMIE_SSE_MAX_CLIENTS"]
        if not isinstance(clients, int) or isinstance(clients, bool) or clients < 0:
            raise ConfigurationError(
                f"SHIMMIE_SSE_MAX_CLIENTS = {clients!r} must be a number of streams >= 0 (0: none)."
            )
        access = config["SHIMMIE_SSE_ACCESS"]
        if access not in SSE_ACCESS:
            raise ConfigurationError(
                f"SHIMMIE_SSE_ACCESS = {access!r} must be 'admin' (the admin authorizer admits; PII "
                "merged) or 'authenticated' (any identity; PII merged only for admins)."
            )
        store = config["SHIMMIE_EVENT_STORE"]
        if not isinstance(store, str):
            raise ConfigurationError(f"SHIMMIE_EVENT_STORE = {store!r} must be a store URL string.")
        return cls(
            event_store=store,
            pii_store=pii,
            api_version=normalise_prefix(config["SHIMMIE_API_VERSION"]),
            enforce_authorization=bool(config["SHIMMIE_ENFORCE_AUTHORIZATION"]),
            cors=cors,
            max_request_size=size,
            admin_url=normalise_prefix(admin, "SHIMMIE_ADMIN_URL") if admin else None,
            auto_startup=bool(config["SHIMMIE_AUTO_STARTUP"]),
            seq_wait_timeout=float(timeout),
            max_seq_waiters=waiters,
            snapshot_every=every,
            run_subscriptions=run,
            subscription_takeover=float(takeover),
            subscription_max_lag=max_lag,
            metrics=metrics,
            metrics_public=metrics_public,
            sse_heartbeat=float(heartbeat),
            sse_max_clients=clients,
            sse_access=access,
        )


def _metrics_flags(config: Config) -> tuple[bool, bool]:
    """``SHIMMIE_METRICS`` and ``SHIMMIE_METRICS_PUBLIC``: True or False, and metrics need the admin URL."""
    flags = []
    for key in ("SHIMMIE_METRICS", "SHIMMIE_METRICS_PUBLIC"):
        value = config[key]
        if not isinstance(value, bool):
            raise ConfigurationError(f"{key} = {value!r} must be True or False.")
        flags.append(value)
    if flags[0] and not config["SHIMMIE_ADMIN_URL"]:
        raise ConfigurationError(
            "SHIMMIE_METRICS = True needs SHIMMIE_ADMIN_URL (e.g. '/admin'): the metrics are served at "
            "<SHIMMIE_ADMIN_URL>/metrics."
        )
    return flags[0], flags[1]
