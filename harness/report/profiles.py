"""`leaderboards/profiles.{csv,md}`: cost rows accumulated per (backbone, variant, device, dtype, batch), and
the same backbones' accuracy from a suite leaderboard beside them, so cost and quality read together.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

ROW_KEYS = ["backbone", "variant", "device", "dtype", "batch_size"]


def update_profiles(rows: list[dict], out_dir: Path) -> pd.DataFrame:
    """Merge new rows into `<out_dir>/profiles.csv` (a re-profiled key replaces its old row). A failed measurement
    (an `error` row) is never a row: it would read as a backbone with no cost (NaN), so it is dropped, and so is
    any such row an older file holds."""
    path = Path(out_dir) / "profiles.csv"
    new = pd.json_normalize([row for row in rows if not row.get("error")])
    if path.is_file():
        old = pd.read_csv(path)
        merged = pd.concat([old, new], ignore_index=True).drop_duplicates(subset=ROW_KEYS, keep="last")
    else:
        merged = new
    if "error" in merged.columns:
        merged = merged[merged["error"].isna()].drop(columns="error")
    merged = merged.sort_values(ROW_KEYS).reset_index(drop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    merged.to_csv(path, index=False)
    return merged


def accuracy_by_backbone(leaderboard_csv: Path) -> pd.DataFrame:
    """Per backbone, the mean of each task's primary metric over its columns (a one-number summary per task)."""
    if not Path(leaderboard_csv).is_file():
        return pd.DataFrame()
    long = pd.read_csv(leaderboard_csv, dtype={"setting": str})
    long = long[~long["dataset"].astype(str).str.startswith("average of")]
    summary = long.groupby(["backbone", "task", "metric"])["mean"].mean().reset_index()
    summary["column"] = summary["task"] + " " + summary["metric"] + " (mean)"
    return summary.pivot(index="backbone", columns="column", values="mean")


def render_profiles(profiles: pd.DataFrame, accuracy: pd.DataFrame, suite: str) -> str:
    cols = {"backbone": "backbone", "variant": "variant", "device": "device", "dtype": "dtype",
            "batch_size": "batch", "latency_median_s": "latency median (s)", "latency_p90_s": "p90 (s)",
            "images_per_s": "images/s", "latency_per_image_ms": "ms/image", "params": "params (M)",
            "gflops_per_image": "GFLOPs/image", "peak_memory_mb": "peak memory (MiB)", "memory_kind": "memory"}
    table = profiles[[c for c in cols if c in profiles.columns]].rename(columns=cols).copy()
    if "params (M)" in table:
        table["params (M)"] = table["params (M)"] / 1e6
    parts = ["# Backbone cost profiles\n",
             "Medians (and p90) of timed repeats after warm-up, synthetic inputs through each backbone's own "
             "preprocessing; one child process per row. CPU memory = rise of the process's peak RSS.\n",
             table.to_markdown(index=False, floatfmt=".4g"), ""]
    share_cols = [c for c in profiles.columns if c.startswith("stage_share.")]
    if share_cols:
        shares = profiles[["backbone", "variant", "batch_size", *share_cols]].dropna(subset=share_cols, how="all")
        shares = shares.rename(columns={c: c.removeprefix("stage_share.") for c in share_cols})
        parts += ["## Share of time per stage\n", shares.to_markdown(index=False, floatfmt=".2f"), ""]
    if not accuracy.empty:
        biggest = profiles.sort_values("batch_size").groupby(["backbone", "variant"]).tail(1)
        cost = biggest.assign(label=biggest["backbone"] + ":" + biggest["variant"])
        joined = []
        for _, c in cost.iterrows():
            match = [b for b in accuracy.index if b.split(" ")[0] == c["label"]]
            acc = accuracy.loc[match[0]].to_dict() if match else {}
            joined.append({"backbone": c["label"], "ms/image": c.get("latency_per_image_ms"),
                           "GFLOPs/image": c.get("gflops_per_image"), **acc})
        parts += [f"## Accuracy (suite `{suite}`) beside cost\n",
                  pd.DataFrame(joined).to_markdown(index=False, floatfmt=".3g"), ""]
    return "\n".join(parts)


def write_profiles(rows: list[dict], out_dir: Path, suite: str) -> str:
    """Merge `rows` into `<out_dir>/profiles.csv`, write `profiles.md` (joined with the suite's accuracy); its text."""
    table = update_profiles(rows, out_dir)
    text = render_profiles(table, accuracy_by_backbone(Path(out_dir) / f"{suite}.csv"), suite)
    (Path(out_dir) / "profiles.md").write_text(text)
    return text
