"""Cost before work: the images a plan extracts, the bytes of features it stores, and the time it takes.

Why: at real scale one suite is days of accelerator time and terabytes of features (Vermouth sd15's dense
levels are 11 MB per image in fp16), so a dry run must say so before anything is built. Everything here is
known from data:
- what each task reads and stores (`_fsc`, `_sbir`, `_ovss`): test, query and gallery splits stream batch by
  batch and are never stored; the training sets of trainable heads are stored in the store dtype (DESIGN.md,
  "The data path at real scale");
- how many images: counted from the split files when the dataset is prepared (minus the images the feature
  cache already holds, when the backbone can be fingerprinted), else from the readers' `published_sizes`;
- bytes per image: `Backbone.feature_shapes` (the card and options, no weights);
- seconds per image: `harness profile`'s rows in `<out_dir>/profiles.csv` for the backbone on this device
  and dtype (the largest batch size measured).
Counts are distinct images: protocol points of one task x dataset share them (a union). Where the files are
not there to tell, a few-shot union is bounded by the sum of its draws ("≤"), and a split whose size is not
published adds "+ ?". Torch-free at import: a backbone is built only to name its cache, when data is there.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.catalog import BACKBONES, DATASETS

if TYPE_CHECKING:  # pragma: no cover
    from harness.config import BackboneConfig
    from harness.plan.planner import Job, Plan

STORE_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}  # bytes per stored value, by store dtype (fp16 by default)
MAX_VAL_SHOTS = 4  # the few-shot val draws min(K, 4) per class (tasks/fsc/sampling.py, VAL_SHOTS_MAX)


# -- what a task reads --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """Images of one split that a task x dataset row reads in one feature kind: stored (a training set) or
    streamed; the whole split, or a seeded few-shot draw of `shots` per class."""

    dataset: str
    split: str
    kind: str | None  # "global" | "dense"; None: crops and windows computed on the fly (never in the cache)
    stored: bool
    shots: int | None = None  # a few-shot draw: per class ...
    seed: int | None = None  # ... with this seed
    cap: int | None = None  # at most this many per class (SBIR's max_train_per_class)


def _fsc(protocol: dict[str, Any], dataset: str, neck: bool) -> list[Part]:
    """Linear probe: global features; text classifier: the neck's dense input, or global without a neck. The
    few-shot train and val are stored, the test split streams."""
    kind = "global" if protocol.get("head", "linear-probe") == "linear-probe" or not neck else "dense"
    shots, seed = int(protocol["shots"]), int(protocol["seed"])
    return [Part(dataset, "train", kind, True, shots, seed), Part(dataset, "val", kind, True, shots, seed),
            Part(dataset, "test", kind, False)]


def _sbir(protocol: dict[str, Any], dataset: str, neck: bool) -> list[Part]:
    """The seen-class sketches and photos are stored (dense with a neck), the unseen queries and gallery stream."""
    kind = "dense" if neck else "global"
    cap, seed = protocol.get("max_train_per_class"), int(protocol.get("seed", 1))
    return [Part(dataset, "sketch_train", kind, True, seed=seed, cap=cap),
            Part(dataset, "photo_train", kind, True, seed=seed, cap=cap),
            Part(dataset, "sketch_zero", kind, False), Part(dataset, "photo_zero", kind, False)]


def _ovss(protocol: dict[str, Any], dataset: str, neck: bool) -> list[Part]:
    """The training set's views and the test images: crops and windows are computed on the fly, nothing stored."""
    train = protocol.get("train_dataset", "coco_stuff_171")
    return [Part(train, "all", None, False), Part(dataset, "all", None, False)]


READS: dict[str, Callable[[dict[str, Any], str, bool], list[Part]]] = {"fsc": _fsc, "sbir": _sbir, "ovss": _ovss}


# -- distinct images -----------------------------------------------------------------------------------------


@dataclass
class _Group:
    dataset: str
    count: int
    size: int
    full: bool


