"""Scenario 9 (ours only, for information): the SSE event stream fanned out to 1, 10, 50 clients.

A gunicorn server (one ``gthread`` worker with a thread per stream and some to spare) serves
:mod:`benchmarks.sse_app` on a fresh SQLite or PostgreSQL store. N clients, threads of this process
on ``http.client``, each open ``GET /admin/events/stream?after=<last>`` and wait for the opening
message; then a writer in this process (a stack of its own on the same store) records events at a
steady rate, a few per ``record_unchecked_events`` every 10 ms. The server learns of them as any
other process's writes (SQLite: its poll; PostgreSQL: LISTEN/NOTIFY), and each stream sends them.

Per client count: the rate each client received events at (the slowest client's: events / time
from the first commit to its last event), and the delay from a commit (``record_unchecked_events``
returning in the writer) to a client reading the event's ``id:`` line, p50 and p99 over every
client and event. Both instants come from ``time.perf_counter()`` in this one process.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field

from flask_shimmie import NewEvent

from .harness import Progress, Row, Settings, ours_only_row, rate
from .httpbench import Server, gunicorn_server
from .shimmie_side import CREATED, make_app
from .subscription_suite import percentile

SCENARIO = "9 SSE fan-out"
#: Seconds between two writes of the writer.
WRITE_EVERY = 0.01
#: Seconds the clients get to receive the last event.
DRAIN_TIMEOUT = 60.0


@dataclass
class Client:
    """One stream reader: when it read each event's ``id:`` line."""

    port: int
    after: int
    last: int
    received: dict[int, float] = field(default_factory=dict)
    ready: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DRAIN_TIMEOUT)
        try:
            connection.request("GET", f"/admin/events/stream?after={self.after}")
            response = connection.getresponse()
            if response.status != 200:
                raise RuntimeError(f"the stream answered {response.status}: {response.read()[:200]!r}")
            while True:
                line = response.readline()
                if not line:
                    raise RuntimeError("the stream ended")
                if line.startswith(b"id: "):
                    position = int(line[4:])
                    if position == self.after:
                        self.ready.set()  # the opening message
                        continue
                    self.received[position] = time.perf_counter()
                    if position >= self.last:
                        return
        except BaseException as error:
            self.error = error
            self.ready.set()
        finally:
            connection.close()


def _fan_out(server: Server, url: str, clients: int, settings: Settings) -> Row:
    writer = make_app(url, with_model=False)
    try:
        after = writer.app.extensions["shimmie"].event_store.last_sequence_num()
        total = settings.sse_events
        readers = [Client(server.port, after, after + total) for _ in range(clients)]
        threads = [threading.Thread(target=reader.run, daemon=True) for reader in readers]
        for thread in threads:
            thread.start()
        for reader in readers:
            if not reader.ready.wait(30) or reader.error is not None:
                raise RuntimeError(f"a client could not open its stream: {reader.error}")
        per_write = max(1, round(settings.sse_rate * WRITE_EVERY))
        committed: dict[int, float] = {}
        started = time.perf_counter()
        with writer.app.app_context():
            written = 0
            while written < total:
                size = min(per_write, total - written)
                events = writer.stack.record_unchecked_events(
                    [NewEvent(f"s{(written + n) % 10}", CREATED, {"n": written + n}) for n in range(size)]
                )
                now = time.perf_counter()
                for event in events:
                    committed[event.sequence_num] = now
                written += size
                pause = started + written / settings.sse_rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
        write_seconds = time.perf_counter() - started
        for thread in threads:
            thread.join(DRAIN_TIMEOUT)
        failed = [
            reader.error for reader in readers if reader.error is not None or len(reader.received) != total
        ]
        if failed:
            raise RuntimeError(f"{len(failed)} of {clients} clients did not get every event: {failed[0]}")
    finally:
        writer.close()
    first = min(committed.values())
    rates = [total / (max(reader.received.values()) - first) for reader in readers]
    delays = [reader.received[seq] - committed[seq] for reader in readers for seq in committed]
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    return ours_only_row(
        f"{SCENARIO}, {clients} client{'s' if clients > 1 else ''}",
        "",
        f"{rate(min(rates))} each, p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms",
        (
            f"ours only: {total:,} events written at {settings.sse_rate:,} ev/s ({per_write} per "
            f"record_unchecked_events every {WRITE_EVERY * 1000:g} ms; achieved "
            f"{total / write_seconds:,.0f} ev/s) by another process than the server's (gunicorn, one gthread "
            f"worker); each client's rate is its events / (its last event - the first commit), the slowest "
            f"shown; delay = client reads the id: line - the writer's record call returned, over "
            f"{len(delays):,} deliveries; max {max(delays) * 1000:.1f} ms"
        ),
        delays,
        ours_value=min(rates),
    )


def sse_rows(backend: str, url: str, settings: Settings, progress: Progress, workdir: str) -> list[Row]:
    """Scenario 9 for each of ``settings.sse_clients`` on the store ``url``."""
    # One thread per stream: a closed stream's thread is freed at its next write or heartbeat.
    streams = sum(settings.sse_clients)
    server = gunicorn_server(
        f"sse-{backend}",
        "benchmarks.sse_app:create_app()",
        workdir,
        threads=streams + 4,
        env={"BENCH_SSE_STORE": url, "BENCH_SSE_CLIENTS": str(streams)},
    )
    progress(f"{backend}: {SCENARIO}: starting gunicorn (1 worker × gthread:{streams + 4})")
    make_app(url, with_model=False).close()  # the tables, before the server opens the store
    server.start("/admin/health")
    rows = []
    try:
        for clients in settings.sse_clients:
            progress(f"{backend}: {SCENARIO}, {clients} clients, {settings.sse_events:,} events")
            row = _fan_out(server, url, clients, settings)
            row.backend = backend
            progress(f"  {row.ours}")
            rows.append(row)
    finally:
        server.stop()
    return rows
