// The queue: counts (pending by priority, in flight), the newest tasks with a progress bar,
// and a task's detail in a dialog, live over /ws or polled when the socket is not available.

import { api, watchTask } from "./api.js";
import { bar, clock, duration, el } from "./format.js";
import { replaceRows } from "./servers.js";

const $ = (id) => document.getElementById(id);
const PAGE = 25;
const POLL_MS = 2000;

let shown = PAGE; // "Show older tasks" raises it a page at a time (up to the API's 200)
let closeDetail = null;

export function setupTasks(refresh) {
  $("task-status").addEventListener("change", () => {
    shown = PAGE;
    refresh();
  });
  $("tasks-more").addEventListener("click", () => {
    shown = Math.min(200, shown + PAGE);
    refresh();
  });
  $("task-detail").addEventListener("close", () => {
    if (closeDetail) closeDetail();
    closeDetail = null;
  });
}

export async function refreshTasks() {
  const status = $("task-status").value;
  const query = new URLSearchParams({ limit: String(shown) });
  if (status) query.set("status", status);
  const [queue, page] = await Promise.all([api("api/stats/queue"), api(`api/tasks?${query}`)]);
  $("queue-pending").textContent = queue.pending;
  $("queue-processing").textContent = queue.processing;
  $("queue-capacity").textContent = queue.capacity;
  $("queue-priorities").replaceChildren(
    ...(queue.pendingByPriority.length
      ? queue.pendingByPriority.map(({ priority, count }) =>
          el("li", { "data-priority": priority }, el("span", { text: `priority ${priority}` }),
            bar(count, queue.pending, `Pending tasks of priority ${priority}`, String(count))))
      : [el("li", { class: "empty", text: "Nothing waiting." })]),
  );
  $("queue-backlog").replaceChildren(
    ...(queue.backlog.length
      ? queue.backlog.map((group) =>
          el("li", { "data-reason": group.reason, text: `${group.details} (${group.reason})` }))
      : [el("li", { class: "empty", text: "Nothing waiting." })]),
  );
  replaceRows($("tasks").tBodies[0], page.tasks.map(row));
  $("tasks-empty").hidden = page.tasks.length > 0;
  $("tasks-more").hidden = !page.nextCursor || shown >= 200;
}

function row(task) {
  return el(
    "tr",
    { "data-task-id": task.id, "data-status": task.status },
    el("th", { scope: "row" }, el("button", {
      type: "button",
      class: "link",
      "data-focus": `task-${task.id}`,
      "aria-haspopup": "dialog",
      "aria-label": `Details of task ${task.id}`,
      text: task.id,
      onclick: () => openDetail(task.id),
    })),
    el("td", { text: task.type }),
    el("td", { text: task.priority }),
    el("td", {}, el("span", { class: `badge ${task.status}`, text: task.status })),
    el("td", { class: "progress" }, bar(task.progress, 100, `Progress of ${task.id}`, `${task.progress}%`)),
    el("td", { text: task.serverId || "–" }),
    el("td", { text: task.attempts }),
    el("td", { text: clock(task.updatedAt) }),
  );
}

async function openDetail(taskId) {
  const dialog = $("task-detail");
  if (closeDetail) closeDetail();
  $("detail-title").textContent = `Task ${taskId}`;
  $("detail-live").textContent = "";
  drawDetail(await api(`api/task/${encodeURIComponent(taskId)}`));
  if (!dialog.open) dialog.showModal();
  let poller = null;
  const poll = () => {
    $("detail-live").textContent = "Refreshing every 2 s";
    poller = setInterval(async () => {
      try {
        drawDetail(await api(`api/task/${encodeURIComponent(taskId)}`));
      } catch (error) {
        $("detail-live").textContent = error.message;
      }
    }, POLL_MS);
  };
  const unwatch = watchTask(
    taskId,
    async (task) => {
      $("detail-live").textContent = "Live";
      // Live messages carry the task, not why it waits: read that when it is waiting.
      drawDetail(task.status === "PENDING" && !task.queue
        ? await api(`api/task/${encodeURIComponent(taskId)}`).catch(() => task)
        : task);
    },
    poll,
  );
  closeDetail = () => {
    unwatch();
    clearInterval(poller);
  };
}

function drawDetail(task) {
  const fields = [
    ["Status", task.status],
    ["Type", task.type],
    ["Priority", task.priority],
    ["Server", task.serverId || "–"],
    ["Attempts", task.attempts],
    ["Needs", task.capabilities && task.capabilities.length ? task.capabilities.join(", ") : "–"],
    ["Created", clock(task.createdAt)],
    ["Started", clock(task.startedAt)],
    ["Finished", clock(task.completedAt)],
    ["Took", task.completedAt && task.startedAt ? duration(task.completedAt - task.startedAt) : "–"],
  ];
  if (task.message) fields.push(["Message", task.message]);
  const waiting = $("detail-queue");
  waiting.hidden = !task.queue;
  if (task.queue) {
    const known = [task.queue.reason];
    if (task.queue.position) known.push(`position ${task.queue.position}`);
    if (task.queue.estimatedStartAt) known.push(`start expected ${clock(task.queue.estimatedStartAt)}`);
    waiting.dataset.reason = task.queue.reason;
    waiting.textContent = `Waiting (${known.join(", ")}): ${task.queue.details}`;
  }
  $("detail-fields").replaceChildren(
    ...fields.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { text: String(value) })]),
  );
  $("detail-progress").replaceChildren(bar(task.progress, 100, "Progress", `${task.progress}%`));
  $("detail-payload").textContent = JSON.stringify(task.payload ?? null, null, 2);
  const failed = task.error !== null && task.error !== undefined;
  $("detail-outcome-title").textContent = failed ? "Error" : "Result";
  $("detail-outcome").textContent = JSON.stringify(failed ? task.error : task.result, null, 2);
}
