"""Tracker outages and half-finished MLflow runs: records stay the truth, nothing is lost or doubled."""

from __future__ import annotations

import time

import pytest
from record_factory import record

from harness.errors import HarnessError
from harness.track.records import RecordStore
from harness.track.sync import sync_suite
from harness.track.tracking import Tracker, TrackerUnavailable, runs_from_records


def test_unreachable_server_goes_offline_fast_and_warns(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: connection refused
    start = time.monotonic()
    tracker = Tracker("t")
    assert tracker.offline and time.monotonic() - start < 30
    assert "unreachable" in capsys.readouterr().err
    assert tracker.finished_keys() == set()
    with tracker.invocation({"a": 1}) as run_id:
        assert run_id is None
    with pytest.raises(TrackerUnavailable):
        tracker.log_job(record("k1"))
    with pytest.raises(HarnessError, match="unreachable"):
        sync_suite("t")


def test_offline_leaderboard_frame_comes_from_records(monkeypatch, tmp_path):
    store = RecordStore()
    store.write(record("k1", 1))
    store.write(record("k2", 2))
    store.write(record("other", 1, suite="u"))
    frame = runs_from_records("t")
    assert sorted(frame["tags.harness.job_key"]) == ["k1", "k2"]
    assert frame.iloc[0]["tags.harness.job_key"] == "k2"  # newest first, as MLflow orders them
    assert {"metrics.top1", "params.protocol.seed", "tags.harness.primary_metric"} <= set(frame.columns)


def test_pending_then_sync_uploads_once(tmp_path):
    store = RecordStore()
    for i, key in enumerate(("k1", "k2"), start=1):
        store.write(record(key, i))
    artifact = tmp_path / "grid.png"
    artifact.write_bytes(b"png")
    store.mark_pending(record("k2", 2), {"qualitative": artifact})
    assert store.pending_keys("t") == ["k2"] and store.pending_artifacts("k2")["qualitative"].name == "grid.png"
    tracker = Tracker("t")
    tracker.log_job(record("k1", 1))
    summary = sync_suite("t")
    assert summary.uploaded == ["k2"] and summary.already == ["k1"]
    assert store.pending_keys() == []
    again = sync_suite("t")
    assert again.uploaded == [] and sorted(again.already) == ["k1", "k2"]
    runs = Tracker("t").job_runs()
    assert sorted(runs["tags.harness.job_key"]) == ["k1", "k2"]
    k2 = runs[runs["tags.harness.job_key"] == "k2"].iloc[0]
    names = [a.path for a in tracker.client.list_artifacts(k2["run_id"], "qualitative")]
    assert names == ["qualitative/grid.png"]


def test_a_run_cut_short_is_not_counted(tmp_path):
    tracker = Tracker("t")
    dead = tracker.client.create_run(tracker.experiment_id, tags={"harness.kind": "job", "harness.job_key": "k1"})
    failed = tracker.client.create_run(tracker.experiment_id, tags={"harness.kind": "job", "harness.job_key": "k2"})
    tracker.client.set_terminated(failed.info.run_id, "FAILED")
    assert tracker.finished_keys() == set() and tracker.job_runs().empty
    assert dead.info.status == "RUNNING"
    RecordStore().write(record("k1", 1))
    assert sync_suite("t").uploaded == ["k1"]
    assert Tracker("t").finished_keys() == {"k1"}


def test_a_failure_while_logging_marks_the_run_failed_and_goes_offline(monkeypatch):
    tracker = Tracker("t")

    def boom(*args, **kwargs):
        raise ConnectionError("server went away")

    monkeypatch.setattr(tracker.client, "log_dict", boom)
    with pytest.raises(TrackerUnavailable, match="server went away"):
        tracker.log_job(record("k1"))
    assert tracker.offline
    fresh = Tracker("t")
    runs = fresh.client.search_runs([fresh.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"] and fresh.finished_keys() == set()


def test_marking_pending_twice_keeps_the_artifacts(tmp_path):
    store = RecordStore()
    artifact = tmp_path / "grid.png"
    artifact.write_bytes(b"png")
    store.mark_pending(record("k1"), {"qualitative": artifact})
    store.mark_pending(record("k1"), store.pending_artifacts("k1"))  # a resumed run, still offline
    assert store.pending_artifacts("k1")["qualitative"].read_bytes() == b"png"


def test_killed_between_record_and_mlflow_relogs_the_artifacts_on_resume(tmp_path):
    """The record lands, the process dies before its MLflow run: the resumed run logs record and artifacts."""
    from harness.config import BackboneConfig
    from harness.plan.planner import Job
    from harness.run.executor import Executor

    job = Job(suite="t", backbone=BackboneConfig(name="resnet", variant="tiny"), task="fsc", task_version="1",
              dataset="mini_coop", protocol={"seed": 1}, column="c", data_fingerprint="d", weights_fingerprint="w")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "grid.png").write_bytes(b"png")

    class Died(BaseException):
        pass

    class OneJob(Executor):
        def preflight(self, jobs):
            pass

        def _run_jobs(self, jobs, done, progress, take):
            for j in filter(take, jobs):
                done(j, {**record(j.key), "job_key": j.key}, {"qualitative": scratch / "grid.png"})

    dying = Tracker("t")

    def die(*args, **kwargs):
        raise Died

    dying.log_job = die
    with pytest.raises(Died):
        OneJob().run([job], dying)
    import shutil

    shutil.rmtree(scratch)  # the scratch folder does not survive the process
    store = RecordStore()
    assert store.exists(job.key)
    tracker = Tracker("t")
    summary = OneJob().run([job], tracker)
    assert summary.relogged == [job.key] and store.pending_keys("t") == []
    run_id = tracker.job_runs().iloc[0]["run_id"]
    assert [a.path for a in tracker.client.list_artifacts(run_id, "qualitative")] == ["qualitative/grid.png"]


def test_a_new_sqlite_store_is_made_whole_beside_and_never_replaces_one(tmp_path):
    from harness.track.tracking import ensure_sqlite_store

    db = tmp_path / "home" / "mlflow.db"
    ensure_sqlite_store(f"sqlite:///{db}", tmp_path / "artifacts")
    assert db.is_file() and [p.name for p in db.parent.iterdir()] == ["mlflow.db"]  # no temp file left
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    client.create_experiment("x")  # a fully migrated store: no migration runs on open
    other = tmp_path / "other.db"
    other.write_bytes(b"made by a concurrent run")
    ensure_sqlite_store(f"sqlite:///{other}")
    assert other.read_bytes() == b"made by a concurrent run"
    ensure_sqlite_store("http://127.0.0.1:5000")  # not SQLite: nothing to do
