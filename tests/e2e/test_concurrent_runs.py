"""Two and four `harness run`s started together on one fresh store split the work: every job computed once,
one FINISHED MLflow run per key, all exit 0, and each process's leaderboard holds every job."""

from __future__ import annotations

import re
import subprocess
import sys

import e2e_helpers as e2e
import pandas as pd
import pytest

N_JOBS = 4
RAN = re.compile(r"(\d+) job\(s\) ran")


@pytest.mark.parametrize("processes", [2, 4])
def test_concurrent_runs_on_one_store_compute_each_job_once(tmp_path, processes):
    suite = e2e.write_suite(tmp_path / "shared.yaml", "shared", [e2e.fsc_entry(shots=[1, 4], seeds=[1, 2])])
    home, cache = tmp_path / "home", tmp_path / "cache"
    env = e2e.harness_env(home, cache)
    procs = []
    for i in range(processes):
        cwd = tmp_path / f"p{i}"
        cwd.mkdir()
        procs.append(subprocess.Popen([sys.executable, "-m", "harness", "run", "-b", "resnet", "--suite", str(suite),
                                       "--workers", "0", "--out-dir", "leaderboards"], env=env, cwd=cwd,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (_, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr
    ran = [int(RAN.search(stderr).group(1)) for _, stderr in outputs]
    assert sum(ran) == N_JOBS, ran  # each job computed by exactly one process
    e2e.assert_resumed_state(home, cache, "shared", N_JOBS)  # whole records, one FINISHED run per key
    jobs = e2e.job_runs(f"sqlite:///{home / 'mlflow.db'}", "shared")
    assert len(jobs) == N_JOBS and set(jobs["status"]) == {"FINISHED"}  # no run started twice either
    boards = [pd.read_csv(tmp_path / f"p{i}" / "leaderboards" / "shared.csv") for i in range(processes)]
    for board in boards[1:]:  # every process waited for the others' jobs: the same, complete leaderboard
        pd.testing.assert_frame_equal(board, boards[0])
    assert not list((home / "locks").glob("*.lock"))  # every claim released
