"""Open-vocabulary semantic segmentation: one dense head trained on frozen features with the training set's
vocabulary (COCO-Stuff-171), then scored on each test set with that set's vocabulary swapped in.

Training is identical for every test set, so the trained head is saved once per (backbone fingerprint,
training protocol, training data, text space, head architecture) under `HARNESS_HOME/heads/<key>.pt` and the
other test sets' jobs load it. Scores come from one confusion matrix over the whole test set
(`tasks/ovss/metrics.py`); the per-class IoU table and an overlay of a few predictions are artifacts.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from harness.api import Backbone, JobContext, Result, StrictModel, Task
from harness.catalog import register_task
from harness.config import MAX_BATCH_SIZE, MAX_ITERATIONS, MAX_SEED
from harness.data.cache import payload_bytes, worth_storing, write_cache_file
from harness.errors import ConfigError, HarnessError
from harness.io import canonical_json, sha256_text
from harness.numerics import head_dtype, seeded_init, text_precision
from harness.paths import harness_home

# The method's 14 prompt templates, the default: "templates" of develop-productivity/Vermouth
# Seg/data/ade150.json at commit 5597f28 (the same 14 in every Seg/data/*.json), in that order and spelling.
METHOD_TEMPLATES = ("a photo of a {}.", "This is a photo of a {}", "There is a {} in the scene",
                    "There is the {} in the scene", "a photo of a {} in the scene", "a photo of a small {}.",
                    "a photo of a medium {}.", "a photo of a large {}.", "This is a photo of a small {}.",
                    "This is a photo of a medium {}.", "This is a photo of a large {}.",
                    "There is a small {} in the scene.", "There is a medium {} in the scene.",
                    "There is a large {} in the scene.")
# The task's version-1 default (a harness choice from before the method's list was found), for a suite that
# wants the cheaper short ensemble: pass it as `templates`.
SHORT_TEMPLATES = ("a photo of a {}.", "There is a {} in the scene.", "There is a small {} in the scene.",
                   "There is a large {} in the scene.")
# protocols.md C.2: SAN's whole image at short side 640; CAT-Seg's 640² with 384² windows, stride 256, + global.
EVAL_PRESETS: dict[str, dict[str, Any]] = {
    "whole": {"short_side": 640, "max_long_side": 2560, "slide_crop": None, "slide_stride": None,
              "slide_square": None, "slide_global": None},
    "slide": {"short_side": 640, "max_long_side": None, "slide_crop": 384, "slide_stride": 256,
              "slide_square": True, "slide_global": True},
}
# The keys that define the trained head (everything else only changes how it is evaluated).
TRAIN_KEYS = ("seed", "train_dataset", "text_space", "templates", "crop_size", "train_scale", "flip",
              "iterations", "batch_size", "lr", "weight_decay", "head_channels", "head_groups")
MEMO_BYTES = 1 << 30  # cap of the in-memory feature memo for repeated (un-augmented) training views
OVERLAY_IMAGES = 4
LOSS_POINTS = 50  # the training curve a record keeps: about this many evenly spaced losses


class OVSSProtocol(StrictModel):
    """One protocol point. `eval_style` fills the evaluation keys it owns unless they are given."""

    seed: int = Field(1, ge=0, le=MAX_SEED, description="seeds the head init, the training views and dropout")
    train_dataset: str = "coco_stuff_171"
    text_space: str = "clip:vit-l-14"
    templates: list[str] = Field(default_factory=lambda: list(METHOD_TEMPLATES), min_length=1)
    # training: random scale (short side = crop_size × s), random crop (padded with ignore), flip
    crop_size: int = Field(512, ge=16)
    train_scale: list[float] = Field(default_factory=lambda: [0.5, 2.0], min_length=2, max_length=2)
    flip: bool = True
    iterations: int = Field(20000, ge=1, le=MAX_ITERATIONS)
    batch_size: int = Field(16, ge=1, le=MAX_BATCH_SIZE)
    lr: float = Field(1e-4, gt=0)  # AdamW, poly(0.9) decay
    weight_decay: float = Field(1e-2, ge=0)
    head_channels: int = Field(256, ge=1)
    head_groups: int = Field(32, ge=1)
    # evaluation
    eval_style: Literal["whole", "slide"] = "whole"
    short_side: int = Field(640, ge=8)
    max_long_side: int | None = Field(2560, ge=8)
    slide_crop: int | None = Field(None, ge=8)
    slide_stride: int | None = Field(None, ge=1)
    slide_square: bool | None = None
    slide_global: bool | None = None
    size_divisor: int = Field(64, ge=1, description="inputs are padded to a multiple (patch / stride / UNet)")

    @model_validator(mode="before")
    @classmethod
    def _eval_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = EVAL_PRESETS.get(data.get("eval_style", "whole"), {})
        return {**preset, **data}

    @model_validator(mode="after")
    def _check(self) -> OVSSProtocol:
        if self.train_scale[0] <= 0 or self.train_scale[0] > self.train_scale[1]:
            raise ValueError(f"train_scale must be [min, max] with 0 < min <= max, got {self.train_scale}")
        if self.eval_style == "slide" and (self.slide_crop is None or self.slide_stride is None):
            raise ValueError("eval_style 'slide' needs slide_crop and slide_stride")
        return self


# -- pixels ------------------------------------------------------------------------------------------


class Normaliser:
    """The backbone's own per-channel affine normalisation, read off `preprocess` of a black and a white
    image (constant images survive any resize and crop), so arbitrary-size crops need no new interface."""

    def __init__(self, backbone: Backbone):
        import torch
        from PIL import Image

        flat = backbone.preprocess([Image.new("RGB", (256, 256), (0, 0, 0)),
                                    Image.new("RGB", (256, 256), (255, 255, 255))]).float()
        h, w = flat.shape[-2:]
        self.lo = flat[0, :, h // 2, w // 2].clone().view(3, 1, 1)
        self.hi = flat[1, :, h // 2, w // 2].clone().view(3, 1, 1)
        if not torch.all(self.hi != self.lo):
            raise HarnessError(f"backbone '{backbone.name}': cannot read its normalisation from preprocess()")

    def __call__(self, rgb01):  # [.., 3, H, W] in 0..1 -> normalised
        return self.lo + rgb01 * (self.hi - self.lo)


def to_tensor01(image) -> Any:
    """PIL RGB → float [3, H, W] in 0..1."""
    import torch

    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255


def nearest_resize(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an id map (any dtype), pixel centres aligned."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def make_view(image01, labels: np.ndarray, crop: int, scale: float, fy: float, fx: float, flip: bool,
              ignore_index: int) -> tuple[Any, np.ndarray, tuple[int, int]]:
    """One training view: short side → crop × scale, pad to ≥ crop (image 0, label ignore), crop at the
    fractional offset (fy, fx), optional horizontal flip → ([3, crop, crop] in 0..1, [crop, crop], (top, left))."""
    import torch
    import torch.nn.functional as F

    from tasks.ovss.inference import resize, short_side_size

    h, w = labels.shape
    size = short_side_size(h, w, max(1, round(crop * scale)))
    img = resize(image01[None], size)[0]
    lab = nearest_resize(labels, size)
    ph, pw = max(0, crop - size[0]), max(0, crop - size[1])
    if ph or pw:
        img = F.pad(img, (0, pw, 0, ph))
        lab = np.pad(lab, ((0, ph), (0, pw)), constant_values=ignore_index)
    top = int(fy * (lab.shape[0] - crop + 1))
    left = int(fx * (lab.shape[1] - crop + 1))
    img, lab = img[:, top:top + crop, left:left + crop], lab[top:top + crop, left:left + crop]
    if flip:
        img, lab = torch.flip(img, dims=[2]), lab[:, ::-1]
    return img, np.ascontiguousarray(lab), (top, left)


def view_plan(n_images: int, protocol: OVSSProtocol) -> Iterator[list[tuple[int, float, float, float, bool]]]:
    """Per iteration, the batch's views (image index, scale, fy, fx, flip): epochs of seeded permutations."""
    rng = np.random.default_rng(protocol.seed)
    order: list[int] = []
    lo, hi = protocol.train_scale
    for _ in range(protocol.iterations):
        batch = []
        for _ in range(protocol.batch_size):
            if not order:
                order = rng.permutation(n_images).tolist()
            idx = order.pop()
            scale = float(rng.uniform(lo, hi)) if hi > lo else lo
            fy, fx = (float(v) for v in rng.uniform(0, 1, size=2))
            flip = bool(protocol.flip and rng.uniform() < 0.5)
            batch.append((idx, scale, fy, fx, flip))
        yield batch


