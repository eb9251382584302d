"""The linear probe's C selection against rules written out here with plain scikit-learn.

`lpclip_reference` restates CoOp's `lpclip/linear_probe.py` (KaiyangZhou/CoOp ff61507) step by step: raw features,
the coarse grid's first best C, then bisection rounds whose LAST winner is kept. `best_val_reference` is the
harness's earlier rule: L2-normalised features, the best val accuracy over every C tried. Both fit with a tight
tol so every fit is the unique optimum (deterministic), as the mini suite does.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from tasks.fsc.linear_probe import probe_parts, search_c_best_val, search_c_lpclip

GRID = [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]
STEPS, MAX_ITER, TOL = 8, 20_000, 1e-8
SEEDS = range(10)


def problem(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """5 classes x 4 shots (train and val), 16-dim Gaussian blobs; the separation and the feature scale vary with
    the seed, so different C win."""
    rng = np.random.default_rng(seed)
    separation, scale = (0.3, 0.5, 0.8, 1.2, 2.0)[seed % 5], (1.0, 10.0)[seed % 2]
    centers = rng.normal(size=(5, 16)) * separation
    y = np.repeat(np.arange(5), 4)
    x_train = (centers[y] + rng.normal(size=(20, 16))) * scale
    x_val = (centers[y] + rng.normal(size=(20, 16))) * scale
    return x_train, y, x_val, y


def val_accuracy(x_tr, y_tr, x_val, y_val, c: float) -> float:
    """lpclip's fit (L-BFGS, L2 penalty: sklearn's default) and val accuracy. One BLAS thread: on these tiny
    problems threads only cost time."""
    with threadpool_limits(limits=1):
        clf = LogisticRegression(solver="lbfgs", max_iter=MAX_ITER, tol=TOL, C=c).fit(x_tr, y_tr)
    return float(np.sum(clf.predict(x_val) == y_val) / len(y_val))


def lpclip_reference(x_tr, y_tr, x_val, y_val, steps: int = STEPS) -> float:
    """lpclip's C: the grid's argmax, then [peak / 10, peak * 10]; each round keeps the strictly better end (a tie
    goes left) as its winner and halves the range in log10 towards it; the last winner is the answer."""
    acc_list = [val_accuracy(x_tr, y_tr, x_val, y_val, c) for c in GRID]
    c_peak = GRID[int(np.argmax(acc_list))]
    c_left, c_right = 1e-1 * c_peak, 1e1 * c_peak
    c_final = c_peak
    for _ in range(steps):
        acc_left = val_accuracy(x_tr, y_tr, x_val, y_val, c_left)
        acc_right = val_accuracy(x_tr, y_tr, x_val, y_val, c_right)
        if acc_left < acc_right:
            c_final = c_right
            c_left, c_right = 0.5 * (np.log10(c_right) + np.log10(c_left)), np.log10(c_right)
        else:
            c_final = c_left
            c_left, c_right = np.log10(c_left), 0.5 * (np.log10(c_right) + np.log10(c_left))
        c_left, c_right = np.power(10, c_left), np.power(10, c_right)
    return float(c_final)


def best_val_reference(x_tr, y_tr, x_val, y_val) -> float:
    """Every C the grid and the bisection try, scored; the best val accuracy wins, a tie going to the C nearest
    the grid's peak in log10 (then to the first tried)."""
    def norm(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    x_tr, x_val = norm(x_tr), norm(x_val)
    tried: dict[float, float] = {}

    def acc(c: float) -> float:
        if c not in tried:
            tried[c] = val_accuracy(x_tr, y_tr, x_val, y_val, c)
        return tried[c]

    peak = GRID[int(np.argmax([acc(c) for c in GRID]))]
    lo, hi = math.log10(peak) - 1, math.log10(peak) + 1
    for _ in range(STEPS):
        if acc(10**lo) < acc(10**hi):
            lo = (lo + hi) / 2
        else:
            hi = (lo + hi) / 2
    best = max(tried.values())
    winners = [c for c, a in tried.items() if a == best]
    return min(winners, key=lambda c: abs(math.log10(c) - math.log10(peak)))


@pytest.fixture(scope="module")
def chosen() -> dict[str, dict[int, tuple[float, float]]]:
    """(C, val accuracy) each probe keeps, per problem, through `probe_parts` as the task calls it."""
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for name in ("lpclip", "l2-best-val"):
        transform, search = probe_parts(name)
        out[name] = {}
        for seed in SEEDS:
            x_tr, y_tr, x_val, y_val = problem(seed)
            res = search(transform(x_tr), y_tr, transform(x_val), y_val, GRID, STEPS, MAX_ITER, TOL)
            assert res.val_accuracy == pytest.approx(float((res.model.predict(transform(x_val)) == y_val).mean()))
            out[name][seed] = (res.c, res.val_accuracy)
    return out


def test_lpclip_selects_the_c_of_lpclips_rule(chosen):
    expected = {seed: lpclip_reference(*problem(seed)) for seed in SEEDS}
    for seed in SEEDS:
        assert chosen["lpclip"][seed][0] == pytest.approx(expected[seed], rel=1e-12), seed
    assert len({round(math.log10(c), 6) for c in expected.values()}) >= 4  # the problems exercise different C


class _Predicts:
    """A stand-in fit whose val accuracy is set by its C: the first `round(10 * acc)` of 10 val rows right."""

    def __init__(self, acc: float):
        self.acc = acc

    def predict(self, x):
        return (np.arange(len(x)) >= round(10 * self.acc)).astype(int)


def test_lpclip_keeps_the_last_rounds_winner_even_when_an_earlier_c_scored_higher(monkeypatch):
    """Hand-made val curve: the grid peaks at C=1 (0.9); round 1 compares C=0.1 (0.5) with C=10 (0.6), so C=10
    wins it and lpclip keeps it at 0.6. The best-over-all rule keeps C=1 (0.9)."""
    import tasks.fsc.linear_probe as lp

    curve = {1e6: 0.1, 1e4: 0.2, 1e2: 0.3, 1.0: 0.9, 1e-2: 0.4, 1e-4: 0.1, 1e-6: 0.1}

    def fit(x, y, c, max_iter, tol=1e-4):
        key = min(curve, key=lambda g: abs(math.log10(g) - math.log10(c)))
        return _Predicts(curve[key] if math.isclose(key, c) else {0.1: 0.5, 10.0: 0.6}[round(c, 9)])

    monkeypatch.setattr(lp, "fit_probe", fit)
    x, y = np.zeros((10, 2)), np.zeros(10, dtype=int)
    kept = search_c_lpclip(x, y, x, y, GRID, 1, MAX_ITER)
    assert (kept.c, kept.val_accuracy) == (pytest.approx(10.0), 0.6)
    best = search_c_best_val(x, y, x, y, GRID, 1, MAX_ITER)
    assert (best.c, best.val_accuracy) == (1.0, 0.9)


def test_lpclip_without_bisection_keeps_the_grids_first_best():
    for seed in (0, 3, 4):
        x_tr, y_tr, x_val, y_val = problem(seed)
        res = search_c_lpclip(x_tr, y_tr, x_val, y_val, GRID, 0, MAX_ITER, TOL)
        assert res.c == lpclip_reference(x_tr, y_tr, x_val, y_val, steps=0)
        assert res.c in GRID


def test_l2_best_val_keeps_the_best_over_every_c_tried(chosen):
    for seed in SEEDS:
        c = best_val_reference(*problem(seed))
        assert chosen["l2-best-val"][seed][0] == pytest.approx(c, rel=1e-12), seed


def test_the_two_probes_choose_differently(chosen):
    assert any(not math.isclose(chosen["lpclip"][s][0], chosen["l2-best-val"][s][0]) for s in SEEDS)


def test_on_the_same_features_the_rules_still_part(chosen):
    """On identical (raw) features too: the last round's winner is not always the best C tried."""
    parted = []
    for seed in SEEDS:
        x_tr, y_tr, x_val, y_val = problem(seed)
        best = search_c_best_val(x_tr, y_tr, x_val, y_val, GRID, STEPS, MAX_ITER, TOL)
        c, acc = chosen["lpclip"][seed]
        assert best.val_accuracy >= acc  # the best over all tried is never worse on val
        parted.append(not math.isclose(best.c, c))
    assert any(parted)


@pytest.mark.parametrize("search", [search_c_lpclip, search_c_best_val])
def test_the_kept_model_is_the_fit_of_the_chosen_c(search):
    x_tr, y_tr, x_val, y_val = problem(3)
    result = search(x_tr, y_tr, x_val, y_val, GRID, STEPS, MAX_ITER, TOL)
    with threadpool_limits(limits=1):
        direct = LogisticRegression(C=result.c, max_iter=MAX_ITER, tol=TOL).fit(x_tr, y_tr)
    np.testing.assert_array_equal(result.model.coef_, direct.coef_)
    assert result.val_accuracy == val_accuracy(x_tr, y_tr, x_val, y_val, result.c)


def test_only_the_last_two_models_are_held_and_a_dropped_one_is_fitted_again():
    """One model per C tried would be ~0.9 GB for ImageNet on sd15's features; a chosen C whose model was
    dropped is fitted again, the same model as a direct fit."""
    from tasks.fsc.linear_probe import _Scorer

    x_tr, y_tr, x_val, y_val = problem(1)
    scorer = _Scorer(x_tr, y_tr, x_val, y_val, MAX_ITER, TOL)
    for c in (1e2, 1.0, 1e-2):
        scorer(c)
    assert list(scorer.models) == [1.0, 1e-2] and set(scorer.fits) == {1e2, 1.0, 1e-2}
    again = scorer.result(1e2).model
    with threadpool_limits(limits=1):
        direct = LogisticRegression(C=1e2, max_iter=MAX_ITER, tol=TOL).fit(x_tr, y_tr)
    np.testing.assert_array_equal(again.coef_, direct.coef_)
    assert len(scorer.models) == 2
