"""Is a gap between two backbones larger than the seed spread? Paired tests over shared seeds.

Two backbones run on the same task, dataset and setting with the same seeds see the same few-shot splits
and initialisations, so their per-seed differences are paired: a paired t-test (`scipy.stats.ttest_rel`)
on those differences, or a percentile bootstrap interval of their mean, says whether the mean gap could be
seed noise. With fewer than two shared seeds nothing can be said, and the result says so (`tested=False`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

ALPHA = 0.05


@dataclass(frozen=True)
class PairedResult:
    n: int  # seeds both sides have
    mean_diff: float  # mean of (a - b) over the shared seeds
    p_value: float  # two-sided; nan when untested
    ci_low: float  # (1 - alpha) interval of the mean difference
    ci_high: float
    method: str

    @property
    def tested(self) -> bool:
        return self.n >= 2 and not math.isnan(self.p_value)

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.tested and self.p_value < alpha


def paired_diffs(a: dict, b: dict) -> np.ndarray:
    """`a[seed] - b[seed]` over the seeds both hold, in seed order."""
    shared = sorted(set(a) & set(b), key=str)
    return np.array([float(a[s]) - float(b[s]) for s in shared], dtype=float)


def paired_ttest(a: dict, b: dict, alpha: float = ALPHA) -> PairedResult:
    """Two-sided paired t-test of a vs b over shared seeds (the t interval of the mean difference).

    Degenerate cases scipy leaves as nan: all differences equal to zero → p = 1 (identical); all equal and
    non-zero → p = 0 (a constant gap, no spread at all).
    """
    from scipy import stats

    d = paired_diffs(a, b)
    n = len(d)
    if n < 2:
        mean = float(d.mean()) if n else float("nan")
        return PairedResult(n, mean, float("nan"), float("nan"), float("nan"), "paired t-test")
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        return PairedResult(n, mean, p, mean, mean, "paired t-test")
    common = sorted(set(a) & set(b), key=str)
    p = float(stats.ttest_rel([a[s] for s in common], [b[s] for s in common]).pvalue)
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
    return PairedResult(n, mean, p, mean - half, mean + half, "paired t-test")


def bootstrap_ci(diffs, alpha: float = ALPHA, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `diffs` (deterministic for a given `seed`)."""
    d = np.asarray(diffs, dtype=float)
    if len(d) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def paired_bootstrap(a: dict, b: dict, alpha: float = ALPHA, n_boot: int = 10_000, seed: int = 0) -> PairedResult:
    """Bootstrap over shared seeds; "p" is the two-sided share of resampled means on the other side of 0."""
    d = paired_diffs(a, b)
    n = len(d)
    if n < 2:
        return PairedResult(n, float(d.mean()) if n else float("nan"), float("nan"), float("nan"), float("nan"),
                            "paired bootstrap")
    lo, hi = bootstrap_ci(d, alpha, n_boot, seed)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    p = float(min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean())))
    return PairedResult(n, float(d.mean()), p, lo, hi, "paired bootstrap")


def compare_with_best(per_seed: pd.DataFrame, higher_is_better: bool = True, alpha: float = ALPHA,
                      method: str = "ttest") -> pd.DataFrame:
    """`per_seed` has columns backbone, seed, value (one column of the leaderboard).

    Returns one row per backbone: mean, is_best, and against the best backbone (highest mean): n paired
    seeds, mean difference (this − best), p value and `tied` — True when the gap is not significant at
    `alpha`, False when it is, None when it cannot be tested (fewer than two shared seeds).
    """
    test = paired_ttest if method == "ttest" else paired_bootstrap
    per_seed = per_seed.dropna(subset=["value"])
    seeds = {bb: dict(zip(g["seed"], g["value"], strict=True)) for bb, g in per_seed.groupby("backbone")}
    means = per_seed.groupby("backbone")["value"].mean()
    if means.empty:
        return pd.DataFrame(columns=["backbone", "mean", "is_best", "n", "mean_diff", "p_value", "tied"])
    best = means.idxmax() if higher_is_better else means.idxmin()
    rows = []
    for bb, mean in means.items():
        if bb == best:
            rows.append({"backbone": bb, "mean": mean, "is_best": True, "n": len(seeds[bb]), "mean_diff": 0.0,
                         "p_value": float("nan"), "tied": None})
            continue
        res = test(seeds[bb], seeds[best], alpha=alpha)
        rows.append({"backbone": bb, "mean": mean, "is_best": False, "n": res.n, "mean_diff": res.mean_diff,
                     "p_value": res.p_value, "tied": (not res.significant(alpha)) if res.tested else None})
    return pd.DataFrame(rows)
