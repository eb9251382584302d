"""The cost model (harness.plan.cost): images to extract, bytes to store and time, before any work.

Expected numbers are computed here from the published split sizes in /work/shared/research/protocols.md (CoOp
Table 1, the ZSE-SBIR `_zero` list counts, the OVSS val sets) and the suite's grid, not from harness.plan.cost.
"""

from __future__ import annotations

import pytest

from harness.config import RunConfig
from harness.plan.cost import Tally, estimate, human_bytes, ms_per_image, render
from harness.plan.planner import plan, resolve_device
from harness.plan.suites import load_suite

# protocols.md §A.1: classes, train, val, test (ImageNet: no val, its few-shot val is drawn from the train split
# minus the support, tasks/fsc/sampling.py;
# train 1,281,167 = ILSVRC-2012, "1.28M" in the table)
COOP = {
    "imagenet": (1000, 1_281_167, None, 50_000), "caltech101": (100, 4_128, 1_649, 2_465),
    "oxford_pets": (37, 2_944, 736, 3_669), "stanford_cars": (196, 6_509, 1_635, 8_041),
    "oxford_flowers": (102, 4_093, 1_633, 2_463), "food101": (101, 50_500, 20_200, 30_300),
    "fgvc_aircraft": (100, 3_334, 3_333, 3_333), "sun397": (397, 15_880, 3_970, 19_850),
    "dtd": (47, 2_820, 1_128, 1_692), "eurosat": (10, 13_500, 5_400, 8_100), "ucf101": (101, 7_639, 1_898, 3_783),
}
SHOTS, SEEDS = (1, 2, 4, 8, 16), (1, 2, 3)  # the `all` suite's grid
SBIR_ZERO = {"sketchy_25": (15_229, 17_101), "sketchy_21": (12_694, 12_553), "tuberlin_30": (2_400, 27_989),
             "quickdraw_30": (92_291, 54_151)}
SBIR_TRAIN_KNOWN = 15_400  # TU-Berlin's sketch train list; no other train list length is published there
OVSS = {"coco_stuff_171": 118_287, "ade150": 2_000, "ade847": 2_000, "pc": 5_104, "voc20": 1_449}  # pc59 = pc459


def fewshot_upper_bounds(n_classes: int, train: int, val: int | None) -> tuple[int, int]:
    """Images of the few-shot train and val draws over the grid: at most the sum of the draws, at most the split
    (no val split: the val draws come out of the train images the support draws left)."""
    train_k = min(train, sum(k * n_classes for k in SHOTS for _ in SEEDS))
    val_k = min(val if val is not None else train - train_k, sum(min(k, 4) * n_classes for k in SHOTS for _ in SEEDS))
    return train_k, val_k


def expected_all_suite_images() -> int:
    fsc = 0
    for n_classes, train, val, test in COOP.values():
        train_k, val_k = fewshot_upper_bounds(n_classes, train, val)
        fsc += test + train_k + val_k  # ImageNet's val draws are train images outside the support: they add up
    sbir = sum(q + g for q, g in SBIR_ZERO.values()) + SBIR_TRAIN_KNOWN
    return fsc + sbir + sum(OVSS.values())


def expected_vermouth_sd15_bytes() -> int:
    """Stored: the few-shot train + val of both heads (global for the linear probe, the neck's dense levels for
    the text classifier) and TU-Berlin's sketch train list (dense), fp16, at each task's preset: FSC 256 px
    (levels at 4, 8, 16, 32), SBIR 256 px with the 77 cross-attention maps joining the 8- and 16-px levels."""
    global_values = 1280 + 1280 + 1280 + 960
    fsc_dense = 1280 * 4 * 4 + 1280 * 8 * 8 + 1280 * 16 * 16 + 960 * 32 * 32
    sbir_dense = 1280 * 4 * 4 + (1280 + 77) * 8 * 8 + (1280 + 77) * 16 * 16 + 960 * 32 * 32
    images = sum(sum(fewshot_upper_bounds(*v[:3])) for v in COOP.values())
    return 2 * (images * (global_values + fsc_dense) + SBIR_TRAIN_KNOWN * sbir_dense)


