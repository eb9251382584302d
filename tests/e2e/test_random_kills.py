"""SIGKILL a small suite run (fsc linear-probe + text-classifier, sbir, ovss) at random moments and at
chosen points of the code, resume it each time, and get exactly the uninterrupted run's leaderboard.

The random test draws its kill points from a seeded RNG (SEED, printed with every point): a trial starts
from an empty home and cache, and kills successive runs of that home, each at a uniform fraction
[0.05, 0.95] of how long that run is expected to take (the reference run's duration for a fresh home;
after that, the reference's fixed overhead plus the share of the jobs without a record yet, so a kill
rarely lands after the run ended). Durations are measured on the run's own CPU clock (user + system time
of the process, from /proc), not the wall clock: on a shared machine the wall time of the same run varies
several-fold with the load, its CPU time hardly, so the drawn fraction is the fraction of the work done. A
kill counts only when it hit a live process; a run that ended first is the trial's completed resume.
After each trial: the leaderboard CSV equals the reference, one record and one FINISHED MLflow job run per
job key, and every feature-cache entry matches its checksum. At least MIN_KILLS kills must hit.

The phase-targeted test makes the run SIGKILL itself at exact points instead: half-way through the
creation of the MLflow database, between a cache entry's temp file and its rename, in MLflow logging
before a job run is FINISHED, and half-way through the OVSS head training. (Records and OVSS heads are
written by the same atomic write as cache entries, and test_kill_resume kills right as a record lands.)
"""

from __future__ import annotations

import json
import os
import random
import resource
import time
from pathlib import Path

import pandas as pd
import pytest
from e2e_helpers import (
    assert_resumed_state,
    fsc_entry,
    harness_env,
    kill_group,
    record_files,
    run_harness,
    start_harness,
    write_suite,
)

SEED = 20240815
MIN_KILLS = 10
KILLS_PER_TRIAL = 6
MAX_TRIALS = 5
SUITE = "randkill"
OVSS_PROTOCOL = {"train_dataset": "mini_ovss_train", "text_space": "clip:tiny", "templates": ["a photo of a {}."],
                 "crop_size": 64, "train_scale": [1.0, 1.0], "flip": False, "iterations": 20, "batch_size": 8,
                 "lr": 0.001, "weight_decay": 0.0001, "head_channels": 32, "head_groups": 8, "short_side": 64,
                 "max_long_side": 256}
ENTRIES = [
    fsc_entry(shots=[1], seeds=[1], heads=("linear-probe", "text-classifier"), epochs=10),
    {"task": "sbir", "datasets": ["mini_sbir"], "protocol": {"text_space": "clip:tiny", "epochs": 1},
     "grid": {"seed": [1]}},
    {"task": "ovss", "datasets": ["mini_ovss"], "protocol": OVSS_PROTOCOL, "grid": {"seed": [1]}},
]
N_JOBS = 4
DATASETS = ("mini_coop", "mini_sbir", "mini_ovss", "mini_ovss_train")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (all its threads), or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Reference:
    """The uninterrupted run: its leaderboard, wall and CPU time, and each job's share (from its record)."""

    def __init__(self, root: Path, data: Path):
        self.suite = write_suite(root / f"{SUITE}.yaml", SUITE, ENTRIES)
        self.data = data
        run_dir = root / "reference"
        run_dir.mkdir()
        start, cpu_start = time.monotonic(), children_cpu_seconds()
        run_harness(*self.args(run_dir), env=self.env(run_dir), cwd=run_dir)
        self.wall_s = time.monotonic() - start
        self.cpu_s = children_cpu_seconds() - cpu_start
        self.leaderboard = pd.read_csv(run_dir / "leaderboards" / f"{SUITE}.csv")
        records = [json.loads(p.read_text()) for p in record_files(run_dir / "home")]
        assert len(records) == N_JOBS
        self.job_s = {r["job_key"]: r["timings"]["total_s"] for r in records}
        self.overhead_s = max(self.wall_s - sum(self.job_s.values()), 1.0)

    def env(self, run_dir: Path) -> dict[str, str]:
        """A run's own home and cache under `run_dir`; the data every run shares."""
        return harness_env(run_dir / "home", run_dir / "cache", data=self.data)

    def args(self, run_dir: Path) -> tuple[str, ...]:
        return ("run", "-b", "resnet", "--suite", str(self.suite), "--out-dir", str(run_dir / "leaderboards"))

    def expected_cpu_s(self, home: Path) -> float:
        """The CPU time a run of `home` should take: the whole reference on a fresh home, else the reference's
        overhead plus the jobs left (their shares of its wall time, scaled to its CPU time)."""
        if not (home / "records").exists():
            return self.cpu_s
        done = {p.stem for p in record_files(home)}
        wall = self.overhead_s + sum(s for key, s in self.job_s.items() if key not in done)
        return self.cpu_s * wall / self.wall_s

    def check(self, run_dir: Path) -> None:
        """A resumed run of `run_dir` ended with exactly the reference's results and a clean state."""
        final = pd.read_csv(run_dir / "leaderboards" / f"{SUITE}.csv")
        pd.testing.assert_frame_equal(final, self.leaderboard)
        assert_resumed_state(run_dir / "home", run_dir / "cache", SUITE, N_JOBS)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    """Run once for the module; the data is generated first so that the reference times only the run."""
    from harness.plan.planner import open_dataset

    root = tmp_path_factory.mktemp("randkill")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_DATA", str(root / "data"))
        for name in DATASETS:
            open_dataset(name, generate=True)
    return Reference(root, root / "data")


