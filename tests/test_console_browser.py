"""The web console in a real browser: headless Chromium against example_songs served on SQLite.

The app (``example_songs.create_app`` with the console on) runs under werkzeug's threaded server in
this process, with its subscriptions running in the background as in production; its notifier
fails on songs titled "Poison" until cured, so that the reactor parks them. The browser signs in
with the example's demo tokens and is driven through every view; screenshots of each go to
``tests/artifacts/console/``.

Outside CI these tests are skipped, saying why, when Chromium, chromedriver or selenium are
missing; with ``CI`` set they fail instead.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask

from example_songs import stack
from tests.backends import skip_or_fail
from tests.browser import ARTIFACTS, browser_problem, screenshot, script_errors, start_chrome
from tests.serving import request, song_id_from
from tests.sse_client import LiveServer

CONSOLE = "/admin/console"
REACTOR = "notify-new-songs"
WAIT = 15.0
POISON = "Poison"


class PoisonNotifier:
    """The example's notifier, failing on a song titled "Poison" until :attr:`cured` is set."""

    def __init__(self) -> None:
        self.cured = threading.Event()
        self.sent: dict[str, str] = {}
        self._lock = threading.Lock()

    def notify(self, key: str, message: str) -> None:
        if message.startswith(f"New song: {POISON} ") and not self.cured.is_set():
            raise RuntimeError(f"cannot deliver {message!r}")
        with self._lock:
            self.sent.setdefault(key, message)


class Songs:
    """The served app: its base URL, its notifier, and posting through its HTTP API."""

    def __init__(self, app: Flask, base_url: str, notifier: PoisonNotifier) -> None:
        self.app = app
        self.base_url = base_url
        self.notifier = notifier

    def post(self, title: str, artist: str = "The Testers", **extra: Any) -> str:
        """Post a song as the editor; return its id (its stream id)."""
        reply = request(
            self.base_url,
            "POST",
            "/v1/songs",
            json_body={"title": title, "artist": artist, "year": "1956", **extra},
            headers={"Authorization": "Bearer editor-token"},
        )
        return song_id_from(reply)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        reply = request(self.base_url, method, f"/admin{path}", json_body=body)
        assert reply.status < 300, reply.describe()
        return reply.json()


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Songs]:
    problem = browser_problem()
    if problem is not None:
        skip_or_fail(f"no browser for the console tests: {problem}")
    from example_songs import create_app

    notifier = PoisonNotifier()
    database = tmp_path_factory.mktemp("console") / "songs.db"
    app = create_app(
        {
            "SHIMMIE_EVENT_STORE": f"sqlite:///{database}",
            "SONGS_NOTIFIER": notifier,
            "SHIMMIE_SSE_HEARTBEAT": 0.5,
        }
    )
    try:
        with LiveServer(app) as server:
            served = Songs(app, server.base_url, notifier)
            served.post("Hound Dog", "Elvis")
            served.post("Imagine", "John Lennon")
            yield served
    finally:
        stack.shutdown(app)


@pytest.fixture(scope="module")
def browser(songs: Songs) -> Iterator[Any]:
    driver = start_chrome()
    print(f"console screenshots: {ARTIFACTS}")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: Any, songs: Songs) -> Iterator[Console]:
    """The console, freshly loaded and signed out; fails the test on any script error in it."""
    console = Console(browser, songs.base_url)
    console.open("#/health")
    browser.execute_script("sessionStorage.clear()")
    console.open("#/health")
    assert console.find("#token").is_displayed()
    script_errors(browser)
    yield console
    errors = script_errors(browser)
    assert not errors, f"the console logged script errors: {errors}"
    notice = browser.find_element("id", "notice")
    assert not notice.is_displayed(), f"the console showed a failure: {notice.text}"


