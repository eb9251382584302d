"""SBIR metrics against hand-computed rankings (with ties) and against independent computations:
a literal transcription of the VOC recipe (protocols.md §B.2) and scikit-learn's average_precision_score."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from tasks.sbir.metrics import (
    class_average,
    cosine_retrieval,
    grouped_ap,
    per_query_metrics,
    precision_at_k,
    rank,
    voc_ap,
)

# One query of class 1; five gallery photos. Stable ranking by (-score, index): [1, 2, 0, 4, 3].
SCORES = np.array([[0.5, 0.9, 0.9, 0.2, 0.5]])
GALLERY = np.array([1, 0, 1, 1, 0])
QUERY = np.array([1])


def voc_reference(rel_sorted: list[bool], n_relevant: int, k: int | None = None) -> float:
    """The VOC recipe written out step by step, one query at a time (no shared code with metrics.py)."""
    rel = list(rel_sorted)
    if k is not None:
        rel = rel[:k]
        n_relevant = min(k, n_relevant)
    tp = fp = 0
    rec, prec = [], []
    for r in rel:
        tp += r
        fp += not r
        rec.append(tp / n_relevant)
        prec.append(tp / (tp + fp))
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])


def test_ties_are_broken_by_gallery_index():
    assert rank(SCORES).tolist() == [[1, 2, 0, 4, 3]]
    assert rank(np.zeros((1, 4))).tolist() == [[0, 1, 2, 3]]
    coarse = np.round(np.random.default_rng(3).normal(size=(30, 500)), 1)
    assert np.array_equal(rank(coarse), np.argsort(-coarse, axis=1, kind="stable"))


def test_voc_ap_by_hand_with_ties():
    # relevance down the ranking: 0 1 1 0 1, R = 3; precision 0, 1/2, 2/3, 2/4, 3/5
    # envelope at the relevant ranks: 2/3, 2/3, 3/5  ->  AP = (2/3 + 2/3 + 3/5) / 3 = 29/45
    per, _ = per_query_metrics(SCORES, QUERY, GALLERY)
    assert per["ap_all"][0] == pytest.approx(100 * 29 / 45, abs=1e-9)
    assert voc_reference([False, True, True, False, True], 3) == pytest.approx(29 / 45, abs=1e-12)


def test_noninterpolated_ap_by_hand_groups_ties_like_sklearn():
    # tie groups {0.9: 0 1}, {0.5: 1 0}, {0.2: 1}: precision at each group's end 1/2, 2/4, 3/5
    # AP = (1/2 + 1/2 + 3/5) / 3 = 8/15
    per, _ = per_query_metrics(SCORES, QUERY, GALLERY)
    assert per["ap_all_noninterp"][0] == pytest.approx(100 * 8 / 15, abs=1e-9)
    assert average_precision_score(GALLERY == 1, SCORES[0]) == pytest.approx(8 / 15, abs=1e-12)


def test_strict_vs_lenient_map_at_k_by_hand():
    # top 2 = photos 1 (wrong), 2 (right), tied at 0.9; R = 3
    # strict (SAKE/ZSE-SBIR): denominator min(2, 3) = 2, precision 0, 1/2 -> AP = (1/2) / 2 = 1/4
    # lenient (sem-pcyc apsak): sklearn AP on the top 2 only, denominator 1 relevant, one tie group -> 1/2
    per, _ = per_query_metrics(SCORES, QUERY, GALLERY, k=2)
    assert per["ap_200"][0] == pytest.approx(100 * 1 / 4, abs=1e-9)
    assert per["ap_200_lenient"][0] == pytest.approx(100 * 1 / 2, abs=1e-9)
    assert voc_reference([False, True, True, False, True], 3, k=2) == pytest.approx(1 / 4, abs=1e-12)
    # nothing relevant in the top k: both variants score 0
    per, _ = per_query_metrics(np.array([[0.9, 0.8, 0.1]]), np.array([1]), np.array([0, 0, 1]), k=2)
    assert per["ap_200"][0] == 0 and per["ap_200_lenient"][0] == 0


def test_precision_at_k_divides_by_k_when_r_is_smaller():
    # R = 2, both relevant photos ranked first among 10: P@5 = 2/5 (not 2/2), P@100 capped at the gallery: 2/10
    rel = np.zeros((1, 10), dtype=bool)
    rel[0, :2] = True
    assert precision_at_k(rel, 5)[0] == pytest.approx(2 / 5, abs=1e-12)
    assert precision_at_k(rel, 100)[0] == pytest.approx(2 / 10, abs=1e-12)
    assert precision_at_k(np.array([[False, True, True, False, True]]), 2)[0] == pytest.approx(1 / 2, abs=1e-12)


def test_query_vs_class_averaging_on_an_imbalanced_toy():
    # gallery: two photos of class 0 at 0 deg, one of class 1 at 90 deg
    # queries: three class-0 sketches at 0 deg (AP 1 each), one class-1 sketch at 10 deg, which ranks both
    # class-0 photos first (AP = 1/3); query-averaged (1 + 1 + 1 + 1/3) / 4 = 5/6, class-averaged (1 + 1/3) / 2
    gallery = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    g_labels = np.array([0, 0, 1])
    a = np.deg2rad(10)
    queries = np.array([[1.0, 0.0], [3.0, 0.0], [0.5, 0.0], [np.cos(a), np.sin(a)]])
    q_labels = np.array([0, 0, 0, 1])
    summary, per, top = cosine_retrieval(queries, gallery, q_labels, g_labels)
    assert per["ap_all"].tolist() == pytest.approx([100, 100, 100, 100 / 3], abs=1e-9)
    assert summary["map_all"] == pytest.approx(100 * 5 / 6, abs=1e-9)
    assert summary["map_all_class_avg"] == pytest.approx(100 * 2 / 3, abs=1e-9)
    assert top[3].tolist() == [0, 1, 2]
    assert class_average(np.array([1.0, 1.0, 1.0, 0.0]), np.array([0, 0, 0, 1])) == pytest.approx(0.5)


def test_against_sklearn_and_the_literal_voc_recipe_on_random_rankings_with_ties():
    rng = np.random.default_rng(0)
    n_q, n_g, n_cls = 40, 300, 5
    g_labels = rng.integers(0, n_cls, n_g)
    q_labels = rng.integers(0, n_cls, n_q)
    scores = np.round(rng.normal(size=(n_q, n_g)), 1)  # coarse: many ties
    per, top = per_query_metrics(scores, q_labels, g_labels)
    order = rank(scores)
    for i in range(n_q):
        rel = g_labels == q_labels[i]
        assert per["ap_all_noninterp"][i] == pytest.approx(100 * average_precision_score(rel, scores[i]), abs=1e-9)
        rel_sorted = rel[order[i]]
        assert per["ap_all"][i] == pytest.approx(100 * voc_reference(rel_sorted.tolist(), rel.sum()), abs=1e-9)
        assert per["ap_200"][i] == pytest.approx(100 * voc_reference(rel_sorted.tolist(), rel.sum(), 200), abs=1e-9)
        top200 = order[i, :200]
        lenient = average_precision_score(rel[top200], scores[i, top200]) if rel[top200].any() else 0.0
        assert per["ap_200_lenient"][i] == pytest.approx(100 * lenient, abs=1e-9)
        assert per["p_100"][i] == pytest.approx(100 * rel_sorted[:100].sum() / 100, abs=1e-9)
        assert per["p_200"][i] == pytest.approx(100 * rel_sorted[:200].sum() / 200, abs=1e-9)
        assert top[i].tolist() == order[i, :10].tolist()


def test_chunking_does_not_change_anything():
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(23, 8)), rng.normal(size=(57, 8))
    ql, gl = rng.integers(0, 3, 23), rng.integers(0, 3, 57)
    one, per_one, top_one = cosine_retrieval(q, g, ql, gl)
    many, per_many, top_many = cosine_retrieval(q, g, ql, gl, chunk=4)
    assert one == many
    assert np.array_equal(top_one, top_many)
    assert all(np.array_equal(per_one[k], per_many[k]) for k in per_one)


def test_a_query_without_relevant_photos_is_nan_and_skipped():
    ap = voc_ap(np.array([[False, False], [True, False]]), np.array([0, 1]))
    assert np.isnan(ap[0]) and ap[1] == 1.0
    assert grouped_ap(np.array([[False]]), np.array([[0.3]]), np.array([0]))[0] == 0.0
    summary, _, _ = cosine_retrieval(np.eye(2), np.eye(2), np.array([0, 5]), np.array([0, 1]))
    assert summary["map_all"] == 100.0  # query of class 5 has R = 0: NaN, left out of the mean


def sklearn_map(relevance: np.ndarray, scores: np.ndarray) -> float:
    """Mean over queries of scikit-learn's AP, in % (the oracle of the reported `map_all_noninterp`)."""
    return 100 * float(np.mean([average_precision_score(r, s) for r, s in zip(relevance, scores, strict=True)]))


