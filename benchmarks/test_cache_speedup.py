"""A second run of the mini suite with other seeds reads every frozen feature from the persistent cache.

The whole mini suite (fsc with both heads, sbir, ovss) for Vermouth tiny, as a user runs it: the CLI in a
subprocess. The data is generated before the first run (not timed). Run 1 (`--seeds 1`) starts from an
empty HARNESS_CACHE; run 2 (`--seeds 2`: the same number of jobs, fresh records and MLflow so every job
runs, the same cache) must do no backbone pass for an input it has seen: `images_extracted` and the OVSS
`*_extracted` counters are 0 in every run-2 record. Ratios: end-to-end wall clock (interpreter start-up,
imports, model build, MLflow logging, leaderboard included) and the in-process job time (the records'
`timings.total_s`: extraction + head training + evaluation). What the cache cannot save stays in run 2:
start-up, the model build, the seed-dependent head training (20 U-head epochs per text-classifier job,
200 OVSS head iterations) and MLflow logging.
Target: run 2 >= 5x faster end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _bench import report

BACKBONE = "vermouth"
EXTRACTED = ("images_extracted", "ovss_train_views_extracted", "ovss_test_inputs_extracted")


def _run(env: dict[str, str], cwd: Path, suite: str, seeds: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--backbone", BACKBONE, "--suite", suite,
                           "--seeds", seeds, "--out-dir", str(cwd / "leaderboards")],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    return elapsed


def _records(home: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((home / "records").glob("*.json"))]


def _extracted(records: list[dict]) -> int:
    return sum(r["counters"].get(name, 0) for r in records for name in EXTRACTED)


def test_second_run_reads_the_cache(benchmark, tmp_path):
    env = {**os.environ, "HARNESS_HOME": str(tmp_path / "home1"), "HARNESS_DATA": str(tmp_path / "data"),
           "HARNESS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    for name in ("mini_coop", "mini_sbir", "mini_ovss", "mini_ovss_train"):
        subprocess.run([sys.executable, "-m", "harness", "data", "prepare", name], env=env, check=True,
                       capture_output=True)
    first_wall = _run(env, tmp_path, "mini", "1")
    first = _records(tmp_path / "home1")
    assert first and _extracted(first) > 0

    second_env = {**env, "HARNESS_HOME": str(tmp_path / "home2")}

    def second_run() -> float:
        shutil.rmtree(tmp_path / "home2", ignore_errors=True)  # records and MLflow afresh: every job runs
        return _run(second_env, tmp_path, "mini", "2")

    benchmark.group = "feature-cache"
    second_wall = benchmark.pedantic(second_run, rounds=1, iterations=1)
    second = _records(tmp_path / "home2")
    assert len(second) == len(first)
    assert _extracted(second) == 0, [r["counters"] for r in second]
    first_jobs_s = sum(r["timings"]["total_s"] for r in first)
    second_jobs_s = sum(r["timings"]["total_s"] for r in second)
    by_task = {}
    for tag, recs in (("first", first), ("second", second)):
        for task in ("fsc", "sbir", "ovss"):
            by_task[f"{tag}_{task}_s"] = sum(r["timings"]["total_s"] for r in recs if r["task"] == task)
    report(benchmark, f"feature cache, {BACKBONE}:tiny mini suite, seeds 1 then 2",
           jobs=len(first), first_inputs_extracted=_extracted(first), second_inputs_extracted=_extracted(second),
           second_cache_hits=sum(r["counters"].get("feature_cache_hits", 0) for r in second),
           first_wall_s=first_wall, second_wall_s=second_wall, wall_ratio=first_wall / second_wall,
           first_jobs_s=first_jobs_s, second_jobs_s=second_jobs_s, jobs_ratio=first_jobs_s / second_jobs_s,
           **by_task)
