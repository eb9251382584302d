"""`--limit N` runs are quick, marked and kept apart; leaderboards land under `$HARNESS_HOME`, never the cwd.

A limited run is its own suite, `<suite>@limitN`: its own MLflow experiment, records marked with the limit,
job keys of their own, and leaderboard files of their own, so it can never be averaged into a full run's row.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from e2e_helpers import harness_env, run_harness, write_suite

from harness.errors import ConfigError
from harness.plan.suites import limited_name, load_suite, split_limit

ROOT = Path(__file__).resolve().parents[2]
MINI_COOP_TEST_IMAGES = 480  # tasks/fsc/mini.py: 12 classes x 40 test images


def test_limit_names_round_trip_and_conflicts_are_refused():
    assert limited_name("mini", 8) == "mini@limit8" and limited_name("mini", 0) == "mini"
    assert split_limit("mini@limit8") == ("mini", 8)
    assert split_limit("mini") == ("mini", 0) and split_limit("mini@limit0") == ("mini@limit0", 0)
    assert load_suite("mini", 5).name == "mini@limit5"
    assert load_suite("mini@limit5").entries == load_suite("mini").entries
    with pytest.raises(ConfigError, match="limit 5 but --limit is 6"):
        load_suite("mini@limit5", 6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One limited and one full run of a one-job FSC suite, from a cwd that is not the home."""
    tmp = tmp_path_factory.mktemp("limit")
    spec = yaml.safe_load((ROOT / "harness" / "suites" / "mini.yaml").read_text())
    fsc = next(e for e in spec["entries"] if e["task"] == "fsc")
    suite = write_suite(tmp / "slice.yaml", "slice", [{**fsc, "grid": {"head": ["linear-probe"], "shots": [1],
                                                                       "seed": [1]}}])
    env = harness_env(home=tmp / "home", cache=tmp / "cache", data=tmp / "data")
    limited = run_harness("run", "-b", "resnet", "--suite", str(suite), "--limit", "7", env=env, cwd=tmp)
    full = run_harness("run", "-b", "resnet", "--suite", str(suite), env=env, cwd=tmp)
    return tmp, limited, full


def test_limited_run_reads_the_first_n_test_items_and_is_marked(runs):
    tmp, limited, _ = runs
    assert limited.returncode == 0, limited.stderr
    board = tmp / "home" / "leaderboards"
    rows = pd.read_csv(board / "slice@limit7.csv")
    assert set(rows["n_items"]) == {7}  # the test split's first 7 images, not its 480
    records = [json.loads(p.read_text()) for p in (tmp / "home" / "records").glob("*.json")]
    marked = [r for r in records if r.get("limit") == 7]
    assert len(marked) == 1 and marked[0]["suite"] == "slice@limit7"


def test_full_run_never_sees_the_limited_one(runs):
    tmp, limited, full = runs
    assert full.returncode == 0, full.stderr
    rows = pd.read_csv(tmp / "home" / "leaderboards" / "slice.csv")
    assert set(rows["n_items"]) == {MINI_COOP_TEST_IMAGES} and set(rows["n"]) == {1}
    records = [json.loads(p.read_text()) for p in (tmp / "home" / "records").glob("*.json")]
    assert len({r["job_key"] for r in records}) == 2  # the limit is part of the job key: nothing was "resumed"
    assert sorted(r["suite"] for r in records) == ["slice", "slice@limit7"]


def test_outputs_go_to_harness_home_not_the_working_directory(runs):
    tmp, _, full = runs
    assert not (tmp / "leaderboards").exists()  # the cwd of both runs
    assert sorted(p.name for p in (tmp / "home" / "leaderboards").iterdir()) == [
        "slice.csv", "slice.html", "slice.md", "slice@limit7.csv", "slice@limit7.html", "slice@limit7.md"]
    assert str(Path(tmp / "home" / "leaderboards" / "slice.md")) in full.stderr.replace("\n", "")
