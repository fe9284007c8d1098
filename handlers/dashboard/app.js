// The dashboard: asks for a token, then redraws every view from one GET api/overview every
// 5 s while the tab is visible (12 requests a minute, well inside the default limit of 100,
// which the operator's other calls share). A 429 pauses refreshing for its Retry-After and
// shows one notice; the views are in servers.js, tasks.js and stats.js.

import { ApiError, api, claims, forgetToken, setToken, token } from "./api.js";
import { drawServers, setupServers } from "./servers.js";
import { drawBalancer, drawStats, setupBalancer, setupStats, statsQuery } from "./stats.js";
import { drawQueue, drawTasks, setupTasks, tasksQuery } from "./tasks.js";

export const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);

let timer = null;
let running = false;
let pausedUntil = 0; // after a 429: no request before this time (Date.now())

function isAdmin() {
  const roles = claims().roles;
  return Array.isArray(roles) && roles.includes("admin");
}

function showTokenForm(message) {
  stop();
  $("main").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("token-form").hidden = false;
  $("token-error").textContent = message || "";
  $("token-input").focus();
}

function showDashboard() {
  const who = claims();
  $("token-form").hidden = true;
  $("main").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = `Signed in as ${who.sub || "?"} (${(who.roles || []).join(", ") || "no role"})`;
  document.body.classList.toggle("admin", isAdmin());
  refresh();
}

// Called by every view after an action of the operator's (or the page's own error): one
// place decides what a failure means for the page.
export function report(error) {
  if (error instanceof ApiError && error.status === 401) {
    showTokenForm("The token was refused (expired or invalid). Paste another.");
  } else if (error instanceof ApiError && error.status === 429) {
    limited(error.retryAfterS);
  } else {
    const problem = $("problem");
    problem.hidden = false;
    problem.textContent = error.message;
  }
}

// One notice, updated in place (never stacked), until the pause is over.
function limited(seconds) {
  pausedUntil = Math.max(pausedUntil, Date.now() + seconds * 1000);
  const notice = $("limited");
  notice.hidden = false;
  notice.textContent =
    `This token reached its API rate limit. The page waits ${seconds} s (Retry-After) ` +
    "before refreshing again; your other calls get the rest of the budget.";
  schedule();
}

// One round: the whole page from one reply.
export async function refresh() {
  if (running || !token()) return;
  if (Date.now() < pausedUntil) {
    schedule();
    return;
  }
  running = true;
  clearTimeout(timer);
  const admin = isAdmin();
  try {
    const query = new URLSearchParams({ ...tasksQuery(), ...statsQuery() });
    const overview = await api(`api/overview?${query}`);
    $("limited").hidden = true;
    $("problem").hidden = true;
    drawServers(overview.servers, admin, overview.generatedAt);
    drawQueue(overview.queue);
    drawTasks(overview.tasks);
    drawStats(overview.stats);
    drawBalancer(overview.loadBalancer, admin);
    $("freshness").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    report(error);
  } finally {
    running = false;
    schedule();
  }
}

function schedule() {
  clearTimeout(timer);
  if (document.hidden || !token() || $("main").hidden) return;
  const wait = Math.max(REFRESH_MS, pausedUntil - Date.now());
  timer = setTimeout(refresh, wait);
}

function stop() {
  clearTimeout(timer);
  timer = null;
}

document.addEventListener("visibilitychange", () => (document.hidden ? stop() : refresh()));

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token-input").value;
  $("token-input").value = "";
  if (value.trim().split(".").length !== 3) {
    $("token-error").textContent = "That is not a JWT (three dot-separated parts).";
    return;
  }
  setToken(value);
  showDashboard();
});

$("sign-out").addEventListener("click", () => {
  forgetToken();
  showTokenForm("");
});

setupServers(refresh, report);
setupTasks(refresh, report);
setupStats(refresh);
setupBalancer(refresh, report);
if (token()) showDashboard();
else showTokenForm("");
