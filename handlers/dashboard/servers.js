// The servers table: status, health, load bar, capabilities, groups, the last sign of life
// (a heartbeat or a healthy check), and for admins maintenance and removal.

import { api } from "./api.js";
import { bar, duration, el } from "./format.js";

const $ = (id) => document.getElementById(id);
let onChange = () => {};
let onError = () => {};
// Servers whose Remove was pressed once: the next press removes (no modal to trap focus).
const confirming = new Set();

export function setupServers(refresh, report) {
  onChange = refresh;
  onError = report;
}

export function drawServers(servers, admin, now) {
  const body = $("servers").tBodies[0];
  if (!admin || servers === null) {
    replaceRows(body, [el("tr", {}, el("td", { colspan: 8, text: "Only admins can list servers." }))]);
    $("servers-empty").hidden = true;
    return;
  }
  const sorted = [...servers].sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  replaceRows(body, sorted.map((server) => row(server, now)));
  $("servers-empty").hidden = sorted.length > 0;
}

function lastSeen(server, now) {
  const health = server.health || {};
  const heard = [];
  if (server.lastHeartbeat) heard.push(`heartbeat ${duration(now - server.lastHeartbeat)} ago`);
  if (health.lastCheckAt) heard.push(`checked ${duration(now - health.lastCheckAt)} ago`);
  return [
    el("span", { class: "seen", text: `${duration(server.timeSinceLastHeartbeat)} ago` }),
    el("small", { text: heard.join(", ") || "since registration" }),
  ];
}

function row(server, now) {
  const maintenance = server.status === "maintenance";
  const health = server.health || {};
  const toggle = el("button", {
    type: "button",
    class: "toggle",
    "data-focus": `maintenance-${server.id}`,
    "aria-pressed": String(maintenance),
    "aria-label": `${maintenance ? "End" : "Start"} maintenance on ${server.name}`,
    text: maintenance ? "End maintenance" : "Start maintenance",
    onclick: (event) => setMaintenance(event.currentTarget, server, !maintenance),
  });
  const armed = confirming.has(server.id);
  const remove = el("button", {
    type: "button",
    class: armed ? "remove armed" : "remove",
    "data-focus": `remove-${server.id}`,
    "aria-label": armed ? `Confirm removing ${server.name}` : `Remove ${server.name}`,
    text: armed ? "Confirm removal" : "Remove",
    onclick: (event) => removeServer(event.currentTarget, server),
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
    el("td", { class: "last-seen" }, ...lastSeen(server, now)),
    el("td", { class: "admin-only actions" }, toggle, remove),
  );
}

async function setMaintenance(button, server, maintenance) {
  button.disabled = true;
  try {
    await api(`api/servers/${encodeURIComponent(server.id)}/maintenance`, {
      method: "POST",
      body: { maintenance, reason: maintenance ? "Set from the dashboard" : undefined },
    });
  } catch (error) {
    onError(error);
  }
  button.disabled = false;
  onChange();
}

async function removeServer(button, server) {
  if (!confirming.has(server.id)) {
    confirming.add(server.id);
    button.classList.add("armed");
    button.textContent = "Confirm removal";
    button.setAttribute("aria-label", `Confirm removing ${server.name}`);
    return;
  }
  confirming.delete(server.id);
  button.disabled = true;
  try {
    await api(`api/servers/${encodeURIComponent(server.id)}`, { method: "DELETE" });
  } catch (error) {
    onError(error);
  }
  onChange();
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
