// Health: GET <admin>/health (open; the stores' locations only for admins), refreshed every few seconds.

import { get } from "./api.js";
import { el, fields, message } from "./dom.js";

const REFRESH_MS = 3000;

function list(names) {
  return names.length ? names.join(", ") : "none";
}

function view(body) {
  const status = String(body.status);
  return el(
    "section",
    { class: "card" },
    el("h3", {}, "Status ", el("span", { class: `badge ${status}`, id: "health-status" }, status)),
    body.error ? message("error", String(body.error)) : null,
    fields([
      ["Event store", String(body.event_store ?? "—")],
      ["PII store", String(body.pii_store ?? "none")],
      ["Last stored position", String(body.last_stored ?? "—")],
      ["Last handled position", String(body.last_handled ?? "—")],
      ["Degraded models", list(body.degraded_models ?? [])],
      ["Degraded subscriptions", list(body.degraded_subscriptions ?? [])],
    ]),
  );
}

export function render(container) {
  const holder = el("div", { id: "health" }, message("info", "Loading…"));
  container.append(
    el("h2", { class: "view-title" }, "Health"),
    el("p", { class: "hint" }, "Open to anyone; the stores' locations are shown to admins only."),
    holder,
  );
  let shown = "";
  let stopped = false;
  let timer = 0;
  async function refresh() {
    let next;
    try {
      const body = await get("/health", {}, { accept: [503] });
      const text = JSON.stringify(body);
      if (text !== shown) {
        shown = text;
        next = view(body);
      }
    } catch (error) {
      shown = "";
      next = message("error", error.message);
    }
    if (stopped) return;
    if (next) holder.replaceChildren(next);
    timer = window.setTimeout(refresh, REFRESH_MS);
  }
  refresh();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
  };
}