@dataclass
class Tally:
    """Distinct images: files (exact) where the data is there, published split sizes where it is not.

    A published split is a group (its folder and split); two draws from one group add up to at most its size.
    """

    files: set[str] = field(default_factory=set)
    groups: dict[tuple[str, str], _Group] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)  # "dataset/split" whose size is not published
    draws: set[tuple[Any, ...]] = field(default_factory=set)  # draws already counted (two heads, one draw)
    bound: bool = False  # the count is an upper bound (few-shot unions; splits of one folder that may overlap)

    def add_group(self, key: tuple[str, str], dataset: str, count: int, size: int, full: bool,
                  draw: tuple[Any, ...] | None = None) -> None:
        """Add `count` images of the group `key` (of `size`): all of it (`full`), or a draw from it. The same
        `draw` (split, shots, seed) counted twice is one set of images."""
        if draw is not None:
            if draw in self.draws:
                return
            self.draws.add(draw)
        if key not in self.groups and any(k[0] == key[0] and g.dataset != dataset for k, g in self.groups.items()):
            self.bound = True  # another dataset's lists over the same image folder (Sketchy-25 and -21)
        old = self.groups.get(key)
        if old is None:
            self.groups[key] = _Group(dataset, count, size, full)
        elif old.full or full:
            self.groups[key] = _Group(old.dataset, size, size, True)
        else:
            self.groups[key] = _Group(old.dataset, min(old.count + count, size), size, False)
        self.bound = self.bound or not self.groups[key].full

    def merge(self, other: Tally) -> None:
        self.files |= other.files
        self.unknown |= other.unknown
        self.bound = self.bound or other.bound
        for key, g in other.groups.items():
            self.add_group(key, g.dataset, g.count, g.size, g.full)
        self.draws |= other.draws

    @property
    def count(self) -> int:
        return len(self.files) + sum(g.count for g in self.groups.values())


# -- one row: a backbone config x task x dataset -------------------------------------------------------------


@dataclass
class Row:
    backbone: str
    task: str
    dataset: str
    images: Tally = field(default_factory=Tally)  # to extract (after the cache)
    stored: dict[str, Tally] = field(default_factory=dict)  # per kind: to store (after the cache)
    read: set[str] = field(default_factory=set)  # every file read (prepared data): those not in `images` are cached
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


@dataclass
class Cost:
    """Rendered numbers of a row or the total: None = unknown; `mark` "≤" (an upper bound) or ""."""

    images: int
    images_unknown: bool  # some split's size is not published: the count is of the rest ("+ ?")
    bytes: int | None | str  # "n/a": nothing stored (streamed)
    bytes_unknown: bool
    seconds: float | None
    mark: str


@dataclass
class Report:
    rows: list[tuple[Row, Cost]]
    total: Cost
    jobs: int
    done: int
    points_missing_data: int


class _Backbone:
    """What the cost model knows of one backbone config: feature bytes, neck, profile, and its caches."""

    def __init__(self, cfg: BackboneConfig, unresolved: bool, out_dir: Path):
        self.cfg = cfg
        self.cls = BACKBONES.get(cfg.name)
        self.label = f"{cfg.name}:{cfg.variant}" + "".join(f" {k}={v}" for k, v in cfg.options.items())
        self.neck = bool(self.cls.has_neck(cfg))
        shapes = self.cls.feature_shapes(cfg)
        per_value = STORE_BYTES.get(str(getattr(cfg, "feature_dtype", None) or "fp16"), 2)
        self.bytes = None if shapes is None else {
            kind: per_value * sum(math.prod(s) for s in maps.values()) for kind, maps in shapes.items()}
        self.ms = ms_per_image(cfg, out_dir)
        self.unresolved = unresolved
        self._caches: dict[str, Any] | None = None
        self.why_uncached: str | None = "weights missing: every image counts" if unresolved else None

    def caches(self, kinds: Iterable[str]) -> dict[str, Any]:
        """The feature caches a job of this config reads, per kind (the backbone is built once, to name them)."""
        if self._caches is None:
            self._caches = {}
            if self.why_uncached is None:
                try:
                    backbone = self.cls(self.cfg)
                    from harness.data import features

                    make = getattr(features, "feature_cache", None)
                    for kind in ("global", "dense"):
                        if make is not None:
                            self._caches[kind] = make(backbone, kind)
                        else:
                            from harness.data.cache import FeatureCache

                            self._caches[kind] = FeatureCache(backbone.fingerprint(), kind)
                except Exception as exc:  # a backbone that cannot be built here must not stop a dry run...
                    from harness.errors import HarnessError, WeightsMissingError

                    if isinstance(exc, HarnessError) and not isinstance(exc, WeightsMissingError):
                        raise  # ...unless a run would stop on it too (a weights file that is not tensors)
                    self.why_uncached = f"cache not checked ({type(exc).__name__}): every image counts"
        return {k: self._caches[k] for k in kinds if k in self._caches}


