// Subscriptions: GET <admin>/subscriptions (position, lag, state, parked), their parked events
// (GET <admin>/subscriptions/<name>/parked) and retry (POST <admin>/subscriptions/<name>/retry).

import { get, post, segment } from "./api.js";
import { el, lastLine, link, message, table, trace, when } from "./dom.js";
import { eventLink } from "./events.js";

const REFRESH_MS = 2000;
const COLUMNS = ["Name", "Kind", "Position", "Lag", "State", "Runner", "Parked", ""];

function button(text, kind, onclick) {
  return el("button", { type: "button", class: kind, onclick }, text);
}

export function render(container) {
  const holder = el("div", { id: "subscriptions" }, message("info", "Loading…"));
  const outcome = el("div", { id: "retry-outcome" });
  container.append(
    el("h2", { class: "view-title" }, "Subscriptions"),
    el("p", { class: "hint" }, "Reactors and projections: where each is, how far behind, and the events it parked."),
    outcome,
    holder,
  );
  const open = new Set();
  let shown = "";
  let stopped = false;
  let timer = 0;
  // One refresh at a time; a refresh asked for meanwhile runs right after it.
  let busy = false;
  let again = false;

  async function retry(name, eventId) {
    try {
      const answer = await post(`/subscriptions/${segment(name)}/retry`, eventId ? { event_id: eventId } : {});
      const parts = [];
      if (answer.resumed) parts.push(`${answer.name} is active again`);
      const events = answer.retried === 1 ? "event" : "events";
      parts.push(`${answer.retried} parked ${events} of ${answer.name} will be tried again`);
      outcome.replaceChildren(message("ok", `${parts.join("; ")}.`));
    } catch (error) {
      outcome.replaceChildren(message("error", error.message));
    }
    refresh();
  }

  function parkedPanel(name, parked) {
    if (!parked.length) return message("info", `${name} has no parked events.`);
    return table(
      ["#", "Event id", "Tries", "Parked at", "Error", ""],
      parked.map((item) =>
        el(
          "tr",
          { class: "parked-row", dataset: { eventId: String(item.event_id) } },
          el("td", { class: "num" }, link(eventLink(item.sequence_num), String(item.sequence_num))),
          el("td", {}, el("code", {}, String(item.event_id))),
          el("td", { class: "num" }, String(item.attempts)),
          el("td", {}, when(item.parked_at)),
          el("td", {}, trace(lastLine(item.error), item.error)),
          el(
            "td",
            {},
            item.retry_requested
              ? el("span", { class: "badge" }, "retry asked")
              : button("Retry", "retry-event", () => retry(name, item.event_id)),
          ),
        ),
      ),
      { class: "parked" },
    );
  }

  function row(status, parked) {
    const name = String(status.name);
    const failed = status.state === "failed";
    const actions = [];
    if (status.parked > 0) {
      const toggle = () => {
        if (open.has(name)) open.delete(name);
        else open.add(name);
        refresh();
      };
      actions.push(button(open.has(name) ? "Hide parked" : "Show parked", "secondary toggle-parked", toggle));
    }
    if (failed || status.parked > 0) {
      actions.push(button(failed ? "Resume and retry" : "Retry all parked", "retry-all", () => retry(name)));
    }
    const main = el(
      "tr",
      { class: `subscription ${failed ? "failed" : ""}`, dataset: { name } },
      el("td", {}, el("strong", {}, name)),
      el("td", {}, String(status.kind)),
      el("td", { class: "num position" }, String(status.position)),
      el("td", { class: "num lag" }, String(status.lag)),
      el("td", {}, el("span", { class: `badge ${failed ? "unavailable" : "ok"} state` }, String(status.state))),
      el("td", {}, status.runner ? el("code", {}, String(status.runner)) : "—"),
      el("td", { class: "num parked-count" }, String(status.parked)),
      el("td", { class: "actions" }, actions),
    );
    const rows = [main];
    if (status.error) {
      rows.push(
        el("tr", { class: "error-row" }, el("td", { colspan: "8" }, trace(`Failed: ${lastLine(status.error)}`, status.error))),
      );
    }
    if (parked) rows.push(el("tr", { class: "parked-panel" }, el("td", { colspan: "8" }, parkedPanel(name, parked))));
    return rows;
  }

  async function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    window.clearTimeout(timer);
    let next;
    try {
      const found = (await get("/subscriptions")).subscriptions ?? [];
      const parked = {};
      for (const status of found) {
        const name = String(status.name);
        if (open.has(name)) parked[name] = (await get(`/subscriptions/${segment(name)}/parked`)).parked ?? [];
      }
      const text = JSON.stringify([found, parked, [...open]]);
      if (text !== shown) {
        shown = text;
        next = found.length
          ? table(COLUMNS, found.map((status) => row(status, parked[String(status.name)])), { class: "subscriptions" })
          : message("info", "No subscriptions are registered.");
      }
    } catch (error) {
      shown = "";
      next = message("error", error.message);
    }
    busy = false;
    if (stopped) return;
    if (next) holder.replaceChildren(next);
    if (again) {
      again = false;
      refresh();
    } else {
      timer = window.setTimeout(refresh, REFRESH_MS);
    }
  }

  refresh();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
  };
}
