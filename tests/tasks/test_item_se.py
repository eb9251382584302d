"""Item-level standard errors the tasks report, against hand computations and numpy."""

import math

import numpy as np
import pytest

from harness.api import ItemSE, JobContext
from harness.config import BackboneConfig
from harness.plan.planner import open_dataset
from tasks.fsc.task import FewShotClassification, FSCProtocol
from tasks.sbir.metrics import cosine_retrieval, item_standard_errors


def test_binomial_se_by_hand():
    assert ItemSE.of_proportion(50.0, 100) == ItemSE(5.0, 100, binomial=True)  # 100·sqrt(.5·.5/100)
    assert ItemSE.of_proportion(90.0, 400).se == pytest.approx(1.5)  # 100·sqrt(.9·.1/400) = 100·0.015
    assert ItemSE.of_proportion(100.0, 7).se == 0.0


def test_mean_se_skips_nan_and_needs_two_items():
    assert ItemSE.of_mean([10.0, 20.0, np.nan, 40.0]) == ItemSE(
        pytest.approx(float(np.std([10.0, 20.0, 40.0], ddof=1)) / math.sqrt(3)), 3)
    assert ItemSE.of_mean([1.0, np.nan]) is None


def test_sbir_item_se_against_numpy_on_a_tiny_case():
    per_query = {"ap_all": np.array([10.0, 20.0, np.nan, 40.0]), "ap_200": np.array([1.0, 2.0, 3.0, 4.0]),
                 "p_100": np.array([5.0, 5.0, 5.0, 5.0]), "p_200": np.array([0.0, 100.0, 0.0, 100.0]),
                 "ap_all_noninterp": np.array([0.0, 50.0, 100.0, 50.0])}
    labels = np.array([0, 0, 1, 1])
    se = item_standard_errors(per_query, labels)
    assert se["map_all"].se == pytest.approx(np.nanstd(per_query["ap_all"], ddof=1) / math.sqrt(3))
    assert se["map_all"].n == 3 and not se["map_all"].binomial
    assert se["map_200"].se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert se["p_100"].se == 0.0
    assert se["p_200"].se == pytest.approx(np.std([0, 100, 0, 100], ddof=1) / 2)
    # mean 50, deviations -50, 0, 50, 0: variance 5000/3, SE sqrt(5000/3)/2
    assert se["map_all_noninterp"].se == pytest.approx(math.sqrt(5000 / 3) / 2) and se["map_all_noninterp"].n == 4
    # class means 15 and 40 (the NaN query skipped): std 25/√2 over √2 classes = 12.5
    assert (se["map_all_class_avg"].se, se["map_all_class_avg"].n) == (pytest.approx(12.5), 2)


def test_sbir_item_se_matches_the_per_query_values_of_a_retrieval():
    rng = np.random.default_rng(0)
    q_labels, g_labels = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 2, 0, 1, 2, 0])
    summary, per_query, _ = cosine_retrieval(rng.normal(size=(5, 4)), rng.normal(size=(7, 4)), q_labels, g_labels)
    se = item_standard_errors(per_query, q_labels)
    for metric, column in (("map_all", "ap_all"), ("map_200", "ap_200"), ("p_100", "p_100"), ("p_200", "p_200"),
                           ("map_all_noninterp", "ap_all_noninterp")):
        values = per_query[column]
        assert summary[metric] == pytest.approx(values.mean())
        assert se[metric].se == pytest.approx(values.std(ddof=1) / math.sqrt(5)) and se[metric].n == 5
    means = [per_query["ap_all"][q_labels == c].mean() for c in (0, 1, 2)]
    assert se["map_all_class_avg"].se == pytest.approx(np.std(means, ddof=1) / math.sqrt(3))


def test_fsc_reports_the_binomial_se_of_top1_over_the_test_images(tmp_path):
    from backbones.resnet import ResNetBackbone

    backbone = ResNetBackbone(BackboneConfig(name="resnet", variant="tiny", batch_size=64))
    result = FewShotClassification().evaluate(backbone, open_dataset("mini_coop"), FSCProtocol(shots=1, seed=1),
                                              JobContext(tmp_path))
    top1, n = result.metrics["top1"], result.details["n_test"]
    assert result.item_se["top1"] == ItemSE(pytest.approx(100 * math.sqrt(top1 / 100 * (1 - top1 / 100) / n)), n,
                                            binomial=True)
