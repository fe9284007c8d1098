// The dashboard: asks for a token, then refreshes every view every 2 s while the tab is
// visible (and at once when it becomes visible again). Each view is drawn from one or two
// API replies; see servers.js, tasks.js and stats.js.

import { ApiError, claims, forgetToken, setToken, token } from "./api.js";
import { refreshServers } from "./servers.js";
import { refreshStats, setupBalancer } from "./stats.js";
import { refreshTasks, setupTasks } from "./tasks.js";

const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);

let timer = null;
let running = false;

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

// One round: every view at once; a view that fails says so without stopping the others.
export async function refresh() {
  if (running || !token()) return;
  running = true;
  clearTimeout(timer);
  const admin = isAdmin();
  try {
    const results = await Promise.allSettled([refreshServers(admin), refreshTasks(), refreshStats(admin)]);
    const failures = results.filter((r) => r.status === "rejected").map((r) => r.reason);
    if (failures.some((error) => error instanceof ApiError && error.status === 401)) {
      showTokenForm("The token was refused (expired or invalid). Paste another.");
      return;
    }
    const problem = $("problem");
    problem.hidden = failures.length === 0;
    problem.textContent = failures.map((error) => error.message).join(" · ");
    $("freshness").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } finally {
    running = false;
    schedule();
  }
}

function schedule() {
  clearTimeout(timer);
  if (!document.hidden && token() && !$("main").hidden) timer = setTimeout(refresh, REFRESH_MS);
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

setupTasks(refresh);
setupBalancer(refresh);
if (token()) showDashboard();
else showTokenForm("");
