"""Leaderboards compiled from MLflow runs (never from memory): pandas → Markdown, CSV, HTML and a printed table.

Rows are backbones (variant and weights kind included, random-init rows marked; backbone options such as
Vermouth's `t`/`stages` included where they vary); columns are task.version/dataset/protocol setting/metric,
so results of different task versions never share a column; repeats over seeds become mean ± std
(population std, as CoOp's `parse_test_res.py` reports; blank for one seed) with their count. Per column, the
best backbone is marked and every other one is tested against it over the seeds both ran (`harness.report.stats`):
† = the gap is not larger than the seed spread.

Layout (to read at a glance): a summary first — a row per backbone, a column per task version (its primary
metric averaged over datasets and settings), the mean rank, and cost from `profiles.csv` — then one table per
task version with short column codes explained under it; the provenance last. The printed form (after a run)
keeps the primary metrics and no line wider than PRINT_WIDTH; the files hold every metric.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.api import ItemSE
from harness.report.stats import ALPHA, compare_with_best
from harness.track.tracking import N_ITEMS, SE_BINOMIAL, SE_ITEMS

LONG_COLUMNS = ["backbone", "task", "task_version", "dataset", "setting", "metric", "mean", "std", "n"]
# Appended for the regression gate (`harness.report.compare`): test items per seed, the item SE of the row's mean,
# and the per-seed values (`1:48.6111;2:47.2222`) for pairing seeds. Blank where unknown / for averages.
ITEM_COLUMNS = ["n_items", "se_items", "seed_values"]
CSV_COLUMNS = LONG_COLUMNS + ITEM_COLUMNS
KEYS = ["backbone", "task", "task_version", "dataset", "setting", "metric"]
OPTION_PREFIX = "params.backbone.options."
LOWER_IS_BETTER = re.compile(r"(loss|error|err$|latency|time|_ms$|_s$)")
TIED_MARK = "†"


def backbone_label(backbone: str, variant: str, weights_kind: str, options: str = "") -> str:
    label = f"{backbone}:{variant}" + (f" [{options}]" if options else "")
    return label + " (random init)" if weights_kind == "random" else label


def higher_is_better(metric: str) -> bool:
    return not LOWER_IS_BETTER.search(str(metric))


def _get(run: pd.Series, key: str, default=""):
    value = run.get(key, default)
    return default if value is None or (isinstance(value, float) and pd.isna(value)) else value


def _varying_options(runs: pd.DataFrame) -> dict[tuple[str, str, str], list[str]]:
    """Per (backbone, variant, task): the option columns whose values differ between its runs. Options that
    differ only between tasks (a backbone's per-task preset) keep one row; the provenance lists them."""
    option_cols = [c for c in runs.columns if c.startswith(OPTION_PREFIX)]
    out: dict[tuple[str, str, str], list[str]] = {}
    if not option_cols:
        return out
    for key, group in runs.groupby(["tags.harness.backbone", "tags.harness.variant", "tags.harness.task"]):
        out[key] = [c for c in option_cols if group[c].astype(str).nunique(dropna=False) > 1]
    return out


def _option(value) -> str | None:
    """An option as MLflow stored it (`str()` of the value): lists read `L0+L1` (as `harness sweep` takes them)."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value)
    if text.startswith("[") and text.endswith("]"):
        text = "+".join(t.strip(" '\"") for t in text[1:-1].split(",") if t.strip())
    return text


def _item_se(run: pd.Series, metric: str) -> tuple[float, float, bool]:
    """(item SE, test items, binomial?) of one metric of a run, from `harness.track.tracking`'s metric names;
    NaN where the run does not carry them (older runs, tasks without an item SE)."""
    def number(name: str) -> float:
        value = run.get(f"metrics.{metric}.{name}")
        return float("nan") if value is None or pd.isna(value) else float(value)

    binomial = not math.isnan(number(SE_BINOMIAL))
    return number(SE_BINOMIAL if binomial else SE_ITEMS), number(N_ITEMS), binomial


def runs_to_values(runs: pd.DataFrame) -> pd.DataFrame:
    """MLflow's runs frame → one row per run and reported metric: the key columns, seed, value and provenance.

    This is the per-seed side frame the significance tests need; `runs_to_long` aggregates it.
    """
    columns = [*KEYS, "seed", "value", "primary", "se_item", "n_items", "binomial", "backbone_name", "variant",
               "weights_kind", "weights_fingerprint", "git_commit", "harness_version"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    runs = runs.drop_duplicates(subset="tags.harness.job_key", keep="first")  # newest first from MLflow
    varying = _varying_options(runs)
    option_cols = [c for c in runs.columns if c.startswith(OPTION_PREFIX)]
    rows = []
    for _, run in runs.iterrows():
        name, variant = run["tags.harness.backbone"], run["tags.harness.variant"]
        options = ", ".join(f"{c.removeprefix(OPTION_PREFIX)}={_option(run.get(c))}"
                            for c in varying.get((name, variant, run["tags.harness.task"]), []))
        label = backbone_label(name, variant, _get(run, "tags.harness.weights_kind"), options)
        primary = run["tags.harness.primary_metric"]
        reported = run.get("tags.harness.report_metrics")
        metrics = reported.split(",") if isinstance(reported, str) and reported else [primary]
        seed = run.get("params.protocol.seed")
        base = {
            "backbone": label, "task": run["tags.harness.task"], "task_version": str(run["tags.harness.task_version"]),
            "dataset": run["tags.harness.dataset"], "setting": _get(run, "tags.harness.column"),
            "seed": str(seed) if seed is not None and not pd.isna(seed) else None,
            "backbone_name": name, "variant": variant, "weights_kind": _get(run, "tags.harness.weights_kind"),
            "weights_fingerprint": _get(run, "tags.harness.weights_fingerprint"),
            "git_commit": _get(run, "tags.harness.git_commit"), "harness_version": _get(run, "tags.harness.version"),
            **{f"option.{c.removeprefix(OPTION_PREFIX)}": _option(run.get(c)) for c in option_cols},
        }
        for metric in metrics:
            value = run.get(f"metrics.{metric}")
            if value is None or pd.isna(value):
                continue
            se, n_items, binomial = _item_se(run, metric)
            rows.append({**base, "metric": metric, "value": float(value), "primary": metric == primary,
                         "se_item": se, "n_items": n_items, "binomial": binomial})
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(rows)


def item_summary(group: pd.DataFrame, mean: float) -> dict:
    """The CSV's item columns for one row's per-seed values (see ITEM_COLUMNS).

    Every seed is scored on the same test items, so seeds do not shrink the item SE: a proportion uses the
    binomial SE at the mean p with n_items, anything else the root-mean-square of the per-seed SEs.
    """
    n_items = group["n_items"].dropna().min() if "n_items" in group else float("nan")
    se = group["se_item"].dropna() if "se_item" in group else pd.Series(dtype=float)
    if "binomial" in group and group["binomial"].fillna(False).astype(bool).any() and not pd.isna(n_items):
        se_items = ItemSE.of_proportion(mean, int(n_items)).se
    else:
        se_items = float(math.sqrt((se**2).mean())) if len(se) else float("nan")
    seeded = group.dropna(subset=["seed"]).drop_duplicates("seed")
    pairs = sorted(zip(seeded["seed"].astype(str), seeded["value"], strict=True), key=lambda sv: natural_key(sv[0]))
    return {"n_items": None if pd.isna(n_items) else int(n_items), "se_items": se_items,
            "seed_values": ";".join(f"{seed}:{value:.4f}" for seed, value in pairs) or None}


def values_to_long(values: pd.DataFrame) -> pd.DataFrame:
    if values.empty:
        return pd.DataFrame(columns=CSV_COLUMNS)
    rows = []
    for key, group in values.groupby(KEYS, sort=True):
        mean = float(group["value"].mean())
        # one seed has no spread: the std is left blank (NaN), not written as 0.0000
        std = float(group["value"].std(ddof=0)) if len(group) > 1 else float("nan")
        rows.append({**dict(zip(KEYS, key, strict=True)), "mean": mean, "std": std,
                     "n": len(group), **item_summary(group, mean)})
    return sort_long(add_dataset_averages(_typed(pd.DataFrame(rows, columns=CSV_COLUMNS))))


def _row_order(backbone: str, task: str, version: str, dataset: str, setting: str, metric: str) -> tuple:
    """The CSV's row order: numbers in names compare as numbers (`shots=1, 4, 16`), dataset averages last."""
    return (natural_key(backbone), task, natural_key(str(version)), str(dataset).startswith("average of"),
            natural_key(str(dataset)), natural_key(str(setting)), str(metric))


def sort_long(long: pd.DataFrame) -> pd.DataFrame:
    """`long` in natural order (see `_row_order`), index reset (the significance marks index by row)."""
    if long.empty:
        return long
    keys = [_row_order(*r) for r in long[KEYS].itertuples(index=False, name=None)]
    order = sorted(range(len(long)), key=keys.__getitem__)
    return long.iloc[order].reset_index(drop=True)


def _typed(long: pd.DataFrame) -> pd.DataFrame:
    """n_items as a nullable integer, so the CSV reads `120` (blank where unknown), not `120.0000`."""
    return long.assign(n_items=pd.array(long["n_items"], dtype="Int64"), se_items=long["se_items"].astype(float))


def runs_to_long(runs: pd.DataFrame) -> pd.DataFrame:
    """MLflow's runs frame → one row per (backbone, task, dataset, setting, metric) with mean/std/n."""
    return values_to_long(runs_to_values(runs))


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
                             "std": float("nan"), "n": int(sub["n"].min())})  # item columns: blank
    if not rows:
        return long
    out = pd.concat([long, pd.DataFrame(rows, columns=list(long.columns))], ignore_index=True)
    return _typed(out) if "n_items" in out else out


