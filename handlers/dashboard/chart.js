// A bar chart of created, completed and failed tasks per slot (an hour, or a day), drawn as SVG
// so it needs no library and scales with the page, with a labelled count scale on the left.

const SVG = "http://www.w3.org/2000/svg";
const SERIES = ["created", "completed", "failed"];
const WIDTH = 960;
const HEIGHT = 240;
const AXIS = 20; // below the bars: the slot labels
const SCALE = 44; // left of the bars: the count labels
const TOP = 10;

function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

// A round step for about four gridlines: 1, 2, 5, 10, 20, 50, ...
function step(highest) {
  const rough = highest / 4;
  const magnitude = 10 ** Math.floor(Math.log10(Math.max(1, rough)));
  return [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= rough) || magnitude * 10;
}

// `slots`: [{key, kind, label, labelled, title, values: {created, completed, failed}}].
export function barChart(slots, titleId) {
  const most = Math.max(1, ...slots.flatMap((slot) => SERIES.map((name) => slot.values[name])));
  const gap = step(most);
  const top = Math.ceil(most / gap) * gap;
  const plot = HEIGHT - AXIS;
  const height = plot - TOP;
  const slot = (WIDTH - SCALE) / slots.length;
  const barWidth = Math.max(1, (slot - 4) / SERIES.length);
  const chart = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-labelledby": titleId, class: "hourly" });

  const scale = svg("g", { class: "scale" });
  for (let value = 0; value <= top; value += gap) {
    const y = (plot - (value / top) * height).toFixed(1);
    scale.append(svg("line", { x1: SCALE, x2: WIDTH, y1: y, y2: y, class: value ? "grid" : "baseline" }));
    const label = svg("text", { x: SCALE - 6, y: Number(y) + 4, class: "axis tick", "text-anchor": "end" });
    label.textContent = String(value);
    scale.append(label);
  }
  chart.append(scale);

  slots.forEach((entry, index) => {
    const left = SCALE + index * slot;
    const group = svg("g", { class: entry.kind, [`data-${entry.kind === "hour" ? "hour" : "date"}`]: entry.key });
    const title = svg("title", {});
    title.textContent = `${entry.title}: ${entry.values.created} created, ${entry.values.completed} completed, ${entry.values.failed} failed`;
    group.append(title);
    SERIES.forEach((name, n) => {
      const h = (entry.values[name] / top) * height;
      group.append(svg("rect", {
        class: name,
        x: (left + 2 + n * barWidth).toFixed(1),
        y: (plot - h).toFixed(1),
        width: barWidth.toFixed(1),
        height: h.toFixed(1),
      }));
    });
    if (entry.labelled) {
      const label = svg("text", { x: (left + slot / 2).toFixed(1), y: HEIGHT - 5, class: "axis", "text-anchor": "middle" });
      label.textContent = entry.label;
      group.append(label);
    }
    chart.append(group);
  });
  return chart;
}
