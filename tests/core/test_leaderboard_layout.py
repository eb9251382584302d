"""The leaderboard's layout (issue 19): a summary first (task averages of the primary metric, mean rank, cost),
then one table per task version with short column codes; the printed form within 160 characters a line; the
CSV in natural order with a blank std for one seed; charts whose tick labels do not overlap."""

from __future__ import annotations

import csv
import io
import itertools
import re

import pandas as pd
import pytest
from leaderboard_factory import realistic_runs, write_profiles

import harness.report.leaderboard_html as page
from harness.report.leaderboard import (
    PRINT_WIDTH,
    build_leaderboard,
    leaderboard_markdown,
    printed_leaderboard,
    read_profiles,
    summary,
    summary_frame,
    task_scores,
)
from harness.report.publish import write_leaderboard


def run(i: int, backbone: str, task: str, version: str, dataset: str, setting: str, seed: int, metric: str,
        value: float) -> dict:
    return {"tags.harness.job_key": f"k{i}", "tags.harness.primary_metric": metric, f"metrics.{metric}": value,
            "tags.harness.backbone": backbone, "tags.harness.variant": "v", "tags.harness.weights_kind": "hub",
            "tags.harness.task": task, "tags.harness.task_version": version, "tags.harness.dataset": dataset,
            "tags.harness.column": setting, "params.protocol.seed": str(seed)}


def hand_runs() -> pd.DataFrame:
    """3 backbones x 2 tasks (t1 v1 higher-is-better top1, t2 v1 lower-is-better error), one more version of t1
    that only A ran, and D with one of t1 v1's two cells."""
    rows = [
        # t1 v1, dataset d, settings s=1 / s=2: A 10, 30 (avg 20); B 20, 20 (avg 20: tied with A); C 5, 9 (avg 7)
        ("A", "t1", "1", "d", "s=1", 1, "top1", 10.0), ("A", "t1", "1", "d", "s=2", 1, "top1", 30.0),
        ("B", "t1", "1", "d", "s=1", 1, "top1", 20.0), ("B", "t1", "1", "d", "s=2", 1, "top1", 20.0),
        ("C", "t1", "1", "d", "s=1", 1, "top1", 5.0), ("C", "t1", "1", "d", "s=2", 1, "top1", 9.0),
        ("D", "t1", "1", "d", "s=1", 1, "top1", 50.0),  # one of two cells: averaged, not ranked
        ("A", "t1", "2", "d", "s=1", 1, "top1", 99.0),  # another task version: its own column
        # t2 v1 (error: lower is better), datasets x, y: A 4, 6 (5); B 2, 2 (2); C x seeds 1, 3 (cell 2), y 1 (1.5)
        ("A", "t2", "1", "x", "", 1, "error", 4.0), ("A", "t2", "1", "y", "", 1, "error", 6.0),
        ("B", "t2", "1", "x", "", 1, "error", 2.0), ("B", "t2", "1", "y", "", 1, "error", 2.0),
        ("C", "t2", "1", "x", "", 1, "error", 1.0), ("C", "t2", "1", "x", "", 2, "error", 3.0),
        ("C", "t2", "1", "y", "", 1, "error", 1.0),
    ]
    return pd.DataFrame([run(i, *r) for i, r in enumerate(rows)])