def test_sigkill_at_random_moments_then_resume(reference: Reference, tmp_path: Path):
    rng = random.Random(SEED)
    print(f"\nseed {SEED}; reference run: {reference.cpu_s:.1f} s CPU, {reference.wall_s:.1f} s wall "
          f"(jobs {sum(reference.job_s.values()):.1f} s of it)")
    hits = 0
    trials = 0
    while hits < MIN_KILLS and trials < MAX_TRIALS:
        trials += 1
        run_dir = tmp_path / f"trial{trials}"
        run_dir.mkdir()
        home = run_dir / "home"
        env = reference.env(run_dir)
        completed = False
        for attempt in range(1, KILLS_PER_TRIAL + 1):
            fraction = rng.uniform(0.05, 0.95)
            at = fraction * reference.expected_cpu_s(home)
            before = len(record_files(home))
            proc = start_harness(*reference.args(run_dir), env=env, cwd=run_dir)
            started = time.monotonic()
            while proc.poll() is None and (cpu_seconds(proc.pid) or 0.0) < at:
                if time.monotonic() - started > 300:
                    kill_group(proc)
                    raise AssertionError(f"a run of trial {trials} made no progress for 300 s")
                time.sleep(0.01)
            hit = kill_group(proc)
            hits += hit
            print(f"trial {trials} kill {attempt}: {fraction:.3f} x expected = {at:5.1f} s CPU "
                  f"({time.monotonic() - started:5.1f} s wall), "
                  f"{'hit' if hit else f'run had ended (exit {proc.returncode})'}; "
                  f"records {before} -> {len(record_files(home))}")
            if not hit:
                assert proc.returncode == 0, f"the resumed run failed (exit {proc.returncode})"
                completed = True
                break
        if not completed:
            run_harness(*reference.args(run_dir), env=env, cwd=run_dir)
        reference.check(run_dir)
    print(f"{hits} kills hit a live run over {trials} trials")
    assert hits >= MIN_KILLS


# Points of the code a run SIGKILLs itself at (conftest.DIE_AT), in order, each on the home the last one left.
PHASES = [
    ("call|alembic.runtime.migration:HeadMaintainer.update_to_step|5",
     "half-way through MLflow's schema migration of the new home's SQLite database"),
    ("write|.safetensors.|20", "mid extraction: a feature-cache entry written to its temp file, not renamed"),
    ("call|mlflow.tracking.client:MlflowClient.set_terminated|1", "MLflow job run logged but not yet FINISHED"),
    ("iter|tasks.ovss.task:view_plan|10", "half-way through the OVSS head training"),
]


def test_sigkill_at_chosen_points_of_the_code_then_resume(reference: Reference, tmp_path: Path):
    run_dir = tmp_path / "phases"
    run_dir.mkdir()
    home = run_dir / "home"
    env = reference.env(run_dir)
    for die_at, what in PHASES:
        proc = start_harness(*reference.args(run_dir), env=env, cwd=run_dir, die_at=die_at)
        proc.wait(timeout=300)
        assert proc.returncode == -9, f"{what}: the run did not reach {die_at} (exit {proc.returncode})"
        print(f"killed at {die_at} ({what}); records: {len(record_files(home))}")
    temps = [p.name for p in run_dir.rglob(".*.tmp") if p.is_file()]
    assert any(".safetensors." in name for name in temps) and any(".mlflow.db." in name for name in temps)
    run_harness(*reference.args(run_dir), env=env, cwd=run_dir)
    reference.check(run_dir)