def ms_per_image(cfg: BackboneConfig, out_dir: Path) -> float | None:
    """`latency_per_image_ms` at the largest batch size `harness profile` measured for this backbone, variant,
    device and dtype (`<out_dir>/profiles.csv`), or None."""
    path = Path(out_dir) / "profiles.csv"
    if not path.is_file():
        return None
    best: tuple[int, float] | None = None
    with path.open(newline="") as fh:
        for r in csv.DictReader(fh):
            same_device = r.get("device") == cfg.device or r.get("device", "").split(":")[0] == cfg.device
            if (r.get("backbone"), r.get("variant"), r.get("dtype")) != (cfg.name, cfg.variant, cfg.dtype) \
                    or not same_device:
                continue
            try:
                batch, ms = int(float(r["batch_size"])), float(r["latency_per_image_ms"])
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(ms) and (best is None or batch > best[0]):
                best = (batch, ms)
    return None if best is None else best[1]


# -- the items of a part -------------------------------------------------------------------------------------


class _Data:
    """Datasets opened once, their split items, and few-shot draws made exactly as the task makes them."""

    def __init__(self) -> None:
        self._open: dict[str, Any] = {}
        self._fewshot: dict[tuple[str, int, int], dict[str, list[Any]]] = {}

    def dataset(self, name: str) -> Any:
        if name not in self._open:
            from harness.plan.planner import open_dataset

            ds = open_dataset(name, generate=False)
            self._open[name] = ds if ds.is_present() else None
        return self._open[name]

    def paths(self, part: Part) -> list[str]:
        ds = self.dataset(part.dataset)
        if part.split == "all":  # a segmentation set: one split, image files paired with label maps
            return [str(it.image) for it in ds.items()]
        if part.shots is not None:
            items = self._draw(ds, part.shots, part.seed or 0)[part.split]
        elif part.cap is not None:
            try:
                from tasks.sbir.task import training_items  # the task's own seeded per-class cap
            except ImportError:  # pragma: no cover - then the whole list, an upper bound
                return [str(ds.image_path(it)) for it in ds.splits()[part.split]]
            listed = {x.path for x in ds.splits()[part.split]}
            items = [it for it in training_items(ds, part.cap, part.seed or 0) if it.path in listed]
        else:
            items = ds.splits()[part.split]
        return [str(ds.image_path(it)) for it in items]

    def _draw(self, ds: Any, shots: int, seed: int) -> dict[str, list[Any]]:
        """The persisted draw when a run made it, else the same draw made here (nothing is written)."""
        key = (ds.name, shots, seed)
        if key not in self._fewshot:
            from harness.paths import harness_home
            from tasks.fsc.sampling import fewshot_path, fewshot_split, load_or_create_fewshot

            splits = ds.splits()
            if fewshot_path(harness_home(), ds.name, ds.fingerprint(), shots, seed).is_file():
                draw = load_or_create_fewshot(ds.name, ds.fingerprint(), splits["train"], splits["val"], shots,
                                              seed, harness_home())
            else:
                draw = fewshot_split(splits["train"], splits["val"], shots, seed)
            self._fewshot[key] = {"train": draw["train"], "val": draw["val"]}
        return self._fewshot[key]


def _published(part: Part, tally: Tally) -> None:
    """Add a part of a dataset that is not prepared, from its reader's published sizes."""
    cls = DATASETS.get(part.dataset)
    sizes = cls.published_sizes or {}
    if part.split == "all":
        split, size = next(iter(sizes.items()), (None, None))
        key = (cls.folder, getattr(cls, "image_dir", split))  # PC-59 and PC-459 read the same images
    else:
        split = part.split
        if split == "val" and "val" not in sizes and part.shots is not None:
            split = "train"  # no published val: the few-shot val is drawn from train, minus the support (ImageNet)
        size = sizes.get(split)
        key = (cls.folder, split if cls.task_family == "fsc" else f"{part.dataset}:{split}")
    if size is None:
        tally.unknown.add(f"{part.dataset}/{part.split}")
        return
    if part.shots is None:
        tally.add_group(key, part.dataset, size, size, part.cap is None)  # a per-class cap: at most the list
        return
    per_class = part.shots if part.split == "train" else min(part.shots, MAX_VAL_SHOTS)
    n_classes = getattr(cls, "n_classes", None)
    if n_classes is None:
        tally.add_group(key, part.dataset, size, size, False)
        return
    tally.add_group(key, part.dataset, min(per_class * n_classes, size), size, False,
                    draw=(part.dataset, part.split, part.shots, part.seed))


