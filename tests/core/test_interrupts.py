"""Ctrl-C in `harness profile` and `harness extract`: exit 130 with one line saying what was finished and how to go
on (issue 16), and what was finished is kept.

The interrupt is simulated where it lands in practice, inside the measuring or extracting function (patched to
do part of its work and then raise KeyboardInterrupt); the CLI runs in this process through `harness.cli.main`,
as the console script runs it. No backbone is built.
"""

from __future__ import annotations

import pandas as pd
import pytest

from harness.cli import main


def cli(capsys, *args: str) -> tuple[int, list[str]]:
    """Run `harness ARGS` here: (exit code, 0 when it returned; the non-empty lines written to stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


# -- profile ------------------------------------------------------------------------------------------------------


class FakeTracker:
    """Stands in for MLflow: remembers the rows logged (the real tracker is tested in test_tracking_*)."""

    logged: list[dict] = []

    def __init__(self, suite: str, experiment: str | None = None):
        FakeTracker.logged = []

    def log_profile(self, row: dict) -> str:
        FakeTracker.logged.append(row)
        return "run"


def profile_row(config, batch_size: int) -> dict:
    return {"backbone": config.name, "variant": config.variant, "device": config.device, "dtype": config.dtype,
            "batch_size": batch_size, "latency_median_s": 0.01 * batch_size, "latency_p90_s": 0.02 * batch_size,
            "images_per_s": 100.0, "latency_per_image_ms": 10.0, "params": 1000, "gflops_per_image": 0.5,
            "peak_memory_mb": 12.0, "memory_kind": "cpu_peak_rss_increase"}


# `profile` checks every config's weights before measuring; the default variants' pretrained weights are not
# here, and no backbone is built anyway.
RANDOM = ("--weights", "random")


@pytest.fixture
def interrupted_profile(monkeypatch):
    """`profile` measures `finished` rows (one child process each, in order), then Ctrl-C arrives."""
    import harness.run.profiler
    import harness.track.tracking

    monkeypatch.setattr(harness.track.tracking, "Tracker", FakeTracker)

    def arrange(finished: int) -> list[tuple[str, int]]:
        measured: list[tuple[str, int]] = []

        def profile_rows(config, sizes, warmup=2, repeats=5):
            for bs in sizes:
                if len(measured) == finished:
                    raise KeyboardInterrupt
                measured.append((config.name, bs))
                yield profile_row(config, bs)

        monkeypatch.setattr(harness.run.profiler, "profile_rows", profile_rows)
        return measured

    return arrange


def test_ctrl_c_in_profile_keeps_the_rows_measured_and_says_so(isolated_env, capsys, interrupted_profile):
    measured = interrupted_profile(finished=3)  # Ctrl-C while the second backbone's second size is measured
    code, lines = cli(capsys, "profile", "-b", "resnet,dino", "--batch-sizes", "1,8", "--out-dir", "lb", *RANDOM)
    assert code == 130
    assert measured == [("resnet", 1), ("resnet", 8), ("dino", 1)]
    assert "Traceback" not in "\n".join(lines)
    assert lines[-1] == ("interrupted: 3 of 4 profile row(s) measured, logged to MLflow and written to "
                         "lb/profiles.csv; rerun the same command to finish (it measures every row again; a new "
                         "row replaces its old one)")
    written = pd.read_csv(isolated_env / "lb" / "profiles.csv")
    assert sorted(zip(written["backbone"], written["batch_size"], strict=True)) == sorted(measured)
    assert [(r["backbone"], r["batch_size"]) for r in FakeTracker.logged] == measured
    table = (isolated_env / "lb" / "profiles.md").read_text()
    assert "| resnet" in table and "| dino" in table


def test_ctrl_c_before_the_first_profile_row_writes_nothing(isolated_env, capsys, interrupted_profile):
    interrupted_profile(finished=0)
    code, lines = cli(capsys, "profile", "-b", "resnet", "--batch-sizes", "1,8,32", "--out-dir", "lb", *RANDOM)
    assert code == 130
    assert lines == ["interrupted: 0 of 3 profile row(s) measured, nothing written; rerun the same command to "
                     "finish (it measures every row again; a new row replaces its old one)"]
    assert not (isolated_env / "lb" / "profiles.csv").exists()


def test_ctrl_c_keeps_earlier_profile_rows_of_other_backbones(isolated_env, capsys, interrupted_profile):
    """The rows written at the interrupt merge into profiles.csv like a finished run's: nothing older is lost."""
    interrupted_profile(finished=1)
    assert cli(capsys, "profile", "-b", "dino", "--batch-sizes", "4", "--out-dir", "lb", *RANDOM)[0] == 0  # all of it
    interrupted_profile(finished=1)
    assert cli(capsys, "profile", "-b", "resnet,dino", "--batch-sizes", "1", "--out-dir", "lb", *RANDOM)[0] == 130
    written = pd.read_csv(isolated_env / "lb" / "profiles.csv")
    assert sorted(zip(written["backbone"], written["batch_size"], strict=True)) == [("dino", 4), ("resnet", 1)]


