// The servers table: status, health, load bar, capabilities, groups, last heartbeat, and for
// admins a maintenance toggle.

import { api } from "./api.js";
import { ago, bar, el } from "./format.js";

const $ = (id) => document.getElementById(id);

export async function refreshServers(admin) {
  const body = $("servers").tBodies[0];
  if (!admin) {
    replaceRows(body, [el("tr", {}, el("td", { colspan: 8, text: "Only admins can list servers." }))]);
    $("servers-empty").hidden = true;
    return;
  }
  const { servers } = await api("api/servers");
  servers.sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  replaceRows(body, servers.map(row));
  $("servers-empty").hidden = servers.length > 0;
}

function row(server) {
  const maintenance = server.status === "maintenance";
  const health = server.health || {};
  const toggle = el("button", {
    type: "button",
    class: "toggle",
    "data-focus": `maintenance-${server.id}`,
    "aria-pressed": String(maintenance),
    "aria-label": `${maintenance ? "End" : "Start"} maintenance on ${server.name}`,
    text: maintenance ? "End maintenance" : "Start maintenance",
    onclick: (event) => toggleMaintenance(event.currentTarget, server, !maintenance),
  });
  return el(
    "tr",
    { "data-server-id": server.id, "data-status": server.status },
    el("th", { scope: "row" }, el("span", { class: "name", text: server.name }), el("small", { text: server.id })),
    el("td", {}, el("span", { class: `badge ${server.status}`, text: server.status }),
      server.maintenanceReason ? el("small", { text: server.maintenanceReason }) : null),
    el("td", { class: "health",
      text: health.ejectedUntil ? `${health.status || "unknown"}, ejected` : health.status || "unknown",
      title: health.ejectedUntil
        ? `Left out of selection after failed attempts until ${new Date(health.ejectedUntil).toLocaleTimeString()}`
        : `${health.consecutiveFailures || 0} consecutive failures` }),
    el("td", { class: "load" }, bar(server.activeTasks, server.maxConcurrent,
      `Load of ${server.name}`, `${server.activeTasks}/${server.maxConcurrent}`, 0.9)),
    el("td", { class: "tags", text: server.capabilities.join(", ") || "–" }),
    el("td", { class: "tags", text: server.groups.join(", ") || "–" }),
    el("td", {}, ago(server.lastHeartbeat),
      health.lastCheckAt ? el("small", { text: `checked ${ago(health.lastCheckAt)}` }) : null),
    el("td", { class: "admin-only" }, toggle),
  );
}

async function toggleMaintenance(button, server, maintenance) {
  button.disabled = true;
  try {
    await api(`api/servers/${encodeURIComponent(server.id)}/maintenance`, {
      method: "POST",
      body: { maintenance, reason: maintenance ? "Set from the dashboard" : undefined },
    });
    await refreshServers(true);
  } catch (error) {
    button.disabled = false;
    const problem = $("problem");
    problem.hidden = false;
    problem.textContent = error.message;
  }
}

// Swap the rows, keeping keyboard focus on the same control if it was in the table.
export function replaceRows(body, rows) {
  const focused = document.activeElement && body.contains(document.activeElement)
    ? document.activeElement.getAttribute("data-focus") : null;
  body.replaceChildren(...rows);
  if (focused) {
    const again = body.querySelector(`[data-focus="${CSS.escape(focused)}"]`);
    if (again && !again.disabled) again.focus();
  }
}
