"""The ``flask shimmie`` command group: operate the stack from the command line."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click
from flask import current_app
from flask.cli import AppGroup

from .errors import ReplayError, ShimmieError
from .events import Event
from .recording import MAX_POSITION
from .subscriptions_cli import subscriptions_cli
from .transfer import ImportLineError, export_lines, import_lines

if TYPE_CHECKING:
    from .state import AppState

shimmie_cli = AppGroup("shimmie", help="Operate the event store and the models of this app.")
shimmie_cli.add_command(subscriptions_cli)

#: The longest number an option takes: enough for any position, with room for zeros.
MAX_NUMBER_LENGTH = 100


class WholeNumber(click.IntRange):
    """``click.IntRange(min=...)`` that refuses an over-long number before converting it.

    ``int()`` refuses more than 4,300 digits, and click would echo them all
    back; such a value gets a short usage error instead.
    """

    def __init__(self, minimum: int) -> None:
        super().__init__(min=minimum)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and len(value.strip()) > MAX_NUMBER_LENGTH:
            self.fail(
                f"{value.strip()[:20]}... ({len(value.strip())} characters) is not a number this "
                f"option takes: at most {MAX_NUMBER_LENGTH} digits.",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)


def _state() -> AppState:
    """The app's stack state, with its stores open (reading needs no replay)."""
    state: AppState | None = current_app.extensions.get("shimmie")
    if state is None:
        raise click.ClickException("No ShimmieStack is initialised on this app. Did you call init_app(app)?")
    state.open_stores()
    return state


def _read(
    state: AppState,
    after: int,
    limit: int | None,
    stream_ids: list[str] | None = None,
    event_names: list[str] | None = None,
) -> list[Event]:
    after = min(after, MAX_POSITION)
    return state.decode(state.event_store.read(after, limit, stream_ids=stream_ids, event_names=event_names))


def _describe(event: Event) -> str:
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
    return (
        f"{event.sequence_num:>8}  {event.recorded_at.isoformat(timespec='seconds')}  "
        f"{event.stream_id} v{event.stream_version}  {event.event_name}  {data}"
    )


def _print_events(events: Iterable[Event], as_json: bool) -> int:
    count = 0
    for event in events:
        if as_json:
            click.echo(json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":")))
        else:
            click.echo(_describe(event))
        count += 1
    return count


@shimmie_cli.command("init-db")
def init_db() -> None:
    """Create the tables that are missing (never drops anything)."""
    state = _state()
    click.echo(f"Event store ready: {state.event_store.describe()}")
    if state.pii_store is not None:
        click.echo(f"PII store ready: {state.pii_store.describe()}")


@shimmie_cli.command("replay")
@click.option(
    "--from",
    "from_sequence",
    type=WholeNumber(1),
    default=1,
    show_default=True,
    help="1 rebuilds the models from scratch; N applies events from N onto the current models.",
)
def replay(from_sequence: int) -> None:
    """Rebuild the models from the stored events, with a progress bar."""
    state = _state()
    stack = state.stack
    total = state.event_store.last_sequence_num() - from_sequence + 1
    started = time.perf_counter()
    try:
        with click.progressbar(length=max(total, 0), label="Replaying", file=sys.stderr) as bar:
            if from_sequence == 1 and not state.started and not state.snapshots.usable():
                # A fresh process with nothing to restore: startup's replay is the rebuild.
                stack.startup(state.app, progress=bar.update)
                count = state.dispatcher.last_handled
            else:  # startup may restore snapshots; the rebuild starts from scratch
                stack.startup(state.app)
                count = stack.replay(from_sequence, progress=bar.update)
    except ReplayError as error:
        raise click.ClickException(str(error)) from error
    elapsed = time.perf_counter() - started
    rate = count / elapsed if elapsed > 0 else 0.0
    models = ", ".join(cls.model_name() for cls in state.models) or "none"
    click.echo(f"Replayed {count} events in {elapsed:.2f}s ({rate:,.0f} events/s) into models: {models}")