# -- text --------------------------------------------------------------------------------------------


def class_text(space, synonyms: list[list[str]], templates: list[str], dtype=None):
    """[K, D]: per class, the L2-normalised mean of its synonyms' template-averaged embeddings, computed in
    `dtype` (the head's; default float32)."""
    import torch
    import torch.nn.functional as F

    flat = [s for syns in synonyms for s in syns]
    emb = space.class_embeddings(flat, templates).to(dtype or torch.float32)
    out, start = [], 0
    for syns in synonyms:
        out.append(emb[start:start + len(syns)].mean(dim=0))
        start += len(syns)
    return F.normalize(torch.stack(out), dim=1)


# -- the task ----------------------------------------------------------------------------------------


@register_task("ovss")
class OpenVocabSegmentation(Task):
    name = "ovss"
    # v2: the method's 14 templates by default (v1: SHORT_TEMPLATES) and `miou_gt_classes` reported.
    version = "2"
    description = "open-vocabulary semantic segmentation: FPN text head on frozen dense features, mIoU"
    protocol_model = OVSSProtocol
    required_kinds: ClassVar[tuple[str, ...]] = ("dense",)
    column_keys: ClassVar[tuple[str, ...]] = ("eval_style",)
    primary_metric = "miou"
    # miou: detectron2 v0.6 / mmseg (Vermouth); miou_gt_classes: detectron2 after July 2022 (CAT-Seg). metrics.py.
    report_metrics: ClassVar[tuple[str, ...]] = ("miou", "miou_gt_classes", "pixel_acc")

    @classmethod
    def required_datasets(cls, protocol: OVSSProtocol) -> list[str]:
        """The training set: prepared before any work, and part of the job key."""
        return [protocol.train_dataset]

    def evaluate(self, backbone: Backbone, dataset, protocol: OVSSProtocol, ctx: JobContext) -> Result:
        import torch

        from harness.data.text_space import text_space
        from harness.plan.planner import open_dataset
        from tasks.ovss.datasets import SegmentationDataset

        if not isinstance(dataset, SegmentationDataset):
            raise ConfigError(f"task 'ovss' needs a segmentation dataset, got '{dataset.name}'")
        train_ds = open_dataset(protocol.train_dataset)
        if not isinstance(train_ds, SegmentationDataset):
            raise ConfigError(f"ovss train_dataset '{protocol.train_dataset}' is not a segmentation dataset")
        space = text_space(protocol.text_space, dtype=text_precision(backbone))
        norm = Normaliser(backbone)
        head, info = load_or_train_head(backbone, train_ds, space, protocol, norm, ctx)
        head.eval()
        text = class_text(space, dataset.synonyms(), protocol.templates, head_dtype(backbone)).to(head_device(backbone))
        start = time.perf_counter()
        with torch.no_grad():
            metrics, cm, samples, counts = score(head, backbone, dataset, text, protocol, norm, ctx)
        from tasks.ovss.metrics import write_per_class_csv

        csv_path = write_per_class_csv(ctx.workdir / "per_class_iou.csv", cm, dataset.classnames())
        overlay = write_overlay(ctx.workdir / "overlay.png", samples, len(dataset.classnames()), dataset.ignore_index)
        details = {**info, **counts, "n_classes": len(dataset.classnames()), "text_space": space.spec,
                   "text_space_fingerprint": space.fingerprint, "eval_style": protocol.eval_style,
                   "test_seconds": round(time.perf_counter() - start, 3)}
        return Result(metrics=metrics, details=details, artifacts={"per_class_iou": csv_path, "overlay": overlay})