def test_summary_averages_and_mean_ranks_by_hand():
    lb = build_leaderboard("s", hand_runs())
    scores = task_scores(lb.long, lb.values).set_index(["backbone", "task", "task_version"])
    # t1 v1: A (10+30)/2 = 20 and B 20 tie for first: ranks 1.5, 1.5; C 7 third; D over 1 of 2 cells, unranked
    assert scores.loc[("A:v", "t1", "1"), ["score", "rank"]].tolist() == [20.0, 1.5]
    assert scores.loc[("B:v", "t1", "1"), ["score", "rank"]].tolist() == [20.0, 1.5]
    assert scores.loc[("C:v", "t1", "1"), ["score", "rank"]].tolist() == [7.0, 3.0]
    d = scores.loc[("D:v", "t1", "1")]
    assert (d["score"], d["cells"], d["of_cells"], bool(d["complete"])) == (50.0, 1, 2, False) and pd.isna(d["rank"])
    assert scores.loc[("A:v", "t1", "2"), ["score", "rank"]].tolist() == [99.0, 1.0]  # v2 never joins v1
    # t2 v1, lower is better: C (2+1)/2 = 1.5 first, B 2 second, A 5 third
    assert [scores.loc[(b, "t2", "1"), "score"] for b in ("A:v", "B:v", "C:v")] == [5.0, 2.0, 1.5]
    assert [scores.loc[(b, "t2", "1"), "rank"] for b in ("A:v", "B:v", "C:v")] == [3.0, 2.0, 1.0]
    # mean ranks: A (1.5 + 1 + 3) / 3 = 1.8333; B (1.5 + 2) / 2 = 1.75; C (3 + 1) / 2 = 2; D none
    s = summary(lb)
    assert s.mean_rank["A:v"] == (pytest.approx(5.5 / 3), 3)
    assert s.mean_rank["B:v"] == (1.75, 2) and s.mean_rank["C:v"] == (2.0, 2) and "D:v" not in s.mean_rank
    assert s.rows == ["B:v", "A:v", "C:v", "D:v"]
    frame = summary_frame(s).set_index("backbone")
    assert list(frame.columns) == ["t1.v1", "t1.v2", "t2.v1", "mean rank"]
    assert frame.loc["A:v", "t1.v1"] == "**20.00**" and frame.loc["B:v", "t1.v1"] == "**20.00**"  # the tie: both
    assert frame.loc["C:v", "t2.v1"] == "**1.50**" and frame.loc["A:v", "t2.v1"] == "5.00"
    assert frame.loc["D:v", "t1.v1"] == "50.00*" and frame.loc["D:v", "mean rank"] == "—"
    assert frame["mean rank"].tolist() == ["1.75 (2/3)", "1.83", "2.00 (2/3)", "—"]
    md = " ".join(leaderboard_markdown(lb).split())
    assert "t1.v1 = top1, t1.v2 = top1, t2.v1 = error" in md and "share the mean of the ranks" in md


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def header_cells(markdown: str) -> list[str]:
    heads = [line for line in markdown.splitlines() if line.startswith("| backbone")]
    return [cell.strip() for line in heads for cell in line.strip("|").split("|")]


@pytest.mark.parametrize("grid", [False, True], ids=["4-backbones", "with-option-grid"])
def test_printed_leaderboard_fits_160_columns_summary_first(tmp_path, grid):
    lb = build_leaderboard("mini", realistic_runs(grid=grid))
    profiles = read_profiles(write_profiles(tmp_path).parent)
    text = printed_leaderboard(lb, profiles)
    assert widest(text) <= PRINT_WIDTH, max(text.splitlines(), key=len)
    assert text.index("## Summary") < text.index("## fsc v2") < text.index("## ovss v2") < text.index("## sbir v2")
    summary_head = next(line for line in text.splitlines() if line.startswith("| backbone"))
    assert [c.strip() for c in summary_head.strip("|").split("|")][:5] == ["backbone", "fsc.v2", "ovss.v2",
                                                                           "sbir.v2", "mean rank"]
    assert "ms/img" in text and "peak MiB" in text and "params M" in text
    assert max(map(len, header_cells(text))) <= 12  # short codes, not `fsc.v2/mini_coop [head=...] top1`
    assert "`lp-1` = head=linear-probe, shots=1" in text and "`tc-16` = head=text-classifier, shots=16" in text
    assert "(n=3)" not in text and "over 3 seeds" in text  # n said once, in the caption
    assert "| pixel_acc" not in text and "compiled:" not in text  # other metrics and provenance: files only
    rows = [line for line in text.splitlines() if line.startswith("| resnet:tiny (random init)")]
    assert rows and "**" in rows[0]
    # resnet's cost: the cpu row (the device most backbones were profiled on) at its largest batch, 8: 0.35 ms,
    # 230.2 MiB, 4.9 M parameters (not batch 1's 1.2 ms, nor the one cuda row's 0.05 ms)
    assert re.search(r"\|\s+0\.350\s+\|\s+230\s+\|\s+4\.90\s+\|$", rows[0]), rows[0]
    if not grid:  # the realistic board: one table each, no split
        assert text.count("| backbone") == 4


