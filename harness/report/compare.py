"""Compare a leaderboard with a baseline: what improved, regressed, went missing (CI's regression gate).

Both sides are the long CSVs `harness leaderboard` writes (one row per backbone, task, version,
dataset, setting, metric). A row's drop counts only when it is larger than its own noise: the paired seed
spread (from `seed_values`) and the item SE of the baseline (`se_items`: another draw of test items would
move the mean too), each row judged against max(tolerance, z·noise). The flat tolerance stays as a floor,
and is all there is for CSVs written before those columns existed. A baseline row that is gone, or whose
current value is NaN, fails the comparison. README "The regression gate" states the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.errors import ConfigError
from harness.report.leaderboard import higher_is_better
from harness.report.stats import paired_diffs

KEYS = ["backbone", "task", "task_version", "dataset", "setting", "metric"]
# Absent from CSVs written before the gate used them.
OPTIONAL = {"n_items": float("nan"), "se_items": float("nan"), "seed_values": ""}
Z_DEFAULT = 2.0
TOLERANCE_DEFAULT = 0.5


@dataclass
class Comparison:
    """Rows both sides have are split into improved / regressed / unchanged; each carries delta (current −
    baseline), drop (the worse-direction change), se_seed, se_item, noise, threshold, k_seeds and reason."""

    improved: pd.DataFrame
    regressed: pd.DataFrame
    unchanged: pd.DataFrame
    missing: pd.DataFrame
    new: pd.DataFrame
    tolerance: float
    z: float = Z_DEFAULT
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.regressed.empty and self.missing.empty


def with_optional_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Old leaderboards lack the uncertainty columns: add them as unknown (→ no seed or item term)."""
    df = df.copy()
    for column, blank in OPTIONAL.items():
        if column not in df.columns:
            df[column] = blank
    df["se_items"] = pd.to_numeric(df["se_items"], errors="coerce")
    df["n_items"] = pd.to_numeric(df["n_items"], errors="coerce")
    df["seed_values"] = df["seed_values"].fillna("").astype(str)
    return df


def read_leaderboard(ref: str, out_dir: Path = Path("leaderboards")) -> pd.DataFrame:
    """A CSV path, or a suite name meaning `<out_dir>/<suite>.csv`."""
    path = Path(ref)
    if path.suffix != ".csv":
        path = Path(out_dir) / f"{ref}.csv"
    if not path.is_file():
        raise ConfigError(f"leaderboard not found: {path} (a .csv path or a suite name under {out_dir}/)")
    try:
        df = pd.read_csv(path, dtype={"task_version": str, "setting": str, "seed_values": str})
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as exc:
        why = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ConfigError(f"{path} is not a readable leaderboard CSV ({type(exc).__name__}: {why}); give a CSV "
                          "written by `harness leaderboard`") from None
    missing = [c for c in [*KEYS, "mean"] if c not in df.columns]
    if missing:
        raise ConfigError(f"{path} is not a harness leaderboard CSV: missing column(s) {', '.join(missing)}")
    mean = pd.to_numeric(df["mean"], errors="coerce")
    if (bad := df["mean"].notna() & mean.isna()).any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise ConfigError(f"{path}: column 'mean' holds a non-number on data row {row + 1} "
                          f"({str(df['mean'].iloc[row])[:40]!r}); give a CSV written by `harness leaderboard`")
    df["mean"] = mean
    df["setting"] = df["setting"].fillna("")
    return with_optional_columns(df)


def parse_seed_values(text: str) -> dict[str, float]:
    """`1:48.6111;2:47.2222` → {"1": 48.6111, "2": 47.2222}; blank → {}."""
    out = {}
    for part in str(text or "").split(";"):
        seed, sep, value = part.partition(":")
        if sep and seed.strip():
            out[seed.strip()] = float(value)
    return out


def seed_noise(current: str, baseline: str) -> tuple[float, int]:
    """SE of the mean paired (current − baseline) difference over the k seeds both rows hold, and k:
    std(ddof=1)/sqrt(k) for k ≥ 2, else 0 (nothing to estimate the spread from)."""
    d = paired_diffs(parse_seed_values(current), parse_seed_values(baseline))
    k = len(d)
    return (float(d.std(ddof=1) / math.sqrt(k)) if k >= 2 else 0.0), k


