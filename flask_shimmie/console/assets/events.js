// Streams and events: GET <admin>/events (filters, paging on next_after), one event in detail,
// and one stream's events (GET <admin>/streams/<id>).

import { get, segment } from "./api.js";
import { el, fields, json, link, message, table, textField, when } from "./dom.js";

const LIMITS = [25, 50, 100, 250];
const DEFAULT_LIMIT = 50;

/** A hash link to the events list with these filters. */
export function eventsLink(params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(name, String(value));
  }
  const text = query.toString();
  return `#/events${text ? `?${text}` : ""}`;
}

export function eventLink(sequenceNum) {
  return `#/event/${encodeURIComponent(sequenceNum)}`;
}

export function streamLink(streamId) {
  return `#/streams/${encodeURIComponent(streamId)}`;
}

/** What an event's PII is: none, held (with its fields), or erased. */
export function piiState(event) {
  const names = Array.isArray(event.pii_fields) ? event.pii_fields : [];
  if (!names.length) return { kind: "none", text: "no PII" };
  if (event.pii_erased) return { kind: "erased", text: `PII erased (${names.join(", ")})` };
  return { kind: "held", text: `PII held (${names.join(", ")})` };
}

function piiBadge(event) {
  const state = piiState(event);
  if (state.kind === "none") return "";
  const label = state.kind === "erased" ? "erased" : "PII";
  return el("span", { class: `badge pii-${state.kind}`, title: state.text }, label);
}

/** One table row per event: position (a link to its detail), time, stream, version, type, PII. */
export function eventRows(events) {
  return events.map((event) =>
    el(
      "tr",
      { class: "event-row", dataset: { seq: String(event.sequence_num) } },
      el("td", { class: "num" }, link(eventLink(event.sequence_num), String(event.sequence_num), { class: "event-link" })),
      el("td", { class: "time" }, when(event.recorded_at)),
      el("td", { class: "stream" }, link(streamLink(event.stream_id), String(event.stream_id), { class: "stream-link" })),
      el("td", { class: "num" }, String(event.stream_version)),
      el("td", {}, link(eventsLink({ type: event.event_name }), String(event.event_name), { class: "type-link" })),
      el("td", { class: "summary" }, summary(event.data)),
      el("td", {}, piiBadge(event), event.replay ? el("span", { class: "badge" }, "replay") : ""),
    ),
  );
}

/** A short one-line view of an event's data. */
function summary(data) {
  const text = JSON.stringify(data ?? {});
  return text.length > 120 ? `${text.slice(0, 117)}…` : text;
}

export function eventTable(events) {
  return table(["#", "Recorded", "Stream", "Version", "Type", "Data", ""], eventRows(events), { class: "events" });
}

function filterForm(params) {
  const stream = textField("filter-stream", params.get("stream"), "any stream");
  const type = textField("filter-type", params.get("type"), "any type");
  const current = Number(params.get("limit")) || DEFAULT_LIMIT;
  const limit = el(
    "select",
    { id: "filter-limit", name: "limit" },
    LIMITS.map((value) => el("option", { value: String(value), selected: value === current }, String(value))),
  );
  const form = el(
    "form",
    {
      class: "filters",
      id: "event-filters",
      onsubmit: (submitted) => {
        submitted.preventDefault();
        window.location.hash = eventsLink({
          stream: stream.value.trim(),
          type: type.value.trim(),
          limit: limit.value === String(DEFAULT_LIMIT) ? "" : limit.value,
        });
      },
    },
    el("label", { for: "filter-stream" }, "Stream"),
    stream,
    el("label", { for: "filter-type" }, "Type"),
    type,
    el("label", { for: "filter-limit" }, "Per page"),
    limit,
    el("button", { type: "submit", id: "apply-filters" }, "Apply"),
    el("a", { href: "#/events", class: "button secondary" }, "Clear"),
  );
  return form;
}

