"""``flask shimmie subscriptions ...``: see, run, reset and retry the durable subscriptions."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from . import subscription_control as control
from .errors import ShimmieError
from .runner import last_line

if TYPE_CHECKING:
    from .state import AppState


def _state() -> AppState:
    state: AppState | None = current_app.extensions.get("shimmie")
    if state is None:
        raise click.ClickException("No ShimmieStack is initialised on this app. Did you call init_app(app)?")
    state.open_stores()
    return state


@contextmanager
def _operator_errors() -> Iterator[None]:
    """Show the stack's refusals (unknown name, refused reset) as one-line CLI errors."""
    try:
        yield
    except ShimmieError as error:
        raise click.ClickException(str(error)) from error


@click.group("subscriptions", cls=AppGroup, invoke_without_command=True)
@click.pass_context
@with_appcontext
def subscriptions_cli(context: click.Context) -> None:
    """List the reactors, projections and relays: position, lag, state, runner, parked events."""
    if context.invoked_subcommand is not None:
        return
    state = _state()
    found = control.statuses(state)
    if not found:
        click.echo("No subscriptions are registered.")
        return
    header = ("NAME", "KIND", "POSITION", "LAG", "STATE", "RUNNER", "PARKED")
    rows = [
        (s.name, s.kind, str(s.position), str(s.lag), s.state, s.runner or "-", str(s.parked)) for s in found
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for status in found:
        if status.error:
            click.echo(f"{status.name} failed: {last_line(status.error)}")


@subscriptions_cli.command("run")
@click.argument("names", nargs=-1)
@click.option("--once", is_flag=True, help="Catch up to the store's last event, then exit.")
def run(names: tuple[str, ...], once: bool) -> None:
    """Run the subscriptions (or NAMES) in this process until SIGTERM or Ctrl-C.

    Each one runs here only while this process holds its lease: run it in
    several processes and another takes over within SHIMMIE_SUBSCRIPTION_TAKEOVER
    seconds when the one running it dies. On a signal, the handler in flight
    finishes, the position is saved and the leases are released.
    """
    state = _state()
    chosen = list(names) or None
    with _operator_errors():
        state.runner.selected(chosen)
        state.stack.startup(state.app)
        if once:
            counts = state.stack.run_subscriptions(chosen)
            for name, count in counts.items():
                click.echo(f"{name}: {count} events")
            for spec in state.runner.selected(chosen):
                if spec.name not in counts:
                    click.echo(f"{spec.name}: runs in another process")
            return
        runner = state.runner
        with _stop_on_signals(runner.request_stop):
            runner.start(chosen)
            shown = ", ".join(chosen) if chosen else "every subscription"
            click.echo(f"Runner {runner.runner_id} runs {shown} (SIGTERM or Ctrl-C stops it).", err=True)
            while not runner.wait(0.5):
                pass
        runner.stop()
    click.echo("Stopped.", err=True)


@contextmanager
def _stop_on_signals(stop: Any) -> Iterator[None]:
    """Call ``stop()`` on SIGTERM and SIGINT instead of dying, for as long as the block runs."""

    def handler(signum: int, frame: Any) -> None:
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@subscriptions_cli.command("reset")
@click.argument("name")
@click.option(
    "--to",
    "to",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="The position to move to. 0 rebuilds a projection; a projection only skips forward otherwise.",
)
def reset(name: str, to: int) -> None:
    """Move NAME to position --to, make it active again and drop its parked events."""
    state = _state()
    with _operator_errors():
        outcome = control.reset(state, name, to)
    if outcome.rebuild:
        when = "now" if outcome.rebuilt_now else "when its runner takes its next batch"
        click.echo(f"{name} rebuilds from the first event (its rows are emptied {when}).")
    else:
        click.echo(f"{name} is at position {outcome.position}; it goes on from the event after it.")


@subscriptions_cli.command("parked")
@click.argument("name")
def parked(name: str) -> None:
    """List the events NAME parked: position, event id, tries, when, and the error."""
    state = _state()
    with _operator_errors():
        control.lookup(state, name)
    found = state.runner.store.parked(name)
    if not found:
        click.echo(f"{name} has no parked events.")
        return
    for item in found:
        mark = "  (retry asked)" if item.retry_requested else ""
        click.echo(
            f"{item.sequence_num:>8}  {item.event_id}  {item.attempts} tries  "
            f"{item.parked_at.isoformat(timespec='seconds')}{mark}"
        )
        click.echo(f"          {last_line(item.error)}")


@subscriptions_cli.command("retry")
@click.argument("name")
@click.argument("event_id", required=False)
def retry(name: str, event_id: str | None) -> None:
    """Try NAME's parked events (or EVENT_ID) again; resume NAME if it stopped on a failure."""
    state = _state()
    with _operator_errors():
        outcome = control.retry(state, name, event_id)
    if outcome.resumed:
        click.echo(f"{name} is active again; its runner tries the event it stopped at.")
    if outcome.retried or not outcome.resumed:
        click.echo(f"{outcome.retried} parked events of {name} will be tried again.")
