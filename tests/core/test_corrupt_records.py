"""A corrupt run record is moved aside (kept byte for byte), its job runs again, and every reader says so.

Before: a record with a NUL byte counted as finished forever, crashed the re-log and vanished silently from
`harness sync` and the offline leaderboard. The corrupt files here are written by hand, the way a torn disk,
an editor or a bad copy leaves them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from record_factory import record
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import HarnessError
from harness.track.records import RecordStore, validate_record
from harness.track.sync import sync_suite
from harness.track.tracking import Tracker, runs_from_records


def good_bytes(key: str, **changes) -> bytes:
    return (json.dumps(record(key, **changes), indent=2, sort_keys=True) + "\n").encode()


def without(key: str, name: str) -> bytes:
    rec = record(key)
    del rec[name]
    return json.dumps(rec).encode()


# (case, the file's bytes for job key "k1", a word the warning's reason must hold)
CORRUPT = [
    ("nul byte", good_bytes("k1")[:60] + b"\x00" + good_bytes("k1")[60:], "not valid JSON"),
    ("truncated", good_bytes("k1")[: len(good_bytes("k1")) // 2], "not valid JSON"),
    ("json list", b'[{"job_key": "k1"}]\n', "a list, not an object"),
    ("missing metrics", without("k1", "metrics"), "'metrics' is missing"),
    ("wrong job_key", good_bytes("someone-else"), "not the file's name"),
    ("empty", b"", "empty file"),
    ("not utf-8", b'{"job_key": "k1\xff"}', "not UTF-8"),
    ("metric is null", json.dumps(record("k1", metrics={"top1": None})).encode(), "metric 'top1' is null"),
]


def corrupt_files(store: RecordStore) -> list[Path]:
    return sorted(store.corrupt_root.iterdir()) if store.corrupt_root.is_dir() else []


@pytest.mark.parametrize(("case", "data", "reason"), CORRUPT, ids=[c[0] for c in CORRUPT])
def test_a_corrupt_record_is_moved_aside_whole_and_its_job_is_not_finished(case, data, reason, capsys):
    store = RecordStore()
    store.root.mkdir(parents=True)
    path = store.path("k1")
    path.write_bytes(data)
    assert not store.exists("k1")
    assert not path.exists()  # its job key is free: the next run recomputes it
    [moved] = corrupt_files(store)
    assert moved.name.startswith("k1.json.") and moved.read_bytes() == data  # kept, byte for byte
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ")  # one line
    assert str(path) in err and str(moved) in err and reason in err
    assert [(m.path, m.moved_to) for m in store.unreadable] == [(path, moved)] and reason in store.unreadable[0].reason
    assert store.load("k1") is None and len(corrupt_files(store)) == 1  # reported once, not again


def test_a_record_that_is_a_directory_is_moved_aside_too(capsys):
    store = RecordStore()
    store.path("k1").mkdir(parents=True)
    assert store.keys() == []
    [moved] = corrupt_files(store)
    assert moved.is_dir() and "IsADirectoryError" in capsys.readouterr().err


def test_a_whole_record_is_read_and_nothing_is_moved(capsys):
    store = RecordStore()
    store.write(record("k1", 1))
    store.write(record("k2", 2, suite="u", metrics={"top1": float("nan"), "loss": "0.25"}))  # NaN, float32 text
    assert store.exists("k1") and store.read("k1") == record("k1", 1)
    assert store.keys() == ["k1", "k2"] and store.keys("u") == ["k2"]
    assert corrupt_files(store) == [] and store.unreadable == [] and capsys.readouterr().err == ""


def test_validation_by_hand():
    assert validate_record(record("k"), "k") is None
    assert validate_record(record("k", task_version=3), "k") is None  # an integer version is fine
    assert validate_record("text", "k") == "the JSON is a string, not an object"
    assert validate_record(record("k", metrics=[1.0]), "k") == "key 'metrics' is a list"
    assert validate_record(record("k", task_version=True), "k") == "key 'task_version' is a boolean"
    assert validate_record(record("k", backbone={"name": "resnet"}), "k") == "key 'backbone.variant' is missing or null"
    assert validate_record(record("k", metrics={"top1": "high"}), "k") == "metric 'top1' is a string, not a number"
    assert validate_record(record("k", report_metrics="top1"), "k") == "key 'report_metrics' is not a list of names"
    assert validate_record(record("k", item_se={"top1": {"se": 1.0}}), "k") == \
        "key 'item_se' is not an object of {se, n} numbers"
    assert validate_record(record("k"), "j") == "its job_key 'k' is not the file's name"


def test_a_malformed_record_is_refused_before_it_lands():
    store = RecordStore()
    with pytest.raises(HarnessError, match="job k1 cannot be stored: metric 'top1' is null"):
        store.write(record("k1", metrics={"top1": None}))
    assert not store.path("k1").exists()


def test_a_record_replaced_by_a_whole_one_before_the_move_is_put_back(capsys):
    """A concurrent run wrote the job's whole record between our read of a corrupt one and the move."""
    store = RecordStore()
    store.write(record("k1"))
    assert store._move_aside(store.path("k1"), b"corrupt bytes we read", "not valid JSON") == record("k1")
    assert store.load("k1") == record("k1") and corrupt_files(store) == [] and store.unreadable == []
    assert capsys.readouterr().err == ""
    assert store._move_aside(store.path("gone"), b"x", "empty file") is None  # another run moved it first


