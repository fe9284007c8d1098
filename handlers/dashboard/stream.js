// A task's Server-Sent Events (GET api/task/:id/stream) read with fetch, which (unlike
// EventSource) can send the Authorization header. `status` and `done` carry the task,
// `output` a chunk ({index, data}). A response that ends before `done` (AWS answers in one
// piece) is followed by another after its `retry:` delay, resuming with Last-Event-ID, as
// EventSource would; a 429 waits its Retry-After. Returns a function that stops it all.

import { retryAfter, token, url } from "./api.js";

export function followTask(taskId, { onStatus, onOutput, onDone, onState }) {
  const abort = new AbortController();
  let lastId = null;
  let retryMs = 1000;
  let finished = false;

  const dispatch = (kind, data, id) => {
    if (id !== null) lastId = id;
    const value = JSON.parse(data);
    if (kind === "status") onStatus(value);
    else if (kind === "output") onOutput(value);
    else if (kind === "done") {
      finished = true;
      onDone(value);
    }
  };

  const readOnce = async () => {
    const headers = { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" };
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const reply = await fetch(url(`api/task/${encodeURIComponent(taskId)}/stream`), {
      headers,
      cache: "no-store",
      signal: abort.signal,
    });
    if (reply.status === 429) return retryAfter(reply) * 1000;
    if (!reply.ok) {
      finished = true;
      onState(`Live view unavailable (HTTP ${reply.status})`);
      return 0;
    }
    onState("Live");
    const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let kind = "message";
    let data = [];
    let id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        if (line === "") {
          if (data.length) dispatch(kind, data.join("\n"), id);
          kind = "message";
          data = [];
          id = null;
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const name = colon < 0 ? line : line.slice(0, colon);
          const field = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (name === "event") kind = field;
          else if (name === "data") data.push(field);
          else if (name === "id") id = field;
          else if (name === "retry" && /^\d+$/.test(field)) retryMs = Number(field);
        }
      }
    }
    return retryMs;
  };

  (async () => {
    while (!finished && !abort.signal.aborted) {
      let waitMs;
      try {
        waitMs = await readOnce();
      } catch {
        if (abort.signal.aborted) return;
        waitMs = retryMs;
      }
      if (finished || abort.signal.aborted) return;
      onState("Reconnecting…");
      await new Promise((resolve) => setTimeout(resolve, waitMs));
    }
  })();
  return () => abort.abort();
}
