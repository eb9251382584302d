"""A real `mlflow server` (SQLite backend, local artifact store) on 127.0.0.1: run against it, lose it, sync."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

SMALL_SUITE = """\
name: small
variant: tiny
device: cpu
batch_size: 32
entries:
  - task: fsc
    datasets: [mini_coop]
    protocol: {epochs: 20, train_batch_size: 32, lr: 1.0e-3}
    grid:
      head: [linear-probe]
      shots: [1]
      seed: [1]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path, port: int):
        self.root, self.port, self.proc = root, port, None
        self.uri = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        cmd = [str(mlflow_bin) if mlflow_bin.exists() else "mlflow", "server",
               "--backend-store-uri", f"sqlite:///{self.root / 'db.sqlite'}",
               "--artifacts-destination", str(self.root / "artifacts"), "--serve-artifacts",
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("mlflow server exited:\n" + (self.root / "server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError("mlflow server did not come up:\n" + (self.root / "server.log").read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)  # the server's own process group (uvicorn workers included)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.proc = None


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    srv = Server(root, free_port())
    srv.start()
    yield srv
    srv.stop()


def harness(uri: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          timeout=300, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"harness {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def job_runs(uri: str) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["harness-small"])
    return runs[runs["tags.harness.kind"] == "job"]


def test_remote_server_outage_and_sync(tmp_path, server):
    suite = tmp_path / "small.yaml"
    suite.write_text(SMALL_SUITE)
    records = tmp_path / "home" / "records"

    harness(server.uri, "run", "-b", "resnet", "--suite", str(suite), "--seeds", "1")
    runs = job_runs(server.uri)
    assert len(runs) == 1 and (runs["status"] == "FINISHED").all()
    one = runs.iloc[0]
    import mlflow

    logged = mlflow.artifacts.load_dict(f"{one['artifact_uri']}/record.json")  # through the server's proxy
    assert logged == json.loads((records / f"{one['tags.harness.job_key']}.json").read_text())
    assert str(server.root / "artifacts") in str(next((server.root / "artifacts").rglob("record.json")))
    board = pd.read_csv(tmp_path / "leaderboards" / "small.csv")
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
    runs = job_runs(server.uri)
    finished = runs[runs["status"] == "FINISHED"]
    assert len(finished) == 2 and finished["tags.harness.job_key"].is_unique
    assert sorted(finished["params.protocol.seed"].astype(int)) == [1, 2]
    harness(server.uri, "leaderboard", "--suite", "small")
    board = pd.read_csv(tmp_path / "leaderboards" / "small.csv")
    assert (board["n"] == 2).any()  # both seeds averaged in one cell