def significance(values: pd.DataFrame, long: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Per leaderboard cell: `best` (the column's best mean, ties included) and `tied` (not significantly
    different from the best in a paired t-test over shared seeds; None where untestable), plus p and n.

    Dataset averages get `best` only (their per-seed pairing is not defined)."""
    out = long[KEYS + ["mean"]].copy()
    out["best"], out["tied"], out["p_value"], out["n_paired"] = False, None, float("nan"), 0
    out = out.astype({"tied": object})
    if long.empty:
        return out
    index = {tuple(r[k] for k in KEYS): i for i, r in out.iterrows()}
    col_keys = ["task", "task_version", "dataset", "setting", "metric"]
    for key, group in long.groupby(col_keys, sort=False):
        hib = higher_is_better(key[-1])
        top = group["mean"].max() if hib else group["mean"].min()
        for i in group.index[(group["mean"] - top).abs() <= 1e-9]:
            out.at[i, "best"] = True
        per_seed = values
        for k, v in zip(col_keys, key, strict=True):
            per_seed = per_seed[per_seed[k] == v]
        per_seed = per_seed.dropna(subset=["seed"])
        if per_seed.empty or group["backbone"].nunique() < 2:
            continue
        result = compare_with_best(per_seed[["backbone", "seed", "value"]], higher_is_better=hib, alpha=alpha)
        for _, r in result.iterrows():
            i = index.get((r["backbone"], *key))
            if i is None or out.at[i, "best"]:
                continue
            out.at[i, "tied"] = r["tied"]
            out.at[i, "p_value"] = r["p_value"]
            out.at[i, "n_paired"] = int(r["n"])
    return out


def column_name(row: pd.Series) -> str:
    setting = f" [{row['setting']}]" if row["setting"] else ""
    return f"{row['task']}.v{row['task_version']}/{row['dataset']}{setting} {row['metric']}"


def cell_text(mean: float, std: float, n: int) -> str:
    return f"{mean:.2f} ± {std:.2f} (n={n})" if n > 1 and not pd.isna(std) else f"{mean:.2f}"


def column_order(long: pd.DataFrame) -> list[str]:
    names = long.apply(column_name, axis=1)
    return sorted(names.unique(), key=natural_key)


def to_wide(long: pd.DataFrame, marks: pd.DataFrame | None = None) -> pd.DataFrame:
    """Backbones x columns of 'mean ± std (n)' strings, for reading; with `marks` (from `significance`),
    the best cell per column is in bold and cells not significantly different from it carry a †."""
    if long.empty:
        return pd.DataFrame()
    cells = long.assign(column=long.apply(column_name, axis=1),
                        cell=[cell_text(m, s, n) for m, s, n in zip(long["mean"], long["std"], long["n"], strict=True)])
    if marks is not None and not marks.empty:
        merged = cells.merge(marks[KEYS + ["best", "tied"]], on=KEYS, how="left")
        cells = cells.assign(cell=[f"**{c}**" if b is True else (f"{c} {TIED_MARK}" if t is True else c)
                                   for c, b, t in zip(merged["cell"], merged["best"], merged["tied"], strict=True)])
    wide = cells.pivot(index="backbone", columns="column", values="cell").fillna("—")
    wide = wide[column_order(long)]
    wide.columns.name = None
    return wide


def natural_key(text: str) -> tuple:
    """`shots=4` sorts before `shots=16`: digit runs compare as numbers."""
    return tuple(int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", text))


def _short(fingerprint: str) -> str:
    """Hashes are shortened; readable ids (`random(seed=0)`, `org/name@rev`) are kept whole up to the rev."""
    if not fingerprint:
        return "—"
    if fingerprint.startswith("sha256:"):
        return fingerprint[:19]
    name, at, rev = fingerprint.partition("@")
    return name + (at + rev[:10] if at else "")


@dataclass
class Provenance:
    compiled: str
    harness_versions: list[str]
    git_commits: dict[str, int]  # commit → number of runs
    weights: pd.DataFrame  # backbone, weights_kind, weights_fingerprint
    tasks: pd.DataFrame  # task, task_version, datasets, settings, seeds
    protocol: dict[str, dict[str, str]] = field(default_factory=dict)  # task.vN → protocol params constant there
    # backbone, task, options: the backbone options each task's cells ran with (Vermouth's per-task presets)
    settings: pd.DataFrame = field(default_factory=pd.DataFrame)


def provenance(runs: pd.DataFrame, values: pd.DataFrame, now: dt.datetime | None = None) -> Provenance:
    from harness import __version__

    now = now or dt.datetime.now(dt.timezone.utc)
    compiled = now.strftime("%Y-%m-%d %H:%M UTC")
    if values.empty:
        return Provenance(compiled, [f"{__version__} (compiler)"], {}, pd.DataFrame(), pd.DataFrame())
    versions = sorted({v for v in values["harness_version"] if v}) or [f"{__version__} (compiler; runs untagged)"]
    commits = values.drop_duplicates(["backbone", "task", "task_version", "dataset", "setting", "seed"])
    git = commits["git_commit"].replace("", "unknown").value_counts().to_dict()
    weights = (values[["backbone", "weights_kind", "weights_fingerprint"]].drop_duplicates()
               .sort_values(["backbone", "weights_fingerprint"]).reset_index(drop=True))
    tasks = []
    for (task, version), g in values.groupby(["task", "task_version"], sort=True):
        seeds = sorted({s for s in g["seed"] if isinstance(s, str)}, key=natural_key)
        tasks.append({"task": task, "task_version": version, "datasets": ", ".join(sorted(g["dataset"].unique())),
                      "settings": "; ".join(sorted({s or "—" for s in g["setting"]}, key=natural_key)),
                      "seeds": ", ".join(seeds) or "—"})
    protocol: dict[str, dict[str, str]] = {}
    proto_cols = [c for c in runs.columns if c.startswith("params.protocol.") and c != "params.protocol.seed"]
    if proto_cols and not runs.empty:
        for (task, version), g in runs.groupby(["tags.harness.task", "tags.harness.task_version"], sort=True):
            constant = {}
            for c in proto_cols:
                vals = g[c].dropna().astype(str).unique()
                if len(vals) == 1:
                    constant[c.removeprefix("params.protocol.")] = vals[0]
            protocol[f"{task}.v{version}"] = constant
    return Provenance(compiled, versions, git, weights, pd.DataFrame(tasks), protocol, backbone_settings(values))


def backbone_settings(values: pd.DataFrame) -> pd.DataFrame:
    """One row per backbone row and task: the backbone options its cells ran with (`t=50, resolution=512`), all
    distinct sets joined by ` | `; rows without options are left out."""
    option_cols = sorted(c for c in values.columns if c.startswith("option."))
    rows = []
    for (backbone, task), g in values.groupby(["backbone", "task"], sort=True):
        sets = sorted({", ".join(f"{c.removeprefix('option.')}={r[c]}" for c in option_cols if r[c] is not None
                                 and not (isinstance(r[c], float) and pd.isna(r[c])))
                       for _, r in g.iterrows()} - {""})
        if sets:
            rows.append({"backbone": backbone, "task": task, "options": " | ".join(sets)})
    return pd.DataFrame(rows, columns=["backbone", "task", "options"])


@dataclass
class Leaderboard:
    suite: str
    long: pd.DataFrame  # the CSV: CSV_COLUMNS
    values: pd.DataFrame  # per run and metric (seeds kept)
    marks: pd.DataFrame  # best / tied per cell
    provenance: Provenance | None  # None: a board put together from its parts (`render_markdown`)


def build_leaderboard(suite: str, runs: pd.DataFrame, now: dt.datetime | None = None) -> Leaderboard:
    values = runs_to_values(runs)
    long = values_to_long(values)
    return Leaderboard(suite, long, values, significance(values, long), provenance(runs, values, now))


# -- The layout: a summary first (one row per backbone, one column per task), then one table per task version,
# the legends under each table, provenance last. The printed form keeps every line within PRINT_WIDTH.

PRINT_WIDTH = 160  # the printed leaderboard's widest line (a terminal); tables are split to fit
PROSE_WIDTH = 120  # legends and notes, printed and in the .md, wrap here (long lines read badly)
LABEL_MAX = 72  # a printed row label longer than this is shortened in its middle, so a table column still fits
PARTIAL_MARK = "*"
COST_COLUMNS = {"latency_per_image_ms": "ms/img", "peak_memory_mb": "peak MiB", "params": "params M"}

LEGEND = (f"**Bold**: best mean in the column. {TIED_MARK}: not significantly different from the best "
          f"(two-sided paired t-test over the seeds both ran, p ≥ {ALPHA}); unmarked cells are either significantly "
          "worse or could not be tested (fewer than two shared seeds).")
VERSIONS_NOTE = ("Each task version has its own table and summary column (`task.vN`): results of different task "
                 "versions are never averaged together.")
SUMMARY_RULE = ("Each is averaged over the task version's datasets and settings (each cell first averaged over its "
                "seeds); **bold**: best in the column.")
RANK_RULE = ("Mean rank: the backbone's rank in each task column (1 = best; equal averages share the mean of the ranks "
             "they span, e.g. 1.5, 1.5, 3), averaged over the task columns it is ranked in; rows are sorted by it.")
PARTIAL_NOTE = (f"`{PARTIAL_MARK}`: the backbone lacks some of the task's cells, so its average (over the cells it "
                "has) is not comparable and is not ranked; (k/m) after a mean rank: ranked in k of the m task columns.")


def read_profiles(out_dir: Path) -> pd.DataFrame | None:
    """`<out_dir>/profiles.csv` as `harness profile` writes it; None when absent or without latencies."""
    path = Path(out_dir) / "profiles.csv"
    if not path.is_file():
        return None
    profiles = pd.read_csv(path)
    needed = {"backbone", "variant", "latency_per_image_ms"}
    return profiles if needed <= set(profiles.columns) else None


def select_profiles(profiles: pd.DataFrame | None) -> tuple[pd.DataFrame, str, str]:
    """One comparable profile row per backbone:variant: the device (then dtype) that profiled the most backbones,
    and each backbone's largest profiled batch (its throughput-bound latency). Returns (rows, device, dtype)."""
    if profiles is None or profiles.empty or "latency_per_image_ms" not in profiles.columns:
        return pd.DataFrame(columns=["backbone", "variant", "latency_per_image_ms"]), "?", "?"
    prof = profiles.dropna(subset=["latency_per_image_ms"])
    chosen = {}
    for column in ("device", "dtype"):
        if column in prof.columns and not prof.empty:
            counts = prof.groupby(column)["backbone"].nunique()
            chosen[column] = str(counts[counts == counts.max()].sort_index().index[0])
            prof = prof[prof[column].astype(str) == chosen[column]]
    if "batch_size" in prof.columns:
        prof = prof.sort_values("batch_size", kind="stable")
    prof = prof.groupby(["backbone", "variant"]).tail(1).reset_index(drop=True)
    return prof, chosen.get("device", "?"), chosen.get("dtype", "?")


@dataclass
class Costs:
    """Cost columns of the summary: per (backbone name, variant), {column heading: value}."""

    values: dict[tuple[str, str], dict[str, float]]
    columns: list[str]
    note: str


def cost_columns(profiles: pd.DataFrame | None) -> Costs | None:
    rows, device, dtype = select_profiles(profiles)
    if rows.empty:
        return None
    present = [c for c in COST_COLUMNS if c in rows.columns and rows[c].notna().any()]
    values = {}
    for r in rows.to_dict("records"):
        cost = {}
        for c in present:
            v = pd.to_numeric(r.get(c), errors="coerce")
            cost[COST_COLUMNS[c]] = float(v) / (1e6 if c == "params" else 1) if pd.notna(v) else float("nan")
        values[(str(r["backbone"]), str(r["variant"]))] = cost
    memory = ""
    if "memory_kind" in rows.columns and rows["memory_kind"].notna().any():
        memory = f" ({', '.join(sorted(rows['memory_kind'].dropna().astype(str).unique()))})"
    what = {"ms/img": "latency per image (ms)", "peak MiB": f"peak memory{memory}",
            "params M": "parameters in millions"}
    note = (f"Cost (`harness profile` on {device}, {dtype}, each backbone's largest profiled batch, default "
            "options): " + "; ".join(f"{COST_COLUMNS[c]} = {what[COST_COLUMNS[c]]}" for c in present) + ".")
    return Costs(values, [COST_COLUMNS[c] for c in present], note)


def primary_metrics(values: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    """Per (task, version): its primary metric(s), as the runs' `primary` rows say."""
    if values.empty or "primary" not in values.columns:
        return {}
    prim = values[values["primary"].fillna(False).astype(bool)]
    return {(t, str(v)): sorted(g["metric"].unique()) for (t, v), g in prim.groupby(["task", "task_version"])}


def _is_average(dataset: str) -> bool:
    return str(dataset).startswith("average of")


def task_scores(long: pd.DataFrame, values: pd.DataFrame) -> pd.DataFrame:
    """Per backbone and task column (task, version, primary metric): the mean over its datasets and settings of the
    cells' means over seeds (`score`), the cells it has of the column's (`cells` / `of_cells`), and its `rank`
    among the backbones that have every cell (ties share the mean of their ranks; NaN for the incomplete)."""
    columns = ["backbone", "task", "task_version", "metric", "score", "cells", "of_cells", "complete", "rank"]
    prim = primary_metrics(values)
    if long.empty or not prim:
        return pd.DataFrame(columns=columns)
    wanted = {(t, v, m) for (t, v), ms in prim.items() for m in ms}
    keep = [(t, str(v), m) in wanted for t, v, m in zip(long["task"], long["task_version"], long["metric"],
                                                        strict=True)]
    cells = long[pd.Series(keep, index=long.index) & ~long["dataset"].map(_is_average)]
    rows = []
    for (task, version, metric), g in cells.groupby(["task", "task_version", "metric"], sort=False):
        full = set(zip(g["dataset"], g["setting"], strict=True))
        for backbone, sub in g.groupby("backbone", sort=False):
            have = set(zip(sub["dataset"], sub["setting"], strict=True))
            rows.append({"backbone": backbone, "task": task, "task_version": str(version), "metric": metric,
                         "score": float(sub["mean"].mean()), "cells": len(have), "of_cells": len(full),
                         "complete": have == full})
    out = pd.DataFrame(rows, columns=columns[:-1])
    out["rank"] = float("nan")
    for (_, _, metric), g in out[out["complete"]].groupby(["task", "task_version", "metric"]):
        # rounded so that equal averages summed in another order still tie
        out.loc[g.index, "rank"] = g["score"].round(9).rank(method="average", ascending=not higher_is_better(metric))
    return out


@dataclass
class Summary:
    """The summary table: `rows` (backbone labels by mean rank), task `columns` (task, version, metric)."""

    rows: list[str]
    columns: list[tuple[str, str, str]]
    scores: pd.DataFrame  # task_scores
    mean_rank: dict[str, tuple[float, int]]  # backbone → (mean rank, task columns it is ranked in)
    costs: Costs | None
    names: dict[str, tuple[str, str]]  # backbone label → (backbone name, variant), for the cost columns

    def header(self, column: tuple[str, str, str]) -> str:
        """`fsc.v2`; the metric (said in the legend) joins it only where a task version has two primary metrics."""
        task, version, metric = column
        shared = sum(1 for t, v, _ in self.columns if (t, v) == (task, version)) > 1
        return f"{task}.v{version}" + (f" {metric}" if shared else "")

    def metrics_note(self) -> str:
        return "Primary metric per task column: " + ", ".join(
            f"{self.header(c)} = {c[2]}" for c in self.columns) + "."

    def cost(self, backbone: str) -> dict[str, float]:
        if self.costs is None:
            return {}
        return self.costs.values.get(self.names.get(backbone, ("", "")), {})


def summary(lb: Leaderboard, profiles: pd.DataFrame | None = None) -> Summary:
    scores = task_scores(lb.long, lb.values)
    columns = sorted({(t, v, m) for t, v, m in zip(scores["task"], scores["task_version"], scores["metric"],
                                                     strict=True)}, key=lambda c: (c[0], natural_key(c[1]), c[2]))
    ranked = scores.dropna(subset=["rank"]).groupby("backbone")["rank"].agg(["mean", "count"])
    mean_rank = {b: (float(r["mean"]), int(r["count"])) for b, r in ranked.iterrows()}
    backbones = list(dict.fromkeys(scores["backbone"]))
    rows = sorted(backbones, key=lambda b: (b not in mean_rank, mean_rank.get(b, (0.0, 0))[0],
                                            -mean_rank.get(b, (0.0, 0))[1], natural_key(b)))
    names = {}
    if not lb.values.empty and {"backbone_name", "variant"} <= set(lb.values.columns):
        for b, name, variant in lb.values[["backbone", "backbone_name", "variant"]].drop_duplicates(
                "backbone").itertuples(index=False, name=None):
            names[b] = (str(name), str(variant))
    return Summary(rows, columns, scores, mean_rank, cost_columns(profiles), names)


def _number(value: float) -> str:
    """Three significant digits, never in exponent form; thousands grouped."""
    if pd.isna(value):
        return "—"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"


def summary_frame(s: Summary) -> pd.DataFrame:
    """The summary as Markdown cell strings: backbone, a column per task, mean rank, cost columns."""
    scores = s.scores.set_index(["backbone", "task", "task_version", "metric"])
    best = {c: None for c in s.columns}
    for c in s.columns:
        ranked = s.scores[(s.scores["task"] == c[0]) & (s.scores["task_version"] == c[1])
                          & (s.scores["metric"] == c[2]) & s.scores["complete"]]
        if not ranked.empty:
            best[c] = ranked["score"].max() if higher_is_better(c[2]) else ranked["score"].min()
    rows = []
    for b in s.rows:
        row = {"backbone": b}
        for c in s.columns:
            if (b, *c) not in scores.index:
                row[s.header(c)] = "—"
                continue
            r = scores.loc[(b, *c)]
            text = f"{r['score']:.2f}" + ("" if r["complete"] else PARTIAL_MARK)
            row[s.header(c)] = f"**{text}**" if r["complete"] and abs(r["score"] - best[c]) <= 1e-9 else text
        rank, k = s.mean_rank.get(b, (float("nan"), 0))
        row["mean rank"] = "—" if k == 0 else f"{rank:.2f}" + (f" ({k}/{len(s.columns)})" if k < len(s.columns)
                                                               else "")
        if s.costs is not None:
            cost = s.cost(b)
            for c in s.costs.columns:
                row[c] = _number(cost.get(c, float("nan")))
        rows.append(row)
    return pd.DataFrame(rows)


def summary_notes(s: Summary) -> list[str]:
    notes = [s.metrics_note() + " " + SUMMARY_RULE, RANK_RULE]
    if not s.scores.empty and not s.scores["complete"].all():
        notes.append(PARTIAL_NOTE)
    if s.costs is not None:
        notes.append(s.costs.note)
    return notes


# -- per-task tables: short column codes, what every column shares said once above the table -------------------

def _setting_parts(setting: str) -> list[tuple[str, str]]:
    """`head=linear-probe,shots=1` → [("head", "linear-probe"), ("shots", "1")]; a comma inside a value (no `=`
    after it) stays in the value; a part without `=` has the key ""."""
    parts: list[list[str]] = []
    for token in str(setting or "").split(","):
        if "=" in token:
            key, _, value = token.partition("=")
            parts.append([key.strip(), value.strip()])
        elif parts:
            parts[-1][1] += "," + token
        elif token.strip():
            parts.append(["", token.strip()])
    return [(k, v) for k, v in parts]


def _abbreviation(value: str) -> str:
    """`linear-probe` → `lp`, `text-classifier` → `tc`, numbers and short words kept."""
    if re.fullmatch(r"[\d.]+", value) or len(value) <= 6:
        return value
    words = [w for w in re.split(r"[-_ +]+", value) if w]
    if len(words) > 1:
        return "".join(w if w.isdigit() else w[0] for w in words)
    return value[:4]


def _dataset_code(dataset: str) -> str:
    if _is_average(dataset):
        return "avg"
    return dataset if len(dataset) <= 12 else _abbreviation(dataset)


@dataclass
class TaskColumn:
    dataset: str
    setting: str
    metric: str
    code: str = ""  # short heading (`lp-1`)
    detail: list[str] = field(default_factory=list)  # what the code stands for, in full

    @property
    def described(self) -> str:
        return ", ".join(self.detail)


@dataclass
class TaskTable:
    """One task version's table: rows (backbones), columns (dataset x setting x metric) with short codes."""

    task: str
    version: str
    columns: list[TaskColumn]
    constant: list[str]  # what every column shares (`dataset mini_coop`, `eval_style=whole`, `metric top1`)
    primary: list[str]
    usual_n: int  # the seed count of most cells: stated once; other counts are written in their cells
    rows: list[str]
    cells: dict[tuple[str, int], dict]  # (backbone, column index) → mean, std, n, best, tied, p_value, n_paired
    metrics_left_out: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.task} v{self.version}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_-]+", "-", f"task-{self.task}-v{self.version}")

    def caption(self) -> str:
        differs = any(c["n"] != self.usual_n for c in self.cells.values())
        seeds = ("one seed per cell (no std)" if self.usual_n == 1 else
                 f"cells: mean ± population std over {self.usual_n} seeds")
        seeds += " (other seed counts: n written in the cell)" if differs else ""
        parts = list(self.constant)
        if len({c.metric for c in self.columns}) > 1 and self.primary:
            parts.append(f"primary metric {', '.join(self.primary)}")
        if self.metrics_left_out:
            parts.append(f"other metrics ({', '.join(self.metrics_left_out)}) in the written files")
        return " · ".join([*parts, seeds])

    def legend(self) -> str:
        entries = [f"`{c.code}` = {c.described}" for c in self.columns if c.code != c.described]
        return ("Columns: " + "; ".join(entries) + ".") if entries else ""


