"""Retrieval metrics of zero-shot SBIR, as the SAKE / ZSE-SBIR line computes them (protocols.md §B.2).

Every query sketch ranks the whole gallery of unseen-class photos; a photo is relevant iff its class is
the query's. Ranking is a *stable* sort on (-score, gallery index), so ties are broken the same way on
every run and platform (the reference code's plain `argsort` leaves tie order arbitrary).

Per query (R = relevant photos in the gallery):
- `voc_ap` — the VOC-interpolated AP of SAKE `eval_AP_inner`/`VOCap` and ZSE-SBIR `voc_eval`: precision
  made monotone from the right, summed over recall steps. With `k`, the ranking is cut at the top k and the
  denominator is min(k, R) ("strict"): this is the SAKE/ZSE-SBIR mAP@200, the headline `map_200`.
- `grouped_ap` — the non-interpolated AP of scikit-learn's `average_precision_score` (tied scores form one
  threshold). Over the top k only with the relevant-in-top-k denominator it is sem-pcyc's `apsak`, the
  "lenient" mAP@200 of the Doodle2Search lineage.
- `precision_at_k` — relevant in the top K / K, K capped at the gallery size (SAKE `eval_precision`,
  sem-pcyc `prec`; not ZSE-SBIR's min(K, R) denominator).
Averages: over queries (the field's standard, NaN-skipping as ZSE-SBIR's `nanmean`), and per class then
over classes (what the Vermouth code reports), named `*_class_avg`.

Everything is vectorised over a chunk of queries, so a 15k x 17k score matrix never sits in memory.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from harness.api import ItemSE

TOPK = 200  # the K of mAP@K
PRECISION_KS = (100, 200)
CHUNK_ELEMENTS = 4_000_000  # query x gallery scores per block (~32 MB per float64 array)
N_TOP = 10  # ranked gallery indices kept per query (for the qualitative grid)
# Column names of the per-query table (`per_query_metrics`), in %.
PER_QUERY = ("ap_all", "ap_200", "ap_all_noninterp", "ap_200_lenient", "p_100", "p_200")


def rank(scores: np.ndarray) -> np.ndarray:
    """Gallery indices per query row, best first; ties keep gallery order (a stable sort on -score).

    The fast unstable sort is used first and only rows that hold a tie are re-sorted stably, which gives
    the same order as a stable sort of every row at a quarter of the cost.
    """
    neg = -np.asarray(scores, dtype=np.float64)
    order = np.argsort(neg, axis=1)
    ranked = np.take_along_axis(neg, order, axis=1)
    tied = (ranked[:, 1:] == ranked[:, :-1]).any(axis=1)
    if tied.any():
        order[tied] = np.argsort(neg[tied], axis=1, kind="stable")
    return order


def voc_ap(rel_sorted: np.ndarray, n_relevant: np.ndarray, k: int | None = None) -> np.ndarray:
    """VOC-interpolated AP of each row of a ranked 0/1 relevance matrix [Q, G].

    `k` cuts the ranking at the top k and uses min(k, R) as the recall denominator (SAKE/ZSE-SBIR mAP@k).
    A row with R = 0 is NaN (recall undefined), as in the reference code.
    """
    rel = np.asarray(rel_sorted, dtype=bool)
    n_rel = np.asarray(n_relevant, dtype=np.float64)
    if k is not None:
        k = min(k, rel.shape[1])
        rel = rel[:, :k]
        n_rel = np.minimum(n_rel, k)
    tp = np.cumsum(rel, axis=1, dtype=np.float64)
    precision = tp / np.arange(1, rel.shape[1] + 1)
    # The envelope at a relevant rank is the best precision at that rank or below it; precision only
    # rises at relevant ranks, so the maximum over the relevant ranks from the right is enough.
    envelope = np.maximum.accumulate(np.where(rel, precision, 0.0)[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, (envelope * rel).sum(axis=1) / n_rel, np.nan)


def grouped_ap(rel_sorted: np.ndarray, scores_sorted: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Non-interpolated AP with tied scores grouped as one threshold (scikit-learn's definition).

    Each relevant item adds precision-at-the-end-of-its-tie-group / denominator. With denominator = R over
    the full ranking this equals `sklearn.metrics.average_precision_score`; rows whose denominator is 0
    score 0 (sem-pcyc's convention for a top-k list without a relevant item).
    """
    rel = np.asarray(rel_sorted, dtype=bool)
    s = np.asarray(scores_sorted, dtype=np.float64)
    n = rel.shape[1]
    if n == 0:
        return np.zeros(rel.shape[0])
    tp = np.cumsum(rel, axis=1, dtype=np.float64)
    is_end = np.ones_like(rel)
    is_end[:, :-1] = s[:, :-1] != s[:, 1:]
    end_at = np.where(is_end, np.arange(n), n)
    group_end = np.minimum.accumulate(end_at[:, ::-1], axis=1)[:, ::-1]
    precision_end = np.take_along_axis(tp, group_end, axis=1) / (group_end + 1)
    denom = np.asarray(denominator, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (precision_end * rel).sum(axis=1) / denom, 0.0)