@shimmie_cli.command("events")
@click.option("--stream", "stream_id", help="Only this stream.")
@click.option("--type", "event_name", help="Only events with this name.")
@click.option("--after", type=WholeNumber(0), default=0, help="Positions after N.")
@click.option("--limit", type=WholeNumber(1), help="At most N events (default: all).")
@click.option("--json", "as_json", is_flag=True, help="One Event object per line.")
@click.option("--follow", is_flag=True, help="Keep printing new events as they are stored (Ctrl-C stops).")
def events(
    stream_id: str | None, event_name: str | None, after: int, limit: int | None, as_json: bool, follow: bool
) -> None:
    """List stored events in order."""
    state = _state()
    streams = [stream_id] if stream_id else None
    names = [event_name] if event_name else None
    shown = 0
    while True:
        page_size = 1000 if limit is None else min(1000, limit - shown)
        page = _read(state, after, page_size, streams, names)
        shown += _print_events(page, as_json)
        if page:
            after = page[-1].sequence_num
        if limit is not None and shown >= limit:
            return
        if len(page) < page_size:
            if not follow:
                return
            try:
                state.event_store.wait_for_events(after, 1.0)
            except KeyboardInterrupt:
                return


@shimmie_cli.command("history")
@click.argument("stream_id")
@click.option("--json", "as_json", is_flag=True, help="One Event object per line.")
def history(stream_id: str, as_json: bool) -> None:
    """Show every event of STREAM_ID."""
    found = _read(_state(), 0, None, [stream_id])
    if not _print_events(found, as_json) and not as_json:
        click.echo(f"No events on stream {stream_id!r}.")


@shimmie_cli.command("erase-pii")
@click.argument("stream_id")
@click.option(
    "--vacuum",
    is_flag=True,
    help="PostgreSQL: VACUUM FULL the PII table, so that its files keep no copy "
    "(locks the table while it is rewritten). SQLite leaves no copy either way.",
)
@click.confirmation_option(prompt="Erase the PII of this stream for good?")
def erase_pii(stream_id: str, vacuum: bool) -> None:
    """Erase the PII of every event of STREAM_ID, for good."""
    try:
        state = _state()
        count = state.stack.erase_pii(stream_id, vacuum=vacuum)
    except ShimmieError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"Erased the PII of {count} events on stream {stream_id!r}.")


@shimmie_cli.command("export")
@click.argument("output", type=click.File("w", encoding="utf-8", lazy=True))
@click.option("--with-pii", is_flag=True, help="Include PII (listed in pii_fields); default: anonymised.")
def export(output: Any, with_pii: bool) -> None:
    """Write every event to OUTPUT (a file, or - for stdout) as JSON lines."""
    state = _state()
    count = 0

    def every_event() -> Iterable[Event]:
        nonlocal count
        after = 0
        while page := _read(state, after, 1000):
            count += len(page)
            yield from page
            after = page[-1].sequence_num

    for line in export_lines(every_event(), with_pii=with_pii):
        output.write(line + "\n")
    output.flush()
    click.echo(f"Exported {count} events.", err=True)


@shimmie_cli.command("import")
@click.argument("source", type=click.File("r", encoding="utf-8"))
@click.option("--batch-size", type=WholeNumber(1), help="Events per transaction (default: the whole file).")
def import_(source: Any, batch_size: int | None) -> None:
    """Read events from SOURCE (a file, or - for stdin); known event ids are skipped."""
    state = _state()
    try:
        imported, skipped = import_lines(state, source, batch_size)
    except ImportLineError as error:
        raise click.ClickException(f"{error} Nothing of its batch was imported.") from error
    if state.started:
        state.dispatcher.ensure_handled()
    click.echo(f"Imported {imported} events ({skipped} already present).")


@shimmie_cli.command("stats")
def stats() -> None:
    """Counts of events and streams, per-type counts, last position, store."""
    state = _state()
    store = state.event_store
    counts = store.count_by_event_name()
    click.echo(f"Store:          {store.describe()}")
    click.echo(f"Events:         {sum(counts.values())}")
    click.echo(f"Streams:        {store.count_streams()}")
    click.echo(f"Last position:  {store.last_sequence_num()}")
    for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        click.echo(f"  {name}: {count}")


@shimmie_cli.command("openapi")
@click.option(
    "--output",
    "-o",
    type=click.File("w", encoding="utf-8", atomic=True),
    default="-",
    show_default=True,
    help="Write the document to this file (- for stdout).",
)
def openapi(output: Any) -> None:
    """Write the app's OpenAPI 3.1 document (JSON), as /openapi.json serves it.

    Works whether or not SHIMMIE_OPENAPI is on; needs apispec (the openapi extra).
    """
    from .apidocs import document_builder

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if app.extensions.get("shimmie") is None:
        raise click.ClickException("No ShimmieStack is initialised on this app. Did you call init_app(app)?")
    try:
        document = document_builder()(app)
    except ShimmieError as error:
        raise click.ClickException(str(error)) from error
    output.write(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    output.flush()
