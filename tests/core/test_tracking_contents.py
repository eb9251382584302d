"""What a job run shows in MLflow, from its run record: training curves by step, timings, memory, throughput,
a readable weights param, the run name, MLflow's git tag; and where a store keeps its artifacts.

The store is a real SQLite store written by `Tracker` and read back with MLflow's own client; expected values
are written out by hand from the record the test builds.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import mlflow
import pytest
from record_factory import record

from harness.report.leaderboard import runs_to_values
from harness.track.tracking import (
    Tracker,
    ensure_sqlite_store,
    job_metrics,
    job_params,
    mlflow_git_commit,
    run_name,
    sqlite_uri,
    store_artifact_root,
)

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> Path:
    """A new store, migrated once per module (MLflow's migrations take seconds); copied where a test wants one.
    Its own artifact root is never used: experiments are created by the tests' trackers."""
    folder = tmp_path_factory.mktemp("template")
    ensure_sqlite_store(sqlite_uri(folder / "mlflow.db"))
    return folder / "mlflow.db"


def store_uri(template: Path, db: Path) -> str:
    """A copy of the migrated template at `db`, as a tracking URI."""
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, db)
    return sqlite_uri(db)


def ovss_like(key: str = "k1", **changes) -> dict:
    """A record with everything a job can carry: an epoch curve, an iteration curve of 200 iterations kept every
    4th (as OVSS keeps 50 points), timings, memory and counters."""
    return record(key, **{
        "protocol": {"seed": 2, "shots": 1, "iterations": 200},
        "details": {"loss_per_epoch": [3.0, 2.5, 2.25], "train_losses": [5.0 - i / 10 for i in range(50)],
                    "train_loss_every": 4,
                    "train_seconds": 7.5, "test_seconds": 1.25, "head_reused": False},
        "timings": {"total_s": 10.0},
        "memory": {"peak_rss_mb": 512.5, "cuda_peak_allocated_mb": None, "rss_scope": "since_mark"},
        "counters": {"images_extracted": 30, "images_recomputed": 10, "ovss_inputs_extracted": 60,
                     "feature_cache_hits": 4},
        "environment": {"git_commit": SHA + "+dirty", "device": "cpu", "packages": {"torch": "2"},
                        "harness_version": "9.9"},
        **changes})


def test_run_names_have_every_part_and_never_an_empty_one():
    assert run_name(record("k", column="shots=1")) == "resnet:tiny/fsc/mini_coop/shots=1/seed=1"
    assert run_name(record("k", column="")) == "resnet:tiny/fsc/mini_coop/seed=1"
    assert run_name(record("k", column="", protocol={})) == "resnet:tiny/fsc/mini_coop"
    assert run_name(record("k", limit=5)) == "resnet:tiny/fsc/mini_coop/shots=1/seed=1/limit=5"


def test_the_weights_param_is_readable():
    base = record("k", backbone={"name": "resnet", "variant": "tiny", "weights": None, "options": {}})
    fingerprinted = {**base, "backbone_fingerprint": {"weights": "random(seed=0,init=v2)", "weights_kind": "random"}}
    assert job_params(fingerprinted)["backbone.weights"] == "random(seed=0,init=v2)"
    assert job_params(base)["backbone.weights"] == "w"  # the record's weights fingerprint
    given = {**base, "backbone": {**base["backbone"], "weights": "org/model"}}
    assert job_params(given)["backbone.weights"] == "org/model"


def test_mlflow_git_commit_is_a_bare_sha_or_nothing():
    assert mlflow_git_commit(SHA + "+dirty") == SHA == mlflow_git_commit(SHA)
    assert mlflow_git_commit("unknown") is None and mlflow_git_commit(None) is None


def test_job_metrics_hold_curves_by_step_timings_memory_and_throughput():
    points = job_metrics(ovss_like())
    by_key: dict[str, list[tuple[int, float]]] = {}
    for key, value, step in points:
        by_key.setdefault(key, []).append((step, value))
    assert by_key["top1"] == [(0, 10.0)]
    # epochs 1..3, then the 50 kept iterations: 1, 5, 9, ..., 197 (every 4th of 200)
    losses = by_key["train.loss"]
    assert losses[:3] == [(1, 3.0), (2, 2.5), (3, 2.25)]
    assert [s for s, _ in losses[3:]] == list(range(1, 200, 4)) and losses[4] == (5, 4.9)
    assert by_key["time.total_s"] == [(0, 10.0)]
    assert by_key["time.train_s"] == [(0, 7.5)] and by_key["time.test_s"] == [(0, 1.25)]
    assert by_key["memory.peak_rss_mb"] == [(0, 512.5)] and "memory.cuda_peak_mb" not in by_key
    assert by_key["count.feature_cache_hits"] == [(0, 4.0)]
    assert by_key["throughput.images_per_s"] == [(0, (30 + 10 + 60) / 10.0)]
    reused = {k for k, _, _ in job_metrics(ovss_like(details={"train_seconds": 7.5, "head_reused": True}))}
    assert "time.train_s" not in reused  # a loaded head's training time is another job's
    cached = {k for k, _, _ in job_metrics(ovss_like(counters={"images_extracted": 0}))}
    assert "throughput.images_per_s" not in cached


