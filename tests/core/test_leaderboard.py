import math

import pandas as pd
import pytest

from harness.report.leaderboard import render_markdown, runs_to_long, to_wide


def fake_runs(rows):
    """The columns MLflow's search_runs gives for job runs (newest first)."""
    out = []
    for i, (backbone, variant, kind, dataset, setting, seed, value) in enumerate(rows):
        out.append({
            "tags.harness.job_key": f"k{i}", "tags.harness.primary_metric": "top1",
            "metrics.top1": value, "tags.harness.backbone": backbone, "tags.harness.variant": variant,
            "tags.harness.weights_kind": kind, "tags.harness.task": "fsc", "tags.harness.task_version": "1",
            "tags.harness.dataset": dataset, "tags.harness.column": setting, "seed": seed,
        })
    return pd.DataFrame(out)


def test_mean_std_over_seeds_and_dataset_average():
    runs = fake_runs([
        ("resnet", "tiny", "random", "a", "shots=1", 1, 10.0),
        ("resnet", "tiny", "random", "a", "shots=1", 2, 20.0),
        ("resnet", "tiny", "random", "b", "shots=1", 1, 40.0),
        ("clip", "vit-b-16", "hub", "a", "shots=1", 1, 50.0),  # clip lacks dataset b: no average
    ])
    long = runs_to_long(runs)
    a = long[(long.backbone == "resnet:tiny (random init)") & (long.dataset == "a")].iloc[0]
    assert (a["mean"], a["std"], a["n"]) == (15.0, 5.0, 2)  # population std, as CoOp reports
    avg = long[long.dataset == "average of 2"]
    assert list(avg.backbone) == ["resnet:tiny (random init)"]
    assert avg.iloc[0]["mean"] == pytest.approx((15.0 + 40.0) / 2) and math.isnan(avg.iloc[0]["std"])
    wide = to_wide(long)
    assert wide.loc["resnet:tiny (random init)", "fsc.v1/a [shots=1] top1"] == "15.00 ± 5.00 (n=2)"
    assert wide.loc["clip:vit-b-16", "fsc.v1/b [shots=1] top1"] == "—"
    assert "| clip:vit-b-16" in render_markdown("s", long)


def test_duplicate_job_keys_keep_the_newest():
    runs = fake_runs([("r", "t", "random", "a", "", 1, 1.0), ("r", "t", "random", "a", "", 1, 9.0)])
    runs["tags.harness.job_key"] = "same"
    long = runs_to_long(runs)
    assert long.iloc[0]["mean"] == 1.0 and long.iloc[0]["n"] == 1


def test_columns_sort_naturally():
    runs = fake_runs([("r", "t", "x", "a", f"shots={k}", 1, float(k)) for k in (16, 1, 4)])
    assert list(to_wide(runs_to_long(runs)).columns) == [f"fsc.v1/a [shots={k}] top1" for k in (1, 4, 16)]
