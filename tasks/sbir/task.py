"""Zero-shot SBIR: one protocol for every backbone (vermouth-method.md §6.2, §11.7; protocols.md §B).

Train the backbone's neck (Vermouth's U-head) — or, for a plain backbone, a linear projection of its frozen
global features — into a fixed text space on the *seen* classes only, sketches and photos together, with
cross-entropy of cosine × scale against the seen classes' text anchors. Then embed the unseen-class
sketches (queries) and photos (gallery) with that embedder and rank the gallery by cosine similarity.
The scale is a protocol value; `vermouth` names the paper's effective value ln(100)/0.2 ≈ 23.03 (its code
multiplied by the log of CLIP's scale), `clip` CLIP's 100.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator

from harness.api import Backbone, ImageItem, JobContext, Result, StrictModel, Task
from harness.catalog import register_task
from harness.config import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_SEED
from harness.data.features import FeatureSet
from harness.errors import ConfigError, HarnessError
from harness.numerics import head_dtype, text_precision
from tasks.sbir.datasets import SBIRDataset, normalise_name
from tasks.sbir.grid import pick_queries, render_grid
from tasks.sbir.metrics import cosine_retrieval, item_standard_errors

SCALE_PRESETS: dict[str, float] = {"vermouth": 4.6052 / 0.2, "clip": 100.0}
GRID_FILE = "sbir_top10.png"


class SBIRProtocol(StrictModel):
    """One protocol point (defaults: the Vermouth recipe, trained for more than its single epoch)."""

    seed: int = Field(1, ge=0, le=MAX_SEED,
                      description="seeds the head init, the training shuffle and the per-class cap")
    text_space: str = Field("clip:vit-l-14", description="text tower of the class anchors, '<backbone>:<variant>'")
    templates: list[str] | None = Field(None, min_length=1, description="anchor prompts; None = the dataset's")
    epochs: int = Field(5, ge=1, le=MAX_EPOCHS)
    train_batch_size: int = Field(64, ge=1, le=MAX_BATCH_SIZE)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    scale: float = Field(SCALE_PRESETS["vermouth"], gt=0,
                         description=f"logit scale on the cosine; a number or a preset: {sorted(SCALE_PRESETS)}")
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm; None = no clipping (the paper)")
    max_train_per_class: int | None = Field(None, ge=1, description="cap per class and domain; None = all")
    n_qualitative: int = Field(6, ge=0, description="query sketches shown in the top-10 grid artifact")

    @field_validator("scale", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.replace(".", "", 1).isdigit():
            if value not in SCALE_PRESETS:
                raise ValueError(f"unknown scale preset '{value}'; presets: {', '.join(sorted(SCALE_PRESETS))}")
            return SCALE_PRESETS[value]
        return value


def training_items(dataset: SBIRDataset, max_per_class: int | None, seed: int) -> list[ImageItem]:
    """Seen-class sketches then photos, optionally capped per (domain, class) by a seeded draw, list order kept."""
    splits = dataset.splits()
    items: list[ImageItem] = []
    rng = np.random.default_rng(seed)
    for key in ("sketch_train", "photo_train"):
        part = splits[key]
        if max_per_class is None:
            items += part
            continue
        labels = np.array([it.label for it in part])
        keep: list[int] = []
        for label in np.unique(labels):
            idx = np.flatnonzero(labels == label)
            if len(idx) > max_per_class:
                idx = rng.choice(idx, max_per_class, replace=False)
            keep += idx.tolist()
        items += [part[i] for i in sorted(keep)]
    check_no_unseen(items, dataset)
    return items


def check_no_unseen(items: list[ImageItem], dataset: SBIRDataset) -> None:
    """Raise if any training item belongs to an unseen class (by label or by name): zero-shot means zero."""
    n_seen = len(dataset.seen_classnames())
    unseen = {normalise_name(c) for c in dataset.unseen_classnames()}
    leaked = sorted({it.classname for it in items if it.label >= n_seen or normalise_name(it.classname) in unseen})
    if leaked:
        raise HarnessError(f"dataset '{dataset.name}': unseen classes reached training: {', '.join(leaked[:10])}")


@register_task("sbir")
class ZeroShotSBIR(Task):
    name = "sbir"
    version = "2"  # v2: map_all_noninterp reported (v1 computed it but did not report it)
    description = "zero-shot SBIR: neck/projection trained to text anchors on seen classes, cosine retrieval"
    protocol_model = SBIRProtocol
    column_keys: ClassVar[tuple[str, ...]] = ()
    primary_metric = "map_all"
    # What the field's tables print (ZSE-SBIR's test.py: all four), Vermouth's class-averaged number, and the
    # non-interpolated (scikit-learn) mAP of the Doodle2Search / QuickDraw-Extended lineage.
    report_metrics: ClassVar[tuple[str, ...]] = ("map_all", "map_200", "p_100", "p_200", "map_all_class_avg",
                                                 "map_all_noninterp")

    def evaluate(self, backbone: Backbone, dataset: SBIRDataset, protocol: SBIRProtocol, ctx: JobContext) -> Result:
        import torch

        from harness.data.text_space import text_space
        from tasks.text_head import TrainSettings, in_batches, train_text_classifier

        if not isinstance(dataset, SBIRDataset):
            raise ConfigError(f"task 'sbir' needs an SBIR dataset, got '{dataset.name}'")
        splits = dataset.splits()
        seen, unseen = dataset.seen_classnames(), dataset.unseen_classnames()
        train = ctx.limited(training_items(dataset, protocol.max_train_per_class, protocol.seed))
        queries, gallery = ctx.limited(splits["sketch_zero"]), ctx.limited(splits["photo_zero"])

        space = text_space(protocol.text_space, dtype=text_precision(backbone))
        templates = protocol.templates or list(dataset.templates)
        anchors = space.class_embeddings(seen, templates)  # seen classes only: the unseen names never train
        neck = self._neck(backbone, protocol.seed)

        kind = "dense" if neck is not None else "global"
        sets: dict[str, FeatureSet] = {}

        def features(role: str, items: list[ImageItem]) -> FeatureSet:
            sets[role] = FeatureSet(backbone, dataset, items, ctx, kind)
            return sets[role]

        x_train = features("train", train).prepare()  # stored when it fits the budget, else recomputed
        y_train = torch.tensor([it.label for it in train])
        assert int(y_train.max()) < len(seen), "a training label is outside the seen classes"
        settings = TrainSettings(epochs=protocol.epochs, batch_size=protocol.train_batch_size, lr=protocol.lr,
                                 weight_decay=protocol.weight_decay, temperature=1.0 / protocol.scale,
                                 grad_clip=protocol.grad_clip or float("inf"), seed=protocol.seed,
                                 dtype=head_dtype(backbone))
        model, losses = train_text_classifier(x_train, y_train, anchors, neck, settings)
        del x_train

        @torch.no_grad()
        def embed(role: str, items: list[ImageItem], batch: int = 256) -> np.ndarray:
            """Embeddings only (D numbers per image): the frozen features stream through the trained embedder.
            L2-normalised in the head's dtype (float64 for `fp64` jobs), so scores are computed at that precision."""
            return torch.cat([model.embedding(x) for x in in_batches(features(role, items), batch)]).numpy()

        q_labels = np.array([it.label for it in queries])
        g_labels = np.array([it.label for it in gallery])
        summary, per_query, top = cosine_retrieval(embed("queries", queries), embed("gallery", gallery),
                                                   q_labels, g_labels)
        for fs in sets.values():
            fs.finish()

        rows = pick_queries(len(queries), protocol.n_qualitative)
        artifacts = {}
        if rows:
            grid = render_grid(rows, queries, gallery, top, dataset.load_image, ctx.workdir / GRID_FILE)
            artifacts["qualitative"] = grid
        per_class = {unseen[c - len(seen)]: float(np.nanmean(per_query["ap_all"][q_labels == c]))
                     for c in np.unique(q_labels)}
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        details = {
            "n_seen_classes": len(seen), "n_unseen_classes": len(unseen),
            "n_train_sketches": len({it.path for it in train} & {it.path for it in splits["sketch_train"]}),
            "n_train": len(train), "n_queries": len(queries), "n_gallery": len(gallery),
            "published_counts": list(dataset.published_counts) if dataset.published_counts else None,
            "matches_published_counts": (None if dataset.published_counts is None
                                         else (len(queries), len(gallery)) == tuple(dataset.published_counts)),
            "split_dir": dataset.split_dir(), "templates": templates, "scale": protocol.scale,
            "text_space": space.spec, "text_space_fingerprint": space.fingerprint, "uses_neck": neck is not None,
            "trainable_params": trainable, "loss_per_epoch": losses,
            "feature_modes": {role: fs.mode for role, fs in sets.items()},
            "ap_all_per_class": per_class,
            "metric_notes": "in %; map_all/map_200 = VOC-interpolated AP (SAKE/ZSE-SBIR), map_200 strict "
                            "denominator min(200, R); map_all_noninterp = sklearn average_precision_score "
                            "(tied scores one threshold; Doodle2Search); p_K = hits in top K / K; "
                            "query-averaged except map_all_class_avg (Vermouth); ties broken by gallery index "
                            "(stable sort)",
            "qualitative_queries": [queries[r].path for r in rows],
        }
        metrics = {**summary, "final_loss": losses[-1]}
        return Result(metrics=metrics, details=details, artifacts=artifacts,
                      item_se=item_standard_errors(per_query, q_labels))

    @staticmethod
    def _neck(backbone: Backbone, seed: int):
        """The backbone's trainable neck, seeded by the protocol seed where the backbone takes one."""
        params = inspect.signature(backbone.neck).parameters
        return backbone.neck(seed=seed) if "seed" in params else backbone.neck()
