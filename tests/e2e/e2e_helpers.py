"""What the end-to-end tests share: `harness` subprocesses (run to completion, or started in their own
session and SIGKILLed — by the test at a chosen moment, or by themselves at an exact point of the code),
a real MLflow server, and the checks a resumed run must pass (whole records, one FINISHED MLflow run per
job key, every cache entry whole and checksummed).

Everything runs as a subprocess, the way a user runs it, so that a kill is a real kill. (A module of its own,
not conftest.py: a bare `conftest` import is ambiguous when several test folders are collected together.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

# -- suites -----------------------------------------------------------------------------------------

FSC_PROTOCOL = {"text_space": "clip:tiny", "epochs": 20, "train_batch_size": 32, "lr": 1.0e-3}


def fsc_entry(shots: list[int], seeds: list[int], heads: tuple[str, ...] = ("linear-probe",),
              **protocol: Any) -> dict[str, Any]:
    """A few-shot classification entry on the generated `mini_coop` dataset (`protocol` overrides values)."""
    return {"task": "fsc", "datasets": ["mini_coop"], "protocol": {**FSC_PROTOCOL, **protocol},
            "grid": {"head": list(heads), "shots": shots, "seed": seeds}}


def write_suite(path: Path, name: str, entries: list[dict[str, Any]]) -> Path:
    """A suite YAML of tiny random-init backbones on the CPU (the mini suite's settings)."""
    spec = {"name": name, "variant": "tiny", "device": "cpu", "batch_size": 32, "entries": entries}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# -- harness subprocesses ---------------------------------------------------------------------------

def harness_env(home: Path | None = None, cache: Path | None = None, uri: str | None = None,
                data: Path | None = None) -> dict[str, str]:
    """This process's environment (the test's isolated folders) with its own home, cache, tracking URI or data
    folder; without `uri`, MLflow is the home's default SQLite store."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if data is not None:
        env["HARNESS_DATA"] = str(data)
    if home is not None:
        env["HARNESS_HOME"] = str(home)
    if cache is not None:
        env["HARNESS_CACHE"] = str(cache)
    if uri is not None:
        env["MLFLOW_TRACKING_URI"] = uri
    return env


def run_harness(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, check: bool = True,
                timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m harness ARGS` to completion; with `check`, a non-zero exit fails the test with its output."""
    proc = subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env or harness_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"harness {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


# Run as `python -c DIE_AT ARGS`: the harness CLI with ARGS, which SIGKILLs itself at an exact point of the
# code named by $HARNESS_TEST_DIE_AT, "KIND|WHAT|N" (N counts from 1):
#   write|SUBSTRING|N   in harness.io's atomic write, after the N-th temp file whose path holds SUBSTRING is
#                       written (and fsynced, where it is), before it is renamed (a cache entry, a record, ...)
#   call|MODULE:ATTR|N  as the N-th call of the function or method MODULE:ATTR starts
#   iter|MODULE:ATTR|N  as the generator function MODULE:ATTR is about to hand out its N-th item
DIE_AT = r"""
import functools, importlib, os, runpy, signal, sys

kind, what, nth = os.environ["HARNESS_TEST_DIE_AT"].split("|")
seen = [0]

def due():
    seen[0] += 1
    if seen[0] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)

if kind == "write":  # the rename that would publish the temp file (feature-store entries are not fsynced)
    real_replace = os.replace
    def replace(src, dst, *args, **kwargs):
        if what in os.fspath(src):
            due()
        return real_replace(src, dst, *args, **kwargs)
    os.replace = replace
else:
    module, _, attr = what.partition(":")
    *parents, name = attr.split(".")
    owner = importlib.import_module(module)
    for part in parents:
        owner = getattr(owner, part)
    real = getattr(owner, name)
    if kind == "call":
        @functools.wraps(real)
        def patched(*args, **kwargs):
            due()
            return real(*args, **kwargs)
    else:
        @functools.wraps(real)
        def patched(*args, **kwargs):
            for item in real(*args, **kwargs):
                due()
                yield item
    setattr(owner, name, patched)

sys.argv = ["harness", *sys.argv[1:]]
runpy.run_module("harness", run_name="__main__", alter_sys=True)
"""


def start_harness(*args: str, env: dict[str, str], cwd: Path, die_at: str | None = None) -> subprocess.Popen:
    """`python -m harness ARGS` in its own session (so a kill takes its whole process group); with `die_at`,
    it SIGKILLs itself at that point of the code (see DIE_AT)."""
    if die_at is not None:
        cmd = [sys.executable, "-c", DIE_AT, *args]
        env = {**env, "HARNESS_TEST_DIE_AT": die_at}
    else:
        cmd = [sys.executable, "-m", "harness", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def kill_group(proc: subprocess.Popen) -> bool:
    """SIGKILL the process's whole group and reap it; True when it was still running (the kill hit)."""
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return alive


def wait_for(cond: Callable[[], bool], timeout: float = 120.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


# -- what a finished (or resumed) run left behind ---------------------------------------------------

def record_files(home: Path) -> list[Path]:
    return sorted((home / "records").glob("*.json"))


def job_runs(uri: str, suite: str) -> pd.DataFrame:
    """Every MLflow job run of the suite's experiment (any status)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[f"harness-{suite}"])
    return runs[runs["tags.harness.kind"] == "job"]


def assert_cache_entries_whole(cache: Path) -> int:
    """Every feature-cache entry under its real name opens and matches its checksum (harness.data.cache's own
    digest); returns how many there are. Temp files are dot-prefixed and never read."""
    from safetensors import safe_open

    from harness.data.cache import _digest

    entries = list((cache / "features").rglob("*.safetensors"))
    for entry in entries:
        with safe_open(str(entry), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
        assert meta.get("sha256") == _digest(tensors), f"cache entry {entry} does not match its checksum"
    return len(entries)


def assert_resumed_state(home: Path, cache: Path, suite: str, n_jobs: int) -> None:
    """After a run killed and resumed to completion: `n_jobs` whole records, exactly one FINISHED MLflow job
    run per job key (a run cut short stays RUNNING/FAILED and is never counted), whole cache entries."""
    records = record_files(home)
    for path in records:
        json.loads(path.read_text())
    assert len(records) == n_jobs
    jobs = job_runs(f"sqlite:///{home / 'mlflow.db'}", suite)
    finished = jobs[jobs["status"] == "FINISHED"]
    assert finished["tags.harness.job_key"].is_unique, finished["tags.harness.job_key"].value_counts()
    assert set(finished["tags.harness.job_key"]) == {p.stem for p in records}
    assert set(jobs["status"]) <= {"FINISHED", "RUNNING", "FAILED", "KILLED"}
    assert assert_cache_entries_whole(cache) > 0


# -- a real MLflow server ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` (SQLite backend, local artifact store) on 127.0.0.1, in its own process group."""

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
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server's own process group (uvicorn workers included)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
