// The hourly chart: one group of bars per UTC hour (created, completed, failed), drawn as SVG
// so it needs no library and scales with the page.

const SVG = "http://www.w3.org/2000/svg";
const SERIES = ["created", "completed", "failed"];
const WIDTH = 960;
const HEIGHT = 220;
const AXIS = 20;

function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

export function hourlyChart(hours, titleId) {
  const highest = Math.max(1, ...hours.flatMap((hour) => SERIES.map((name) => hour[name])));
  const slot = WIDTH / 24;
  const barWidth = (slot - 4) / SERIES.length;
  const plot = HEIGHT - AXIS;
  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-labelledby": titleId,
    class: "hourly",
  });
  for (const hour of hours) {
    const group = svg("g", { class: "hour", "data-hour": hour.hour });
    const title = svg("title", {});
    title.textContent = `${String(hour.hour).padStart(2, "0")}:00 UTC: ${hour.created} created, ${hour.completed} completed, ${hour.failed} failed`;
    group.append(title);
    SERIES.forEach((name, index) => {
      const height = (hour[name] / highest) * (plot - 4);
      group.append(
        svg("rect", {
          class: name,
          x: (hour.hour * slot + 2 + index * barWidth).toFixed(1),
          y: (plot - height).toFixed(1),
          width: barWidth.toFixed(1),
          height: height.toFixed(1),
        }),
      );
    });
    if (hour.hour % 3 === 0) {
      const label = svg("text", { x: (hour.hour * slot + slot / 2).toFixed(1), y: HEIGHT - 5, class: "axis" });
      label.textContent = String(hour.hour).padStart(2, "0");
      group.append(label);
    }
    chart.append(group);
  }
  chart.append(svg("line", { x1: 0, x2: WIDTH, y1: plot, y2: plot, class: "baseline" }));
  return chart;
}