def test_markdown_file_has_every_metric_and_provenance_last():
    lb = build_leaderboard("mini", realistic_runs())
    md = leaderboard_markdown(lb)
    assert md.index("## Summary") < md.index("## fsc v2") < md.index("## Provenance")
    assert "- compiled:" in md.split("## Provenance")[1]
    heads = header_cells(md)
    assert {"miou", "miou_gt_classes", "pixel_acc", "map_all", "p_200", "lp-1", "tc-16"} <= set(heads)
    assert max(map(len, heads)) <= 20


def test_csv_natural_order_and_blank_std_for_one_seed(tmp_path):
    runs = pd.DataFrame([run(i, "r", "fsc", "1", "a", f"shots={k}", seed, "top1", float(k + seed))
                         for i, (k, seed) in enumerate(itertools.product((16, 1, 4), (1, 2)))]
                        + [run(9, "r", "fsc", "1", "a", "shots=2", 1, "top1", 7.0)])
    path = write_leaderboard(build_leaderboard("s", runs), tmp_path, html=False)[1]
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["setting"] for r in rows] == ["shots=1", "shots=2", "shots=4", "shots=16"]
    one = rows[1]
    assert (one["n"], one["std"], one["mean"]) == ("1", "", "7.0000")  # one seed: no spread to report
    assert rows[0]["std"] == "0.5000"  # seeds 1, 2 → 2.0, 3.0: population std 0.5
    md = leaderboard_markdown(build_leaderboard("s", runs))
    assert "7.00 (n=1)" in md and "7.00 ±" not in md  # most cells have 2 seeds: only this one says its n


def test_setting_codes_fall_back_to_full_values_when_abbreviations_collide():
    runs = pd.DataFrame([run(i, "r", "fsc", "1", "a", f"head={h},shots=1", 1, "top1", 1.0)
                         for i, h in enumerate(("linear-probe", "logistic-probe"))])
    md = leaderboard_markdown(build_leaderboard("s", runs))
    assert "linear-probe" in header_cells(md) and "logistic-probe" in header_cells(md)


def test_chart_tick_labels_do_not_overlap(monkeypatch, tmp_path):
    """Every chart drawn for a realistic board (and one with an option grid): no two tick labels on an axis
    overlap, and the cost chart's log axis has a few round ticks, not one per minor tick."""
    figures = []
    real_png = page._png

    def keep(fig):
        fig.canvas.draw()
        figures.append([(ax.get_title(), [t.get_window_extent() for t in ax.get_xticklabels() if t.get_text()],
                         [t.get_text() for t in ax.get_xticklabels() if t.get_text()]) for ax in fig.axes])
        return real_png(fig)

    monkeypatch.setattr(page, "_png", keep)
    profiles = read_profiles(write_profiles(tmp_path).parent)
    for grid in (False, True):
        page.render_html(build_leaderboard("mini", realistic_runs(grid=grid)), profiles)
    assert len(figures) == 2 * 4 + 1  # per board: 3 bar charts and the cost chart; the grid adds a heatmap
    for axes in figures:
        for title, boxes, texts in axes:
            for a, b in itertools.combinations(boxes, 2):
                assert not a.overlaps(b), (title, texts)
    cost_axes = figures[3]
    for _, _, texts in cost_axes[:3]:
        assert 3 <= len(texts) <= 6 and all(re.fullmatch(r"[\d.]+", t) for t in texts), texts


def test_log_ticks_are_few_and_round():
    assert page.log_ticks(0.075, 67.0) == [0.1, 1.0, 10.0]
    assert page.log_ticks(0.1, 0.5) == [0.1, 0.2, 0.5]
    ticks = page.log_ticks(0.001, 1e6)
    assert 3 <= len(ticks) <= 6 and ticks[0] == 0.001