def all_suite_report(backbone: str, tmp_path):
    run = RunConfig(suite="all", backbones=[backbone], dry_run=True)
    p = plan(run, load_suite("all"))
    return p, estimate(p, p.jobs, tmp_path / "leaderboards")


def test_all_suite_without_data_or_weights_is_priced_from_published_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    p, report = all_suite_report("vermouth", tmp_path)
    assert p.jobs == [] and len(p.missing) == 21
    assert [m.needed_by for m in p.missing_weights] == ["vermouth:sd15", "clip:vit-l-14 (text space)"]
    assert report.total.images == expected_all_suite_images()
    assert report.total.images_unknown and report.total.mark == "≤"  # SBIR train lists; few-shot unions
    assert report.total.bytes == expected_vermouth_sd15_bytes()
    assert report.total.seconds is None
    table = render(report)
    total = [c.strip() for c in table.splitlines()[-1].split("|")]
    assert total[1] == "total"
    assert total[4] == f"≤ {expected_all_suite_images():,} + ?"
    assert total[5] == f"≤ {expected_vermouth_sd15_bytes() / 2**30:.1f} GiB + ?" and total[6] == "unknown"
    rows = {(r.task, r.dataset): c for r, c in report.rows}
    assert rows["ovss", "ade150"].bytes == "n/a"  # crops stream
    assert rows["ovss", "pc459"].images == OVSS["coco_stuff_171"] + OVSS["pc"]
    # test + the support draws (1+2+4+8+16 shots x 3 seeds x 1000 classes) + the val draws (min(K, 4) per class),
    # which come from train: never the test images
    assert rows["fsc", "imagenet"].images == 50_000 + 93_000 + 45_000


