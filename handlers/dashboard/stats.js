// Today's statistics (success rate, average processing time, top servers, the hourly chart)
// and the load-balancing algorithm, which admins can change.

import { api } from "./api.js";
import { hourlyChart } from "./chart.js";
import { duration, el, percent } from "./format.js";

const $ = (id) => document.getElementById(id);

export function setupBalancer(refresh) {
  $("balancer-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const algorithm = $("algorithm").value;
    $("algorithm-apply").disabled = true;
    try {
      await api("api/stats/load-balancer/algorithm", { method: "POST", body: { algorithm } });
      $("balancer-note").textContent = `Now using ${algorithm}.`;
    } catch (error) {
      $("balancer-note").textContent = error.message;
    } finally {
      $("algorithm-apply").disabled = false;
      refresh();
    }
  });
}

export async function refreshStats(admin) {
  const [day, hourly, balancer] = await Promise.all([
    api("api/stats/tasks"),
    api("api/stats/hourly"),
    api("api/stats/load-balancer"),
  ]);
  const finished = day.successfulTasks + day.failedTasks;
  $("stat-total").textContent = day.totalTasks;
  $("stat-success").textContent = finished ? percent(day.successfulTasks / finished) : "–";
  $("stat-average").textContent = day.averageProcessingTime ? duration(day.averageProcessingTime) : "–";
  $("stat-failed").textContent = day.failedTasks;
  $("chart").replaceChildren(hourlyChart(hourly.hours, "chart-title"));
  $("top-servers").replaceChildren(
    ...(day.topServers.length
      ? day.topServers.map((top) => el("li", { text: `${top.serverId}: ${top.tasksProcessed} tasks, ${percent(top.successRate)} succeeded` }))
      : [el("li", { class: "empty", text: "No task finished today." })]),
  );

  const select = $("algorithm");
  // Not while the admin is choosing: the next refresh would undo the choice.
  if (document.activeElement !== select) select.value = balancer.algorithm;
  select.disabled = !admin;
  $("algorithm-apply").hidden = !admin;
  $("lb-active").textContent = balancer.totalActiveTasks;
  $("lb-load").textContent = percent(balancer.averageLoad);
}
