"""Few-shot classification: K-shot support per class (seeded, persisted), a head trained on it, top-1
(micro) accuracy on the full test split. The protocol belongs to the task, so every backbone gets the
same one; nothing is ever selected on the test split.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from harness.api import Backbone, ClassificationDataset, ImageItem, ItemSE, JobContext, Result, StrictModel, Task
from harness.catalog import register_task
from harness.config import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_ITERATIONS, MAX_SEED
from harness.data.features import FeatureSet
from harness.numerics import head_dtype, text_precision
from harness.paths import harness_home
from tasks.fsc.linear_probe import probe_parts
from tasks.fsc.sampling import load_or_create_fewshot

COARSE_C_GRID = [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]  # CoOp lpclip's grid
MAX_SHOTS = 100_000  # above any class of any suite dataset; a typo'd 10**400 stops at planning
LINEAR_PROBE_KEYS = {"probe": "lpclip", "c_grid": COARSE_C_GRID, "c_search_steps": 8, "max_iter": 1000, "tol": 1e-4}
TEXT_CLASSIFIER_KEYS = {"text_space": "clip:vit-l-14", "template_set": "method", "epochs": 100, "train_batch_size": 64,
                        "lr": 1e-4, "weight_decay": 5e-4, "temperature": 0.2, "grad_clip": 1.0}
PositiveC = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class FSCProtocol(StrictModel):
    """One protocol point. Keys of the head not chosen are None, so they never change a job's key."""

    shots: int = Field(16, ge=1, le=MAX_SHOTS, description="K images per class sampled from train")
    seed: int = Field(1, ge=0, le=MAX_SEED,
                      description="seeds the K-shot (and few-shot val) sampling and head training")
    head: Literal["linear-probe", "text-classifier"] = "linear-probe"
    # linear-probe: C from a coarse grid + log-space bisection, scored on the few-shot val (tasks/fsc/linear_probe.py)
    probe: Literal["lpclip", "l2-best-val"] | None = Field(
        None, description="lpclip: CoOp's rule (raw features, the last bisection round's winner); l2-best-val: "
                          "L2-normalised features, the best val accuracy over every C tried")
    c_grid: list[PositiveC] | None = Field(None, min_length=1)
    c_search_steps: int | None = Field(None, ge=0)
    max_iter: int | None = Field(None, ge=1, le=MAX_ITERATIONS)
    tol: float | None = Field(None, gt=0, description="L-BFGS stopping tolerance (sklearn/lpclip: 1e-4)")
    # text-classifier (Vermouth): neck or linear projection → cosine vs text embeddings, CE(cos / T)
    text_space: str | None = None
    template_set: Literal["method", "coop"] | None = Field(
        None, description="method: the method's per-dataset prompt set (tasks/fsc/templates.json, Vermouth); "
                          "coop: CoOp's one CUSTOM_TEMPLATES prompt")
    epochs: int | None = Field(None, ge=1, le=MAX_EPOCHS)
    train_batch_size: int | None = Field(None, ge=1, le=MAX_BATCH_SIZE)
    lr: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    temperature: float | None = Field(None, gt=0)
    grad_clip: float | None = Field(None, gt=0)

    @model_validator(mode="wrap")
    @classmethod
    def _head_defaults(cls, data: Any, handler: Any) -> FSCProtocol:
        """The chosen head's defaults fill in; every value given is validated, the other head's too (a suite
        shared by both heads must not hide a typo), then the other head's keys are cleared."""
        if not isinstance(data, dict):
            return handler(data)
        head = data.get("head", "linear-probe")
        mine, other = ((LINEAR_PROBE_KEYS, TEXT_CLASSIFIER_KEYS) if head == "linear-probe"
                       else (TEXT_CLASSIFIER_KEYS, LINEAR_PROBE_KEYS))
        filled = {**{k: (list(v) if isinstance(v, list) else v) for k, v in mine.items()}, **data}
        handler(filled)  # validates every key given, the other head's too
        return handler({**filled, **dict.fromkeys(other)})  # via __init__ too: the instance itself, not a copy


def labels_of(items: list[ImageItem]) -> np.ndarray:
    return np.array([it.label for it in items])


def fewshot_parts(dataset: ClassificationDataset, shots: int, seed: int) -> tuple[dict[str, list[ImageItem]],
                                                                                   dict[str, Any]]:
    """The images a job reads: the persisted K-shot train and few-shot val (drawn from train when the dataset has
    no val split, as ImageNet), and the whole test split; plus the draw itself (its `info`)."""
    splits = dataset.splits()
    fewshot = load_or_create_fewshot(dataset.name, dataset.fingerprint(), splits["train"], splits["val"],
                                     shots, seed, harness_home())
    return {"train": fewshot["train"], "val": fewshot["val"], "test": splits["test"]}, fewshot


def class_templates(dataset: ClassificationDataset, choice: str) -> tuple[str, ...]:
    """The prompts the text classifier averages per class: the method's set ("method") or CoOp's ("coop")."""
    if choice == "method":
        return tuple(dataset.method_templates())  # type: ignore[attr-defined]  # every FSC dataset has both
    return tuple(dataset.coop_templates)  # type: ignore[attr-defined]


