"""schemathesis hooks for the fuzz run of tests/test_openapi_fuzz.py (``SCHEMATHESIS_HOOKS``).

A well-formed ``X-Seq-Num-Min`` is sent as ``0``: a position the store has not reached makes the
stack wait ``SHIMMIE_SEQ_WAIT_TIMEOUT`` and answer 503, as its contract says (tests/test_seq_wait.py
tries that), and schemathesis counts every 5xx as a failure. Malformed values (the negative cases)
go out as generated and must be answered 400.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import schemathesis

HEADER = "X-Seq-Num-Min"
#: The longest position the stack parses.
MAX_DIGITS = 18


def _well_formed(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return False
    digits = value.strip(" \t")
    return digits.isascii() and digits.isdigit() and len(digits) <= MAX_DIGITS


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Send a well-formed ``X-Seq-Num-Min`` as ``0`` (a position every process has applied)."""
    for headers in (case.headers, kwargs.get("headers")):
        if isinstance(headers, MutableMapping) and _well_formed(headers.get(HEADER)):
            headers[HEADER] = "0"