def test_time_is_images_times_the_profiled_ms_per_image(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    device = resolve_device("auto")[0]  # the `all` suite's device on this machine
    (tmp_path / "leaderboards").mkdir()
    (tmp_path / "leaderboards" / "profiles.csv").write_text(
        "backbone,variant,device,dtype,batch_size,latency_per_image_ms\n"
        f"resnet,resnet50,{device},fp32,1,40.0\n"
        f"resnet,resnet50,{device},fp32,64,2.5\n"  # the largest batch size is the one used
        f"resnet,resnet50,{device},bf16,128,1.0\n"  # another dtype: not this plan's
        "resnet,resnet50,elsewhere,fp32,256,0.5\n")
    _, report = all_suite_report("resnet", tmp_path)
    assert report.total.images == expected_all_suite_images()
    assert report.total.seconds == pytest.approx(expected_all_suite_images() * 2.5 / 1000)
    for row, cost in report.rows:
        assert cost.seconds == pytest.approx(cost.images * 2.5 / 1000), row.dataset
    cell = [c.strip() for c in render(report).splitlines()[-1].split("|")][6]
    value, unit = cell.removeprefix("≤ ").removesuffix(" + ?").split()
    assert unit == "min" and float(value) == pytest.approx(expected_all_suite_images() * 2.5 / 1000 / 60, abs=0.05)


def test_profile_lookup_matches_backbone_variant_device_and_dtype(tmp_path):
    from harness.config import BackboneConfig

    (tmp_path / "profiles.csv").write_text(
        "backbone,variant,device,dtype,batch_size,latency_per_image_ms,error\n"
        "clip,tiny,cuda:0,fp16,8,3.0,\n"
        "clip,tiny,cuda:0,fp16,32,,out of memory\n"  # a failed size has no latency
        "clip,tiny,cpu,fp16,64,9.0,\n")
    assert ms_per_image(BackboneConfig(name="clip", variant="tiny", device="cuda", dtype="fp16"), tmp_path) == 3.0
    assert ms_per_image(BackboneConfig(name="clip", variant="tiny", device="cpu", dtype="fp32"), tmp_path) is None
    assert ms_per_image(BackboneConfig(name="clip", variant="tiny"), tmp_path / "nowhere") is None


def test_union_of_draws_and_shared_folders():
    t = Tally()
    t.add_group(("imagenet", "train"), "imagenet", 1000, 1_281_167, False, draw=("imagenet", "train", 1, 1))
    t.add_group(("imagenet", "train"), "imagenet", 1000, 1_281_167, False, draw=("imagenet", "train", 1, 1))
    assert t.count == 1000 and t.bound  # the same draw read by two heads is one set of images
    t.add_group(("imagenet", "test"), "imagenet", 50_000, 50_000, True)
    t.add_group(("imagenet", "test"), "imagenet", 50_000, 50_000, True)
    assert t.count == 1000 + 50_000  # the whole test split read twice is one set of images
    shared = Tally()
    shared.add_group(("VOCdevkit/VOC2010", "JPEGImages"), "pc59", 5104, 5104, True)
    shared.add_group(("VOCdevkit/VOC2010", "JPEGImages"), "pc459", 5104, 5104, True)
    assert shared.count == 5104 and not shared.bound
    shared.add_group(("Sketchy", "sketchy_25:photo_zero"), "sketchy_25", 10, 10, True)
    shared.add_group(("Sketchy", "sketchy_21:photo_zero"), "sketchy_21", 10, 10, True)
    assert shared.bound  # two datasets' lists over one image folder may overlap


def test_human_units():
    assert human_bytes(512) == "512 B" and human_bytes(24 * 1024) == "24.0 KiB"
    assert human_bytes(3 * 2**40) == "3.0 TiB" and human_bytes(5000 * 2**40) == "5000.0 TiB"


def test_mini_dry_run_counts_files_and_the_cache_after_extraction(tmp_path):
    """Data present: exact counts from the split files; an image in the feature cache is not counted."""
    from harness.run.parallel_extract import backbone_configs, extract_dataset

    suite_file = tmp_path / "one.yaml"
    suite_file.write_text("name: one\nvariant: tiny\ndevice: cpu\nentries:\n  - task: fsc\n"
                          "    datasets: [mini_coop]\n    protocol: {text_space: 'clip:tiny'}\n"
                          "    grid: {head: [linear-probe, text-classifier], shots: [1, 4], seed: [1]}\n")
    spec = load_suite(str(suite_file))
    run = RunConfig(suite=str(suite_file), backbones=["resnet"], dry_run=True)
    p = plan(run, spec)
    before = estimate(p, p.jobs, tmp_path)
    # mini_coop: 12 classes, 16 train / 4 val / 40 test per class; draws of 1 and 4 shots (val: min(K, 4))
    assert before.total.images <= 12 * (1 + 4) + 12 * (1 + 4) + 12 * 40
    assert before.total.images >= 12 * 4 + 12 * 4 + 12 * 40 and before.total.mark == ""
    assert before.total.bytes == 2 * 512 * len(before.rows[0][0].stored["global"].files)  # resnet10t: 512-d, fp16
    extract_dataset(backbone_configs(["resnet"], str(suite_file))[0], "mini_coop")
    after = estimate(p, p.jobs, tmp_path)
    assert after.total.images == 0 and after.total.bytes == 0
    assert f"{before.total.images:,} image(s) already cached" in render(after)


def test_a_dataset_without_a_val_split_prices_its_fewshot_val_as_train_images():
    """ImageNet has no val split: its few-shot val (min(K, 4) per class) comes out of train, never test
    (tasks/fsc/sampling.py); Caltech101 draws it from its own val split."""
    from harness.plan.cost import READS, _published

    t = Tally()
    for dataset in ("imagenet", "caltech101"):
        for part in READS["fsc"]({"head": "linear-probe", "shots": 8, "seed": 1}, dataset, False):
            _published(part, t)
    counts = {k: (g.count, g.full) for k, g in t.groups.items()}
    assert counts == {("imagenet", "train"): (8 * 1000 + 4 * 1000, False), ("imagenet", "test"): (50_000, True),
                      ("caltech-101", "train"): (8 * 100, False), ("caltech-101", "val"): (4 * 100, False),
                      ("caltech-101", "test"): (2_465, True)}
