"""The leaderboard CSV's item columns (n_items, se_items, seed_values), from runs and from run records."""

import math

import pandas as pd
import pytest

from harness.report.compare import compare, read_leaderboard
from harness.report.leaderboard import build_leaderboard
from harness.report.publish import write_leaderboard
from harness.track.records import RecordStore
from harness.track.tracking import item_se_metrics, runs_from_records


def run(key, dataset, seed, metric, value, extra=None):
    return {"tags.harness.job_key": key, "tags.harness.primary_metric": metric, f"metrics.{metric}": value,
            "tags.harness.backbone": "resnet", "tags.harness.variant": "tiny", "tags.harness.weights_kind": "random",
            "tags.harness.task": "t", "tags.harness.task_version": "1", "tags.harness.dataset": dataset,
            "tags.harness.column": "", "params.protocol.seed": str(seed), **(extra or {})}


def binomial(percent, n):
    return 100 * math.sqrt(percent / 100 * (1 - percent / 100) / n)


def test_csv_item_columns_from_a_small_runs_frame(tmp_path):
    runs = pd.DataFrame([
        # accuracy on 100 shared test items, seeds 10, 2, 1 (natural order 1, 2, 10): mean p = 0.5
        *(run(f"a{s}", "a", s, "top1", v, {"metrics.top1.se_binomial": binomial(v, 100), "metrics.top1.n_items": 100})
          for s, v in ((10, 60.0), (2, 50.0), (1, 40.0))),
        # an SE that is not binomial (e.g. over queries): root-mean-square over seeds, sqrt((9 + 16) / 2)
        run("b1", "b", 1, "top1", 30.0, {"metrics.top1.se_items": 3.0, "metrics.top1.n_items": 50}),
        run("b2", "b", 2, "top1", 32.0, {"metrics.top1.se_items": 4.0, "metrics.top1.n_items": 50}),
        run("c1", "c", 1, "top1", 70.0),  # an older run without any: unknown
    ])
    path = write_leaderboard(build_leaderboard("s", runs), tmp_path, html=False)[1]
    csv = pd.read_csv(path, dtype={"seed_values": str}).set_index("dataset")
    assert list(csv.columns)[-3:] == ["n_items", "se_items", "seed_values"]
    # binomial at the mean p (5.0), not the RMS of the per-seed SEs (4.93): seeds share the test items
    assert (csv.loc["a", "n_items"], csv.loc["a", "se_items"]) == (100, 5.0)
    assert csv.loc["a", "seed_values"] == "1:40.0000;2:50.0000;10:60.0000"
    assert csv.loc["b", "n_items"] == 50 and csv.loc["b", "se_items"] == pytest.approx(math.sqrt(12.5), abs=1e-4)
    assert csv.loc["b", "seed_values"] == "1:30.0000;2:32.0000"
    assert pd.isna(csv.loc["c", "n_items"]) and pd.isna(csv.loc["c", "se_items"])
    assert csv.loc["c", "seed_values"] == "1:70.0000"
    avg = csv.loc["average of 3"]
    assert avg[["n_items", "se_items", "seed_values"]].isna().all()  # dataset averages: blank
    assert "100,5.0000,1:40.0000;2:50.0000;10:60.0000" in path.read_text()  # integer count, 4 decimals
    board = read_leaderboard(str(path))
    assert compare(board, board).ok


def record(key, seed, top1, item_se=None):
    rec = {"schema_version": 1, "job_key": key, "suite": "t",
           "backbone": {"name": "resnet", "variant": "tiny", "options": {}},
           "backbone_fingerprint": {"weights_kind": "random"}, "weights_fingerprint": "w", "task": "fsc",
           "task_version": "1", "primary_metric": "top1", "report_metrics": ["top1"], "dataset": "mini_coop",
           "data_fingerprint": "d", "protocol": {"seed": seed, "shots": 1}, "column": "shots=1",
           "metrics": {"top1": top1, "val_top1": 1.0}, "details": {}, "timings": {}, "counters": {}, "memory": {},
           "environment": {"git_commit": "c", "device": "cpu", "packages": {}},
           "finished_at": f"2026-01-0{seed}T00:00:00+00:00"}
    if item_se is not None:
        rec["item_se"] = item_se
    return rec


def test_record_item_se_reaches_the_runs_frame_but_not_the_metric_rows():
    assert item_se_metrics(record("x", 1, 25.0)) == {}  # a record from before item SEs
    se = {"top1": {"se": binomial(25.0, 120), "n": 120, "binomial": True}}
    assert item_se_metrics(record("x", 1, 25.0, se)) == {"top1.se_binomial": pytest.approx(binomial(25.0, 120)),
                                                         "top1.n_items": 120.0}
    store = RecordStore()
    store.write(record("k1", 1, 25.0, se))
    store.write(record("k2", 2, 35.0, {"top1": {"se": binomial(35.0, 120), "n": 120, "binomial": True}}))
    long = build_leaderboard("t", runs_from_records("t")).long
    assert list(long["metric"]) == ["top1"]  # the SE metrics never become rows
    row = long.iloc[0]
    assert (row["n_items"], row["seed_values"]) == (120, "1:25.0000;2:35.0000")
    assert row["se_items"] == pytest.approx(binomial(30.0, 120))
