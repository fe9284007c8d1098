// The API as the dashboard uses it: the token from sessionStorage (this tab only, never in a
// page URL), JSON in and out, and the documented {"error", "details"} body turned into an Error.
// A 429 carries its Retry-After (seconds), so the page can wait exactly that long.

const TOKEN_KEY = "taskgate.token";

export class ApiError extends Error {
  constructor(status, body, retryAfterS = null) {
    super(body && body.details ? `${body.error}: ${body.details}` : `HTTP ${status}`);
    this.status = status;
    this.retryAfterS = retryAfterS;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value.trim());
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// The claims, read (not verified: the API verifies) to know whom to show admin controls to.
export function claims() {
  try {
    const part = token().split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part));
  } catch {
    return {};
  }
}

// Relative to the page, so the dashboard works under a path prefix too.
export function url(path) {
  return new URL(path, document.baseURI);
}

// Seconds to wait after a 429: its Retry-After, else the rest of a 60 s window.
export function retryAfter(reply) {
  const seconds = Number(reply.headers.get("Retry-After"));
  return Number.isFinite(seconds) && seconds > 0 ? seconds : 60;
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const reply = await fetch(url(path), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const data = await reply.json().catch(() => null);
  if (!reply.ok) throw new ApiError(reply.status, data, reply.status === 429 ? retryAfter(reply) : null);
  return data;
}