class Console:
    """The console page in the browser, with the waits its views need."""

    def __init__(self, driver: Any, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    def open(self, hash_route: str) -> None:
        """Load the page afresh (a new hash alone would not reload it)."""
        self.driver.get("about:blank")
        self.driver.get(f"{self.base_url}{CONSOLE}{hash_route}")
        self.wait(lambda: self.driver.execute_script("return document.readyState") == "complete")

    def go(self, hash_route: str) -> None:
        """Follow an in-page route (as a click on a link does)."""
        self.driver.execute_script("window.location.hash = arguments[0]", hash_route)

    def sign_in(self, token: str) -> None:
        self.find("#token").send_keys(token)
        self.find("#sign-in-button").click()
        self.wait(lambda: self.find("#signed-in").is_displayed())

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def wait(self, condition: Callable[[], Any], timeout: float = WAIT, what: str = "") -> Any:
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        def check(_driver: Any) -> Any:
            try:
                return condition()
            except (NoSuchElementException, StaleElementReferenceException):
                return False

        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(check, what)

    def text_of(self, css: str) -> str:
        """The text of the first element matching ``css``, once there is one."""
        self.wait(lambda: self.find_all(css), what=f"no {css} in the page")
        return str(self.find(css).text)

    def rows(self) -> list[dict[str, str]]:
        """The event rows shown: position, stream, type."""
        found = []
        for row in self.find_all("tr.event-row"):
            cells = row.find_elements("css selector", "td")
            found.append({"seq": cells[0].text, "stream": cells[2].text, "type": cells[4].text})
        return found

    def shot(self, name: str) -> Path:
        return screenshot(self.driver, name)


def _subscription(page: Console) -> dict[str, str]:
    row = page.find(f'tr.subscription[data-name="{REACTOR}"]')
    return {
        "position": row.find_element("css selector", ".position").text,
        "lag": row.find_element("css selector", ".lag").text,
        "state": row.find_element("css selector", ".state").text,
        "parked": row.find_element("css selector", ".parked-count").text,
    }


def test_the_health_view_shows_the_stores_to_an_admin(page: Console) -> None:
    page.wait(lambda: page.find("#health-status").text == "ok")
    assert "Event store\nsqlite\n" in page.text_of("#health")  # no token: the kind only
    assert "songs.db" not in page.text_of("#health")
    page.sign_in("admin-token")
    page.wait(lambda: "songs.db" in page.find("#health").text, what="the store's location")
    page.shot("health")


def test_an_admin_sees_the_events_and_filters_them_by_stream(page: Console, songs: Songs) -> None:
    first = songs.post("Heartbreak Hotel", "Elvis")
    renamed = songs.admin("GET", f"/streams/{first}")["events"][-1]["stream_version"]
    assert renamed == 1
    page.open("#/events")
    page.sign_in("admin-token")
    page.wait(lambda: page.rows(), what="event rows")
    stored = songs.admin("GET", "/events?limit=1000")["events"]
    shown = page.rows()
    assert [row["seq"] for row in shown] == [str(event["sequence_num"]) for event in stored][:50]
    assert {"seq": str(stored[-1]["sequence_num"]), "stream": first, "type": "SONG_CREATED"} in shown
    page.shot("events")

    page.find("#filter-stream").send_keys(first)
    page.find("#apply-filters").click()
    page.wait(lambda: [row["stream"] for row in page.rows()] == [first], what="only the stream's event")
    assert f"stream “{first}”" in page.text_of("#events-range")
    page.find("#filter-type").send_keys("SONG_RENAMED")
    page.find("#apply-filters").click()
    page.wait(lambda: "No events" in page.text_of("#events-range"), what="no rename of that song")


def test_paging_follows_next_after(page: Console, songs: Songs) -> None:
    for number in range(3):
        songs.post(f"Paged {number}", "The Pagers")
    created = songs.admin("GET", "/events?type=SONG_CREATED")["events"]
    stored = [str(event["sequence_num"]) for event in created]
    page.open("#/events?type=SONG_CREATED&limit=2")
    page.sign_in("admin-token")
    page.wait(lambda: page.rows(), what="event rows")
    seen = [row["seq"] for row in page.rows()]
    assert seen == stored[:2] and not page.find_all("#first-page")
    while page.find_all("#next-page"):
        before = page.text_of("#events-range")
        page.find("#next-page").click()
        page.wait(lambda: page.text_of("#events-range") != before, what="the next page")  # noqa: B023
        assert page.find_all("#first-page")
        assert all(row["type"] == "SONG_CREATED" for row in page.rows())
        seen += [row["seq"] for row in page.rows()]
    # The last page is short, or an empty page after a full one (next_after only says "maybe more").
    assert seen == stored
    page.find("#first-page").click()
    page.wait(lambda: [row["seq"] for row in page.rows()] == stored[:2], what="the first page again")


def test_an_event_opens_with_its_meta_and_pii_state(page: Console, songs: Songs) -> None:
    song = songs.post(
        "Blue Suede Shoes", "Carl Perkins", submitted_by={"name": "Sam", "email": "sam@sun.example"}
    )
    page.open(f"#/streams/{song}")
    page.sign_in("admin-token")
    page.wait(lambda: [row["stream"] for row in page.rows()] == [song], what="the stream's events")
    page.find("a.event-link").click()
    page.wait(lambda: page.find_all("#event-detail"), what="the event's detail")
    data = json.loads(page.text_of("#event-data"))
    assert data["title"] == "Blue Suede Shoes"
    assert data["submitted_by"] == {"name": "Sam", "email": "sam@sun.example"}
    assert isinstance(json.loads(page.text_of("#event-meta")), dict)
    assert page.text_of("#pii-state") == "PII held (submitted_by.name, submitted_by.email)"
    page.shot("event")

    songs.admin("POST", f"/streams/{song}/erase-pii")
    page.driver.refresh()
    page.wait(lambda: page.text_of("#pii-state").startswith("PII erased"), what="the erased state")
    assert json.loads(page.text_of("#event-data"))["submitted_by"] == {"name": "", "email": ""}


def test_a_new_event_appears_in_the_live_tail(page: Console, songs: Songs) -> None:
    page.open("#/tail")
    page.sign_in("admin-token")
    page.wait(lambda: page.find("#tail-status").get_attribute("data-state") == "live", what="a live stream")
    song = songs.post("Jailhouse Rock", "Elvis")
    page.wait(lambda: any(row["stream"] == song for row in page.rows()), what="the new event in the tail")
    (row,) = [row for row in page.rows() if row["stream"] == song]
    assert row["type"] == "SONG_CREATED"
    page.shot("tail")
    # Filtered to another stream, the tail stays quiet when this one changes.
    page.go(f"#/tail?stream={song}")
    page.wait(lambda: page.find("#tail-status").get_attribute("data-state") == "live", what="live again")
    other = songs.post("All Shook Up", "Elvis")
    renamed = request(
        songs.base_url,
        "PUT",
        f"/v1/songs/{song}",
        json_body={"title": "Jailhouse Rock (live)", "version": 1},
        headers={"Authorization": "Bearer editor-token"},
    )
    assert renamed.status == 200, renamed.describe()
    page.wait(lambda: [r["type"] for r in page.rows()] == ["SONG_RENAMED"], what="the rename alone")
    assert all(row["stream"] != other for row in page.rows())


def test_a_parked_event_is_retried_from_the_console(page: Console, songs: Songs) -> None:
    poison = songs.post(POISON, "The Poisoners")
    page.open("#/subscriptions")
    page.sign_in("admin-token")
    page.wait(lambda: _subscription(page)["parked"] == "1", what="the poison event parked")
    page.find(f'tr.subscription[data-name="{REACTOR}"] .toggle-parked').click()
    page.wait(lambda: page.find_all("tr.parked-row"), what="the parked event listed")
    (parked,) = page.find_all("tr.parked-row")
    stored = songs.admin("GET", f"/streams/{poison}")["events"][0]
    assert parked.get_attribute("data-event-id") == stored["event_id"]
    assert "RuntimeError: cannot deliver" in parked.text
    assert _subscription(page)["state"] == "active"
    page.shot("subscriptions")

    songs.notifier.cured.set()
    parked.find_element("css selector", "button.retry-event").click()
    page.wait(
        lambda: "1 parked event of notify-new-songs will be tried again" in page.text_of("#retry-outcome")
    )
    page.wait(lambda: _subscription(page)["parked"] == "0", what="the event handled on retry")
    assert songs.notifier.sent[stored["event_id"]] == f"New song: {POISON} by The Poisoners (1956)"
    assert "has no parked events" in page.text_of("#subscriptions")


def test_every_parked_event_of_a_subscription_is_retried_at_once_from_the_console(
    page: Console, songs: Songs
) -> None:
    songs.notifier.cured.clear()
    try:
        poisoned = [songs.post(POISON, "The Poisoners"), songs.post(POISON, "The Antidotes")]
        page.open("#/subscriptions")
        page.sign_in("admin-token")
        page.wait(lambda: _subscription(page)["parked"] == "2", what="both poison events parked")
        retry_all = page.find(f'tr.subscription[data-name="{REACTOR}"] button.retry-all')
        assert retry_all.text == "Retry all parked"  # the reactor parks and goes on: it is not stopped
        songs.notifier.cured.set()
        retry_all.click()
        asked = "2 parked events of notify-new-songs will be tried again"
        page.wait(lambda: asked in page.text_of("#retry-outcome"))
        page.wait(lambda: _subscription(page)["parked"] == "0", what="both events handled on retry")
        assert _subscription(page)["state"] == "active"
        for song in poisoned:
            event_id = songs.admin("GET", f"/streams/{song}")["events"][0]["event_id"]
            assert songs.notifier.sent[event_id].startswith(f"New song: {POISON} by ")
    finally:
        songs.notifier.cured.set()


@pytest.mark.parametrize("route", ["#/events", "#/tail", "#/subscriptions", "#/event/1", "#/streams/x"])
def test_a_reader_token_sees_a_forbidden_message(page: Console, route: str) -> None:
    page.open(route)
    page.sign_in("reader-token")
    page.wait(lambda: page.find_all(".message.error"), what="the refusal")
    text = page.text_of(".message.error")
    assert text.startswith("Forbidden (403): this token may not use the admin API.")
    assert "Sign in with a token the admin authorizer admits." in text
    if route == "#/events":
        page.shot("forbidden")


def test_without_a_token_the_console_asks_to_sign_in(page: Console) -> None:
    page.open("#/events")
    text = page.text_of(".message.error")
    assert text.startswith("Not authorized (401): no token given.")
    page.sign_in("no-such-token")
    page.wait(lambda: "the token was not accepted" in page.text_of(".message.error"))


HOSTILE_TITLE = "<script>window.__pwned = 'script'</script>"
HOSTILE_ARTIST = "<img src=x onerror=\"window.__pwned = 'img'\">"


def _nothing_ran(page: Console) -> None:
    assert page.driver.execute_script("return window.__pwned") is None
    assert not page.find_all("main img")
    assert len(page.find_all("script")) == 1  # the console's own module


def test_event_data_is_shown_as_text_never_run(page: Console, songs: Songs) -> None:
    page.open("#/tail")
    page.sign_in("admin-token")
    page.wait(lambda: page.find("#tail-status").get_attribute("data-state") == "live", what="a live stream")
    song = songs.post(HOSTILE_TITLE, HOSTILE_ARTIST)
    page.wait(lambda: any(row["stream"] == song for row in page.rows()), what="the event in the tail")
    assert HOSTILE_TITLE in page.text_of("tr.event-row td.summary")
    _nothing_ran(page)

    page.go(f"#/events?stream={song}")
    page.wait(lambda: [row["stream"] for row in page.rows()] == [song], what="the event listed")
    assert '"artist":"<img src=x onerror=' in page.text_of("tr.event-row td.summary")  # JSON-quoted
    _nothing_ran(page)
    page.find("a.event-link").click()
    page.wait(lambda: page.find_all("#event-detail"), what="the event's detail")
    data = json.loads(page.text_of("#event-data"))
    assert (data["title"], data["artist"]) == (HOSTILE_TITLE, HOSTILE_ARTIST)
    assert page.find("#event-data").is_displayed()
    _nothing_ran(page)
    page.shot("hostile-data")
    # Markup in the route (a link someone was sent) is text too.
    page.go(f"#/streams/{quote(HOSTILE_ARTIST, safe='')}")
    page.wait(lambda: page.text_of("#stream-id") == HOSTILE_ARTIST, what="the stream id as text")
    page.wait(lambda: "This stream has no events." in page.text_of("#stream"), what="the empty stream")
    _nothing_ran(page)


def test_markup_in_a_sink_is_refused_by_the_page_policy(page: Console) -> None:
    """Trusted Types (the CSP) make an HTML string given to innerHTML throw, should a script try."""
    refused = page.driver.execute_script(
        "try { document.getElementById('view').innerHTML = '<b>x</b>'; return null; }"
        " catch (error) { return error.name; }"
    )
    assert refused == "TypeError"
    assert not page.find_all("#view b")
    logged = page.driver.get_log("browser")
    assert any("requires 'TrustedHTML' assignment" in entry["message"] for entry in logged), logged


def test_a_token_revoked_while_tailing_shows_the_refusal(page: Console, songs: Songs) -> None:
    """The stream ends at its next heartbeat once the caller is not admitted; reconnecting is refused."""
    tokens = songs.app.config["SONGS_TOKENS"]
    page.open("#/tail")
    page.sign_in("admin-token")
    page.wait(lambda: page.find("#tail-status").get_attribute("data-state") == "live", what="a live stream")
    songs.app.config["SONGS_TOKENS"] = {**tokens, "admin-token": {"name": "Colonel", "roles": ["editor"]}}
    try:
        page.wait(lambda: page.find_all("#tail-problem .message.error"), what="the refusal")
        assert page.text_of("#tail-problem").startswith("Forbidden (403)")
        assert page.find("#tail-status").get_attribute("data-state") == "down"
    finally:
        songs.app.config["SONGS_TOKENS"] = tokens


PARSER_CHECK = r"""
const done = arguments[arguments.length - 1];
import(arguments[0]).then(({ SseParser }) => {
  const parser = new SseParser();
  const comments = [];
  const chunks = [
    "retry: 2000\nid: 4\n\n: heart", "beat\n\nid: 5\nevent: SONG_CREATED\ndata: {\"a\":", "1}\r\n",
    "\r\nid: 6\ndata: one\ndata:two\n\ndata: no id\n", "\n",
  ];
  const messages = chunks.flatMap((chunk) => parser.feed(chunk, (text) => comments.push(text)));
  done({ messages, comments, retry: parser.retry, last: parser.lastEventId });
}, (error) => done({ error: String(error) }));
"""


def test_the_stream_reader_parses_messages_split_anywhere(page: Console) -> None:
    """The console's SSE parser, in the browser: chunks cut mid-line, CRLF, comments, id-only messages."""
    result = page.driver.execute_async_script(PARSER_CHECK, f"{CONSOLE}/assets/sse.js")
    assert result == {
        "messages": [
            {"id": "5", "event": "SONG_CREATED", "data": '{"a":1}'},
            {"id": "6", "event": "message", "data": "one\ntwo"},
            {"id": "6", "event": "message", "data": "no id"},
        ],
        "comments": ["heartbeat"],
        "retry": 2000,
        "last": "6",
    }


def test_the_latest_events_of_every_kind(page: Console, songs: Songs) -> None:
    """Songs created, renamed and deleted, as the last page shows them (the screenshot of the docs)."""
    editor = {"Authorization": "Bearer editor-token"}
    kept = songs.post("Don't Be Cruel", "Elvis", submitted_by={"name": "Otis", "email": "otis@example.org"})
    gone = songs.post("Tutti Frutti", "Little Richard")
    songs.post("Johnny B. Goode", "Chuck Berry")
    for path, method, body in [
        (f"/v1/songs/{kept}", "PUT", {"title": "Don't Be Cruel (to a Heart That's True)", "version": 1}),
        (f"/v1/songs/{gone}", "DELETE", None),
    ]:
        reply = request(songs.base_url, method, path, json_body=body, headers=editor)
        assert reply.status < 300, reply.describe()
    last = songs.admin("GET", "/health")["last_stored"]
    page.open(f"#/events?after={max(last - 12, 0)}")
    page.sign_in("admin-token")
    page.wait(lambda: page.rows() and page.rows()[-1]["seq"] == str(last), what="the last events")
    assert {"SONG_CREATED", "SONG_RENAMED", "SONG_DELETED"} <= {row["type"] for row in page.rows()}
    page.shot("overview")
