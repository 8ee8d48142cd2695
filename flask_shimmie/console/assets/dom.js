// Building the page. Every value goes in as text: strings become Text nodes and
// attributes are set one by one, so nothing shown is ever parsed as HTML.

const PROPERTIES = new Set(["value", "checked", "disabled", "hidden", "open", "selected"]);

/**
 * A new element: el("a", {href: "#/x", class: "link", onclick: fn}, "text", child, ...).
 * Children are nodes or strings (added as text); null, undefined and false are skipped.
 * "on..." props must be functions: they are listeners, never code in a string.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) {
      if (typeof value !== "function") throw new TypeError(`${key} must be a function`);
      node.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      node.className = value;
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (PROPERTIES.has(key)) {
      node[key] = value;
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

/** A table with a header row and one row per entry of rows (arrays of cells: nodes or text). */
export function table(headers, rows, props = {}) {
  return el(
    "table",
    props,
    el("thead", {}, el("tr", {}, headers.map((header) => el("th", { scope: "col" }, header)))),
    el("tbody", {}, rows),
  );
}

/** A definition list from [term, value] pairs. */
export function fields(pairs, props = {}) {
  return el("dl", { class: "fields", ...props }, pairs.map(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
}

/** A value as pretty JSON, as text. */
export function json(value, props = {}) {
  return el("pre", { class: "json", ...props }, JSON.stringify(value, null, 2));
}

/** A message box: kind is "error", "info" or "ok". */
export function message(kind, text, props = {}) {
  return el("p", { class: `message ${kind}`, role: kind === "error" ? "alert" : "status", ...props }, text);
}

/** The text of an ISO time, shorter: "2026-12-03 12:34:56". */
export function when(iso) {
  if (typeof iso !== "string") return "";
  return iso.replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$|Z$/, " UTC");
}

/** The last line of a (multi-line) text: what a traceback says went wrong. */
export function lastLine(text) {
  const lines = String(text ?? "").trim().split("\n");
  return lines[lines.length - 1] ?? "";
}

/** A link to an in-page route. */
export function link(href, text, props = {}) {
  return el("a", { href, ...props }, text);
}

/** A text field for a filter. */
export function textField(id, value, placeholder) {
  return el("input", { id, name: id, value: value ?? "", placeholder, spellcheck: "false", autocomplete: "off" });
}

/** An error's last line, opening to the whole text (a traceback). */
export function trace(summary, text) {
  return el("details", {}, el("summary", {}, summary), el("pre", { class: "trace" }, String(text)));
}