def precision_at_k(rel_sorted: np.ndarray, k: int) -> np.ndarray:
    """Relevant items in the top k divided by k (k capped at the gallery size)."""
    k = min(k, rel_sorted.shape[1])
    return np.asarray(rel_sorted[:, :k], dtype=np.float64).sum(axis=1) / k


def per_query_metrics(scores: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                      k: int = TOPK) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-query metrics in % for a [Q, G] score block (higher = more similar), and the top-10 indices."""
    scores = np.asarray(scores, dtype=np.float64)
    q = np.asarray(query_labels)
    g = np.asarray(gallery_labels)
    order = rank(scores)
    rel = g[order] == q[:, None]
    s_sorted = np.take_along_axis(scores, order, axis=1)
    n_rel = (g[None, :] == q[:, None]).sum(axis=1)
    kk = min(k, scores.shape[1])
    out = {
        "ap_all": voc_ap(rel, n_rel),
        "ap_200": voc_ap(rel, n_rel, k),
        "ap_all_noninterp": grouped_ap(rel, s_sorted, n_rel),
        "ap_200_lenient": grouped_ap(rel[:, :kk], s_sorted[:, :kk], rel[:, :kk].sum(axis=1)),
        "p_100": precision_at_k(rel, PRECISION_KS[0]),
        "p_200": precision_at_k(rel, PRECISION_KS[1]),
    }
    return {name: 100 * v for name, v in out.items()}, order[:, :N_TOP]


def class_means(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The NaN-skipping mean of each class's values, classes in label order (NaN for a class with none)."""
    labels = np.asarray(labels)
    return np.array([_mean(values[labels == c]) for c in np.unique(labels)], dtype=np.float64)


def class_average(values: np.ndarray, labels: np.ndarray) -> float:
    """Mean within each class, then mean over classes (NaN queries skipped), as the Vermouth code reports."""
    return _mean(class_means(values, labels))


# Summary metric → the per-query column it averages (the query-averaged headline metrics).
QUERY_AVERAGED = {"map_all": "ap_all", "map_200": "ap_200", "p_100": "p_100", "p_200": "p_200",
                  "map_all_noninterp": "ap_all_noninterp"}


def item_standard_errors(per_query: dict[str, np.ndarray], query_labels: np.ndarray) -> dict[str, ItemSE]:
    """Item-level SE of each reported metric: the queries are the items of a query-averaged metric (std of
    the valid per-query values / sqrt(their number)); the classes are the items of `map_all_class_avg`
    (a mean of per-class means). A metric with fewer than two valid items has none."""
    out = {name: ItemSE.of_mean(per_query[col]) for name, col in QUERY_AVERAGED.items()}
    out["map_all_class_avg"] = ItemSE.of_mean(class_means(per_query["ap_all"], query_labels))
    return {name: se for name, se in out.items() if se is not None}


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def cosine_retrieval(queries: np.ndarray, gallery: np.ndarray, query_labels: np.ndarray,
                     gallery_labels: np.ndarray, chunk: int | None = None
                     ) -> tuple[dict[str, float], dict[str, np.ndarray], np.ndarray]:
    """Rank the gallery by cosine similarity for each query (both L2-normalised here) and score it.

    Returns (summary metrics in %, per-query metrics in %, top-10 gallery indices per query). Summary keys:
    map_all, map_200 (strict, SAKE/ZSE-SBIR), p_100, p_200, map_all_noninterp (sklearn AP),
    map_200_lenient (sem-pcyc apsak), map_all_class_avg (Vermouth's averaging), all query-averaged
    except the last.
    """
    qn = _normalise(queries)
    gn = _normalise(gallery)
    ql = np.asarray(query_labels)
    gl = np.asarray(gallery_labels)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in PER_QUERY}
    tops = []
    chunk = chunk or max(1, CHUNK_ELEMENTS // max(1, len(gn)))
    for sl in _chunks(len(qn), chunk):
        per, top = per_query_metrics(qn[sl] @ gn.T, ql[sl], gl)
        for name in PER_QUERY:
            parts[name].append(per[name])
        tops.append(top)
    per_query = {name: np.concatenate(v) if v else np.zeros(0) for name, v in parts.items()}
    summary = {
        "map_all": _mean(per_query["ap_all"]),
        "map_200": _mean(per_query["ap_200"]),
        "p_100": _mean(per_query["p_100"]),
        "p_200": _mean(per_query["p_200"]),
        "map_all_noninterp": _mean(per_query["ap_all_noninterp"]),
        "map_200_lenient": _mean(per_query["ap_200_lenient"]),
        "map_all_class_avg": class_average(per_query["ap_all"], ql),
    }
    top = np.concatenate(tops) if tops else np.zeros((0, N_TOP), dtype=np.int64)
    return summary, per_query, top


def _mean(values: np.ndarray) -> float:
    """NaN-skipping mean; NaN (without a warning) when nothing is left."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