# -- extract ------------------------------------------------------------------------------------------------------


def put_entries(n: int, salt: str) -> None:
    """Write `n` real entries into the feature cache, as a shard does."""
    import hashlib

    import torch

    from harness.data.cache import FeatureCache

    cache = FeatureCache({"backbone": "fake", "variant": "x"}, "global")
    for i in range(n):
        assert cache.put(hashlib.sha256(f"{salt}{i}".encode()).hexdigest(), torch.full((4,), float(i)))


@pytest.fixture
def interrupted_extract(monkeypatch):
    """`extract` over two backbone configs; the second writes `partial` entries, then Ctrl-C arrives."""
    import harness.run.parallel_extract as pe

    real = pe.backbone_configs
    configs = [real(["resnet"], "mini")[0], real(["dino"], "mini")[0]]
    monkeypatch.setattr(pe, "backbone_configs", lambda *args, **kwargs: configs)

    def arrange(first: int, partial: int) -> None:
        calls: list[str] = []

        def extract_dataset(config, dataset, **kwargs):
            calls.append(config.name)
            if len(calls) == 1:
                put_entries(first, "first")
                return pe.ExtractSummary(backbone=f"{config.name}:{config.variant}", dataset=dataset,
                                         kinds=("global",), items=first, images=first, shards=1, workers=1,
                                         executor="processes", extracted=first)
            put_entries(partial, "second")
            raise KeyboardInterrupt

        monkeypatch.setattr(pe, "extract_dataset", extract_dataset)

    return arrange


def test_ctrl_c_in_extract_says_what_finished_and_that_a_rerun_skips_it(isolated_env, capsys, interrupted_extract):
    put_entries(2, "before")  # entries of an earlier command: not counted as this one's
    interrupted_extract(first=3, partial=4)
    code, lines = cli(capsys, "extract", "-b", "resnet,dino", "--dataset", "mini_coop")
    assert code == 130
    assert lines == ["interrupted: 1 of 2 backbone config(s) finished extracting mini_coop; the feature cache grew "
                     "by 7 entries (kept); rerun the same command to extract only what is missing (cached entries "
                     "are skipped)"]
    from harness.data.cache import cache_info

    assert sum(row["entries"] for row in cache_info()) == 2 + 3 + 4  # what the interrupted command wrote is kept


def test_ctrl_c_in_extract_with_an_unreadable_cache_still_says_one_line(isolated_env, capsys, monkeypatch,
                                                                       interrupted_extract):
    import harness.data.cache

    interrupted_extract(first=1, partial=0)

    def broken(*args, **kwargs):
        raise OSError("ledger unreadable")

    monkeypatch.setattr(harness.data.cache, "cache_info", broken)
    code, lines = cli(capsys, "extract", "-b", "resnet,dino", "--dataset", "mini_coop")
    assert code == 130
    assert lines == ["interrupted: 1 of 2 backbone config(s) finished extracting mini_coop; rerun the same command "
                     "to extract only what is missing (cached entries are skipped)"]
