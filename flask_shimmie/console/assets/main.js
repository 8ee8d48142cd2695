// The console's shell: sign-in, navigation between the views, a notice for unexpected errors.

import { setToken, token } from "./api.js";
import * as events from "./events.js";
import * as health from "./health.js";
import * as subscriptions from "./subscriptions.js";
import * as tail from "./tail.js";

const VIEWS = {
  health: health.render,
  events: events.renderList,
  event: events.renderDetail,
  streams: events.renderStream,
  tail: tail.render,
  subscriptions: subscriptions.render,
};

let cleanup = () => {};

/** The route of a hash "#/events/12?stream=a": {view: "events", args: ["12"], params}. */
export function parseRoute(hash) {
  const [path, query = ""] = hash.replace(/^#/, "").split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const view = parts[0] in VIEWS ? parts[0] : "health";
  return { view, args: parts.slice(1), params: new URLSearchParams(query) };
}

/** Show a page-wide notice (null clears it). */
function notice(text) {
  const box = document.getElementById("notice");
  box.textContent = text ?? "";
  box.hidden = !text;
}

function showSignedIn() {
  const signedIn = Boolean(token());
  document.getElementById("token").hidden = signedIn;
  document.getElementById("sign-in-button").hidden = signedIn;
  document.querySelector("label[for=token]").hidden = signedIn;
  document.getElementById("signed-in").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
}

function show() {
  cleanup();
  cleanup = () => {};
  notice(null);
  const route = parseRoute(window.location.hash);
  for (const link of document.querySelectorAll("nav a")) {
    const current = link.dataset.view === route.view ||
      (link.dataset.view === "events" && (route.view === "event" || route.view === "streams"));
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const container = document.getElementById("view");
  container.replaceChildren();
  container.dataset.view = route.view;
  const stop = VIEWS[route.view](container, route);
  if (typeof stop === "function") cleanup = stop;
}

function start() {
  const form = document.getElementById("sign-in");
  form.addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    const field = document.getElementById("token");
    setToken(field.value.trim());
    field.value = "";
    showSignedIn();
    show();
  });
  document.getElementById("sign-out").addEventListener("click", () => {
    setToken("");
    showSignedIn();
    show();
  });
  window.addEventListener("hashchange", show);
  // A bug must say so in the page rather than leave a view half drawn.
  window.addEventListener("error", (failed) => notice(`The console failed: ${failed.message}`));
  window.addEventListener("unhandledrejection", (failed) => notice(`The console failed: ${failed.reason}`));
  showSignedIn();
  if (!window.location.hash) window.location.replace("#/health");
  show();
}

start();
