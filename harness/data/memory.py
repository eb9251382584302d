"""Resident memory of this process: now, and its peak since a mark (a job's own peak, not the run's).

Linux keeps the peak (`VmHWM`) resettable through `/proc/self/clear_refs`, so each job of a multi-job run
reports its own peak; elsewhere only the process-lifetime peak exists (`ru_maxrss`), and the record says so.
Decode workers are separate processes and are not counted here.
"""

from __future__ import annotations

import resource
import sys


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    """The resident set now (NaN where /proc is unavailable)."""
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else float("nan")


def mark_peak() -> str:
    """Start a new peak: 'since_mark' when the kernel reset it, else 'process_lifetime'."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
        return "since_mark"
    except OSError:
        return "process_lifetime"


def peak_rss_mb() -> float:
    """The peak resident set since `mark_peak` (Linux), else over the process's life (ru_maxrss: KiB on Linux,
    bytes on macOS)."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 2**10
