"""Summaries printed by the benchmarks: runs, median, p95, p99."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(label: str, values_ms: list[float]) -> str:
    return (
        f"{label}: n={len(values_ms)} median={statistics.median(values_ms):.2f} ms"
        f" p95={percentile(values_ms, 95):.2f} ms p99={percentile(values_ms, 99):.2f} ms"
        f" max={max(values_ms):.2f} ms"
    )
