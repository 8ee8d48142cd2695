// Live tail: GET <admin>/events/stream, read with fetch() (the bearer token goes in a header).
// Starts with the events stored from now on; reconnects after a dropped connection with
// Last-Event-ID, so nothing is missed or shown twice.

import { readEventStream } from "./sse.js";
import { el, message, table, textField } from "./dom.js";
import { eventRows } from "./events.js";

/** Rows kept on screen; older ones are dropped. */
const KEEP = 500;
const DEFAULT_RETRY_MS = 2000;

export function render(container, route) {
  const params = route.params;
  const stream = textField("tail-stream", params.get("stream"), "any stream");
  const type = textField("tail-type", params.get("type"), "any type");
  const status = el("p", { class: "tail-status", id: "tail-status", role: "status" }, "Connecting…");
  const body = el("tbody", { id: "tail-rows" });
  const rows = table(["#", "Recorded", "Stream", "Version", "Type", "Data", ""], [], { class: "events tail" });
  rows.replaceChild(body, rows.querySelector("tbody"));
  const problem = el("div", { id: "tail-problem" });
  container.append(
    el("h2", { class: "view-title" }, "Live tail"),
    el(
      "form",
      {
        class: "filters",
        onsubmit: (submitted) => {
          submitted.preventDefault();
          const query = new URLSearchParams();
          if (stream.value.trim()) query.set("stream", stream.value.trim());
          if (type.value.trim()) query.set("type", type.value.trim());
          const text = query.toString();
          window.location.hash = `#/tail${text ? `?${text}` : ""}`;
        },
      },
      el("label", { for: "tail-stream" }, "Stream"),
      stream,
      el("label", { for: "tail-type" }, "Type"),
      type,
      el("button", { type: "submit" }, "Follow"),
      el("button", { type: "button", class: "secondary", onclick: () => body.replaceChildren() }, "Clear"),
    ),
    status,
    problem,
    rows,
  );

  const controller = new AbortController();
  let lastEventId = "";
  let timer = 0;
  const filters = { stream: params.get("stream") ?? "", type: params.get("type") ?? "" };

  function add(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    const [row] = eventRows([event]);
    row.classList.add("fresh");
    body.prepend(row);
    while (body.children.length > KEEP) body.lastElementChild.remove();
  }

  async function connect() {
    status.textContent = lastEventId ? `Reconnecting after position ${lastEventId}…` : "Connecting…";
    let retry = DEFAULT_RETRY_MS;
    try {
      const ended = await readEventStream(filters, {
        signal: controller.signal,
        lastEventId,
        handlers: {
          onOpen: () => {
            problem.replaceChildren();
            status.textContent = "Live: new events appear at the top.";
            status.dataset.state = "live";
          },
          onMessage: add,
          onPosition: (id) => {
            lastEventId = id;
          },
        },
      });
      retry = ended.retry ?? retry;
      status.textContent = "The server ended the stream; reconnecting…";
    } catch (error) {
      if (controller.signal.aborted) return;
      status.dataset.state = "down";
      if (error.refused) {
        status.textContent = "Not following.";
        problem.replaceChildren(message("error", error.message));
        return;
      }
      status.textContent = `Disconnected (${error.message}); reconnecting in ${Math.round(retry / 1000)} s.`;
    }
    if (!controller.signal.aborted) timer = window.setTimeout(connect, retry);
  }

  connect();
  return () => {
    controller.abort();
    window.clearTimeout(timer);
  };
}
