"""SIGKILL a run at several moments (start-up/extraction, right as a record lands), rerun to
completion, and get exactly the uninterrupted leaderboard with one FINISHED MLflow run per job key."""

from __future__ import annotations

import time

import e2e_helpers as e2e
import pandas as pd

N_JOBS = 4


def test_sigkill_at_several_moments_then_resume(tmp_path):
    suite = e2e.write_suite(tmp_path / "killme.yaml", "killme", [e2e.fsc_entry(shots=[1, 4], seeds=[1, 2])])
    args = ("run", "-b", "resnet", "--suite", str(suite))

    # The reference: one uninterrupted run in its own home and cache.
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    e2e.run_harness(*args, env=e2e.harness_env(ref_dir / "home", ref_dir / "cache"), cwd=ref_dir)
    reference = pd.read_csv(ref_dir / "home" / "leaderboards" / "killme.csv")

    work = tmp_path / "work"
    work.mkdir()
    home, cache = work / "home", work / "cache"
    env = e2e.harness_env(home, cache)
    # 1. early: start-up, planning, feature extraction (no record yet)
    proc = e2e.start_harness(*args, env=env, cwd=work)
    time.sleep(2.5)
    kills = int(e2e.kill_group(proc))
    # 2. the moment the next record lands (its MLflow run is being logged), twice
    for _ in range(2):
        have = len(e2e.record_files(home))
        if have >= N_JOBS:
            break
        proc = e2e.start_harness(*args, env=env, cwd=work)
        e2e.wait_for(lambda p=proc, n=have: len(e2e.record_files(home)) > n or p.poll() is not None)
        kills += e2e.kill_group(proc)
    assert kills >= 2

    done = e2e.run_harness(*args, env=env, cwd=work)
    assert "job(s) ran" in done.stderr
    final = pd.read_csv(work / "home" / "leaderboards" / "killme.csv")
    pd.testing.assert_frame_equal(final, reference)
    e2e.assert_resumed_state(home, cache, "killme", N_JOBS)