def _column_codes(columns: list[TaskColumn]) -> list[str]:
    """Fill each column's code and detail from what varies between the table's columns; returns the parts every
    column shares (said once, in the caption)."""
    datasets = list(dict.fromkeys(c.dataset for c in columns))
    metrics = list(dict.fromkeys(c.metric for c in columns))
    parsed = [dict(_setting_parts(c.setting)) for c in columns]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    varying = [k for k in keys if len({p.get(k, "") for p in parsed}) > 1]
    constant = [f"dataset {datasets[0]}"] if len(datasets) == 1 else []
    constant += [f"{k}={v}" if k else v for k, v in parsed[0].items() if k not in varying]
    if len(metrics) == 1:
        constant.append(f"metric {metrics[0]}")

    def codes(short: bool) -> list[str]:
        out = []
        for c, p in zip(columns, parsed, strict=True):
            parts = [_dataset_code(c.dataset) if short else c.dataset] if len(datasets) > 1 else []
            parts += [_abbreviation(p[k]) if short else p[k] for k in varying if p.get(k)]
            parts += [c.metric] if len(metrics) > 1 else []
            out.append("-".join(parts) or c.metric)
        return out

    for short in (True, False):
        chosen = codes(short)
        if len(set(chosen)) == len(chosen):
            break
    else:
        chosen = [f"c{i + 1}" for i in range(len(columns))]
    for c, p, code in zip(columns, parsed, chosen, strict=True):
        c.code = code
        c.detail = ([c.dataset] if len(datasets) > 1 else []) + [f"{k}={p[k]}" if k else p[k] for k in varying
                                                                  if p.get(k)]
        c.detail += [c.metric] if len(metrics) > 1 or not c.detail else []
    return constant