# -- the estimate --------------------------------------------------------------------------------------------


def estimate(the_plan: Plan, jobs: list[Job], out_dir: Path, resume: bool = True,
             skip_missing: bool = False) -> Report:
    """The cost of `jobs` (the plan's jobs after --shard) that are not finished yet (with `resume`), plus every
    protocol point whose data is missing (unless `skip_missing`), for every backbone config of the plan."""
    from harness.io import canonical_json
    from harness.track.records import RecordStore

    store = RecordStore()
    todo = [j for j in jobs if not (resume and store.exists(j.key))]
    wanted = {(j.backbone, j.task, j.dataset, canonical_json(j.protocol)) for j in todo}
    backbones = [_Backbone(cfg, cfg in the_plan.unresolved, out_dir) for cfg in the_plan.backbones]
    index = {cfg: i for i, cfg in enumerate(the_plan.backbones)}
    data = _Data()
    rows: dict[tuple[int, str, str], Row] = {}
    unplanned = 0
    for base, configs in enumerate(the_plan.entry_configs):
        for point in the_plan.points:
            bi = index[configs[point.entry]]  # the config this backbone runs the point's task with
            bb = backbones[bi]
            if point.planned and (bb.cfg, point.task, point.dataset, canonical_json(point.protocol)) not in wanted:
                continue
            if not point.planned:
                if skip_missing:
                    continue
                unplanned += base == 0
            reads = READS.get(point.task)
            row = rows.setdefault((bi, point.task, point.dataset), Row(bb.label, point.task, point.dataset))
            if reads is None:
                row.note(f"task '{point.task}' has no cost model")
                continue
            for part in reads(point.protocol, point.dataset, bb.neck):
                _add(row, part, bb, data)
    report_rows = [(row, _cost(row, backbones[bi])) for (bi, _, _), row in rows.items()]
    total = _total([r for r, _ in report_rows], backbones, [bi for bi, _, _ in rows])
    return Report(report_rows, total, jobs=len(todo), done=len(jobs) - len(todo), points_missing_data=unplanned)


def _add(row: Row, part: Part, bb: _Backbone, data: _Data) -> None:
    if data.dataset(part.dataset) is None:
        _published(part, row.images)
        if part.stored and part.kind is not None:
            _published(part, row.stored.setdefault(part.kind, Tally()))
        if part.kind is None:
            row.note("crops computed on the fly: every image counts")
        return
    paths = data.paths(part)
    caches = bb.caches([part.kind]) if part.kind is not None else {}
    if part.kind is None:
        row.note("crops computed on the fly: every image counts")
    elif bb.why_uncached:
        row.note(bb.why_uncached)
    todo = _uncached(paths, caches.get(part.kind)) if caches else set(paths)
    row.read.update(paths)
    row.images.files |= todo
    if part.stored and part.kind is not None:
        row.stored.setdefault(part.kind, Tally()).files.update(todo)


def _uncached(paths: list[str], cache: Any) -> set[str]:
    """The paths whose image (by content) has no entry in `cache`. An empty namespace needs no hashing."""
    if cache is None:
        return set(paths)
    try:
        if not any(p.is_dir() for p in cache.dir.iterdir()):  # entries live in <namespace>/<sha[:2]>/
            return set(paths)
    except OSError:
        return set(paths)
    from concurrent.futures import ThreadPoolExecutor

    try:
        from harness.data.hashindex import file_sha256_cached as sha256
    except ImportError:  # pragma: no cover - the index is optional
        from harness.data.weights import file_sha256 as sha256
    contains = getattr(cache, "contains", None) or (lambda sha: cache.path(sha).is_file())
    unique = sorted(set(paths))
    with ThreadPoolExecutor(max_workers=8) as pool:  # I/O and hashlib release the GIL
        shas = list(pool.map(lambda p: sha256(Path(p)), unique))
    return {p for p, sha in zip(unique, shas, strict=True) if not contains(sha)}


