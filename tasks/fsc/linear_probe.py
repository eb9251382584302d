"""The linear-probe head: frozen features, L-BFGS logistic regression, C chosen on the few-shot val.

Two C-selection rules (`FSCProtocol.probe`), both scored on the few-shot val only, never on test:
- "lpclip" (the default): CoOp's `lpclip/linear_probe.py` (KaiyangZhou/CoOp ff61507). RAW features; the coarse
  grid's first best C (the peak), then `steps` rounds of bisection on [peak / 10, peak * 10]: each round fits
  both ends, moves to the half (in log10 C) of the end that scores strictly higher on val (a tie goes left), and
  its winner is that end. The LAST round's winner is kept, not the best C seen.
- "l2-best-val": L2-normalised features, the same grid and bisection, and the best val accuracy over every C
  tried is kept (ties: the C nearest the grid's peak in log10). The harness's rule up to FSC task version 1.
Both fit in float64 (the stored features widened exactly), as lpclip does (its features reach sklearn as float64
arrays via `.tolist()` and `np.savez`); float32 reductions would differ in their last bits between CPUs.
Departure from lpclip: the K-shot train and few-shot val are the harness's Dassl-order draws (tasks/fsc/sampling.py;
ImageNet's val from train, never its test images), not lpclip's own `np.random` draw.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
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


def raw_features(x: np.ndarray) -> np.ndarray:
    """lpclip's input: the features as they are, only widened to float64 (exact; the fit's precision)."""
    return np.asarray(x, dtype=np.float64)


def fit_probe(x: np.ndarray, y: np.ndarray, c: float, max_iter: int, tol: float = 1e-4) -> LogisticRegression:
    """L-BFGS logistic regression. `tol` is where L-BFGS stops (sklearn's and lpclip's 1e-4 by default): a fit
    stopped early sits wherever the rounding of the BLAS kernels led it, so val/test predictions near the
    boundary differ between CPUs; a tight `tol` (the mini suite's 1e-8) solves to the unique optimum instead."""
    # Few-shot problems are small: BLAS threads cost more in synchronisation than they save (10x here).
    threads = 1 if x.size < 4_000_000 else None
    with warnings.catch_warnings(), threadpool_limits(limits=threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=max_iter, tol=tol, solver="lbfgs").fit(x, y)


class _Scorer:
    """Fits on train and scores on val once per C (fits are deterministic, so a repeated C is the same fit).

    Only the last `KEPT_MODELS` fitted models are held (lpclip keeps one of its last step's two; ImageNet on
    4,800-d features makes each model ~38 MB); a chosen C whose model was dropped is fitted again, identically.
    """

    KEPT_MODELS = 2

    def __init__(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                 max_iter: int, tol: float):
        self.data, self.max_iter, self.tol = (x_train, y_train, x_val, y_val), max_iter, tol
        self.fits: dict[float, float] = {}  # C → val accuracy
        self.models: dict[float, LogisticRegression] = {}  # the last KEPT_MODELS fits, oldest first

    def _fit(self, c: float) -> LogisticRegression:
        x_train, y_train, _, _ = self.data
        model = fit_probe(x_train, y_train, c, self.max_iter, self.tol)
        self.models[c] = model
        while len(self.models) > self.KEPT_MODELS:
            del self.models[next(iter(self.models))]
        return model

    def __call__(self, c: float) -> float:
        if c not in self.fits:
            _, _, x_val, y_val = self.data
            self.fits[c] = float((self._fit(c).predict(x_val) == y_val).mean())
        return self.fits[c]

    def result(self, c: float) -> ProbeResult:
        model = self.models[c] if c in self.models else self._fit(c)
        return ProbeResult(c=c, val_accuracy=self.fits[c], model=model)

    def grid_peak(self, grid: list[float]) -> float:
        """The grid's first best C (numpy argmax: ties go to the earlier grid value, as lpclip)."""
        return grid[int(np.argmax([self(c) for c in grid]))]


def search_c_lpclip(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                    grid: list[float], steps: int, max_iter: int, tol: float = 1e-4) -> ProbeResult:
    """lpclip's rule (module docstring): the last bisection round's winner; with no round, the grid's peak."""
    score = _Scorer(x_train, y_train, x_val, y_val, max_iter, tol)
    winner = peak = score.grid_peak(grid)
    c_left, c_right = 0.1 * peak, 10.0 * peak  # lpclip's arithmetic: 1e-1 * peak, 1e1 * peak
    for _ in range(steps):
        mid = 0.5 * (math.log10(c_right) + math.log10(c_left))
        if score(c_left) < score(c_right):
            winner, log_left, log_right = c_right, mid, math.log10(c_right)
        else:
            winner, log_left, log_right = c_left, math.log10(c_left), mid
        c_left, c_right = 10.0**log_left, 10.0**log_right
    return score.result(winner)


def search_c_best_val(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                      grid: list[float], steps: int, max_iter: int, tol: float = 1e-4) -> ProbeResult:
    """The best val accuracy over every C tried (the grid, then `steps` rounds of bisection in log10 C)."""
    score = _Scorer(x_train, y_train, x_val, y_val, max_iter, tol)
    peak = score.grid_peak(grid)
    lo, hi = math.log10(peak) - 1.0, math.log10(peak) + 1.0
    for _ in range(steps):
        if score(10.0**lo) < score(10.0**hi):
            lo = (lo + hi) / 2
        else:
            hi = (lo + hi) / 2
    best_c = max(score.fits, key=lambda c: (score.fits[c], -abs(math.log10(c) - math.log10(peak))))
    return score.result(best_c)


Transform = Callable[[np.ndarray], np.ndarray]
Search = Callable[..., ProbeResult]


def probe_parts(probe: str) -> tuple[Transform, Search]:
    """A probe's feature transform (train, val and test alike) and C search, looked up when called (a patched
    module function is seen)."""
    return {"lpclip": (raw_features, search_c_lpclip), "l2-best-val": (l2_normalise, search_c_best_val)}[probe]