@register_task("fsc")
class FewShotClassification(Task):
    name = "fsc"
    version = "2"  # 2: lpclip probe by default, the method's template sets
    description = "few-shot classification (CoOp protocol): linear-probe or text-classifier head, top-1"
    protocol_model = FSCProtocol
    column_keys: ClassVar[tuple[str, ...]] = ("head", "shots")
    primary_metric = "top1"

    def evaluate(self, backbone: Backbone, dataset: ClassificationDataset, protocol: FSCProtocol,
                 ctx: JobContext) -> Result:
        parts, fewshot = fewshot_parts(dataset, protocol.shots, protocol.seed)
        # `--limit` cuts val and test; the K-shot train draw (persisted, at most K per class) stays whole, since a
        # head needs every class.
        parts = {k: items if k == "train" else ctx.limited(items) for k, items in parts.items()}
        if protocol.head == "linear-probe":
            metrics, details = self._linear_probe(backbone, dataset, parts, protocol, ctx)
        else:
            metrics, details = self._text_classifier(backbone, dataset, parts, protocol, ctx)
        details.update({"head": protocol.head, "n_train": len(parts["train"]), "n_val": len(parts["val"]),
                        "n_test": len(parts["test"]), "n_classes": len(dataset.classnames()),
                        "support_paths": [it.path for it in parts["train"]], "fewshot_info": fewshot.get("info", {})})
        # top1 is a proportion over the test images (the same images for every seed): binomial item SE.
        return Result(metrics=metrics, details=details,
                      item_se={"top1": ItemSE.of_proportion(metrics["top1"], len(parts["test"]))})

    @staticmethod
    def _linear_probe(backbone, dataset, parts, protocol, ctx) -> tuple[dict, dict]:
        transform, search = probe_parts(protocol.probe)
        sets = {k: FeatureSet(backbone, dataset, items, ctx, "global") for k, items in parts.items()}
        feats = {k: transform(sets[k].matrix()) for k in ("train", "val")}  # few-shot: small by design
        y = {k: labels_of(items) for k, items in parts.items()}
        probe = search(feats["train"], y["train"], feats["val"], y["val"], protocol.c_grid,
                       protocol.c_search_steps, protocol.max_iter, protocol.tol)
        # The test split streams, through the same transform: only its predictions are kept.
        pred = np.concatenate([probe.model.predict(transform(b.numpy())) for b in sets["test"].batches(256)])
        top1 = float((pred == y["test"]).mean() * 100)
        for fs in sets.values():
            fs.finish()
        return ({"top1": top1, "val_top1": probe.val_accuracy * 100},
                {"probe": protocol.probe, "c": probe.c, "val_accuracy": probe.val_accuracy,
                 "feature_dim": int(feats["train"].shape[1]),
                 "lbfgs_iterations": int(np.max(probe.model.n_iter_)),  # = max_iter: stopped, not converged
                 "converged": bool(np.max(probe.model.n_iter_) < protocol.max_iter),
                 "feature_modes": {k: fs.mode for k, fs in sets.items()}})

    @staticmethod
    def _text_classifier(backbone, dataset, parts, protocol, ctx) -> tuple[dict, dict]:
        import torch

        from harness.data.text_space import text_space
        from tasks.text_head import TrainSettings, predict, train_text_classifier

        space = text_space(protocol.text_space, dtype=text_precision(backbone))
        templates = class_templates(dataset, protocol.template_set)
        classes = space.class_embeddings(dataset.classnames(), templates)
        neck = backbone.neck()
        kind = "dense" if neck is not None else "global"
        inputs = {k: FeatureSet(backbone, dataset, items, ctx, kind) for k, items in parts.items()}
        inputs["train"].prepare()  # stored when it fits the store's budget, else recomputed per mini-batch
        y = {k: torch.from_numpy(labels_of(items)) for k, items in parts.items()}
        settings = TrainSettings(epochs=protocol.epochs, batch_size=protocol.train_batch_size, lr=protocol.lr,
                                 weight_decay=protocol.weight_decay, temperature=protocol.temperature,
                                 grad_clip=protocol.grad_clip, seed=protocol.seed, dtype=head_dtype(backbone))
        model, losses = train_text_classifier(inputs["train"], y["train"], classes, neck, settings)
        acc = {k: float((predict(model, inputs[k]) == y[k]).float().mean() * 100) for k in ("val", "test")}
        for fs in inputs.values():
            fs.finish()
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return ({"top1": acc["test"], "val_top1": acc["val"], "final_loss": losses[-1]},
                {"text_space": space.spec, "text_space_fingerprint": space.fingerprint,
                 "template_set": protocol.template_set, "n_templates": len(templates),
                 "uses_neck": neck is not None, "trainable_params": trainable, "loss_per_epoch": losses,
                 "feature_modes": {k: fs.mode for k, fs in inputs.items()}})
