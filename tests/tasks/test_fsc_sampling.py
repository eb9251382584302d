"""K-shot sampling: Dassl's semantics, seeds, short classes, and the persisted subsets."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness.api import ImageItem
from harness.errors import DataMissingError
from tasks.fsc.sampling import fewshot_path, fewshot_split, load_or_create_fewshot, sample_few_shot


def _items(per_class: dict[int, int], prefix: str = "train") -> list[ImageItem]:
    return [ImageItem(path=f"{prefix}/c{label}/{i}.jpg", label=label, classname=f"class_{label}")
            for label, n in per_class.items() for i in range(n)]


def _dassl_reference(sources: list[tuple[list[ImageItem], int]], seed: int) -> list[list[ImageItem]]:
    """What Dassl does: seed the global `random`, then per source and per label `random.sample`."""
    random.seed(seed)
    out = []
    for items, shots in sources:
        tracker: dict[int, list[ImageItem]] = {}
        for it in items:
            tracker.setdefault(it.label, []).append(it)
        picked: list[ImageItem] = []
        for group in tracker.values():
            picked.extend(random.sample(group, shots) if len(group) >= shots else group)
        out.append(picked)
    return out


TRAIN = _items({3: 20, 0: 20, 1: 20, 2: 20})  # labels in a non-sorted insertion order
VAL = _items({3: 8, 0: 8, 1: 8, 2: 8}, prefix="val")


@pytest.mark.parametrize("shots", [1, 2, 4, 8, 16])
def test_k_per_class_without_duplicates(shots: int) -> None:
    picked, info = sample_few_shot(TRAIN, shots, seed=1)
    assert info == {"short_classes": {}}
    assert len(picked) == 4 * shots and len(set(picked)) == len(picked)
    assert all(sum(it.label == lab for it in picked) == shots for lab in range(4))
    assert set(picked) <= set(TRAIN)
    assert [it.label for it in picked[::shots]] == [3, 0, 1, 2]  # label-insertion order, as Dassl


def test_seeds() -> None:
    assert sample_few_shot(TRAIN, 4, seed=1) == sample_few_shot(TRAIN, 4, seed=1)
    assert sample_few_shot(TRAIN, 4, seed=1)[0] != sample_few_shot(TRAIN, 4, seed=2)[0]


def test_matches_dassl() -> None:
    for seed in (1, 2, 3):
        assert sample_few_shot(TRAIN, 8, seed)[0] == _dassl_reference([(TRAIN, 8)], seed)[0]
        split = fewshot_split(TRAIN, VAL, 16, seed)
        assert [split["train"], split["val"]] == _dassl_reference([(TRAIN, 16), (VAL, 4)], seed)


def test_short_class_takes_all_and_is_reported() -> None:
    items = _items({0: 10, 1: 2, 2: 10})
    picked, info = sample_few_shot(items, 4, seed=3)
    assert info == {"short_classes": {1: 2}}
    assert [it for it in picked if it.label == 1] == [it for it in items if it.label == 1]
    assert len(picked) == 10 and len(set(picked)) == 10


def test_fewshot_split_val_shots_and_info() -> None:
    split = fewshot_split(TRAIN, VAL, 16, seed=2)
    assert len(split["train"]) == 64 and len(split["val"]) == 16
    assert split["info"]["val_shots"] == 4 and split["info"]["shots"] == 16 and split["info"]["seed"] == 2
    assert len(fewshot_split(TRAIN, VAL, 2, seed=2)["val"]) == 8
    # No val split: the val is drawn from what the K-shot draw left of train, continuing the same stream.
    no_val = fewshot_split(TRAIN, [], 2, seed=2)
    assert no_val["train"] == fewshot_split(TRAIN, VAL, 2, seed=2)["train"] and no_val["info"]["val_from"] == "train"
    rng = random.Random(2)
    support = [it for group in (TRAIN[i:i + 20] for i in range(0, 80, 20)) for it in rng.sample(group, 2)]
    rest = [it for it in TRAIN if it not in support]
    assert no_val["train"] == support
    assert no_val["val"] == [it for group in (rest[i:i + 18] for i in range(0, 72, 18)) for it in rng.sample(group, 2)]
    assert "val_from" not in fewshot_split(TRAIN, VAL, 2, seed=2)["info"]


def test_bad_shots() -> None:
    with pytest.raises(ValueError):
        sample_few_shot(TRAIN, 0, seed=1)


def test_persisted_and_read_back_identical(tmp_path: Path) -> None:
    fp = "ab" * 32
    train = TRAIN + _items({9: 2})  # one short class, so int keys must survive the JSON round trip
    first = load_or_create_fewshot("dtd", fp, train, VAL, 8, 1, home=tmp_path)
    path = fewshot_path(tmp_path, "dtd", fp, 8, 1)
    assert path == tmp_path / "splits" / "dtd" / fp[:16] / "shot_8-seed_1.json"
    on_disk = json.loads(path.read_text())
    head = first["train"][0]
    assert on_disk["train"][0] == [head.path, head.label, head.classname]
    assert first["info"]["train"]["short_classes"] == {9: 2}
    # Read back, not re-sampled: a different input order would give a different sample.
    again = load_or_create_fewshot("dtd", fp, list(reversed(train)), list(reversed(VAL)), 8, 1, home=tmp_path)
    assert again == first
    assert load_or_create_fewshot("dtd", fp, train, VAL, 8, 2, home=tmp_path)["train"] != first["train"]


def test_persisted_file_malformed_or_stale(tmp_path: Path) -> None:
    fp = "cd" * 32
    load_or_create_fewshot("dtd", fp, TRAIN, VAL, 2, 1, home=tmp_path)
    path = fewshot_path(tmp_path, "dtd", fp, 2, 1)
    with pytest.raises(DataMissingError, match="not in the dataset's train split"):
        load_or_create_fewshot("dtd", fp, TRAIN[:5], VAL, 2, 1, home=tmp_path)
    path.write_text("{broken")
    with pytest.raises(DataMissingError, match=str(path)):
        load_or_create_fewshot("dtd", fp, TRAIN, VAL, 2, 1, home=tmp_path)
