"""Data-parallel extraction (`harness extract`): N workers write exactly the cache entries one worker writes,
a failed shard leaves whole entries only, and a later `harness run` reads every image from the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ConfigError, HarnessError
from harness.plan.planner import open_dataset
from harness.run.parallel_extract import (
    Shard,
    backbone_configs,
    dataset_items,
    extract_dataset,
    plan_shards,
    run_shard,
    suite_for_dataset,
    unique_images,
    worker_threads,
)


def cache_entries(root: Path) -> dict[str, dict]:
    """Every cache entry under `root`: relative path -> its tensors."""
    from safetensors.torch import load_file

    return {str(p.relative_to(root)): load_file(p) for p in sorted(root.rglob("*.safetensors"))}


def assert_same_entries(a: dict[str, dict], b: dict[str, dict]) -> None:
    import torch

    assert a.keys() == b.keys()
    for key in a:
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}:{name} differs"


def extract_into(cache: Path, monkeypatch, *args, **kwargs):
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    return extract_dataset(*args, **kwargs)


# -- planning (no model) ------------------------------------------------------------------------------------


def test_shards_are_contiguous_runs_of_whole_batches():
    for n, bs, workers in [(100, 16, 3), (48, 16, 2), (360, 32, 2), (7, 32, 4), (64, 8, 64), (0, 8, 2)]:
        ranges = plan_shards(n, bs, workers)
        assert len(ranges) == min(workers, -(-n // bs))
        assert [a for a, _ in ranges] == [0, *(b for _, b in ranges)][:len(ranges)]  # contiguous, in order
        assert not ranges or ranges[-1][1] == n
        assert all(a % bs == 0 for a, _ in ranges)  # every shard starts on the one-worker batch grid
        sizes = [-(-(b - a) // bs) for a, b in ranges]
        assert not sizes or max(sizes) - min(sizes) <= 1
    with pytest.raises(ConfigError):
        plan_shards(10, 8, 0)


def test_thread_count_never_depends_on_the_worker_count():
    assert {worker_threads("cpu", w, 16) for w in (1, 2, 3, 16)} == {1}
    assert worker_threads("cpu", 4, 16, threads=3) == 3
    assert worker_threads("cuda", 4, 16) == 4  # on a GPU the CPU only preprocesses
    with pytest.raises(ConfigError):
        worker_threads("cpu", 1, 4, threads=0)


def test_listing_is_every_split_once_and_other_datasets_are_refused():
    ds = open_dataset("mini_coop")
    splits = ds.splits()
    items = dataset_items(ds)
    assert [it.path for it in items] == list(dict.fromkeys(it.path for s in splits.values() for it in s))
    assert dataset_items(ds, "val") == splits["val"]
    with pytest.raises(ConfigError, match="no split 'nope'"):
        dataset_items(ds, ["val", "nope"])
    with pytest.raises(ConfigError, match="cannot be prewarmed"):
        dataset_items(open_dataset("mini_ovss", generate=False))
    assert suite_for_dataset("mini_coop") == "mini" and suite_for_dataset("caltech101") == "all"


def test_files_with_the_same_bytes_are_extracted_once(tmp_path):
    """Two paths, one content, one cache entry: only the first is listed, so no two shards (two batches)
    race to write it; the whole listing is hashed on several threads, in listing order."""
    ds = open_dataset("mini_coop")
    items = dataset_items(ds, "val")
    twin = ds.image_path(items[5])
    twin.write_bytes(ds.image_path(items[40]).read_bytes())
    images = unique_images(ds, items, threads=4)
    assert [it for it, _ in images] == items[:40] + items[41:]
    assert len({sha for _, sha in images}) == len(images) == 47


def test_configs_are_the_ones_a_run_builds():
    from harness.config import RunConfig
    from harness.plan.planner import backbone_config, plan
    from harness.plan.suites import load_suite

    spec = load_suite("mini")
    run = RunConfig(suite="mini", backbones=["vermouth"], batch_size=8, backbone_options={"t": 50})
    planned = list(dict.fromkeys(job.backbone for job in plan(run, spec).jobs))  # one per task (its preset)
    assert len(planned) == 3
    assert backbone_configs(["vermouth"], "mini", batch_size=8, options={"t": 50}) == planned
    fsc = [job.backbone for job in plan(run, spec).jobs if job.task == "fsc"][0]
    assert backbone_configs(["vermouth"], "mini", batch_size=8, options={"t": 50}, dataset="mini_coop") == [
        fsc] == [backbone_config("vermouth", run, spec, entry=spec.entries[0])]


# -- determinism across worker counts ----------------------------------------------------------------------


def test_two_processes_write_exactly_what_one_worker_writes(tmp_path, monkeypatch):
    """Vermouth tiny: its CPU numerics depend on the batch an image is in, so this also checks that shards
    keep the one-worker batches (48 images, batch 16: shards of 16 and 32, never 24 and 24). Dense maps: the
    dict payloads, and what Vermouth's neck reads."""
    cfg = backbone_configs(["vermouth"], "mini", batch_size=16)[0]
    kinds = ("dense",)
    one = extract_into(tmp_path / "one", monkeypatch, cfg, "mini_coop", kinds, split="val", workers=1)
    two = extract_into(tmp_path / "two", monkeypatch, cfg, "mini_coop", kinds, split="val", workers=2)
    assert (one.shards, two.shards, two.items, two.extracted, two.cached) == (1, 2, 48, 48, 0)
    assert [r.images for r in two.per_shard] == [16, 32]
    assert two.namespaces == one.namespaces
    assert_same_entries(cache_entries(tmp_path / "one" / "features"), cache_entries(tmp_path / "two" / "features"))

    again = extract_dataset(cfg, "mini_coop", kinds, split="val", workers=1)  # resume: nothing left to do
    assert (again.extracted, again.cached) == (0, 48)