def task_tables(lb: Leaderboard, order: list[str] | None = None, primary_only: bool = False) -> list[TaskTable]:
    """One table per task version, rows in `order` (the summary's) first; `primary_only` keeps the primary metric's
    columns (the printed form), naming the others."""
    long = lb.long
    if long.empty:
        return []
    marks = {}
    if lb.marks is not None and not lb.marks.empty:
        marks = {tuple(r[k] for k in KEYS): r for r in lb.marks.to_dict("records")}
    prim = primary_metrics(lb.values)
    rank = {b: i for i, b in enumerate(order or [])}
    tables = []
    keys = sorted({(t, str(v)) for t, v in zip(long["task"], long["task_version"], strict=True)},
                  key=lambda k: (k[0], natural_key(k[1])))
    for task, version in keys:
        g = long[(long["task"] == task) & (long["task_version"].astype(str) == version)]
        primary = prim.get((task, version), [])
        left_out = []
        if primary_only and primary and set(g["metric"]) - set(primary):
            left_out = sorted(set(g["metric"]) - set(primary))
            g = g[g["metric"].isin(primary)]
        col_keys = sorted(set(zip(g["dataset"], g["setting"], g["metric"], strict=True)),
                          key=lambda c: (_is_average(c[0]), natural_key(str(c[0])), natural_key(str(c[1])),
                                         c[2] not in primary, c[2]))
        columns = [TaskColumn(d, s, m) for d, s, m in col_keys]
        constant = _column_codes(columns)
        index = {(c.dataset, c.setting, c.metric): i for i, c in enumerate(columns)}
        cells = {}
        for r in g.to_dict("records"):
            m = marks.get(tuple(r[k] for k in KEYS), {})
            cells[(r["backbone"], index[(r["dataset"], r["setting"], r["metric"])])] = {
                "mean": r["mean"], "std": r["std"], "n": int(r["n"]), "best": m.get("best") is True,
                "tied": m.get("tied") is True, "p_value": m.get("p_value", float("nan")),
                "n_paired": m.get("n_paired", 0)}
        counts = pd.Series([c["n"] for c in cells.values()])
        usual_n = int(counts.value_counts().sort_index(ascending=False).idxmax()) if len(counts) else 1
        rows = sorted(set(g["backbone"]), key=lambda b: (rank.get(b, len(rank)), natural_key(b)))
        tables.append(TaskTable(task, version, columns, constant, primary, usual_n, rows, cells, left_out))
    return tables


