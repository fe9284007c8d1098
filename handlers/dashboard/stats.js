// Statistics over the chosen range of days (success rate, average processing time, top
// servers, a chart per hour for one day or per day for more, with a labelled scale) and the
// load-balancing algorithm, which admins can change.

import { api } from "./api.js";
import { barChart } from "./chart.js";
import { duration, el, percent } from "./format.js";

const $ = (id) => document.getElementById(id);

export function setupStats(refresh) {
  $("stat-days").addEventListener("change", () => refresh());
}

export function setupBalancer(refresh, report) {
  $("balancer-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const algorithm = $("algorithm").value;
    $("algorithm-apply").disabled = true;
    try {
      await api("api/stats/load-balancer/algorithm", { method: "POST", body: { algorithm } });
      $("balancer-note").textContent = `Now using ${algorithm}.`;
    } catch (error) {
      $("balancer-note").textContent = error.message;
      report(error);
    } finally {
      $("algorithm-apply").disabled = false;
      refresh();
    }
  });
}

// The overview's statistics query: the number of days, ending today (UTC).
export function statsQuery() {
  return { days: $("stat-days").value };
}

export function drawStats(stats) {
  const days = stats.daily.length;
  $("stats-title").textContent = days === 1 ? "Today (UTC)" : `${stats.start} to ${stats.end} (UTC)`;
  const finished = stats.successfulTasks + stats.failedTasks;
  $("stat-total").textContent = stats.totalTasks;
  $("stat-success").textContent = finished ? percent(stats.successfulTasks / finished) : "–";
  $("stat-average").textContent = stats.averageProcessingTime ? duration(stats.averageProcessingTime) : "–";
  $("stat-failed").textContent = stats.failedTasks;
  $("stat-retried").textContent = stats.retriedTasks;
  if (stats.hourly) {
    $("chart-unit").textContent = "per hour";
    $("chart").replaceChildren(barChart(stats.hourly.map((hour) => ({
      key: hour.hour,
      kind: "hour",
      label: String(hour.hour).padStart(2, "0"),
      labelled: hour.hour % 3 === 0,
      title: `${String(hour.hour).padStart(2, "0")}:00 UTC`,
      values: hour,
    })), "chart-title"));
  } else {
    $("chart-unit").textContent = "per day";
    $("chart").replaceChildren(barChart(stats.daily.map((day, index) => ({
      key: day.date,
      kind: "day",
      label: day.date.slice(5),
      labelled: days <= 14 || index % Math.ceil(days / 10) === 0,
      title: day.date,
      values: day,
    })), "chart-title"));
  }
  $("top-servers").replaceChildren(
    ...(stats.topServers.length
      ? stats.topServers.map((top) => el("li", { text: `${top.serverId}: ${top.tasksProcessed} tasks, ${percent(top.successRate)} succeeded` }))
      : [el("li", { class: "empty", text: days === 1 ? "No task finished today." : "No task finished in these days." })]),
  );
}

export function drawBalancer(balancer, admin) {
  const select = $("algorithm");
  // Not while the admin is choosing: the next refresh would undo the choice.
  if (document.activeElement !== select) select.value = balancer.algorithm;
  select.disabled = !admin;
  $("algorithm-apply").hidden = !admin;
  $("lb-active").textContent = balancer.totalActiveTasks;
  $("lb-load").textContent = percent(balancer.averageLoad);
}