def test_reported_noninterp_map_is_the_mean_sklearn_ap_over_queries_with_ties():
    rng = np.random.default_rng(7)
    n_q, n_g, n_cls = 25, 120, 4
    g_labels = rng.integers(0, n_cls, n_g)
    q_labels = rng.integers(0, n_cls, n_q)
    q_labels[:n_cls] = np.arange(n_cls)
    g_labels[:n_cls] = np.arange(n_cls)  # every query class has a relevant photo
    scores = np.round(rng.normal(size=(n_q, n_g)), 1)
    per, _ = per_query_metrics(scores, q_labels, g_labels)
    relevance = g_labels[None, :] == q_labels[:, None]
    assert per["ap_all_noninterp"].mean() == pytest.approx(sklearn_map(relevance, scores), abs=1e-9)

    # through cosine_retrieval's summary: 0/1 vectors with four ones in eight dimensions have norm exactly 2, so
    # every cosine is an exact multiple of 1/4 (overlap / 4) and ties are exact
    def four_hot(n: int) -> np.ndarray:
        x = np.zeros((n, 8))
        for row in x:
            row[rng.choice(8, 4, replace=False)] = 1.0
        return x

    queries, gallery = four_hot(n_q), four_hot(n_g)
    summary, _, _ = cosine_retrieval(queries, gallery, q_labels, g_labels, chunk=7)
    overlap = (queries @ gallery.T) / 4
    assert len(np.unique(overlap)) <= 5  # heavily tied
    assert summary["map_all_noninterp"] == pytest.approx(sklearn_map(relevance, overlap), abs=1e-9)
    assert summary["map_all_noninterp"] != pytest.approx(summary["map_all"], abs=1e-6)  # a different metric
