"""A tracking store that fails is handled like one that is down, and several processes share one store safely.

Each failure is made for real on a store the code itself created: a truncated `mlflow.db`, a read-only
home, a file-size limit (RLIMIT_FSIZE), a HARNESS_HOME that is a file or holds `%20`. Every case must end
offline (records kept, `harness sync` later) or in one line naming the store, and must never hand MLflow a
file that does not open: MLflow retries a failing connection for about 100 s (10 attempts with backoff),
so `tracker.client is None` (MLflow never saw the store) is what keeps these cases fast.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from record_factory import record

from harness.cli import main
from harness.data import locks
from harness.track.records import RecordStore
from harness.track.tracking import (
    StoreUnusable,
    Tracker,
    TrackerUnavailable,
    check_sqlite_store,
    ensure_sqlite_store,
    log_claim_name,
    sqlite_path,
    sqlite_uri,
)


def home() -> Path:
    return Path(os.environ["HARNESS_HOME"])


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    """A new store, migrated once per session by the code (MLflow's migrations take seconds)."""
    folder = tmp_path_factory.mktemp("template")
    ensure_sqlite_store(sqlite_uri(folder / "mlflow.db"), folder / "artifacts")
    return folder / "mlflow.db"


@pytest.fixture
def store(template_db) -> Path:
    """A real store under HARNESS_HOME, written by the code: one experiment, one FINISHED job run (k0)."""
    home().mkdir(parents=True, exist_ok=True)
    shutil.copy(template_db, home() / "mlflow.db")
    tracker = Tracker("t")
    assert not tracker.offline
    tracker.log_job(record("k0"))
    return tracker.db


def one_warning(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def finished_runs(key: str, suite: str = "t") -> int:
    tracker = Tracker(suite)
    return len(tracker.client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.`harness.job_key` = '{key}' and attributes.status = 'FINISHED'"))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def python(code: str, args: list[str] = (), env: dict | None = None) -> subprocess.Popen:
    """A separate Python process (HARNESS_HOME and the rest come from this test's environment unless `env`).

    MLFLOW_TRACKING_URI is left out: `mlflow.set_tracking_uri` in this process exports it, and a new process
    must find its store the way the CLI does.
    """
    env = {k: v for k, v in (env or os.environ).items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def result(proc: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    return json.loads(out.strip().splitlines()[-1])


# -- a store that cannot be used -----------------------------------------------------------------------


def test_a_truncated_store_goes_offline_in_one_line_without_reaching_mlflow(store, capsys):
    db = store
    os.truncate(db, db.stat().st_size // 2)
    capsys.readouterr()
    tracker = Tracker("t")
    assert tracker.offline and tracker.client is None
    assert "malformed" in tracker.offline_reason
    line = one_warning(capsys)
    assert str(db) in line and "malformed" in line and "harness sync --suite t" in line
    with pytest.raises(TrackerUnavailable):
        tracker.log_job(record("k1"))
    with pytest.raises(SystemExit) as code:
        main(["sync", "--suite", "t"])
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(db) in err and "malformed" in err


def test_a_file_that_is_not_a_database_is_named(tmp_path):
    db = tmp_path / "notes.db"
    db.write_text("not sqlite at all\n" * 100)
    with pytest.raises(StoreUnusable, match="notes.db cannot be used: .*not a database") as err:
        check_sqlite_store(db)
    assert "\n" not in str(err.value)


def test_a_store_busy_with_another_writer_passes_the_check(store):
    import sqlite3

    db = store
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process is in the middle of a write
    try:
        check_sqlite_store(db, budget_s=0.2)  # inconclusive, so no failure: MLflow will wait its turn
    finally:
        writer.execute("ROLLBACK")
        writer.close()


@pytest.fixture
def read_only():
    """Make a folder read-only for real: chmod for a user; for root (who ignores modes) `chattr +i`."""
    undo = []

    def make(path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            path.chmod(0o555)
            undo.append(lambda: path.chmod(0o755))
            return
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
        if done.returncode != 0:
            pytest.skip("running as root, which ignores permissions, and `chattr +i` is unavailable here")
        undo.append(lambda: subprocess.run(["chattr", "-i", str(path)], check=True))

    yield make
    for step in reversed(undo):
        step()


def test_a_read_only_home_without_a_store_goes_offline_and_creates_nothing(read_only, capsys):
    read_only(home())
    tracker = Tracker("t")
    assert tracker.offline and tracker.client is None
    assert list(home().iterdir()) == []
    assert str(home() / "mlflow.db") in one_warning(capsys)


def test_a_store_in_a_home_made_read_only_goes_offline(store, read_only, capsys):
    db = store
    read_only(home())
    capsys.readouterr()
    tracker = Tracker("t")
    assert tracker.offline and tracker.client is None
    assert any(word in tracker.offline_reason for word in ("unable to open", "readonly", "ermission"))
    assert str(db) in one_warning(capsys)


def test_a_file_size_limit_leaves_no_half_made_store_and_fails_logging_fast(store, tmp_path):
    """RLIMIT_FSIZE (`ulimit -f`): a new store cannot be built; an existing one fails on its first write."""
    existing = store
    code = """
        import json, os, resource, sys
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
        from harness.track.tracking import Tracker, TrackerUnavailable
        t = Tracker("t")
        out = {"offline_at_start": t.offline, "client": t.client is not None}
        if not t.offline:
            try:
                t.log_job(json.loads(os.environ["RECORD"]))
            except TrackerUnavailable:
                pass
        out.update(offline=t.offline, reason=t.offline_reason)
        print(json.dumps(out))
    """
    fresh_home = tmp_path / "fresh"
    env = {**os.environ, "RECORD": json.dumps(record("k1"))}
    fresh = python(code, args=["100000"], env={**env, "HARNESS_HOME": str(fresh_home)})
    full = python(code, args=[str(existing.stat().st_size // 2)], env=env)  # pages past the limit fail to write
    new, old = result(fresh), result(full)
    assert new["offline_at_start"] and not new["client"] and "disk I/O error" in new["reason"]
    assert not (fresh_home / "mlflow.db").exists() and not list(fresh_home.glob(".mlflow.db.*"))
    assert old["offline"] and "disk I/O error" in old["reason"]
    assert finished_runs("k1") == 0 and finished_runs("k0") == 1  # the store itself is intact


def test_a_home_that_is_a_file_stops_in_one_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for where in (blocker, blocker / "deeper"):
        monkeypatch.setenv("HARNESS_HOME", str(where))
        with pytest.raises(StoreUnusable, match=f"{blocker} is a file, not a folder") as err:
            Tracker("t")
        assert "\n" not in str(err.value) and "HARNESS_HOME" in str(err.value)
    with pytest.raises(SystemExit) as code:
        main(["leaderboard", "--suite", "t"])
    assert code.value.code == 2 and "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("name", ["a%20b", "a?b"])
def test_a_home_whose_path_needs_quoting_works(tmp_path, monkeypatch, name):
    """SQLAlchemy decodes `%20` and cuts at `?`: the store must still be the file under HARNESS_HOME."""
    where = tmp_path / name / "home"
    monkeypatch.setenv("HARNESS_HOME", str(where))
    tracker = Tracker("t")
    assert not tracker.offline and tracker.db == where / "mlflow.db"
    tracker.log_job(record("k1"))
    assert (where / "mlflow.db").is_file() and finished_runs("k1") == 1
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_dir())
    assert [p for p in made if not p.startswith(name)] == []  # no folder named after a decoded or re-quoted path


@pytest.mark.parametrize("path", ["/x/plain/mlflow.db", "/x/a b/m.db", "/x/a%20b/m.db", "/x/a?b=c/m.db",
                                  "/x/%2F#/m.db", "/x/50%/m.db", "relative/m.db"])
def test_sqlite_uri_and_path_round_trip(path):
    assert sqlite_path(sqlite_uri(Path(path))) == Path(path)
    assert sqlite_path("http://127.0.0.1:5000") is None and sqlite_path("sqlite://") is None


# -- several processes on one store ---------------------------------------------------------------------


def test_losing_the_race_to_create_the_experiment_uses_the_winners(store, monkeypatch):
    import mlflow

    winner = Tracker("race")
    real = mlflow.MlflowClient.get_experiment_by_name
    calls = []

    def first_lookup_misses(self, name):  # as if the winner created it just after this lookup
        calls.append(name)
        return None if len(calls) == 1 else real(self, name)

    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", first_lookup_misses)
    loser = Tracker("race")
    assert not loser.offline and loser.experiment_id == winner.experiment_id and len(calls) == 2


def test_a_key_logged_meanwhile_by_another_process_is_not_logged_again(store):
    first, second = Tracker("t"), Tracker("t")
    assert second.finished_keys() == {"k0"}  # what `run` / `sync` read before logging: no k1
    assert first.log_job(record("k1")) is not None
    assert second.log_job(record("k1")) is None
    assert finished_runs("k1") == 1
    assert locks.holder(log_claim_name("k1")) is None  # the claim is released


def test_a_key_being_logged_by_a_live_process_stays_pending(store, monkeypatch):
    import harness.track.tracking as tracking

    monkeypatch.setattr(tracking, "LOG_CLAIM_WAIT_S", 0.1)
    path = locks.lock_path(log_claim_name("k1"))
    parent = os.getppid()
    path.write_text(json.dumps({"pid": parent, "host": locks.this_host(), "started": locks.process_started(parent)}))
    tracker = Tracker("t")
    with pytest.raises(TrackerUnavailable, match=f"being logged by pid {parent}"):
        tracker.log_job(record("k1"))
    assert not tracker.offline and finished_runs("k1") == 0


GATE = """
    import json, os, pathlib, sys, time
    from harness.track.sync import sync_suite
    from harness.track.tracking import Tracker
    gate = pathlib.Path(sys.argv[1])
    (gate / f"ready-{os.getpid()}").touch()
    while not (gate / "go").exists():
        time.sleep(0.01)
"""


def start_together(tmp_path: Path, code: str, n: int) -> list[dict]:
    """`n` processes that import everything, wait at a gate, then run `code` at once; their JSON results."""
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {**os.environ, "RECORD": json.dumps(record("k"))}
    procs = [python(textwrap.dedent(GATE) + textwrap.dedent(code), args=[str(gate)], env=env) for _ in range(n)]
    deadline = time.monotonic() + 120
    while len(list(gate.glob("ready-*"))) < n and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):  # one failed before the gate: `result` shows why
            break
        time.sleep(0.05)
    (gate / "go").touch()
    return [result(p) for p in procs]


def test_four_processes_on_a_fresh_store_share_the_experiment_and_log_each_key_once(tmp_path):
    outcomes = start_together(tmp_path, """
        t = Tracker("race")
        logged = []
        if not t.offline:
            with t.invocation({"who": os.getpid()}):
                for key in ("k1", "k2"):
                    if t.log_job({**json.loads(os.environ["RECORD"]), "job_key": key, "suite": "race"}):
                        logged.append(key)
        print(json.dumps({"offline": t.offline_reason, "experiment": t.experiment_id, "logged": logged}))
    """, 4)
    assert [o["offline"] for o in outcomes] == [None] * 4
    assert len({o["experiment"] for o in outcomes}) == 1
    assert sorted(k for o in outcomes for k in o["logged"]) == ["k1", "k2"]
    assert finished_runs("k1", "race") == finished_runs("k2", "race") == 1
    import mlflow

    names = [e.name for e in mlflow.MlflowClient(sqlite_uri(home() / "mlflow.db")).search_experiments()]
    assert names.count("harness-race") == 1


def test_two_concurrent_syncs_upload_each_record_once(store, tmp_path):
    """The experiment exists (k0 has no record); k1 and k2 finished offline and wait for `harness sync`."""
    records = RecordStore()
    for i, key in enumerate(("k1", "k2"), start=1):
        records.write(record(key, i))
        records.mark_pending(record(key, i))
    outcomes = start_together(tmp_path, """
        s = sync_suite("t")
        print(json.dumps({"uploaded": s.uploaded, "already": s.already}))
    """, 2)
    uploaded = sorted(k for o in outcomes for k in o["uploaded"])
    assert uploaded == ["k1", "k2"]  # each by exactly one of the two
    assert all(sorted(o["uploaded"] + o["already"]) == ["k1", "k2"] for o in outcomes)
    assert finished_runs("k1") == finished_runs("k2") == 1 and records.pending_keys("t") == []


# -- a killed run's parent ------------------------------------------------------------------------------


def test_parent_runs_of_killed_processes_are_closed_as_killed(store):
    tracker = Tracker("t")
    client, exp = tracker.client, tracker.experiment_id

    def parent(pid: int, host: str, started: str | None = None) -> str:
        tags = {"harness.kind": "invocation", "harness.pid": str(pid), "harness.host": host,
                "harness.pid_started": started or ""}
        return client.create_run(exp, tags=tags).info.run_id

    def job(key: str, under: str, status: str | None = None) -> str:
        run_id = client.create_run(exp, tags={"harness.kind": "job", "harness.job_key": key,
                                              "mlflow.parentRunId": under}).info.run_id
        if status:
            client.set_terminated(run_id, status)
        return run_id

    dead = parent(dead_pid(), locks.this_host())
    child = job("k1", dead)  # cut short by the kill
    done = job("k2", dead, "FINISHED")
    failed = job("k3", dead, "FAILED")
    ppid = os.getppid()
    alive = parent(ppid, locks.this_host(), locks.process_started(ppid))
    live_child = job("k4", alive)  # still being computed by a live process
    foreign = parent(dead_pid(), "another-host")
    older = client.create_run(exp, tags={"harness.kind": "invocation"}).info.run_id  # no pid recorded
    started = locks.process_started(os.getpid())
    reused = parent(os.getpid(), locks.this_host(), str(int(started) + 1)) if started else None

    def status(run_id: str) -> str:
        return client.get_run(run_id).info.status

    with Tracker("t").invocation({"a": 1}) as run_id:
        assert status(dead) == "KILLED" and status(child) == "KILLED"  # its job run cut short is closed too
        assert (status(done), status(failed)) == ("FINISHED", "FAILED")  # an ended job run is left as it is
        assert status(alive) == status(foreign) == status(older) == status(live_child) == "RUNNING"
        assert reused is None or status(reused) == "KILLED"
        tags = client.get_run(run_id).data.tags
        assert tags["harness.pid"] == str(os.getpid()) and tags["harness.host"] == locks.this_host()
    assert status(run_id) == "FINISHED"


def test_a_run_killed_inside_its_invocation_is_closed_by_the_next_one(store, capsys):
    """Killed while a job run is open under its parent (created and tagged as `log_job` does): the next
    invocation closes both as KILLED, says so in one line, and a later one finds nothing more to close."""
    proc = python("""
        import json, sys, time
        from harness.track.tracking import Tracker, job_tags
        tracker = Tracker("t")
        with tracker.invocation({"a": 1}) as run_id:
            tags = {**job_tags(json.loads(sys.argv[1]), "t"), "mlflow.parentRunId": run_id}
            child = tracker.client.create_run(tracker.experiment_id, tags=tags).info.run_id
            print(json.dumps([run_id, child]), flush=True)
            time.sleep(600)
    """, [json.dumps(record("k9"))])
    run_id, child = json.loads(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    tracker = Tracker("t")

    def status(run: str) -> str:
        return tracker.client.get_run(run).info.status

    assert status(run_id) == status(child) == "RUNNING"  # what a killed run leaves
    capsys.readouterr()
    with tracker.invocation({"a": 2}):
        assert status(run_id) == status(child) == "KILLED"
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warned == ["warning: 1 parent run(s) of experiment 'harness-t' were left RUNNING by a killed process; "
                      "marked KILLED in MLflow (and 1 job run(s) left RUNNING under them)"]
    assert tracker.finished_keys() == {"k0"}  # a KILLED job run is never counted
    with Tracker("t").invocation({"a": 3}):
        pass
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")] == []
