"""The ``SHIMMIE_*`` configuration keys: defaults, and validation of their values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Config

from .errors import ConfigurationError

#: Every key with its default, in the order the table of ``docs/configuration.md`` lists them.
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
    "SHIMMIE_CONSOLE": False,
    "SHIMMIE_SSE_HEARTBEAT": 15.0,
    "SHIMMIE_SSE_MAX_CLIENTS": 32,
    "SHIMMIE_SSE_ACCESS": "admin",
    "SHIMMIE_OPENAPI": False,
    "SHIMMIE_OPENAPI_URL_PREFIX": "",
    "SHIMMIE_OPENAPI_DOCS": True,
    "SHIMMIE_OPENAPI_TITLE": None,
    "SHIMMIE_OPENAPI_VERSION": "1.0.0",
    "SHIMMIE_OPENAPI_SERVERS": None,
    "SHIMMIE_OPENAPI_SECURITY_SCHEMES": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
    "SHIMMIE_OPENAPI_OPTIONS": None,
}

#: The longest pause between an idle event stream's heartbeats (seconds).
MAX_HEARTBEAT = 3600

#: Who may open ``<admin>/events/stream`` (see :mod:`flask_shimmie.sse`).
SSE_ACCESS = ("admin", "authenticated")

#: The kinds of security scheme OpenAPI 3.1 knows.
SECURITY_SCHEME_TYPES = frozenset({"apiKey", "http", "mutualTLS", "oauth2", "openIdConnect"})
#: What a component name may be, in OpenAPI.
COMPONENT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
#: Root fields of the document that the stack writes itself.
OWN_ROOT_FIELDS = frozenset({"openapi", "paths"})


def normalise_prefix(value: str, key: str = "SHIMMIE_API_VERSION") -> str:
    """``" v1/ "`` → ``"/v1"``; ``""`` stays ``""``."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{key} = {value!r} must be a string such as '/v1'.")
    value = value.strip().strip("/")
    return f"/{value}" if value else ""


@dataclass(frozen=True)
class OpenApiSettings:
    """The validated ``SHIMMIE_OPENAPI*`` values: whether and how the API description is served."""

    #: Serve ``<url_prefix>/openapi.json`` (and ``<url_prefix>/docs`` when ``docs``).
    enabled: bool = False
    url_prefix: str = ""
    docs: bool = True
    #: ``None``: the app's name.
    title: str | None = None
    version: str = "1.0.0"
    #: Server objects, ``{"url": ..., "description"?: ...}``.
    servers: tuple[Mapping[str, Any], ...] = ()
    #: Security scheme objects by component name; views with ``@authorize`` accept any of them.
    security_schemes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Merged into the document's root (``info.description``, ``externalDocs``, ``tags``, ...).
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> OpenApiSettings:
        """Validate the ``SHIMMIE_OPENAPI*`` keys of ``config`` (defaults already filled in)."""
        enabled = _flag(config, "SHIMMIE_OPENAPI")
        docs = _flag(config, "SHIMMIE_OPENAPI_DOCS")
        title = config["SHIMMIE_OPENAPI_TITLE"]
        if title is not None and not (isinstance(title, str) and title.strip()):
            raise ConfigurationError(
                f"SHIMMIE_OPENAPI_TITLE = {title!r} must be a non-empty string, or None for the app's name."
            )
        version = config["SHIMMIE_OPENAPI_VERSION"]
        if isinstance(version, (int, float)) and not isinstance(version, bool):
            version = str(version)  # FLASK_SHIMMIE_OPENAPI_VERSION=2 arrives as a number
        if not (isinstance(version, str) and version.strip()):
            raise ConfigurationError(
                f"SHIMMIE_OPENAPI_VERSION = {version!r} must be the API's version, a string such as '1.0.0'."
            )
        options = config["SHIMMIE_OPENAPI_OPTIONS"]
        if options is None:
            options = {}
        if not isinstance(options, Mapping) or not all(isinstance(key, str) for key in options):
            raise ConfigurationError(
                f"SHIMMIE_OPENAPI_OPTIONS = {options!r} must be a dict of OpenAPI root fields or None."
            )
        own = sorted(OWN_ROOT_FIELDS & set(options))
        if own:
            raise ConfigurationError(
                f"SHIMMIE_OPENAPI_OPTIONS sets {', '.join(own)}, which the stack writes itself; remove it."
            )
        return cls(
            enabled=enabled,
            url_prefix=normalise_prefix(config["SHIMMIE_OPENAPI_URL_PREFIX"], "SHIMMIE_OPENAPI_URL_PREFIX"),
            docs=docs,
            title=title.strip() if title is not None else None,
            version=version.strip(),
            servers=_servers(config["SHIMMIE_OPENAPI_SERVERS"]),
            security_schemes=_security_schemes(config["SHIMMIE_OPENAPI_SECURITY_SCHEMES"]),
            options=dict(options),
        )


