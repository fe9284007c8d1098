// A task's detail, in a dialog: what it is and needs, why it waits, each attempt, the result
// or the error in full, and its streamed output as it arrives. Kept live by the task's
// Server-Sent Events (stream.js); Cancel and Retry act on it.

import { api } from "./api.js";
import { bar, clock, duration, el } from "./format.js";
import { followTask } from "./stream.js";

const $ = (id) => document.getElementById(id);
const CANCELLABLE = new Set(["PENDING", "PROCESSING"]);
const RETRYABLE = new Set(["FAILED", "TIMEOUT", "CANCELLED"]);

let stopFollowing = null;
let current = null; // the task shown
let onChange = () => {};
let onError = () => {};

export function setupDetail(refresh, report) {
  onChange = refresh;
  onError = report;
  $("task-detail").addEventListener("close", () => {
    if (stopFollowing) stopFollowing();
    stopFollowing = null;
    current = null;
  });
  $("detail-cancel").addEventListener("click", () => act("cancel"));
  $("detail-retry").addEventListener("click", () => act("retry"));
}

export async function openDetail(taskId) {
  const dialog = $("task-detail");
  if (stopFollowing) stopFollowing();
  $("detail-title").textContent = `Task ${taskId}`;
  $("detail-live").textContent = "";
  $("detail-note").textContent = "";
  $("detail-output").replaceChildren();
  $("detail-output-empty").hidden = false;
  try {
    drawDetail(await api(`api/task/${encodeURIComponent(taskId)}`));
  } catch (error) {
    onError(error);
    return;
  }
  if (!dialog.open) dialog.showModal();
  follow(taskId);
}

function follow(taskId) {
  if (stopFollowing) stopFollowing();
  $("detail-output").replaceChildren();
  stopFollowing = followTask(taskId, {
    onStatus: drawDetail,
    onOutput: addOutput,
    onDone: (task) => {
      drawDetail(task);
      $("detail-live").textContent = `Finished: ${task.status}`;
    },
    onState: (text) => ($("detail-live").textContent = text),
  });
}

async function act(action) {
  if (!current) return;
  const taskId = current.id;
  const button = $(`detail-${action}`);
  button.disabled = true;
  try {
    const reply = await api(`api/task/${encodeURIComponent(taskId)}/${action}`, { method: "POST" });
    $("detail-note").textContent = reply.message;
    drawDetail(await api(`api/task/${encodeURIComponent(taskId)}`));
    if (action === "retry") follow(taskId); // a new run: follow it from the start
  } catch (error) {
    $("detail-note").textContent = error.message;
    onError(error);
  }
  onChange();
}

function addOutput(chunk) {
  $("detail-output-empty").hidden = true;
  const text = typeof chunk.data === "string" ? chunk.data : JSON.stringify(chunk.data);
  $("detail-output").append(el("li", { "data-index": chunk.index, text }));
}

function drawDetail(task) {
  current = task;
  const took = task.completedAt && task.startedAt ? duration(task.completedAt - task.startedAt) : "–";
  const fields = [
    ["Status", task.status],
    ["Type", task.type],
    ["Priority", task.priority],
    ["Needs", (task.capabilities || []).join(", ") || "any server"],
    ["Server", task.serverId || "–"],
    ["Attempts", task.attempts],
    ["Created", clock(task.createdAt)],
    ["Started", clock(task.startedAt)],
    ["Finished", clock(task.completedAt)],
    ["Last attempt took", took],
  ];
  if (task.message) fields.push(["Message", task.message]);
  drawWaiting(task.status === "PENDING" ? task.queue : null);
  $("detail-fields").replaceChildren(
    ...fields.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { text: String(value) })]),
  );
  $("detail-progress").replaceChildren(bar(task.progress, 100, "Progress", `${task.progress}%`));
  drawHistory(task.history || []);
  $("detail-payload").textContent = JSON.stringify(task.payload ?? null, null, 2);
  const failed = task.error !== null && task.error !== undefined;
  $("detail-outcome-title").textContent = failed ? "Error" : "Result";
  const outcome = failed ? task.error : task.result;
  $("detail-outcome").textContent = typeof outcome === "string" ? outcome : JSON.stringify(outcome, null, 2);
  $("detail-outcome").classList.toggle("failed", failed);
  $("detail-cancel").hidden = !CANCELLABLE.has(task.status);
  $("detail-retry").hidden = !RETRYABLE.has(task.status);
  $("detail-cancel").disabled = false;
  $("detail-retry").disabled = false;
}

// Why a PENDING task waits (the API's `queue`): its reason, place and expected start.
function drawWaiting(queue) {
  const waiting = $("detail-queue");
  waiting.hidden = !queue;
  if (!queue) return;
  const known = [queue.reason];
  if (queue.position) known.push(`position ${queue.position}`);
  if (queue.estimatedStartAt) known.push(`start expected ${clock(queue.estimatedStartAt)}`);
  waiting.dataset.reason = queue.reason;
  waiting.textContent = `Waiting (${known.join(", ")}): ${queue.details}`;
}

function drawHistory(history) {
  $("detail-history-empty").hidden = history.length > 0;
  $("detail-history").tBodies[0].replaceChildren(
    ...history.map((entry) =>
      el(
        "tr",
        { "data-attempt": entry.attempt, "data-outcome": entry.outcome || "running" },
        el("th", { scope: "row", text: entry.attempt }),
        el("td", { text: entry.serverId }),
        el("td", { text: clock(entry.startedAt) }),
        el("td", { text: entry.endedAt ? duration(entry.endedAt - entry.startedAt) : "running" }),
        el("td", { text: entry.outcome || "running" }),
        el("td", { class: "error-text", text: entry.error === null || entry.error === undefined ? "–"
          : typeof entry.error === "string" ? entry.error : JSON.stringify(entry.error) }),
      ),
    ),
  );
}
