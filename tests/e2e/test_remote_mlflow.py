"""A real `mlflow server` (SQLite backend, local artifact store) on 127.0.0.1: run against it, lose it, sync."""

from __future__ import annotations

import json
import time

import pandas as pd
from e2e_helpers import fsc_entry, harness_env, job_runs, run_harness, write_suite


def harness(uri: str, *args: str, check: bool = True):
    return run_harness(*args, env=harness_env(uri=uri), check=check)


def test_remote_server_outage_and_sync(tmp_path, server):
    suite = write_suite(tmp_path / "small.yaml", "small", [fsc_entry(shots=[1], seeds=[1])])
    records = tmp_path / "home" / "records"

    harness(server.uri, "run", "-b", "resnet", "--suite", str(suite), "--seeds", "1")
    runs = job_runs(server.uri, "small")
    assert len(runs) == 1 and (runs["status"] == "FINISHED").all()
    one = runs.iloc[0]
    import mlflow

    logged = mlflow.artifacts.load_dict(f"{one['artifact_uri']}/record.json")  # through the server's proxy
    assert logged == json.loads((records / f"{one['tags.harness.job_key']}.json").read_text())
    assert str(server.root / "artifacts") in str(next((server.root / "artifacts").rglob("record.json")))
    board = pd.read_csv(tmp_path / "home" / "leaderboards" / "small.csv")
    assert len(board[board["n"] == 1]) >= 1

    # The server goes away: the run still finishes, warns, keeps the record and marks it pending.
    server.stop()
    start = time.monotonic()
    down = harness(server.uri, "run", "-b", "resnet", "--suite", str(suite), "--seeds", "2")
    assert time.monotonic() - start < 120
    assert "unreachable" in down.stderr and "harness sync --suite small" in down.stderr
    assert "Traceback" not in down.stderr
    assert len(list(records.glob("*.json"))) == 2
    pending = list((tmp_path / "home" / "pending").glob("*/pending.json"))
    assert len(pending) == 1
    failed = harness(server.uri, "sync", "--suite", "small", check=False)
    assert failed.returncode == 2 and "unreachable" in failed.stderr and "Traceback" not in failed.stderr

    # Back up: sync uploads the missing record once; a second sync finds nothing to do.
    server.start()
    synced = harness(server.uri, "sync", "--suite", "small")
    assert "1 record(s) uploaded" in synced.stderr and "1 already there" in synced.stderr
    again = harness(server.uri, "sync", "--suite", "small")
    assert "0 record(s) uploaded" in again.stderr and "2 already there" in again.stderr
    assert not list((tmp_path / "home" / "pending").glob("*/pending.json"))
    runs = job_runs(server.uri, "small")
    finished = runs[runs["status"] == "FINISHED"]
    assert len(finished) == 2 and finished["tags.harness.job_key"].is_unique
    assert sorted(finished["params.protocol.seed"].astype(int)) == [1, 2]
    harness(server.uri, "leaderboard", "--suite", "small")
    board = pd.read_csv(tmp_path / "home" / "leaderboards" / "small.csv")
    assert (board["n"] == 2).any()  # both seeds averaged in one cell
