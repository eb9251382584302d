"""Leaderboards compiled from MLflow runs (never from memory): pandas → Markdown, CSV, HTML and a printed table.

Rows are backbones (variant and weights kind included, random-init rows marked; backbone options such as
Vermouth's `t`/`stages` included where they vary); columns are task.version/dataset/protocol setting/metric,
so results of different task versions never share a column; repeats over seeds become mean ± std
(population std, as CoOp's `parse_test_res.py` reports) with their count. Per column, the best backbone is
marked and every other one is tested against it over the seeds both ran (`harness.stats`): † = the gap is
not larger than the seed spread.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.api import ItemSE
from harness.stats import ALPHA, compare_with_best
from harness.tracking import N_ITEMS, SE_BINOMIAL, SE_ITEMS, Tracker

LONG_COLUMNS = ["backbone", "task", "task_version", "dataset", "setting", "metric", "mean", "std", "n"]
# Appended for the regression gate (`harness.compare`): test items per seed, the item SE of the row's mean,
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
    """(item SE, test items, binomial?) of one metric of a run, from `harness.tracking`'s metric names;
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
        rows.append({**dict(zip(KEYS, key, strict=True)), "mean": mean, "std": float(group["value"].std(ddof=0)),
                     "n": len(group), **item_summary(group, mean)})
    return add_dataset_averages(_typed(pd.DataFrame(rows, columns=CSV_COLUMNS)))


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
    provenance: Provenance


def build_leaderboard(suite: str, runs: pd.DataFrame, now: dt.datetime | None = None) -> Leaderboard:
    values = runs_to_values(runs)
    long = values_to_long(values)
    return Leaderboard(suite, long, values, significance(values, long), provenance(runs, values, now))


LEGEND = (f"**Bold**: best mean in the column. {TIED_MARK}: not significantly different from the best "
          f"(two-sided paired t-test over the seeds both ran, p ≥ {ALPHA}); unmarked cells are either significantly "
          "worse or could not be tested (fewer than two shared seeds).")
VERSIONS_NOTE = ("Task versions are separate columns (`task.vN/...`): results of different task versions or "
                 "protocol settings are never averaged together.")


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
    return "\n".join(lines)


def render_markdown(suite: str, long: pd.DataFrame, marks: pd.DataFrame | None = None,
                    prov: Provenance | None = None) -> str:
    wide = to_wide(long, marks)
    body = wide.reset_index().to_markdown(index=False) if not wide.empty else "_no finished runs_"
    head = (f"# Leaderboard: suite `{suite}`\n\n"
            "Cells: mean ± population std over seeds (n = number of seeds). Compiled from MLflow runs.\n\n")
    if marks is not None:
        head += LEGEND + " " + VERSIONS_NOTE + "\n\n"
    if prov is not None:
        head += "Provenance:\n\n" + provenance_markdown(prov) + "\n\n"
    return head + f"{body}\n"


def leaderboard_markdown(lb: Leaderboard) -> str:
    return render_markdown(lb.suite, lb.long, lb.marks, lb.provenance)


def compile_leaderboard(suite: str, out_dir: Path | None = Path("leaderboards"), html: bool = True) -> pd.DataFrame:
    """Read the suite's runs back from MLflow and write `<out_dir>/<suite>.md`, `.csv` and `.html`."""
    lb = build_leaderboard(suite, Tracker(suite).job_runs())
    if out_dir is not None:
        write_leaderboard(lb, Path(out_dir), html=html)
    return lb.long


def write_leaderboard(lb: Leaderboard, out_dir: Path, html: bool = True) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / f"{lb.suite}.md", out_dir / f"{lb.suite}.csv"]
    lb.long.to_csv(written[1], index=False, float_format="%.4f")
    written[0].write_text(leaderboard_markdown(lb))
    if html:
        from harness.leaderboard_html import read_profiles, render_html

        written.append(out_dir / f"{lb.suite}.html")
        written[2].write_text(render_html(lb, read_profiles(out_dir)), encoding="utf-8")
    return written
