"""Deliberate breakages of the protocol, each a monkeypatch applied inside a real `harness` process.

`python -c "import breakages; breakages.main()" NAME run ...` applies breakage NAME, then runs the harness CLI
with the remaining arguments, so the broken code goes through the same planner, executor, MLflow and
leaderboard as a user's run. Each breakage is a plausible bug that keeps every job running to the end; CI's
gate (`harness compare` against the committed mini baseline) must catch each one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np


def probe_max_iter_1() -> None:
    """The linear probe's L-BFGS stops after one iteration."""
    import tasks.fsc.linear_probe as lp

    fit = lp.fit_probe
    lp.fit_probe = lambda x, y, c, max_iter, tol=1e-4: fit(x, y, c, 1, tol)


def dense_level_dropped() -> None:
    """ResNet hands on three of its four stages (the finest, stride 4, is lost)."""
    from backbones.resnet import ResNetBackbone
    from backbones.timm_backbone import TimmBackbone

    forward = ResNetBackbone._forward_dense

    def three_levels(self: TimmBackbone, x, with_last):
        last, maps = forward(self, x, with_last)
        maps.pop(list(maps)[0])
        return last, maps

    ResNetBackbone._forward_dense = three_levels


def features_not_l2_normalised() -> None:
    """The linear probe fits raw features where its protocol says L2-normalised ones."""
    import tasks.fsc.linear_probe as lp
    import tasks.fsc.task as fsc

    raw: Callable[[np.ndarray], np.ndarray] = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
    lp.l2_normalise = raw
    fsc.l2_normalise = raw


def ovss_wrong_ignore_index() -> None:
    """Scoring treats label 0 as the ignore label (void pixels folded into it): class 0 is never scored."""
    from tasks.ovss.metrics import ConfusionMatrix

    update = ConfusionMatrix.update

    def wrong(self: ConfusionMatrix, pred, gt, ignore_index: int) -> None:
        gt = np.where(np.asarray(gt) == ignore_index, 0, gt)
        update(self, pred, gt, 0)

    ConfusionMatrix.update = wrong


def sbir_query_gallery_swapped() -> None:
    """The reader hands the unseen photos out as queries and the unseen sketches as the gallery."""
    from tasks.sbir.datasets import SBIRDataset

    splits = SBIRDataset.splits

    def swapped(self: SBIRDataset):
        out = dict(splits(self))
        out["sketch_zero"], out["photo_zero"] = out["photo_zero"], out["sketch_zero"]
        return out

    SBIRDataset.splits = swapped


BREAKAGES: dict[str, Callable[[], None]] = {f.__name__: f for f in (
    probe_max_iter_1, dense_level_dropped, features_not_l2_normalised, ovss_wrong_ignore_index,
    sbir_query_gallery_swapped)}


def main() -> None:
    name = sys.argv.pop(1)
    BREAKAGES[name]()
    from harness.cli import main as cli

    cli()
