// The admin API, as the signed-in operator: every call sends "Authorization: Bearer <token>".
// The token is kept in this tab's sessionStorage only.

const TOKEN_KEY = "shimmie-console-token";

/** The admin API's base path (from the page: SHIMMIE_ADMIN_URL under the app's root). */
export function adminUrl() {
  return document.body.dataset.adminUrl || "/admin";
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** A refusal or failure of the admin API; status 0 when it could not be reached. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }

  /** 401 or 403: retrying with the same token cannot help. */
  get refused() {
    return this.status === 401 || this.status === 403;
  }
}

/** What the operator reads for an answer of status, with the server's own message. */
export function explain(status, said) {
  const server = said ? ` The server said: “${said}”` : "";
  if (status === 401) {
    return `Not authorized (401): ${token() ? "the token was not accepted" : "no token given"}.${server} ` +
      "Sign in above with an admin token.";
  }
  if (status === 403) {
    return `Forbidden (403): this token may not use the admin API.${server} ` +
      "Sign in with a token the admin authorizer admits.";
  }
  return `The admin API answered ${status}.${server}`;
}

/** The ApiError for a failed response (its JSON "message", when it has one). */
export async function failure(response) {
  let said = "";
  try {
    const body = await response.json();
    if (body && typeof body.message === "string") said = body.message;
  } catch {
    // Not JSON (a proxy's page): the status says enough.
  }
  return new ApiError(response.status, explain(response.status, said));
}

/** The URL of an admin route, with the query parameters that have a value. */
export function url(path, params = {}) {
  const target = new URL(adminUrl() + path, window.location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") target.searchParams.set(name, String(value));
  }
  return target;
}

export function headers(extra = {}) {
  const all = new Headers(extra);
  const current = token();
  if (current) all.set("Authorization", `Bearer ${current}`);
  return all;
}

/** A path segment of a route (a stream id, a subscription name). */
export function segment(value) {
  return encodeURIComponent(value);
}

/**
 * Call the admin API; resolve to the JSON body.
 * options: method, params (query), body (sent as JSON), accept (more statuses to treat as answers).
 * Rejects with ApiError.
 */
export async function call(path, { method = "GET", params = {}, body, accept = [] } = {}) {
  const init = { method, headers: headers({ Accept: "application/json" }), cache: "no-store" };
  if (body !== undefined) {
    init.headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url(path, params), init);
  } catch (error) {
    throw new ApiError(0, `The admin API cannot be reached (${error.message}).`);
  }
  if (!response.ok && !accept.includes(response.status)) throw await failure(response);
  try {
    return await response.json();
  } catch {
    throw new ApiError(response.status, `The admin API answered ${response.status} without JSON.`);
  }
}

export const get = (path, params = {}, options = {}) => call(path, { ...options, params });
export const post = (path, body, options = {}) => call(path, { ...options, method: "POST", body });