def _flag(config: Config, key: str) -> bool:
    value = config[key]
    if not isinstance(value, bool):
        raise ConfigurationError(f"{key} = {value!r} must be True or False.")
    return value


def _servers(value: Any) -> tuple[Mapping[str, Any], ...]:
    key = "SHIMMIE_OPENAPI_SERVERS"
    if value is None:
        return ()
    if isinstance(value, (str, Mapping)) or not isinstance(value, (list, tuple)):
        raise ConfigurationError(
            f"{key} = {value!r} must be a list of server URLs or {{'url': ..., 'description': ...}} dicts."
        )
    servers: list[Mapping[str, Any]] = []
    for server in value:
        if isinstance(server, str):
            server = {"url": server}
        url = server.get("url") if isinstance(server, Mapping) else None
        if not (isinstance(url, str) and url.strip()):
            raise ConfigurationError(f"{key}: {server!r} is not a server URL or a dict with a 'url'.")
        servers.append(dict(server))
    return tuple(servers)


def _security_schemes(value: Any) -> Mapping[str, Mapping[str, Any]]:
    key = "SHIMMIE_OPENAPI_SECURITY_SCHEMES"
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{key} = {value!r} must be a dict of security scheme objects by name, "
            "e.g. {'bearerAuth': {'type': 'http', 'scheme': 'bearer'}}, or None."
        )
    for name, scheme in value.items():
        if not (isinstance(name, str) and COMPONENT_NAME.match(name)):
            raise ConfigurationError(f"{key}: {name!r} is not a component name (letters, digits, . _ -).")
        kind = scheme.get("type") if isinstance(scheme, Mapping) else None
        if kind not in SECURITY_SCHEME_TYPES:
            raise ConfigurationError(
                f"{key}[{name!r}] = {scheme!r} must be a security scheme object whose 'type' is one of "
                f"{', '.join(sorted(SECURITY_SCHEME_TYPES))}."
            )
    return {name: dict(scheme) for name, scheme in value.items()}


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
    #: Serve the web console at ``<SHIMMIE_ADMIN_URL>/console``.
    console: bool = False
    #: Seconds between heartbeat comments on an idle event stream.
    sse_heartbeat: float = 15.0
    #: Event streams one process serves at a time.
    sse_max_clients: int = 32
    #: ``"admin"`` or ``"authenticated"``: who may open an event stream.
    sse_access: str = "admin"
    openapi: OpenApiSettings = field(default_factory=OpenApiSettings)

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
            console=_console_flag(config),
            sse_heartbeat=float(heartbeat),
            sse_max_clients=clients,
            sse_access=access,
            openapi=OpenApiSettings.from_config(config),
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


def _console_flag(config: Config) -> bool:
    """``SHIMMIE_CONSOLE``: True or False, and the console needs the admin URL (it calls the admin API)."""
    console = _flag(config, "SHIMMIE_CONSOLE")
    if console and not config["SHIMMIE_ADMIN_URL"]:
        raise ConfigurationError(
            "SHIMMIE_CONSOLE = True needs SHIMMIE_ADMIN_URL (e.g. '/admin'): the console is served at "
            "<SHIMMIE_ADMIN_URL>/console and reads everything through the admin API."
        )
    return console