def head_device(backbone: Backbone):
    """The head trains and runs where the backbone runs (features come back on the CPU)."""
    import torch

    return torch.device(backbone.config.device)


def dense_of(backbone: Backbone, x, device=None, ctx: JobContext | None = None, counter: str = "ovss_inputs",
             store: bool = True) -> dict:
    """The backbone's frozen dense maps for a normalised batch [B, 3, H, W], moved to `device` when given.

    Crops and windows are not files, so they go through the persistent feature cache by the content of the
    input tensor: a view seen in any earlier run (another seed, another test set) is read back, the rest
    run through the backbone in one batch and stored when `store` (the caller decides whether its views are
    worth storing, `harness.data.cache.worth_storing`). Maps come back in the store dtype, as stored ones would.
    Counted as `<counter>_extracted` / `<counter>_cached`.
    """
    import torch

    from harness.data.cache import FeatureCache, tensor_key

    cache = FeatureCache(backbone.fingerprint(), "dense:input", dtype=getattr(backbone.config, "feature_dtype", "fp32"))

    def compute(miss: list[int]) -> list[dict]:
        with torch.inference_mode():
            dense = backbone.image_features(x if len(miss) == len(x) else x[miss], kinds=("dense",)).dense
        return [{k: v[n].clone(memory_format=torch.contiguous_format) for k, v in dense.items()}
                for n in range(len(miss))]

    rows = cache.fetch([tensor_key(row) for row in x], compute, store=store)
    if ctx is not None:
        ctx.count(f"{counter}_extracted", cache.stats.misses)
        ctx.count(f"{counter}_cached", cache.stats.hits)
    # Stacked rows, whether fresh or read back: one layout, so a cached view gives the same head output.
    return {k: torch.stack([r[k] for r in rows]).to(device or "cpu") for k in rows[0]}


