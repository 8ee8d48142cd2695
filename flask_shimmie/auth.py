"""Authentication and authorization for processors.

``@stack.authenticator`` registers ``fn() -> identity | None``, run at most
once per request, when first needed; :data:`current_identity` is the result.
A view declares who may call it with ``@authorize(check)`` (``check(identity)
-> bool``) or opts out with ``@no_authorization``. With
``SHIMMIE_ENFORCE_AUTHORIZATION``, mounting a processor with an undeclared view
raises :class:`AuthorizationNotImplemented` naming each such view.

A guarded view keeps its guard (a function that raises 401/403) on itself, so
the stack's request hooks can authorize a request before doing slow work for
it (:func:`admit`), and tell whether the caller was admitted (:func:`admitted`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, Flask, current_app, g
from werkzeug.exceptions import Forbidden, Unauthorized
from werkzeug.local import LocalProxy

from .errors import ShimmieError

F = TypeVar("F", bound=Callable[..., Any])

#: ``fn(identity) -> bool``: may this identity call the view?
Check = Callable[[Any], bool]

#: A guard: ``fn()`` that raises 401/403 unless the caller may go on.
Guard = Callable[[], Any]

_DECLARED = "__shimmie_authorization__"
_GUARD = "__shimmie_guard__"
_NO_IDENTITY = object()


class AuthorizationNotImplemented(ShimmieError):
    """Mounted views lack ``@authorize(...)`` or ``@no_authorization`` while enforcement is on.

    ``views`` lists ``(rule, methods, endpoint, function)`` for each.
    """

    def __init__(self, processor: str, views: list[tuple[str, str, str, str]]) -> None:
        self.processor = processor
        self.views = views
        lines = "\n".join(
            f"  {rule} [{methods}] -> view {endpoint!r} ({function})"
            for rule, methods, endpoint, function in views
        )
        super().__init__(
            f"Authorization Not Implemented for processor {processor!r}: SHIMMIE_ENFORCE_AUTHORIZATION is on "
            f"and these views declare neither @authorize(check) nor @no_authorization:\n{lines}"
        )


def _identity() -> Any:
    cached = g.get("_shimmie_identity", _NO_IDENTITY)
    if cached is _NO_IDENTITY:
        state = current_app.extensions.get("shimmie")
        authenticate = state.registry.authenticator if state is not None else None
        cached = authenticate() if authenticate is not None else None
        g._shimmie_identity = cached
    return cached


def get_identity() -> Any:
    """The identity of the current request (``None`` when there is none)."""
    return _identity()


def forget_identity() -> None:
    """Forget the current request's identity and admission, so the next use authenticates again.

    For a response that outlives its start, such as an event stream, to
    check that its caller is still who they were.
    """
    g.pop("_shimmie_identity", None)
    g.pop("_shimmie_admitted", None)


#: The identity the authenticator returned for this request (a proxy to
#: ``None`` when there is none: test it with ``if not current_identity``).
current_identity: Any = LocalProxy(_identity)


def require(check: Check) -> Any:
    """Return the identity if ``check`` accepts it; 401 without identity, 403 when refused."""
    identity = _identity()
    if identity is None:
        raise Unauthorized("Authentication required: send credentials.")
    if not check(identity):
        raise Forbidden("You are not allowed to do this.")
    return identity


def guarded_by(guard: Guard) -> Callable[[F], F]:
    """Run ``guard()`` before the view, which runs only if the guard raised nothing.

    The guard stays on the view, so :func:`admit` can run it before the view
    is called (the view runs it again: what it checks may have changed).
    """

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            guard()
            g._shimmie_admitted = True
            return view(*args, **kwargs)

        setattr(guarded, _GUARD, guard)
        return guarded  # type: ignore[return-value]

    return decorator


def authorize(check: Check) -> Callable[[F], F]:
    """Let the view run only for an identity that ``check(identity)`` accepts.

    No identity answers 401, a refusal 403; the view does not run. Put it
    below the route decorator (or in a class-based view's ``decorators``).
    """
    if not callable(check):
        raise TypeError(f"authorize() needs a check(identity) -> bool function, not {check!r}.")
    guard = guarded_by(functools.partial(require, check))

    def decorator(view: F) -> F:
        guarded = guard(view)
        setattr(guarded, _DECLARED, check)
        return guarded

    return decorator


def no_authorization(view: F) -> F:
    """Declare that the view needs no authorization (for enforcement)."""
    setattr(view, _DECLARED, None)
    return view


def _chain(view: Callable[..., Any]) -> list[Any]:
    """``view`` and the functions it wraps (``__wrapped__``), outermost first."""
    seen: set[int] = set()
    found: list[Any] = []
    current: Any = view
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found.append(current)
        current = getattr(current, "__wrapped__", None)
    return found


def guards_of(view: Callable[..., Any]) -> list[Guard]:
    """The guards of ``view`` and of the functions it wraps, outermost first, each once."""
    guards: list[Guard] = []
    for function in _chain(view):
        guard = getattr(function, _GUARD, None)
        if guard is not None and all(guard is not known for known in guards):
            guards.append(guard)
    return guards


def admit(view: Callable[..., Any]) -> None:
    """Authorize the current request for ``view`` now, as the view itself would.

    Raises 401 / 403 (or what the authenticator raises) when the caller may
    not call it; a view without guards admits everyone. The outcome is kept
    for :func:`admitted`.
    """
    try:
        for guard in guards_of(view):
            guard()
    except BaseException:
        g._shimmie_admitted = False
        raise
    g._shimmie_admitted = True


def admitted(view: Callable[..., Any]) -> bool:
    """Whether the current request's caller may call ``view`` (never raises).

    Uses the outcome of an earlier :func:`admit` or of the view's own guard;
    otherwise runs the guards now (a failing authenticator counts as a refusal).
    """
    known = g.get("_shimmie_admitted")
    if known is not None:
        return bool(known)
    try:
        admit(view)
    except Exception:
        return False
    return True


def is_declared(view: Callable[..., Any]) -> bool:
    """True if ``view``, or a function it wraps, declared ``@authorize`` or ``@no_authorization``."""
    return any(hasattr(function, _DECLARED) for function in _chain(view))


def undeclared_views(blueprint: Blueprint, url_prefix: str | None) -> list[tuple[str, str, str, str]]:
    """The views of ``blueprint`` (mounted at ``url_prefix``) that declare no authorization.

    The blueprint is registered on a throwaway app to see its real URL rules,
    so nothing is half-registered on the user's app when the check fails.
    """
    probe = Flask("shimmie_authorization_probe")
    probe.register_blueprint(blueprint, url_prefix=url_prefix)
    found = []
    for rule in probe.url_map.iter_rules():
        endpoint = rule.endpoint
        if not endpoint.startswith(f"{blueprint.name}.") or endpoint.endswith(".static"):
            continue
        view = probe.view_functions[endpoint]
        if not is_declared(view):
            methods = ", ".join(sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}))
            function = f"{getattr(view, '__module__', '?')}.{getattr(view, '__qualname__', view)}"
            found.append((rule.rule, methods, endpoint, function))
    return found


def any_identity(identity: Any) -> bool:
    """A check that accepts every authenticated caller: ``@authorize(any_identity)``."""
    return True
