"""A whole run record for the tests of records, tracking and sync (the keys `harness.track.records` validates)."""

from __future__ import annotations

from typing import Any


def record(key: str, seed: int = 1, suite: str = "t", **changes: Any) -> dict:
    """A record of job `key` as the executor writes it; `changes` replace top-level keys."""
    rec = {
        "schema_version": 1, "job_key": key, "suite": suite,
        "backbone": {"name": "resnet", "variant": "tiny", "options": {}},
        "backbone_fingerprint": {"weights_kind": "random"}, "weights_fingerprint": "w",
        "task": "fsc", "task_version": "1", "primary_metric": "top1", "report_metrics": ["top1"],
        "dataset": "mini_coop", "data_fingerprint": "d", "protocol": {"seed": seed, "shots": 1},
        "column": "shots=1", "metrics": {"top1": 10.0 * seed}, "details": {}, "timings": {}, "counters": {},
        "memory": {}, "environment": {"git_commit": "c", "device": "cpu", "packages": {"torch": "2"}},
        "finished_at": f"2026-01-0{seed}T00:00:00+00:00",
    }
    rec.update(changes)
    return rec
