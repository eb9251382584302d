"""Shared helpers of the benchmarks (reporting ratios)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

LINES: list[str] = []


def report(benchmark, title: str, **values: float | int | str) -> None:
    """Store `values` in the benchmark's extra_info and print them (shown with `-s`, and in the summary)."""
    benchmark.extra_info.update(values)
    line = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    print(f"\n[{title}] {line}")
    LINES.append(f"[{title}] {line}")


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls of `fn` (the reference side, timed beside the benchmark)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_median(benchmark) -> float:
    """The median of what `benchmark` just timed."""
    return float(benchmark.stats.stats.median)
