"""Leaderboards compiled from MLflow runs (never from memory): pandas → Markdown, CSV and a printed table.

Rows are backbones (variant and weights kind included, random-init rows marked); columns are
task/dataset/protocol setting/metric; repeats over seeds become mean ± std (population std, as CoOp's
`parse_test_res.py` reports) with their count.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from harness.tracking import Tracker

LONG_COLUMNS = ["backbone", "task", "task_version", "dataset", "setting", "metric", "mean", "std", "n"]


def backbone_label(backbone: str, variant: str, weights_kind: str) -> str:
    label = f"{backbone}:{variant}"
    return label + " (random init)" if weights_kind == "random" else label


def runs_to_long(runs: pd.DataFrame) -> pd.DataFrame:
    """MLflow's runs frame → one row per (backbone, task, dataset, setting, metric) with mean/std/n."""
    if runs.empty:
        return pd.DataFrame(columns=LONG_COLUMNS)
    runs = runs.drop_duplicates(subset="tags.harness.job_key", keep="first")  # newest first from MLflow
    rows = []
    for _, run in runs.iterrows():
        primary = run["tags.harness.primary_metric"]
        reported = run.get("tags.harness.report_metrics")
        metrics = reported.split(",") if isinstance(reported, str) and reported else [primary]
        for metric in metrics:
            value = run.get(f"metrics.{metric}")
            if value is None or pd.isna(value):
                continue
            rows.append({
                "backbone": backbone_label(run["tags.harness.backbone"], run["tags.harness.variant"],
                                           run.get("tags.harness.weights_kind", "")),
                "task": run["tags.harness.task"],
                "task_version": str(run["tags.harness.task_version"]),
                "dataset": run["tags.harness.dataset"],
                "setting": run["tags.harness.column"],
                "metric": metric,
                "value": float(value),
            })
    df = pd.DataFrame(rows)
    keys = ["backbone", "task", "task_version", "dataset", "setting", "metric"]
    grouped = df.groupby(keys, sort=True)["value"]
    out = grouped.agg(mean="mean", std=lambda v: float(v.std(ddof=0)), n="count").reset_index()
    return add_dataset_averages(out[LONG_COLUMNS])


def add_dataset_averages(long: pd.DataFrame) -> pd.DataFrame:
    """Per task and setting, the arithmetic mean of the per-dataset means (CoOp's "Average" column).

    Only where a backbone has every dataset that the table holds for that task and setting; an average
    over a different set of datasets would not be comparable, so it is left out.
    """
    if long.empty:
        return long
    keys = ["task", "task_version", "setting", "metric"]
    rows = []
    for key, group in long.groupby(keys, sort=True):
        datasets = set(group["dataset"])
        if len(datasets) < 2:
            continue
        for backbone, sub in group.groupby("backbone"):
            if set(sub["dataset"]) == datasets:
                rows.append({**dict(zip(keys, key, strict=True)), "backbone": backbone,
                             "dataset": f"average of {len(datasets)}", "mean": sub["mean"].mean(),
                             "std": float("nan"), "n": int(sub["n"].min())})
    return pd.concat([long, pd.DataFrame(rows, columns=LONG_COLUMNS)], ignore_index=True) if rows else long


def column_name(row: pd.Series) -> str:
    setting = f" [{row['setting']}]" if row["setting"] else ""
    return f"{row['task']}.v{row['task_version']}/{row['dataset']}{setting} {row['metric']}"


def to_wide(long: pd.DataFrame) -> pd.DataFrame:
    """Backbones x columns of 'mean ± std (n)' strings, for reading."""
    if long.empty:
        return pd.DataFrame()
    cells = long.assign(
        column=long.apply(column_name, axis=1),
        cell=long.apply(lambda r: f"{r['mean']:.2f} ± {r['std']:.2f} (n={r['n']})"
                        if r["n"] > 1 and not pd.isna(r["std"]) else f"{r['mean']:.2f}", axis=1),
    )
    wide = cells.pivot(index="backbone", columns="column", values="cell").fillna("—")
    order = cells.assign(nat=cells["column"].map(natural_key)).sort_values("nat")["column"].unique()
    wide = wide[list(order)]
    wide.columns.name = None
    return wide


def natural_key(text: str) -> tuple:
    """`shots=4` sorts before `shots=16`: digit runs compare as numbers."""
    return tuple(int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", text))


def compile_leaderboard(suite: str, out_dir: Path | None = Path("leaderboards")) -> pd.DataFrame:
    """Read the suite's runs back from MLflow and write `<out_dir>/<suite>.md` and `.csv`."""
    long = runs_to_long(Tracker(suite).job_runs())
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        long.to_csv(out_dir / f"{suite}.csv", index=False, float_format="%.4f")
        (out_dir / f"{suite}.md").write_text(render_markdown(suite, long))
    return long


def render_markdown(suite: str, long: pd.DataFrame) -> str:
    wide = to_wide(long)
    body = wide.reset_index().to_markdown(index=False) if not wide.empty else "_no finished runs_"
    return (f"# Leaderboard: suite `{suite}`\n\n"
            "Cells: mean ± population std over seeds (n = number of seeds). Compiled from MLflow runs.\n\n"
            f"{body}\n")
