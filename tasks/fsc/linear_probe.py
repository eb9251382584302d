"""The CLIP / CoOp linear-probe head: L2-normalised frozen features, logistic regression, C chosen on val.

C search as CoOp's `lpclip`: a coarse grid scored on the few-shot val split, then a log-space
bisection around the best value. Nothing is ever selected on the test split.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits


@dataclass
class ProbeResult:
    c: float
    val_accuracy: float
    model: LogisticRegression


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, in float64 (the precision the L-BFGS probe fits in anyway): a float32 norm
    is a SIMD reduction whose last bits depend on the CPU."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def fit_probe(x: np.ndarray, y: np.ndarray, c: float, max_iter: int, tol: float = 1e-4) -> LogisticRegression:
    """L-BFGS logistic regression. `tol` is where L-BFGS stops (sklearn's and lpclip's 1e-4 by default): a fit
    stopped early sits wherever the rounding of the BLAS kernels led it, so val/test predictions near the
    boundary differ between CPUs; a tight `tol` (the mini suite's 1e-8) solves to the unique optimum instead."""
    # Few-shot problems are small: BLAS threads cost more in synchronisation than they save (10x here).
    threads = 1 if x.size < 4_000_000 else None
    with warnings.catch_warnings(), threadpool_limits(limits=threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=max_iter, tol=tol, solver="lbfgs").fit(x, y)


def search_c(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             grid: list[float], steps: int, max_iter: int, tol: float = 1e-4) -> ProbeResult:
    """Best C on val: the coarse grid first, then `steps` rounds of bisection in log10(C)."""
    cache: dict[float, tuple[float, LogisticRegression]] = {}

    def score(c: float) -> float:
        if c not in cache:
            model = fit_probe(x_train, y_train, c, max_iter, tol)
            cache[c] = (float((model.predict(x_val) == y_val).mean()), model)
        return cache[c][0]

    scores = [score(c) for c in grid]
    best = grid[int(np.argmax(scores))]  # first best: ties go to the earlier grid value
    lo, hi = math.log10(best) - 1.0, math.log10(best) + 1.0
    for _ in range(steps):
        c_lo, c_hi = 10.0**lo, 10.0**hi
        if score(c_lo) < score(c_hi):
            lo = (lo + hi) / 2
        else:
            hi = (lo + hi) / 2
    best_c = max(cache, key=lambda c: (cache[c][0], -abs(math.log10(c) - math.log10(best))))
    return ProbeResult(c=best_c, val_accuracy=cache[best_c][0], model=cache[best_c][1])
