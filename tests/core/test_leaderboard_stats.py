import math

import pandas as pd
import pytest
from scipy import stats as sps

from harness.report.stats import bootstrap_ci, compare_with_best, paired_bootstrap, paired_ttest


def test_paired_ttest_matches_hand_computation_and_scipy():
    a = {1: 12.0, 2: 14.0, 3: 16.0}
    b = {1: 11.0, 2: 12.0, 3: 13.0}  # differences 1, 2, 3: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 3.4641
    res = paired_ttest(a, b)
    t = 2 / (1 / math.sqrt(3))
    assert res.n == 3 and res.mean_diff == pytest.approx(2.0)
    assert res.p_value == pytest.approx(2 * sps.t.sf(t, df=2))
    assert res.p_value == pytest.approx(sps.ttest_rel([12, 14, 16], [11, 12, 13]).pvalue)
    assert res.p_value == pytest.approx(0.07418, abs=1e-4)
    half = sps.t.ppf(0.975, 2) / math.sqrt(3)
    assert (res.ci_low, res.ci_high) == pytest.approx((2 - half, 2 + half))
    assert res.tested and not res.significant(0.05) and res.significant(0.1)


def test_only_shared_seeds_pair_and_degenerate_cases():
    assert paired_ttest({1: 1.0, 2: 2.0}, {2: 1.0, 3: 0.0}).n == 1
    assert not paired_ttest({1: 1.0}, {1: 0.0}).tested
    same = paired_ttest({1: 1.0, 2: 2.0}, {1: 1.0, 2: 2.0})
    assert same.p_value == 1.0 and not same.significant()
    shift = paired_ttest({1: 2.0, 2: 3.0}, {1: 1.0, 2: 2.0})
    assert shift.p_value == 0.0 and shift.significant()


def test_bootstrap_interval():
    lo, hi = bootstrap_ci([1.0, 2.0, 3.0], n_boot=20000)
    assert 1.0 <= lo < 2.0 < hi <= 3.0
    assert bootstrap_ci([1.0, 2.0, 3.0]) == bootstrap_ci([1.0, 2.0, 3.0])  # deterministic
    res = paired_bootstrap({s: 10.0 + s for s in range(8)}, {s: 0.0 + (s % 2) for s in range(8)})
    assert res.significant() and res.ci_low > 0


def test_compare_with_best():
    per_seed = pd.DataFrame([
        *({"backbone": "a", "seed": s, "value": v} for s, v in [(1, 50.0), (2, 52.0), (3, 51.0)]),
        *({"backbone": "b", "seed": s, "value": v} for s, v in [(1, 40.0), (2, 41.0), (3, 43.0)]),
        *({"backbone": "c", "seed": s, "value": v} for s, v in [(1, 50.5), (2, 51.0), (3, 50.0)]),
        {"backbone": "d", "seed": 1, "value": 10.0},
    ])
    out = compare_with_best(per_seed).set_index("backbone")
    assert out.loc["a", "is_best"] and out.loc["a", "tied"] is None
    assert out.loc["b", "tied"] is False and out.loc["b", "mean_diff"] == pytest.approx(-9.6666, abs=1e-3)
    assert out.loc["c", "tied"] is True
    assert out.loc["d", "tied"] is None and out.loc["d", "n"] == 1
    lower = compare_with_best(per_seed, higher_is_better=False).set_index("backbone")
    assert lower.loc["d", "is_best"]