def build_head(backbone: Backbone, protocol: OVSSProtocol, text_dim: int, norm: Normaliser):
    """A fresh, seeded head: the backbone's `dense_neck()` when it has one, else per-level projections + FPN.
    The level layout is read from one forward pass of a blank crop."""
    import torch

    from tasks.ovss.head import FPNTextHead, OVSSHead, level_spec

    blank = norm(torch.full((1, 3, protocol.crop_size, protocol.crop_size), 0.5))
    dense = dense_of(backbone, blank)
    dtype = head_dtype(backbone)
    if hasattr(backbone, "dense_neck"):
        neck = backbone.dense_neck(seed=protocol.seed)
        neck.eval()
        with torch.no_grad():
            width = int(neck({k: v.clone() for k, v in dense.items()}).shape[1])
        with seeded_init(protocol.seed):
            adapter = torch.nn.Conv2d(width, text_dim, 1) if width != text_dim else None
        return OVSSHead(neck, adapter).to(dtype), {"uses_dense_neck": True, "neck_dim": width}
    spec = level_spec(dense)
    with seeded_init(protocol.seed):
        embedder = FPNTextHead(spec, protocol.head_channels, protocol.head_groups, text_dim)
    return OVSSHead(embedder).to(dtype), {"uses_dense_neck": False, "levels": spec}


def head_key(backbone: Backbone, train_ds, space, protocol: OVSSProtocol, head) -> str:
    """The trained head's cache key (`HARNESS_HOME/heads/<key>.pt`): the task version (a new version never
    loads an older version's head), the backbone, training data, text space, head architecture and the
    protocol keys that define training (the templates among them)."""
    payload = {"task": OpenVocabSegmentation.name, "version": OpenVocabSegmentation.version,
               "backbone": backbone.fingerprint(), "train_data": train_ds.fingerprint(),
               "text_space": space.fingerprint, "head": repr(head),
               "protocol": {k: getattr(protocol, k) for k in TRAIN_KEYS}}
    return sha256_text(canonical_json(payload))[:32]


