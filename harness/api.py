"""The seams between parts: what a backbone, a dataset and a task promise each other.

Kept free of torch at import time so that listing and planning stay fast; tensors appear only in
type hints.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

    from harness.config import BackboneConfig


class StrictModel(BaseModel):
    """Every config model forbids unknown keys, so a typo is an error that names the key."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Features:
    """What a backbone gives for a batch: a global embedding and/or named multi-scale dense maps."""

    global_: torch.Tensor | None = None
    dense: dict[str, torch.Tensor] = field(default_factory=dict)


# Per-image shapes of each feature kind: {"global": {"global": (D,)}, "dense": {level: (C, H, W)}}.
FeatureShapes = dict[str, dict[str, tuple[int, ...]]]


@dataclass(frozen=True)
class VariantCard:
    """A variant is a name + a config record (the timm `pretrained_cfg` idea), readable without torch."""

    name: str
    arch: str
    weights: str  # default weights: hub id, local path or "random"
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Backbone(abc.ABC):
    """A frozen feature extractor plus an optional trainable neck.

    Subclasses set `name`, `variants`, `default_variant`, `feature_kinds`, and implement `build`.
    """

    name: ClassVar[str]
    variants: ClassVar[dict[str, VariantCard]]
    default_variant: ClassVar[str]
    feature_kinds: ClassVar[tuple[str, ...]] = ("global", "dense")

    def __init__(self, config: BackboneConfig):
        self.config = config
        self.card = self.variants[config.variant]

    @classmethod
    def validate_options(cls, config: BackboneConfig) -> None:
        """Reject `config.options` this backbone does not understand (plain backbones take none)."""
        if config.options:
            from harness.errors import ConfigError

            raise ConfigError(f"backbone '{cls.name}' takes no options, got {', '.join(sorted(config.options))}")

    @classmethod
    def task_options(cls, variant: str, task: str) -> dict[str, Any]:
        """The backbone's own settings for one task (Vermouth: the method's per-task resolution, timestep, prompt
        and cross-attention), declared on the variant card as `extra["task_presets"][task]`. They are the base of
        a job's options: the suite's, the suite entry's and `--opt` override them. Plain backbones have none."""
        presets = cls.variants[variant].extra.get("task_presets", {})
        return dict(presets.get(task, {}))

    @abc.abstractmethod
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Images → a batch tensor with the model's own resolution and normalisation."""

    @abc.abstractmethod
    def image_features(self, batch: torch.Tensor, kinds: Sequence[str] = ("global",)) -> Features:
        """A preprocessed batch → frozen features of the asked kinds ("global", "dense"), on the CPU in fp32.

        Runs under inference mode (the caller may also wrap it); the global embedding is what a
        linear probe reads, the dense maps are named multi-scale levels for dense heads.
        """

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError(f"backbone '{self.name}' has no text tower")

    def neck(self) -> torch.nn.Module | None:
        """A trainable module between frozen features and a task head; plain backbones have none."""
        return None

    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Weights identity + config, for job keys, cache keys and run records."""

    # The weight files a local folder or hub snapshot is searched for, in order (None: harness.data.weights' default).
    weight_filenames: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def weights_fingerprint(cls, config: BackboneConfig) -> str:
        """The weights identity without building the model (for the planner's job keys)."""
        from harness.data.weights import DEFAULT_FILENAMES, resolve_weights

        card = cls.variants[config.variant or cls.default_variant]
        return resolve_weights(config.weights or card.weights, seed=config.seed,
                               filenames=cls.weight_filenames or DEFAULT_FILENAMES).fingerprint

    @classmethod
    def feature_shapes(cls, config: BackboneConfig) -> FeatureShapes | None:
        """The shape of one image's features per kind, from the card and options alone (no weights, no forward
        pass at full size), so the planner can say how many bytes a plan stores before anything is built.
        Must equal what `image_features` gives for one preprocessed image. None: not known ("unknown" cost)."""
        return None

    @classmethod
    def has_neck(cls, config: BackboneConfig) -> bool:
        """Whether `neck()` gives a module, without building the backbone (tasks train a neck on dense features,
        a plain backbone's projection on global ones, which changes what a plan stores). By default: whether the
        class overrides `neck`; override this when the override can return None."""
        return cls.neck is not Backbone.neck

    @property
    def param_count(self) -> int:
        """Parameters of the built model (`self.model`)."""
        return sum(p.numel() for p in self.model.parameters())

    @property
    def batch_size(self) -> int:
        return self.config.batch_size


class ImageItem(BaseModel):
    """One labelled image of a split, as the dataset's file lists name it."""

    model_config = ConfigDict(frozen=True)
    path: str  # relative to the dataset's image dir
    label: int
    classname: str


class Dataset(abc.ABC):
    """A reader of one real on-disk format, rooted at `HARNESS_DATA/<folder>`."""

    name: ClassVar[str]
    task_family: ClassVar[str]
    folder: ClassVar[str]
    prepare_hint: ClassVar[str] = ""  # how to obtain and lay out the real data (printed when missing)
    embedded: ClassVar[bool] = False  # a `mini` dataset the harness generates itself
    # Image counts per split as published (the cost of a plan whose data is not prepared yet: harness.plan.cost);
    # None, or a split left out: not known. Counted from the split files once the data is there.
    published_sizes: ClassVar[dict[str, int] | None] = None

    def __init__(self, root: Path):
        self.root = Path(root)

    # -- errors that name the file (what is wrong, where, and how to prepare the data) --------------
    def _missing(self, path: Path, what: str):  # -> DataMissingError
        from harness.errors import DataMissingError

        return DataMissingError(f"dataset '{self.name}': {what} is missing: {path}\n"
                                f"How to prepare it ($HARNESS_DATA/{self.folder}):\n{self.prepare_hint}")

    def _malformed(self, path: Path, why: str):  # -> DataMissingError
        from harness.errors import DataMissingError

        return DataMissingError(f"dataset '{self.name}': malformed file {path}: {why}")

    def _require_root(self) -> None:
        if not self.root.is_dir():
            raise self._missing(self.root, f"the dataset folder (expected $HARNESS_DATA/{self.folder})")

    def _require_file(self, path: Path, what: str) -> None:
        if not path.is_file():
            raise self._missing(path, what)

    @classmethod
    def generate(cls, root: Path) -> None:
        """Write the dataset in its real on-disk format (embedded `mini` datasets only)."""
        raise NotImplementedError(f"dataset '{cls.name}' is not generated by the harness")

    @abc.abstractmethod
    def verify(self) -> None:
        """Raise DataMissingError naming the first missing or malformed file."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A hash of what defines the data (split files, class lists): changes when they change."""

    def is_present(self) -> bool:
        return self.root.exists()


class ClassificationDataset(Dataset):
    """Image classification in a split-file format (CoOp's `split_zhou_*.json` and kin)."""

    @abc.abstractmethod
    def splits(self) -> dict[str, list[ImageItem]]:
        """`{"train": [...], "val": [...], "test": [...]}` exactly as the split files list them."""

    @abc.abstractmethod
    def classnames(self) -> list[str]:
        """Class names indexed by label."""

    @abc.abstractmethod
    def image_path(self, item: ImageItem) -> Path:
        """Absolute path of an item's image file."""

    def load_image(self, item: ImageItem) -> Image.Image:
        """The item's image as 8-bit RGB (grayscale, palette, CMYK, RGBA and 16-bit converted as the field
        does); an empty, truncated, zero-size or non-image file raises DataMissingError naming it."""
        from harness.data.images import open_rgb

        return open_rgb(self.image_path(item), self.name)


@dataclass(frozen=True)
class ItemSE:
    """A metric's item-level standard error (in its own units) and the number of test items it averages over.

    The test items are a sample too: CI's regression gate (`harness compare`) reads this to tell a real drop
    from what another draw of test items would give. `binomial` marks a proportion in % (accuracy): seeds
    that share the test items are pooled as the binomial SE of the mean proportion, not by RMS.
    """

    se: float
    n: int
    binomial: bool = False

    @classmethod
    def of_proportion(cls, percent: float, n: int) -> ItemSE:
        """Binomial SE of an accuracy in % over n independent test items: 100·sqrt(p(1-p)/n)."""
        p = min(max(percent / 100.0, 0.0), 1.0)
        return cls(100.0 * math.sqrt(p * (1.0 - p) / n), int(n), binomial=True)

    @classmethod
    def of_mean(cls, values: Sequence[float]) -> ItemSE | None:
        """SE of a NaN-skipping mean of per-item values: std (ddof=1) / sqrt(n); None below two items."""
        import numpy as np

        v = np.asarray(values, dtype=np.float64)
        v = v[~np.isnan(v)]
        if len(v) < 2:
            return None
        return cls(float(v.std(ddof=1) / math.sqrt(len(v))), len(v))


@dataclass
class Result:
    """What a job produces: scalar metrics, extra record fields and files to log as artifacts.

    `item_se` gives, per metric where it is defined, its item-level standard error (`ItemSE`); it goes to
    the run record and MLflow, and from there to the leaderboard CSV that the regression gate reads.
    """

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
    item_se: dict[str, ItemSE] = field(default_factory=dict)


ProgressFn = Callable[[int, int], None]


class JobContext:
    """What the executor hands a task besides its inputs: progress reporting, a scratch directory, and the
    `--limit` of a quick-iteration run (0: every item), which a task applies with `limited` to each split it reads."""

    def __init__(self, workdir: Path, on_batch: ProgressFn | None = None, limit: int = 0):
        self.workdir = Path(workdir)
        self.limit = int(limit)
        self.on_batch = on_batch or (lambda done, total: None)
        self.counters: dict[str, int] = {}  # e.g. feature-cache hits / misses, copied into the run record

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def limited(self, items: list[Any]) -> list[Any]:
        """The first `limit` items of a split (all of them without a limit)."""
        return list(items[: self.limit]) if self.limit else items


class Task(abc.ABC):
    """A task owns its protocol: every backbone is evaluated the same way."""

    name: ClassVar[str]
    version: ClassVar[str]
    description: ClassVar[str] = ""
    protocol_model: ClassVar[type[StrictModel]]
    # Protocol keys that are repeats of one measurement (averaged into mean ± std on the leaderboard).
    repeat_keys: ClassVar[tuple[str, ...]] = ("seed",)
    # Protocol keys that make a separate leaderboard column (e.g. shots, head).
    column_keys: ClassVar[tuple[str, ...]] = ()
    # The metric the leaderboard sorts and summarises by, and every metric it shows (primary first).
    primary_metric: ClassVar[str]
    report_metrics: ClassVar[tuple[str, ...]] = ()
    # The feature kinds every backbone must offer for this task (OVSS: dense maps); the planner refuses a backbone
    # that lacks one before any work.
    required_kinds: ClassVar[tuple[str, ...]] = ("global",)

    @classmethod
    def required_datasets(cls, protocol: StrictModel) -> list[str]:
        """Datasets a protocol point needs besides the evaluated one (e.g. OVSS's training set): the planner
        checks they are prepared and folds their fingerprints into the job key."""
        return []

    @abc.abstractmethod
    def evaluate(self, backbone: Backbone, dataset: Dataset, protocol: StrictModel, ctx: JobContext) -> Result:
        """Run the protocol and return its metrics."""

    @classmethod
    def column_label(cls, protocol: dict[str, Any]) -> str:
        """The leaderboard column suffix of one protocol point (repeat keys left out)."""
        return ",".join(f"{k}={protocol[k]}" for k in cls.column_keys if k in protocol)
