"""Compare a leaderboard with a baseline: what improved, regressed, went missing (CI's regression gate).

Both sides are the long CSVs `harness leaderboard` writes (one row per backbone, task, version,
dataset, setting, metric). Every metric is higher-is-better; a drop larger than the tolerance (in the
metric's own units, e.g. accuracy points) or a baseline row that is gone fails the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.errors import ConfigError

KEYS = ["backbone", "task", "task_version", "dataset", "setting", "metric"]


@dataclass
class Comparison:
    improved: pd.DataFrame
    regressed: pd.DataFrame
    unchanged: pd.DataFrame
    missing: pd.DataFrame
    new: pd.DataFrame
    tolerance: float
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.regressed.empty and self.missing.empty


def read_leaderboard(ref: str, out_dir: Path = Path("leaderboards")) -> pd.DataFrame:
    """A CSV path, or a suite name meaning `<out_dir>/<suite>.csv`."""
    path = Path(ref)
    if path.suffix != ".csv":
        path = Path(out_dir) / f"{ref}.csv"
    if not path.is_file():
        raise ConfigError(f"leaderboard not found: {path} (a .csv path or a suite name under {out_dir}/)")
    df = pd.read_csv(path, dtype={"task_version": str, "setting": str})
    missing = [c for c in [*KEYS, "mean"] if c not in df.columns]
    if missing:
        raise ConfigError(f"{path} is not a harness leaderboard CSV: missing column(s) {', '.join(missing)}")
    df["setting"] = df["setting"].fillna("")
    return df


def compare(current: pd.DataFrame, baseline: pd.DataFrame, tolerance: float = 0.5) -> Comparison:
    merged = baseline[[*KEYS, "mean"]].merge(current[[*KEYS, "mean"]], on=KEYS, how="outer",
                                             suffixes=("_baseline", "_current"), indicator=True)
    merged["delta"] = merged["mean_current"] - merged["mean_baseline"]
    both = merged[merged["_merge"] == "both"].drop(columns="_merge")
    return Comparison(
        improved=both[both["delta"] > tolerance],
        regressed=both[(both["delta"] < -tolerance) | both["mean_current"].isna()],  # NaN: the metric is gone
        unchanged=both[both["delta"].abs() <= tolerance],
        missing=merged[merged["_merge"] == "left_only"].drop(columns="_merge"),
        new=merged[merged["_merge"] == "right_only"].drop(columns="_merge"),
        tolerance=tolerance,
    )