def _cost(row: Row, bb: _Backbone) -> Cost:
    if bb.bytes is not None and row.stored:
        stored: int | None | str = sum(t.count * bb.bytes.get(kind, 0) for kind, t in row.stored.items())
    else:
        stored = "n/a" if not row.stored else None
    bound = row.images.bound or any(t.bound for t in row.stored.values())
    if row.images.unknown:
        row.note("size not published: " + ", ".join(sorted(row.images.unknown)))
    if bound:
        row.note("≤: an upper bound (draws may overlap)")
    cached = len(row.read - row.images.files)
    if cached:
        row.note(f"{cached:,} image(s) already cached")
    seconds = None if bb.ms is None else row.images.count * bb.ms / 1000
    return Cost(row.images.count, bool(row.images.unknown), stored, any(t.unknown for t in row.stored.values()),
                seconds, "≤" if bound else "")


def _total(rows: list[Row], backbones: list[_Backbone], owners: list[int]) -> Cost:
    """Distinct images per backbone config (an image read by two rows is extracted once), summed over configs."""
    images, seconds, stored_total = 0, 0.0, 0
    unknown = bound = bytes_unknown = False
    time_known = bytes_known = True
    any_stored = False
    for bi, bb in enumerate(backbones):
        mine = [r for r, o in zip(rows, owners, strict=True) if o == bi]
        if not mine:
            continue
        tally = Tally()
        stored: dict[str, Tally] = {}
        for r in mine:
            tally.merge(r.images)
            for kind, t in r.stored.items():
                stored.setdefault(kind, Tally()).merge(t)
        images += tally.count
        unknown = unknown or bool(tally.unknown)
        bytes_unknown = bytes_unknown or any(t.unknown for t in stored.values())
        bound = bound or tally.bound or any(t.bound for t in stored.values())
        if bb.ms is None:
            time_known = False
        else:
            seconds += tally.count * bb.ms / 1000
        if stored:
            any_stored = True
            if bb.bytes is None:
                bytes_known = False
            else:
                stored_total += sum(t.count * bb.bytes.get(kind, 0) for kind, t in stored.items())
    total_bytes: int | None | str = (stored_total if bytes_known else None) if any_stored or not rows else "n/a"
    return Cost(images, unknown, total_bytes, bytes_unknown, seconds if time_known else None, "≤" if bound else "")


# -- rendering -----------------------------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_seconds(s: float) -> str:
    if s >= 2 * 86400:
        return f"{s / 86400:.1f} d"
    if s >= 2 * 3600:
        return f"{s / 3600:.1f} h"
    if s >= 120:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def _cells(c: Cost) -> tuple[str, str, str]:
    more = " + ?" if c.images_unknown else ""
    mark = f"{c.mark} " if c.mark else ""
    images = "unknown" if c.images_unknown and not c.images else f"{mark}{c.images:,}{more}"
    if isinstance(c.bytes, str):
        stored = "n/a (streamed)"
    elif c.bytes is None or c.bytes_unknown and not c.bytes:
        stored = "unknown"
    else:
        stored = f"{mark}{human_bytes(c.bytes)}{' + ?' if c.bytes_unknown else ''}"
    known_time = c.seconds is not None and not (c.images_unknown and not c.images)
    seconds = f"{mark}{human_seconds(c.seconds)}{more}" if known_time else "unknown"  # type: ignore[arg-type]
    return images, stored, seconds


def render(report: Report) -> str:
    """A plain-text table (it never wraps, whatever the terminal), one row per backbone x task x dataset and a
    total row."""
    head = ("backbone", "task", "dataset", "images to extract", "features to store", "est. time", "note")
    body = [(r.backbone, r.task, r.dataset, *_cells(c), "; ".join(r.notes)) for r, c in report.rows]
    body.append(("total", "", "", *_cells(report.total), "distinct images per backbone; time: one pass per image"))
    widths = [max(len(str(x[i])) for x in (head, *body)) for i in range(len(head))]

    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    title = (f"cost: {report.jobs} job(s) to run ({report.done} finished, skipped)"
             + (f" + {report.points_missing_data} protocol point(s) whose data is missing, from published sizes"
                if report.points_missing_data else "")
             + "; images after the feature cache, features in the store dtype")
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([title, "", line(head), rule, *(line(b) for b in body[:-1]), rule, line(body[-1])])
