"""schemathesis against example_songs under gunicorn, from its own /openapi.json, every check on.

The server is the example as deployed (gunicorn, gthread) on a SQLite store in a temporary
directory, behind :mod:`tests.openapi_fuzz_support`'s audit, which logs how many events each
request recorded. schemathesis runs its CLI (coverage, fuzzing and stateful phases, ``--checks
all``) as the editor (who may write), as the reader (who may only read), with no token, and as the
admin on the admin API. Then:

- schemathesis found nothing: no 5xx, every status, content type, header and body conforms to the
  document, schema-valid requests are accepted and schema-violating ones refused, a created song
  can be read and a deleted one is gone, and authentication is not ignored;
- the audit saw no 5xx, and no request that was answered other than 2xx recorded an event;
- the reader's and the anonymous runs recorded nothing, though they tried to write;
- the store holds exactly the events the audited 2xx requests recorded.

One worker, so that a read right after a write is answered by the process that wrote (across
workers a client sends ``X-Seq-Num-Min`` for that, which schemathesis does not). gunicorn's limit on
the request line is lifted: over it gunicorn answers 414 with a page of its own, which the app
never sees. The default run is bounded (about a minute on a busy 2-core machine); ``--run-slow``
(or ``SHIMMIE_RUN_SLOW=1``) runs ten times the examples with a fresh seed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import slow_runs_enabled
from tests.openapi_fuzz_support import AUDIT_LOG_ENV, Audited, read_audit
from tests.serving import GunicornServer, child_env, stored_events

pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install -e '.[test]')")
pytest.importorskip("apispec", reason="apispec is not installed (pip install -e '.[test]')")

#: Examples per operation, and the seed, of the default run (the same cases each time).
EXAMPLES = 25
SEED = 20261203
#: Seconds one schemathesis run may take before the test gives up on it.
RUN_TIMEOUT = 600
CONFIG = """\
[generation]
# Query parameters and headers the API does not know are ignored, as webargs does: do not
# expect them refused.
allow-extra-parameters = false
"""


@dataclass(frozen=True)
class Run:
    """One schemathesis run: who ran it, on which operations, and with how many examples."""

    name: str
    token: str | None
    examples: int
    only_admin: bool = False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[GunicornServer, Path, str]]:
    """example_songs under gunicorn on a fresh SQLite store, auditing to a file; stopped afterwards."""
    store_url = f"sqlite:///{tmp_path / 'songs.db'}"
    audit = tmp_path / "audit.jsonl"
    server = GunicornServer(
        store_url,
        tmp_path / "gunicorn.log",
        workers=1,
        worker_class="gthread",
        threads=4,
        app="tests.openapi_fuzz_support:audited_songs_app()",
        env={AUDIT_LOG_ENV: str(audit), "GUNICORN_CMD_ARGS": "--limit-request-line 0"},
    )
    server.start()
    try:
        yield server, audit, store_url
    finally:
        server.stop()


#: The admin API's Server-Sent Events route, left out of the fuzz run.
EVENT_STREAM_PATH = "/admin/events/stream"


def schemathesis(server: GunicornServer, run: Run, workdir: Path, seed: int | None) -> None:
    """Run the schemathesis CLI as ``run`` says; fail with its report unless it found nothing."""
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"]
    command += [f"{server.base_url}/openapi.json", "--checks", "all", "--max-examples", str(run.examples)]
    command += ["--workers", "1", "--no-color", "--output-truncate", "false"]
    # The event stream never ends (it follows the store live), so a response-checking fuzzer
    # would hold a server thread per request until its read timeout; tests/test_sse*.py cover it.
    command += ["--exclude-path", EVENT_STREAM_PATH]
    if seed is not None:
        command += ["--seed", str(seed)]
    if run.token is not None:
        command += ["--header", f"Authorization: Bearer {run.token}"]
    if run.only_admin:
        command += ["--include-path-regex", "^/admin/"]
    env = child_env({"SCHEMATHESIS_HOOKS": "tests.openapi_fuzz_hooks"})
    result = subprocess.run(
        command,
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis as {run.name} found problems:\n{report[-20_000:]}"
    assert "No issues found" in report or " passed" in report, report[-5_000:]


def refused_but_recorded(entries: list[Audited]) -> list[Audited]:
    """The audited requests answered other than 2xx that recorded an event all the same."""
    return [entry for entry in entries if entry.recorded and not 200 <= entry.status < 300]


def test_schemathesis_finds_nothing_and_no_refused_request_records(
    server: tuple[GunicornServer, Path, str], tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    gunicorn, audit, store_url = server
    slow = slow_runs_enabled(pytestconfig)
    scale = 10 if slow else 1
    seed = None if slow else SEED
    runs = [
        Run("the editor", "editor-token", EXAMPLES * scale),
        Run("the reader", "reader-token", 10 * scale),
        Run("no one", None, 10 * scale),
        Run("the admin", "admin-token", 10 * scale, only_admin=True),
    ]
    seen: dict[str, list[Audited]] = {}
    for run in runs:
        before = len(read_audit(audit))
        schemathesis(gunicorn, run, tmp_path, seed)
        seen[run.name] = read_audit(audit)[before:]

    entries = read_audit(audit)
    assert not [e for e in entries if e.status >= 500], [e for e in entries if e.status >= 500][:10]
    assert refused_but_recorded(entries) == []
    assert not [e for e in entries if e.method is None], "events were recorded outside any request"
    for name in ("the reader", "no one"):
        writes = [e for e in seen[name] if e.method in ("POST", "PUT", "DELETE")]
        assert writes and {e.status for e in writes} <= {400, 401, 403, 404, 405, 409, 413, 422}, (
            name,
            sorted({e.status for e in writes}),
        )
        assert sum(e.recorded for e in seen[name]) == 0, f"{name} recorded events"
    written = sum(e.recorded for e in entries)
    assert written > 0, "the editor's run recorded nothing: the fuzzing never wrote"
    assert len(stored_events(store_url)) == written, "the store holds events no audited request recorded"
