import re

import pandas as pd
import pytest

from harness.report.leaderboard import build_leaderboard, leaderboard_markdown, to_wide
from harness.report.leaderboard_html import pareto_front, render_html
from harness.report.publish import write_leaderboard


def fake_runs(options=False):
    """MLflow-shaped job runs: two backbones × 3 seeds on fsc (two settings), one on sbir; with `options`,
    a Vermouth t × stages grid."""
    out = []

    def run(backbone, task, dataset, setting, seed, value, kind="random", extra=None):
        out.append({"tags.harness.job_key": f"k{len(out)}", "tags.harness.primary_metric": "top1",
                    "metrics.top1": value, "tags.harness.backbone": backbone, "tags.harness.variant": "tiny",
                    "tags.harness.weights_kind": kind, "tags.harness.weights_fingerprint": f"fp-{backbone}-0123456789",
                    "tags.harness.task": task, "tags.harness.task_version": "1", "tags.harness.dataset": dataset,
                    "tags.harness.column": setting, "tags.harness.git_commit": "abc123",
                    "params.protocol.seed": str(seed), "params.protocol.epochs": "20", **(extra or {})})

    for seed, (r, c) in enumerate([(50.0, 40.0), (52.0, 41.0), (51.0, 43.0)], start=1):
        run("resnet", "fsc", "mini", "shots=1", seed, r)
        run("clip", "fsc", "mini", "shots=1", seed, c, kind="hub")
        run("resnet", "fsc", "mini", "shots=4", seed, 60.0 + seed)
        run("clip", "fsc", "mini", "shots=4", seed, 60.0 + seed + (0.5 if seed != 2 else -0.5), kind="hub")
    run("resnet", "sbir", "sk", "", 1, 30.0)
    run("clip", "sbir", "sk", "", 1, 35.0, kind="hub")
    if options:
        for t in (0, 50, 400):
            for stages in ("1", "1,2"):
                run("vermouth", "fsc", "mini", "shots=1", 1, 30 + t / 20 + len(stages), extra={
                    "params.backbone.options.t": str(t), "params.backbone.options.stages": stages})
    return pd.DataFrame(out)


def test_marks_best_and_ties_in_markdown():
    lb = build_leaderboard("s", fake_runs())
    marks = lb.marks.set_index(["backbone", "setting"])
    assert bool(marks.loc[("resnet:tiny (random init)", "shots=1"), "best"])
    assert marks.loc[("clip:tiny", "shots=1"), "tied"] is False  # ~10 points over a spread of ~1: significant
    assert marks.loc[("resnet:tiny (random init)", "shots=4"), "tied"] is True  # ±0.5 noise: not significant
    assert marks.loc[("resnet:tiny (random init)", ""), "tied"] is None  # one seed: untestable
    wide = to_wide(lb.long, lb.marks)
    assert wide.loc["resnet:tiny (random init)", "fsc.v1/mini [shots=1] top1"] == "**51.00 ± 0.82 (n=3)**"
    assert wide.loc["resnet:tiny (random init)", "fsc.v1/mini [shots=4] top1"].endswith("†")
    md = " ".join(leaderboard_markdown(lb).split())  # the notes wrap at PROSE_WIDTH
    assert "†: not significantly different" in md and "`abc123` (" in md and "fp-resnet-01" in md
    assert "never averaged together" in md and "task fsc v1" in md


def test_csv_columns_unchanged(tmp_path):
    """The original columns stay first and in order; the regression gate's item columns are appended."""
    lb = build_leaderboard("s", fake_runs())
    paths = write_leaderboard(lb, tmp_path, html=False)
    assert list(pd.read_csv(paths[1]).columns) == ["backbone", "task", "task_version", "dataset", "setting",
                                                   "metric", "mean", "std", "n", "n_items", "se_items",
                                                   "seed_values"]


def test_html_is_self_contained_with_table_and_charts(tmp_path):
    (tmp_path / "profiles.csv").write_text(
        "backbone,variant,device,batch_size,latency_per_image_ms\nresnet,tiny,cpu,8,1.5\nclip,tiny,cpu,8,4.0\n"
        "vermouth,tiny,cpu,8,30.0\n")
    lb = build_leaderboard("s", fake_runs(options=True))
    paths = write_leaderboard(lb, tmp_path)
    html = paths[2].read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table class=lb" in html
    assert html.count("<tr>") >= 2 + 6  # 2 backbones + 6 vermouth option rows
    assert "vermouth:tiny [t=50, stages=1,2]" in html
    imgs = re.findall(r"<img [^>]*src='([^']*)'", html)
    assert len(imgs) >= 2 + 1 + 1  # bars (fsc, sbir), cost, heatmap
    assert all(src.startswith("data:image/png;base64,") for src in imgs)
    assert "Pareto front" in html and "timestep" in html and "class=best" in html
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", html)  # nothing loads from the network
    assert "http://" not in html and "https://" not in html


def test_html_without_profiles_says_so():
    html = render_html(build_leaderboard("s", fake_runs()), None)
    assert "No cost profiles" in html and "heatmap" not in html.lower().replace("timestep by stage heatmap", "")


def test_varying_options_only_enter_the_label():
    runs = fake_runs()
    runs["params.backbone.options.t"] = "50"  # the same everywhere: labels stay as they were
    assert "resnet:tiny (random init)" in set(build_leaderboard("s", runs).long["backbone"])


def test_pareto_front():
    pts = [(1.0, 50.0), (2.0, 60.0), (3.0, 55.0), (0.5, 40.0), (2.0, 59.0)]
    assert pareto_front(pts) == [3, 0, 1]


@pytest.mark.parametrize("empty", [pd.DataFrame()])
def test_empty_runs(empty, tmp_path):
    lb = build_leaderboard("s", empty)
    paths = write_leaderboard(lb, tmp_path)
    assert "No finished runs" in paths[2].read_text() and "_no finished runs_" in paths[0].read_text()


def test_html_results_first_provenance_last_and_folded(tmp_path):
    (tmp_path / "profiles.csv").write_text(
        "backbone,variant,device,batch_size,latency_per_image_ms,params,peak_memory_mb\n"
        "resnet,tiny,cpu,8,1.5,4900000,230\nclip,tiny,cpu,8,4.0,3400000,170\n")
    html = write_leaderboard(build_leaderboard("s", fake_runs()), tmp_path)[2].read_text()
    at = [html.index(marker) for marker in ("id=summary", "id=task-fsc-v1", "id=task-sbir-v1", "<img",
                                            "<details class=prov")]
    assert at == sorted(at)
    assert "<details class=prov id=provenance><summary>Provenance</summary>" in html
    assert "<details class=prov id=provenance open" not in html  # folded
    summary_table = html[html.index("id=summary"):html.index("</table>", html.index("id=summary"))]
    assert "mean rank" in summary_table and "ms/img" in summary_table and "params M" in summary_table
    # resnet: fsc (51 + 62) / 2 = 56.5, sbir 30 → ranks 1, 2; clip: (41.33 + 62) / 2 = 51.67, sbir 35 → 2, 1
    assert summary_table.index("clip:tiny") < summary_table.index("resnet:tiny")  # both mean rank 1.5: by name
    assert ">56.50<" in summary_table and ">1.50<" in summary_table