class Offline:
    """A tracker that is down: every record is kept and marked pending."""

    offline = True

    def finished_keys(self) -> set[str]:
        return set()


def test_the_executor_recomputes_a_job_whose_record_is_corrupt(capsys):
    from harness.config import BackboneConfig
    from harness.plan.planner import Job
    from harness.run.executor import Executor

    jobs = [Job(suite="t", backbone=BackboneConfig(name="resnet", variant="tiny"), task="fsc", task_version="1",
                dataset="mini_coop", protocol={"seed": seed}, column="c", data_fingerprint="d",
                weights_fingerprint="w") for seed in (1, 2)]
    computed: list[str] = []

    class Counting(Executor):
        def preflight(self, jobs):
            pass

        def _run_jobs(self, jobs, done, progress, take):
            for j in filter(take, jobs):
                computed.append(j.key)
                done(j, record(j.key), {})

    store = RecordStore()
    Counting(store).run(jobs, Offline())
    assert sorted(computed) == sorted(j.key for j in jobs)
    bad, good = jobs[0].key, jobs[1].key
    data = store.path(bad).read_bytes()
    torn = data[:40] + b"\x00" + data[40:]
    store.path(bad).write_bytes(torn)
    computed.clear()
    capsys.readouterr()
    summary = Counting(store).run(jobs, Offline())
    assert computed == [bad] and summary.ran == [bad] and summary.skipped == [good]
    assert store.load(bad) == record(bad)  # recomputed and whole again
    [moved] = corrupt_files(store)
    assert moved.read_bytes() == torn and str(store.path(bad)) in capsys.readouterr().err


def test_sync_uploads_the_good_records_and_counts_the_corrupt_ones(capsys):
    store = RecordStore()
    store.write(record("k1", 1))
    store.write(record("k2", 2))
    store.mark_pending(record("k2", 2))
    store.path("k2").write_bytes(b'{"job_key": "k2", "suite": "t", "metr')  # torn after being marked pending
    result = CliRunner().invoke(app, ["sync", "--suite", "t"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "1 record(s) uploaded to MLflow, 0 already there" in lines
    [note] = [line for line in lines if "could not be read" in line]
    assert note.startswith("warning: 1 run record(s)") and str(store.corrupt_root) in note
    assert any(str(store.path("k2")) in line and "not valid JSON" in line for line in lines)
    assert Tracker("t").finished_keys() == {"k1"}
    [moved] = corrupt_files(store)
    assert moved.read_bytes() == b'{"job_key": "k2", "suite": "t", "metr'
    again = sync_suite("t")  # once moved aside, it is no longer counted
    assert again.uploaded == [] and again.already == ["k1"] and again.unreadable == []


def test_the_offline_leaderboard_keeps_the_good_records_and_counts_the_corrupt_ones(capsys):
    from harness.report.leaderboard import build_leaderboard

    store = RecordStore()
    store.write(record("k1", 1))
    store.write(record("k2", 2))
    store.write(record("k3", 3, suite="u"))
    store.path("k2").write_bytes(b"[]")
    store.path("k3").write_bytes(b"\x00")
    frame = runs_from_records("t")
    assert list(frame["tags.harness.job_key"]) == ["k1"] and frame.attrs["unreadable_records"] == 2
    err = capsys.readouterr().err.splitlines()
    assert sum(str(store.path(k)) in line for line in err for k in ("k2", "k3")) == 2
    assert err[-1].startswith("warning: leaderboard of suite 't': 2 run record(s) could not be read")
    assert str(store.corrupt_root) in err[-1]
    assert list(build_leaderboard("t", frame).long["mean"]) == [10.0]  # the good record is on the board
    assert sorted(p.name.split(".")[0] for p in corrupt_files(store)) == ["k2", "k3"]