def test_ray_tasks_write_exactly_what_one_worker_writes(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # another test's Ray carries another test's HARNESS_* environment
        ray.shutdown()
    cfg = backbone_configs(["resnet"], "mini", batch_size=16)[0]
    one = extract_into(tmp_path / "one", monkeypatch, cfg, "mini_coop", split="val", workers=1)
    try:
        two = extract_into(tmp_path / "two", monkeypatch, cfg, "mini_coop", split="val", workers=2, executor="ray")
    finally:
        assert not ray.is_initialized()  # the Ray that extract_dataset started is stopped again
        if ray.is_initialized():
            ray.shutdown()
    assert (two.shards, two.extracted, two.executor) == (2, 48, "ray")
    assert two.namespaces == one.namespaces
    assert_same_entries(cache_entries(tmp_path / "one" / "features"), cache_entries(tmp_path / "two" / "features"))


# -- a shard that dies --------------------------------------------------------------------------------------


def test_a_failed_shard_leaves_whole_entries_and_a_rerun_finishes_the_rest(tmp_path, monkeypatch):
    """The worker dies while writing its third entry (after the bytes, before the rename): the cache holds
    two whole entries and no partial file, and running again extracts only the other images."""
    import harness.io
    from harness.data.cache import FeatureCache

    cfg = backbone_configs(["resnet"], "mini", batch_size=8)[0]
    ds = open_dataset("mini_coop")
    images = unique_images(ds, dataset_items(ds, "val")[:16])
    replace, written = os.replace, []

    def dying_replace(src, dst):
        if str(dst).endswith(".safetensors"):
            if len(written) == 2:
                raise KeyboardInterrupt("worker killed")  # a kill, not a disk error (that one is streamed)
            written.append(dst)
        replace(src, dst)

    monkeypatch.setattr(harness.io.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt, match="worker killed"):
        run_shard(Shard(index=0, count=1, config=cfg, dataset="mini_coop", kinds=("global",), images=images, threads=1))
    monkeypatch.setattr(harness.io.os, "replace", replace)

    root = tmp_path / "cache" / "features"
    files = [p for p in root.rglob("*") if p.is_file() and p.name != "namespace.json"
             and not p.name.startswith("ledger.sqlite")]  # the store's bookkeeping
    assert sorted(files) == sorted(Path(p) for p in written)  # no temp file, no partial entry
    from harness.run.executor import build_backbone

    cache = FeatureCache(build_backbone(cfg).fingerprint(), "global")
    assert all(cache.get(p.stem) is not None for p in files)  # each one whole and checksummed

    rest = run_shard(Shard(index=0, count=1, config=cfg, dataset="mini_coop", kinds=("global",), images=images,
                           threads=1))
    assert (rest.extracted, rest.cached) == ({"global": 14}, {"global": 2})


def test_failed_shards_come_back_as_one_error_naming_them(tmp_path, monkeypatch):
    """Workers' errors (ours do not unpickle as they are) come back as messages, one line per shard."""
    import harness.run.parallel_extract as pe

    cfg = backbone_configs(["dino"], "mini")[0]
    shard = Shard(index=1, count=2, config=cfg, dataset="nosuch", kinds=("global",), images=[])
    results, errors = pe._run_processes([shard])  # in a spawned process
    assert results == [] and len(errors) == 1
    assert errors[0].startswith("shard 2/2: UnknownNameError: unknown dataset 'nosuch'")
    errors = [errors[0], errors[0].replace("shard 2/2", "shard 1/2")]

    monkeypatch.setattr(pe, "_dispatch", lambda shards, ray: ([], errors))
    with pytest.raises(HarnessError, match=r"2 of 2 shard\(s\) failed.*run the same command again"):
        extract_dataset(cfg, "mini_coop", split="val", workers=2)


# -- the command line, end to end ---------------------------------------------------------------------------

SUITE = """\
name: prewarm
variant: tiny
device: cpu
batch_size: 32
entries:
  - task: fsc
    datasets: [mini_coop]
    grid:
      head: [linear-probe]
      shots: [1]
      seed: [1]
"""


def harness(cwd: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=cwd, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(proc: subprocess.Popen) -> None:
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{' '.join(proc.args)}:\n{output}"


def outcome(folder: Path) -> tuple[list[dict], list[str]]:
    """The run's records, and its leaderboard without the provenance lines that name the minute and the
    commit (others may commit meanwhile)."""
    records = [json.loads(p.read_text()) for p in (folder / "home" / "records").glob("*.json")]
    board = (folder / "home" / "leaderboards" / "prewarm.md").read_text().splitlines()
    return records, [line for line in board if not line.startswith(("- compiled:", "- git commit"))]


@pytest.mark.slow
def test_cli_prewarm_then_run_reads_only_cache_hits(tmp_path, monkeypatch):
    """`harness extract` builds the backbone config as `harness run` does, so the run finds every feature in the
    cache (its namespace is the run's) and its leaderboard is the one of a run that extracted them itself."""
    from typer.testing import CliRunner

    from harness.cli import app

    suite = tmp_path / "prewarm.yaml"
    suite.write_text(SUITE)
    env = {name: {"HARNESS_HOME": str(tmp_path / name / "home"), "HARNESS_CACHE": str(tmp_path / name / "cache")}
           for name in ("cold", "warm")}
    for name in env:
        (tmp_path / name).mkdir()
    cold = harness(tmp_path / "cold", env["cold"], "run", "-b", "dino", "--suite", str(suite))  # meanwhile

    for key, value in env["warm"].items():  # extract in this process (its workers are spawned all the same)
        monkeypatch.setenv(key, value)
    res = CliRunner().invoke(app, ["extract", "-b", "dino", "--dataset", "mini_coop", "--shards", "2",
                                   "--suite", str(suite)])
    assert res.exit_code == 0, res.output
    n = sum(len(items) for items in open_dataset("mini_coop").splits().values())
    assert f"dino:tiny mini_coop: {n} images x global, 2 shard(s)" in res.output
    assert f"{n} extracted, 0 already cached" in res.output
    finished(harness(tmp_path / "warm", env["warm"], "run", "-b", "dino", "--suite", str(suite)))
    finished(cold)

    (cold_records, cold_board), (warm_records, warm_board) = outcome(tmp_path / "cold"), outcome(tmp_path / "warm")
    assert len(warm_records) == 1 and warm_records[0]["counters"]["images_extracted"] == 0
    assert warm_records[0]["counters"]["feature_cache_hits"] > 0 and cold_records[0]["counters"]["images_extracted"] > 0
    assert warm_board == cold_board
    assert warm_records[0]["metrics"] == cold_records[0]["metrics"]