def task_cell_text(cell: dict, usual_n: int) -> str:
    """`48.40 ± 1.75`: the seed count is said in the caption, and written in the cell only where it differs."""
    text = f"{cell['mean']:.2f}" + (f" ± {cell['std']:.2f}" if cell["n"] > 1 and not pd.isna(cell["std"]) else "")
    return text + (f" (n={cell['n']})" if cell["n"] != usual_n else "")


def task_frame(t: TaskTable) -> pd.DataFrame:
    rows = []
    for b in t.rows:
        row = {"backbone": b}
        for i, c in enumerate(t.columns):
            cell = t.cells.get((b, i))
            if cell is None:
                row[c.code] = "—"
                continue
            text = task_cell_text(cell, t.usual_n)
            row[c.code] = f"**{text}**" if cell["best"] else (f"{text} {TIED_MARK}" if cell["tied"] else text)
        rows.append(row)
    return pd.DataFrame(rows, columns=["backbone", *[c.code for c in t.columns]])


# -- Markdown: the file (every metric, provenance) and the printed form (primary metrics, ≤ PRINT_WIDTH) -------

def _wrap(text: str, indent: str = "") -> str:
    """Wrapped at PROSE_WIDTH; a legend's entries (`lp-1` = head=linear-probe, shots=1) are not broken."""
    if text.startswith("Columns: "):
        keep = "\x00"
        text = re.sub(r"`[^`]+` = [^;]+", lambda m: m.group(0).replace(" ", keep), text)
        return textwrap.fill(text, width=PROSE_WIDTH, subsequent_indent=indent,
                             break_on_hyphens=False).replace(keep, " ")
    return textwrap.fill(text, width=PROSE_WIDTH, subsequent_indent=indent, break_on_hyphens=False)


