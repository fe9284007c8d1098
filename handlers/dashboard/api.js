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

// Live updates of one task over /ws ({"type": "subscribe", "taskId"} -> {"type": "task",
// "task": {...}}). `onTask` gets every snapshot; `onFail` is called once if the socket cannot
// be opened or breaks, so the caller can poll instead. Returns a function that closes it.
export function watchTask(taskId, onTask, onFail) {
  let failed = false;
  const fail = () => {
    if (!failed) {
      failed = true;
      onFail();
    }
  };
  let socket;
  try {
    // On AWS the page names the WebSocket API (another origin); on one machine it is /ws here.
    const named = document.querySelector('meta[name="taskgate-websocket"]');
    const address = named ? new URL(named.content) : url("ws");
    if (!named) address.protocol = address.protocol === "https:" ? "wss:" : "ws:";
    // The WebSocket API takes no headers: /ws reads the token from its query string.
    address.searchParams.set("token", token());
    socket = new WebSocket(address);
  } catch {
    fail();
    return () => {};
  }
  const opening = setTimeout(fail, 3000);
  socket.addEventListener("open", () => {
    clearTimeout(opening);
    socket.send(JSON.stringify({ type: "subscribe", taskId }));
  });
  socket.addEventListener("message", (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message.type === "task" && message.task && message.task.id === taskId) onTask(message.task);
    else if (message.type === "error") fail();
  });
  socket.addEventListener("error", fail);
  socket.addEventListener("close", fail);
  return () => {
    failed = true;
    clearTimeout(opening);
    socket.close();
  };
}