export function renderList(container, route) {
  const params = route.params;
  const filters = {
    stream: params.get("stream") ?? "",
    type: params.get("type") ?? "",
    limit: params.get("limit") ?? "",
  };
  const after = Number(params.get("after")) > 0 ? params.get("after") : "";
  const holder = el("div", { id: "events" }, message("info", "Loading…"));
  container.append(el("h2", { class: "view-title" }, "Events"), filterForm(params), holder);
  let stopped = false;
  (async () => {
    let content;
    try {
      const limit = Number(filters.limit) || DEFAULT_LIMIT;
      const page = await get("/events", { after, limit, stream: filters.stream, type: filters.type });
      const events = page.events ?? [];
      const described = [filters.stream && `stream “${filters.stream}”`, filters.type && `type “${filters.type}”`]
        .filter(Boolean)
        .join(", ");
      const of = described ? ` of ${described}` : "";
      const range = events.length
        ? `Events ${events[0].sequence_num}–${events[events.length - 1].sequence_num}${of}`
        : `No events${after ? ` after ${after}` : ""}${of}.`;
      content = [
        el("p", { class: "range", id: "events-range" }, range),
        events.length ? eventTable(events) : "",
        el(
          "div",
          { class: "pager" },
          after ? link(eventsLink(filters), "First page", { class: "button secondary", id: "first-page" }) : "",
          page.next_after !== null && page.next_after !== undefined
            ? link(eventsLink({ ...filters, after: page.next_after }), "Next page", { class: "button", id: "next-page" })
            : "",
        ),
      ];
    } catch (error) {
      content = message("error", error.message);
    }
    if (!stopped) holder.replaceChildren(...[content].flat());
  })();
  return () => {
    stopped = true;
  };
}

/** Everything of one event: its fields, PII state, data and meta. */
export function eventDetail(event) {
  const pii = piiState(event);
  return el(
    "article",
    { class: "card event-detail", id: "event-detail" },
    el("h3", {}, `Event ${event.sequence_num}: `, el("span", { class: "event-name" }, String(event.event_name))),
    fields([
      ["Position", String(event.sequence_num)],
      ["Stream", el("a", { href: streamLink(event.stream_id), class: "stream-link" }, String(event.stream_id))],
      ["Stream version", String(event.stream_version)],
      ["Event id", el("code", {}, String(event.event_id))],
      ["Recorded at", String(event.recorded_at)],
      ["Schema version", String(event.schema_version)],
      ["Replay", event.replay ? "yes" : "no"],
      ["PII", el("span", { class: `pii-state pii-${pii.kind}`, id: "pii-state" }, pii.text)],
    ]),
    el("h4", {}, "Data"),
    json(event.data, { id: "event-data" }),
    el("h4", {}, "Meta"),
    json(event.meta, { id: "event-meta" }),
  );
}

export function renderDetail(container, route) {
  const position = Number(route.args[0]);
  const holder = el("div", {}, message("info", "Loading…"));
  container.append(
    el("h2", { class: "view-title" }, "Event"),
    el("p", {}, el("a", { href: "#/events", class: "back" }, "← All events")),
    holder,
  );
  let stopped = false;
  (async () => {
    let content;
    if (!Number.isInteger(position) || position < 1) {
      content = message("error", "An event's position is a whole number from 1.");
    } else {
      try {
        const page = await get("/events", { after: position - 1, limit: 1 });
        const event = (page.events ?? [])[0];
        const found = event && event.sequence_num === position;
        content = found ? eventDetail(event) : message("error", `No event at position ${position}.`);
      } catch (error) {
        content = message("error", error.message);
      }
    }
    if (!stopped) holder.replaceChildren(content);
  })();
  return () => {
    stopped = true;
  };
}

export function renderStream(container, route) {
  const streamId = route.args.join("/");
  const holder = el("div", { id: "stream" }, message("info", "Loading…"));
  container.append(
    el("h2", { class: "view-title" }, "Stream ", el("code", { id: "stream-id" }, streamId)),
    el(
      "p",
      {},
      el("a", { href: "#/events", class: "back" }, "← All events"),
      " · ",
      el("a", { href: eventsLink({ stream: streamId }) }, "As a filtered list"),
    ),
    holder,
  );
  let stopped = false;
  (async () => {
    let content;
    try {
      const found = (await get(`/streams/${segment(streamId)}`)).events ?? [];
      if (!found.length) {
        content = message("info", "This stream has no events.");
      } else {
        const last = found[found.length - 1];
        content = [
          fields([
            ["Events", String(found.length)],
            ["Version", String(last.stream_version)],
            ["Created", when(found[0].recorded_at)],
            ["Updated", when(last.recorded_at)],
          ]),
          eventTable(found),
        ];
      }
    } catch (error) {
      content = message("error", error.message);
    }
    if (!stopped) holder.replaceChildren(...[content].flat());
  })();
  return () => {
    stopped = true;
  };
}
