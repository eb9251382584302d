"""K-shot subsets with Dassl's exact semantics, persisted as JSON so every backbone sees the same images.

Dassl (`DatasetBase.generate_fewshot_dataset`) groups items by label in insertion order and calls
`random.sample(items, K)` per class from the globally seeded `random`; train is sampled first, then val with
min(K, 4). One `random.Random(seed)` stream consumed in that order reproduces it. A class with fewer than K
items keeps all of them (Dassl's default `repeat=False`), and the info dict says which.

A dataset without a val split (ImageNet: CoOp scores its ILSVRC val folder as the test split) draws the few-shot
val from the train items the K-shot draw left, with the same stream and the same per-class rule, so the val is
disjoint from the support and nothing is ever selected on test images. (Dassl reuses the test split as val there.)
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from harness.api import ImageItem
from harness.errors import DataMissingError
from harness.io import atomic_write_json

FORMAT = 1
VAL_SHOTS_MAX = 4


def _sample(items: list[ImageItem], shots: int, rng: random.Random) -> tuple[list[ImageItem], dict[str, Any]]:
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    by_label: dict[int, list[ImageItem]] = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    out: list[ImageItem] = []
    short: dict[int, int] = {}
    for label, group in by_label.items():
        if len(group) >= shots:
            out.extend(rng.sample(group, shots))
        else:
            out.extend(group)
            short[label] = len(group)
    return out, {"short_classes": short}


def sample_few_shot(items: list[ImageItem], shots: int, seed: int) -> tuple[list[ImageItem], dict[str, Any]]:
    """K items per class, `random.Random(seed).sample` per class in label-insertion order (Dassl)."""
    return _sample(items, shots, random.Random(seed))


def fewshot_split(train: list[ImageItem], val: list[ImageItem], shots: int, seed: int) -> dict[str, Any]:
    """Train with K then val with min(K, 4) from ONE Random(seed) stream, in Dassl's order. An empty `val` (no
    val split) means the val is drawn from the train items left after the K-shot draw (`info["val_from"]`)."""
    rng = random.Random(seed)
    val_shots = min(shots, VAL_SHOTS_MAX)
    train_k, train_info = _sample(train, shots, rng)
    pool = val if val else _rest(train, train_k)
    val_k, val_info = _sample(pool, val_shots, rng) if pool else ([], {"short_classes": {}})
    info = {"shots": shots, "val_shots": val_shots, "seed": seed, "train": train_info, "val": val_info}
    if not val:
        info["val_from"] = "train"
    return {"train": train_k, "val": val_k, "info": info}


def _rest(items: list[ImageItem], taken: list[ImageItem]) -> list[ImageItem]:
    """`items` without `taken`, in their order (compared by path: an image is never both support and val)."""
    used = {it.path for it in taken}
    return [it for it in items if it.path not in used]


def fewshot_path(home: Path, dataset_name: str, data_fingerprint: str, shots: int, seed: int) -> Path:
    """Keyed by the data fingerprint, so a changed split file never reuses stale subsets."""
    return Path(home) / "splits" / dataset_name / data_fingerprint[:16] / f"shot_{shots}-seed_{seed}.json"


def _to_json(split: dict[str, Any], dataset_name: str, data_fingerprint: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "dataset": dataset_name,
        "data_fingerprint": data_fingerprint,
        "train": [[it.path, it.label, it.classname] for it in split["train"]],
        "val": [[it.path, it.label, it.classname] for it in split["val"]],
        "info": split["info"],
    }


def _malformed(path: Path, exc: Exception) -> DataMissingError:
    return DataMissingError(f"malformed few-shot split file {path}: {exc}; delete it to re-sample")


def _from_json(path: Path, data: Any, known: dict[str, set[tuple[str, int, str]]]) -> dict[str, Any]:
    try:
        if data["format"] != FORMAT:
            raise ValueError(f"format {data['format']!r}, expected {FORMAT}")
        out: dict[str, Any] = {}
        for key in ("train", "val"):
            out[key] = [ImageItem(path=p, label=lab, classname=c) for p, lab, c in data[key]]
            unknown = [e for e in data[key] if tuple(e) not in known[key]]
            if unknown:
                raise ValueError(f"{key} item {unknown[0]!r} is not in the dataset's {key} split")
        info = data["info"]
        for key in ("train", "val"):  # JSON object keys are strings; labels are ints
            info[key]["short_classes"] = {int(k): v for k, v in info[key]["short_classes"].items()}
        out["info"] = info
        return out
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(path, exc) from None


def load_or_create_fewshot(dataset_name: str, data_fingerprint: str, train: list[ImageItem],
                           val: list[ImageItem], shots: int, seed: int, home: Path) -> dict[str, Any]:
    """Read the persisted K-shot subsets, or sample and persist them (atomic write) on first use.

    Returns `{"train": [ImageItem...], "val": [ImageItem...], "info": {...}}`.
    """
    path = fewshot_path(home, dataset_name, data_fingerprint, shots, seed)
    if path.is_file():
        try:
            data = json.loads(path.read_bytes())
        except (ValueError, RecursionError) as exc:
            raise _malformed(path, exc) from None
        known = {k: {(it.path, it.label, it.classname) for it in items}
                 for k, items in (("train", train), ("val", val or train))}  # no val split: val is train's
        return _from_json(path, data, known)
    split = fewshot_split(train, val, shots, seed)
    atomic_write_json(path, _to_json(split, dataset_name, data_fingerprint))
    return split