def reason(drop: float, se_seed: float, se_item: float, noise: float, tolerance: float, z: float) -> str:
    """Why a row counts as changed: the change, and the threshold it beat, with that threshold's parts."""
    word, size = ("drop", drop) if drop > 0 else ("gain", -drop)
    zn, parts = f"{z:g}·noise {z * noise:.2f}", f"seed {se_seed:.2f}, items {se_item:.2f}"
    if z * noise > tolerance:
        return f"{word} {size:.2f} > {zn} ({parts}; floor {tolerance:.2f})"
    return f"{word} {size:.2f} > floor {tolerance:.2f} ({zn}: {parts})"


def gate(row: pd.Series, tolerance: float, z: float) -> pd.Series:
    """The gate's numbers for one row both sides have (README "The regression gate")."""
    delta = row["mean_current"] - row["mean_baseline"]
    drop = -delta if higher_is_better(row["metric"]) else delta
    se_seed, k = seed_noise(row["seed_values_current"], row["seed_values_baseline"])
    se_item = 0.0 if pd.isna(row["se_items_baseline"]) else float(row["se_items_baseline"])
    noise = math.hypot(se_seed, se_item)
    threshold = max(tolerance, z * noise)
    n_base, n_cur = row["n_items_baseline"], row["n_items_current"]
    other_items = not pd.isna(n_base) and not pd.isna(n_cur) and int(n_base) != int(n_cur)
    return pd.Series({"delta": delta, "drop": drop, "k_seeds": k, "se_seed": se_seed, "se_item": se_item,
                      "noise": noise, "threshold": threshold, "other_items": other_items,
                      "reason": ("the current value is NaN" if pd.isna(row["mean_current"]) else
                                 "the baseline value is NaN" if pd.isna(row["mean_baseline"]) else
                                 f"measured on {int(n_cur)} test items, the baseline on {int(n_base)}: not the same "
                                 f"measurement (Δ {delta:+.2f})" if other_items else
                                 reason(drop, se_seed, se_item, noise, tolerance, z))})


def compare(current: pd.DataFrame, baseline: pd.DataFrame, tolerance: float = TOLERANCE_DEFAULT,
            z: float = Z_DEFAULT) -> Comparison:
    """Regressed iff drop > max(tolerance, z·noise), or the current value is NaN, or the row was measured on
    another number of test items than the baseline; improved iff −drop > max(tolerance, z·noise)."""
    cols = [*KEYS, "mean", *OPTIONAL]
    merged = with_optional_columns(baseline)[cols].merge(with_optional_columns(current)[cols], on=KEYS,
                                                         how="outer", suffixes=("_baseline", "_current"),
                                                         indicator=True)
    both = merged[merged["_merge"] == "both"].drop(columns="_merge")
    if both.empty:
        both = both.assign(**{c: pd.Series(dtype=float) for c in
                              ("delta", "drop", "k_seeds", "se_seed", "se_item", "noise", "threshold", "other_items",
                               "reason")})
    else:
        both = pd.concat([both, both.apply(gate, axis=1, tolerance=tolerance, z=z)], axis=1)
    gone = both["mean_current"].isna()  # NaN: the metric is gone
    # Another number of test items (a query/gallery mix-up, a split read wrongly) is a broken protocol, whichever
    # way the value moved.
    regressed = gone | (both["drop"] > both["threshold"]) | both["other_items"].fillna(False).astype(bool)
    improved = ~regressed & (-both["drop"] > both["threshold"])
    unchanged = ~regressed & ~improved & both["drop"].notna()
    rest = merged.assign(delta=merged["mean_current"] - merged["mean_baseline"])
    return Comparison(
        improved=both[improved],
        regressed=both[regressed],
        unchanged=both[unchanged],
        missing=rest[rest["_merge"] == "left_only"].drop(columns="_merge"),
        new=rest[rest["_merge"] == "right_only"].drop(columns="_merge"),
        tolerance=tolerance,
        z=z,
    )