def load_or_train_head(backbone: Backbone, train_ds, space, protocol: OVSSProtocol, norm: Normaliser,
                       ctx: JobContext):
    """The head for this (backbone, training protocol): loaded from `HARNESS_HOME/heads/<key>.pt`, else
    trained and saved there atomically. A corrupt or mismatching file is retrained, never used."""
    import torch

    train_text = class_text(space, train_ds.synonyms(), protocol.templates, head_dtype(backbone))
    head, arch = build_head(backbone, protocol, int(train_text.shape[1]), norm)
    key = head_key(backbone, train_ds, space, protocol, head)
    if ctx.limit:  # a head trained on the first N images is never reused by a full run
        key = f"{key}-limit{ctx.limit}"
    path = harness_home() / "heads" / f"{key}.pt"
    info: dict[str, Any] = {"head_key": key, **arch,
                            "trainable_params": sum(p.numel() for p in head.parameters() if p.requires_grad)}
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            head.load_state_dict(saved["state_dict"])
            ctx.count("ovss_head_reused")
            return head.to(head_device(backbone)), {**info, "head_reused": True, **saved["meta"]}
        except Exception:  # noqa: BLE001 - any unreadable file means: train again
            ctx.count("ovss_head_corrupt")
    head.to(head_device(backbone))
    start = time.perf_counter()
    losses = train_head(head, backbone, train_ds, train_text, protocol, norm, ctx)
    every = max(1, len(losses) // LOSS_POINTS)  # `train_losses[i]` is the loss after iteration i * every + 1
    meta = {"train_seconds": round(time.perf_counter() - start, 3), "train_final_loss": losses[-1],
            "train_losses": losses[::every], "train_loss_every": every,
            "train_images": len(ctx.limited(train_ds.items())), "logit_scale": float(head.logit_scale.detach())}
    buf = io.BytesIO()
    torch.save({"state_dict": {k: v.cpu() for k, v in head.state_dict().items()}, "meta": meta}, buf)
    write_cache_file(path, buf.getvalue())
    ctx.count("ovss_head_trained")
    return head, {**info, "head_reused": False, **meta}


def train_head(head, backbone: Backbone, train_ds, text, protocol: OVSSProtocol, norm: Normaliser,
               ctx: JobContext) -> list[float]:
    """AdamW + poly(0.9) on cross-entropy (ignore label excluded) over seeded random views; frozen features
    are computed per batch, and memoised when views repeat (no scale jitter, no flip)."""
    import torch
    import torch.nn.functional as F

    items = ctx.limited(train_ds.items())
    device = head_device(backbone)
    text = text.to(device)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=protocol.lr, weight_decay=protocol.weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: (1 - it / protocol.iterations) ** 0.9)
    repeatable = protocol.train_scale[0] == protocol.train_scale[1] and not protocol.flip
    # The views are stored only when all of them fit in half the store's budget (a real training run draws
    # 320k random crops: storing them would only churn the store; the trained head itself is what is reused).
    probe = dense_of(backbone, norm(torch.full((1, 3, protocol.crop_size, protocol.crop_size), 0.5)), store=False)
    per_view = payload_bytes({k: v[0] for k, v in probe.items()})
    store_views = worth_storing(per_view * protocol.iterations * protocol.batch_size)
    memo: dict[tuple, dict] = {}
    memo_bytes = 0
    losses: list[float] = []
    ctx.counters["ovss_train_views_stored"] = int(store_views)
    head.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(protocol.seed)
        for it, batch in enumerate(view_plan(len(items), protocol)):
            feats: list[dict | None] = [None] * len(batch)
            labels: list[np.ndarray | None] = [None] * len(batch)
            todo, crops = [], []
            for j, view in enumerate(batch):
                idx = view[0]
                image, lab = train_ds.load(items[idx])
                img, lab, offset = make_view(to_tensor01(image), lab, protocol.crop_size, *view[1:],
                                             ignore_index=train_ds.ignore_index)
                key = (idx, view[1], *offset, view[4])  # same pixels ⇔ same key
                labels[j] = lab
                if key in memo:
                    feats[j] = memo[key]
                else:
                    todo.append((j, key))
                    crops.append(img)
            if crops:
                dense = dense_of(backbone, norm(torch.stack(crops)), device, ctx, "ovss_train_views", store_views)
                for n, (j, key) in enumerate(todo):
                    one = {k: v[n:n + 1].clone() for k, v in dense.items()}
                    feats[j] = one
                    size = sum(v.numel() * v.element_size() for v in one.values())
                    if repeatable and memo_bytes + size <= MEMO_BYTES:
                        memo[key] = one
                        memo_bytes += size
            batch_dense = {k: torch.cat([f[k] for f in feats]) for k in feats[0]}
            target = torch.from_numpy(np.stack(labels)).long().to(device)
            logits = head(batch_dense, text)
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits, target, ignore_index=train_ds.ignore_index)
            opt.zero_grad(set_to_none=True)
            if torch.isfinite(loss):  # a batch of only ignore pixels gives NaN: skip the step
                loss.backward()
                opt.step()
            sched.step()
            losses.append(float(loss.detach()) if torch.isfinite(loss) else float("nan"))
            ctx.on_batch(it + 1, protocol.iterations)
    head.eval()
    return losses


