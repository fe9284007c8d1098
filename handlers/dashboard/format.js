// Small helpers for building the page's elements and showing numbers and times.

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== undefined && child !== null));
  return node;
}

// A bar showing `value` of `max`, with its numbers for assistive technology; `warnFrom`: the
// fraction from which it is coloured as a warning (a server near its capacity).
export function bar(value, max, label, text, warnFrom = Infinity) {
  const fraction = max > 0 ? Math.min(1, Math.max(0, value / max)) : 0;
  const fill = el("span", { class: "fill" });
  fill.style.width = `${(fraction * 100).toFixed(1)}%`;
  if (fraction >= warnFrom) fill.classList.add("high");
  return el(
    "div",
    {
      class: "bar",
      role: "progressbar",
      "aria-label": label,
      "aria-valuemin": 0,
      "aria-valuemax": max,
      "aria-valuenow": value,
    },
    fill,
    el("span", { class: "bar-text", text }),
  );
}

export function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

export function ago(epochMs) {
  if (!epochMs) return "never";
  return `${duration(Math.max(0, Date.now() - epochMs))} ago`;
}

export function percent(fraction) {
  return `${(fraction * 100).toFixed(1)}%`;
}

export function clock(epochMs) {
  return epochMs ? new Date(epochMs).toLocaleTimeString() : "–";
}