def test_artifact_roots_are_per_store_and_never_the_working_directory(tmp_path):
    assert store_artifact_root(sqlite_uri(tmp_path / "a" / "mlflow.db")) == tmp_path / "a" / "mlartifacts"
    assert store_artifact_root(sqlite_uri(tmp_path / "a" / "other.db")) == tmp_path / "a" / "other-mlartifacts"
    assert store_artifact_root(sqlite_uri(tmp_path / "a b%20" / "x.db")) == tmp_path / "a b%20" / "x-mlartifacts"
    pg = store_artifact_root("postgresql://u:secret@db.example:5432/mlflow")
    assert pg.parent == Path(os.environ["HARNESS_HOME"]).resolve() / "mlartifacts" and pg.name.startswith("postgresql-")
    assert store_artifact_root("http://127.0.0.1:5000") is None  # a server keeps its own


def test_two_stores_in_one_folder_keep_their_artifacts_apart_next_to_them(tmp_path, monkeypatch, template_db):
    """Used from another working directory: each run's artifacts land beside its own store, nothing in cwd."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    uris = {}
    for name in ("x", "y"):
        uri = store_uri(template_db, tmp_path / "stores" / f"{name}.db")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        tracker = Tracker("t")
        assert not tracker.offline, tracker.offline_reason
        run_id = tracker.log_job(ovss_like(f"k-{name}"))
        uris[name] = mlflow.MlflowClient(uri).get_run(run_id).info.artifact_uri
    for name in ("x", "y"):
        assert uris[name].startswith((tmp_path / "stores" / f"{name}-mlartifacts").as_uri() + "/")
    assert (tmp_path / "stores" / "x-mlartifacts").is_dir() and (tmp_path / "stores" / "y-mlartifacts").is_dir()
    assert list(cwd.iterdir()) == []


@pytest.fixture
def logged(tmp_path, monkeypatch, template_db):
    """One job run under a parent run, in a store of its own; (client, tracker, job run id)."""
    uri = store_uri(template_db, tmp_path / "store" / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracker = Tracker("t")
    with tracker.invocation({"weights": None, "suite": "t"}):
        run_id = tracker.log_job(ovss_like())
    return mlflow.MlflowClient(uri), tracker, run_id


def test_a_job_run_carries_curves_stats_tags_and_a_readable_name(logged):
    client, tracker, run_id = logged
    run = client.get_run(run_id)
    history = client.get_metric_history(run_id, "train.loss")
    assert len(history) == 53 and sorted(m.step for m in history)[:4] == [1, 1, 2, 3]
    assert run.data.metrics["train.loss"] == pytest.approx(5.0 - 49 / 10)  # the latest step's value
    assert run.data.metrics["time.total_s"] == 10.0 and run.data.metrics["memory.peak_rss_mb"] == 512.5
    assert run.info.run_name == "resnet:tiny/fsc/mini_coop/shots=1/seed=2"
    assert run.data.tags["mlflow.source.git.commit"] == SHA and run.data.tags["harness.git_commit"] == SHA + "+dirty"
    assert run.data.tags["mlflow.parentRunId"] == tracker.invocation_run_id
    parent = client.get_run(tracker.invocation_run_id)
    assert parent.data.metrics["jobs.logged"] == 1.0 and parent.data.params["weights"] == "(default)"
    exp = client.get_experiment(tracker.experiment_id)
    assert exp.tags["harness.suite"] == "t" and "harness suite `t`" in exp.tags["mlflow.note.content"]


def test_new_metrics_do_not_reach_the_leaderboard(logged):
    _, tracker, _ = logged
    values = runs_to_values(tracker.job_runs())
    assert list(values["metric"]) == ["top1"] and list(values["value"]) == [10.0]


def test_suite_outputs_land_on_the_parent_run(logged, tmp_path):
    client, tracker, _ = logged
    files = [tmp_path / "t.md", tmp_path / "t.csv"]
    for f in files:
        f.write_text(f"content of {f.name}")
    assert tracker.log_suite_outputs(files, {"jobs.ran": 1, "mean.fsc.top1/resnet:tiny": 10.0, **tracker.suite_means()})
    parent = tracker.invocation_run_id
    assert sorted(a.path for a in client.list_artifacts(parent, "leaderboard")) == ["leaderboard/t.csv",
                                                                                     "leaderboard/t.md"]
    local = Path(client.download_artifacts(parent, "leaderboard/t.md", str(tmp_path / "down")))
    assert local.read_text() == "content of t.md"
    metrics = client.get_run(parent).data.metrics
    assert metrics["jobs.ran"] == 1.0 and metrics["suite.jobs_finished"] == 1.0
    assert metrics["mean.fsc.top1/resnet.tiny"] == 10.0  # from the job run's top1
    assert math.isclose(metrics["mean.fsc.top1/resnet_tiny"], 10.0)  # a colon is not valid everywhere


def test_suite_outputs_without_a_parent_run_do_nothing(tmp_path, monkeypatch, template_db):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri(template_db, tmp_path / "store" / "mlflow.db"))
    tracker = Tracker("t")
    assert tracker.log_suite_outputs([], {"jobs.ran": 1.0}) is False