def _fit_label(label: str, limit: int = LABEL_MAX) -> str:
    if len(label) <= limit:
        return label
    keep = limit - 1
    return label[: keep - keep // 3] + "…" + label[-(keep // 3):]


def markdown_tables(frame: pd.DataFrame, width: int | None = None) -> list[str]:
    """`frame` (first column: the row label) as Markdown; with `width`, its columns split over several tables, the
    label repeated, so that no line is wider (the label shortened past LABEL_MAX)."""
    frame = frame.astype(str)
    label = frame.columns[0]
    if width is not None:
        frame[label] = frame[label].map(_fit_label)

    def render(cols: list[str]) -> str:
        return frame[[label, *cols]].to_markdown(index=False, disable_numparse=True,
                                                 colalign=("left",) + ("right",) * len(cols))

    rest = list(frame.columns[1:])
    if width is None or not rest:
        return [render(rest)]
    chunks, current = [], []
    for c in rest:
        if current and max(map(len, render([*current, c]).splitlines())) > width:
            chunks.append(render(current))
            current = []
        current.append(c)
    chunks.append(render(current))
    return chunks


def provenance_markdown(p: Provenance) -> str:
    lines = [f"- compiled: {p.compiled}; harness {', '.join(p.harness_versions)}",
             "- git commit(s) of the runs: " + (", ".join(f"`{c}` ({n} runs)" for c, n in p.git_commits.items())
                                                 or "—")]
    if not p.weights.empty:
        lines.append("- weights: " + "; ".join(
            f"{r.backbone}: {r.weights_kind or '?'} `{_short(r.weights_fingerprint)}`" for r in p.weights.itertuples()))
    for r in p.tasks.itertuples():
        lines.append(f"- task {r.task} v{r.task_version}: datasets {r.datasets}; settings {r.settings}; "
                     f"seeds {r.seeds}")
    for r in p.settings.itertuples():
        lines.append(f"- backbone options of {r.backbone} for {r.task}: {r.options}")
    return "\n".join(_wrap(line, "  ") for line in lines)


def _board_markdown(lb: Leaderboard, profiles: pd.DataFrame | None, printed: bool) -> str:
    """The shared layout. `printed`: primary metrics only, tables split to PRINT_WIDTH, no provenance."""
    width = PRINT_WIDTH if printed else None
    out = [f"# Leaderboard: suite `{lb.suite}`", ""]
    if lb.long.empty:
        return "\n".join([*out, "_no finished runs_", ""])
    s = summary(lb, profiles)
    tables = task_tables(lb, order=s.rows, primary_only=printed)
    intro = (f"{lb.long['backbone'].nunique()} backbone row(s), {len(tables)} task version(s), compiled from MLflow "
             "runs. The summary first, then one table per task version")
    intro += (" (primary metrics; every metric and the provenance are in the written .md and .html)." if printed
              else "; the provenance at the end.")
    out += [_wrap(intro), ""]
    if s.rows:
        out += ["## Summary", ""]
        for chunk in markdown_tables(summary_frame(s), width):
            out += [chunk, ""]
        out += [*(_wrap(note) for note in summary_notes(s)), ""]
    if lb.marks is not None and not lb.marks.empty:
        out += [_wrap(LEGEND + " " + VERSIONS_NOTE), ""]
    for t in tables:
        out += [f"## {t.title}", "", _wrap(t.caption()), ""]
        for chunk in markdown_tables(task_frame(t), width):
            out += [chunk, ""]
        if t.legend():
            out += [_wrap(t.legend()), ""]
    if not printed and lb.provenance is not None:
        out += ["## Provenance", "", provenance_markdown(lb.provenance), ""]
    return "\n".join(out)


def render_markdown(suite: str, long: pd.DataFrame, marks: pd.DataFrame | None = None,
                    prov: Provenance | None = None, values: pd.DataFrame | None = None,
                    profiles: pd.DataFrame | None = None) -> str:
    """The Markdown file from its parts; without `values` (which metric is primary) there is no summary."""
    lb = Leaderboard(suite, long, values if values is not None else pd.DataFrame(),
                     marks if marks is not None else pd.DataFrame(), prov)
    return _board_markdown(lb, profiles, printed=False)


def leaderboard_markdown(lb: Leaderboard, profiles: pd.DataFrame | None = None) -> str:
    """`<suite>.md`: summary, every task version's table with every metric, legends, provenance."""
    return _board_markdown(lb, profiles, printed=False)


def printed_leaderboard(lb: Leaderboard, profiles: pd.DataFrame | None = None) -> str:
    """What the CLI prints after a run: summary and primary-metric tables, no line wider than PRINT_WIDTH."""
    return _board_markdown(lb, profiles, printed=True)