def windows_per_image(protocol: OVSSProtocol) -> int:
    """Backbone inputs per test image, for the store estimate: 1 (whole), or the windows of a square slide
    (+1 global view); a non-square slide is estimated as the square one."""
    if protocol.eval_style != "slide" or not protocol.slide_crop or not protocol.slide_stride:
        return 1
    from tasks.ovss.inference import window_starts

    per_axis = len(window_starts(protocol.short_side, protocol.slide_crop, protocol.slide_stride))
    return per_axis * per_axis + int(bool(protocol.slide_global))


def score(head, backbone: Backbone, dataset, text, protocol: OVSSProtocol, norm: Normaliser, ctx: JobContext):
    """Predict every test image at its original size and accumulate one confusion matrix."""
    from tasks.ovss.inference import predict_logits
    from tasks.ovss.metrics import ConfusionMatrix

    cm = ConfusionMatrix(len(dataset.classnames()))
    items = ctx.limited(dataset.items())
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    skipped = 0

    device = head_device(backbone)
    store: list[bool] = []  # decided from the first input: all test inputs must fit in half the store's budget

    def fn(x):
        if not store:
            probe = dense_of(backbone, x[:1], store=False)
            per_input = payload_bytes({k: v[0] for k, v in probe.items()})
            store.append(worth_storing(per_input * len(x) * len(items) * windows_per_image(protocol)))
            ctx.counters["ovss_test_inputs_stored"] = int(store[0])
        return head(dense_of(backbone, x, device, ctx, "ovss_test_inputs", store[0]), text)

    for i, item in enumerate(items):
        image, labels = dataset.load(item)
        if not dataset.is_scored(labels):
            skipped += 1
            continue
        x = norm(to_tensor01(image))[None]
        logits = predict_logits(fn, x, protocol.eval_style, short_side=protocol.short_side,
                                max_long_side=protocol.max_long_side, size_divisor=protocol.size_divisor,
                                slide_crop=protocol.slide_crop, slide_stride=protocol.slide_stride,
                                slide_square=bool(protocol.slide_square), slide_global=bool(protocol.slide_global))
        pred = logits[0].argmax(dim=0).cpu().numpy()
        cm.update(pred, labels, dataset.ignore_index)
        if len(samples) < OVERLAY_IMAGES:
            samples.append((np.asarray(image), labels, pred))
        ctx.on_batch(i + 1, len(items))
    counts = {"n_test_images": len(items), "n_scored_images": len(items) - skipped, "n_all_ignore_skipped": skipped}
    return cm.scores(), cm, samples, counts


def palette(n_classes: int) -> np.ndarray:
    """A fixed colour per class id (seeded), black for ignore."""
    return np.random.default_rng(0).integers(40, 256, size=(n_classes, 3), dtype=np.uint8)


def write_overlay(path: Path, samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_classes: int,
                  ignore_index: int) -> Path:
    """Rows of [image | ground truth | prediction] (label colours blended 50/50 over the image)."""
    from PIL import Image

    colours = palette(n_classes)
    rows = []
    for image, gt, pred in samples:
        def paint(ids: np.ndarray, image: np.ndarray = image) -> np.ndarray:
            valid = (ids != ignore_index) & (ids >= 0) & (ids < n_classes)
            colour = np.zeros_like(image)
            colour[valid] = colours[ids[valid]]
            return (0.5 * image + 0.5 * colour).astype(np.uint8)

        rows.append(np.concatenate([image, paint(gt), paint(pred)], axis=1))
    if not rows:
        rows = [np.zeros((8, 24, 3), dtype=np.uint8)]
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    out = Image.fromarray(grid)
    if out.height < 256:  # tiny mini images: enlarge so the artifact is readable
        factor = -(-256 // out.height)
        out = out.resize((out.width * factor, out.height * factor), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path, format="PNG")
    return path

