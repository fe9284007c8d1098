// The queue: counts (pending by priority, in flight), the newest tasks with a progress bar,
// and a task's detail in a dialog (detail.js).

import { openDetail, setupDetail } from "./detail.js";
import { bar, clock, el } from "./format.js";
import { replaceRows } from "./servers.js";

const $ = (id) => document.getElementById(id);
const PAGE = 25;

let shown = PAGE; // "Show older tasks" raises it a page at a time (up to the API's 200)

export function setupTasks(refresh, report) {
  $("task-status").addEventListener("change", () => {
    shown = PAGE;
    refresh();
  });
  $("tasks-more").addEventListener("click", () => {
    shown = Math.min(200, shown + PAGE);
    refresh();
  });
  setupDetail(refresh, report);
}

// The overview's task query: the status chosen, and how many tasks are shown.
export function tasksQuery() {
  const status = $("task-status").value;
  return status ? { limit: String(shown), status } : { limit: String(shown) };
}

export function drawQueue(queue) {
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
}

export function drawTasks(page) {
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
