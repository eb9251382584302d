"""Commands that can do nothing useful end in ONE line and a non-zero exit, and leave nothing behind (issue 19):
a CUDA device this machine or Ray cluster lacks, a missing optional extra (its `[ray]` kept, not eaten as rich
markup), a leaderboard of a mistyped or never-run suite, a profile whose weights are absent, a run whose every
dataset is skipped, and `cache clear`, which asks before it deletes.

Each case drives the real CLI in-process through `harness.cli.main` (what the console script calls), as
tests/core/test_one_line_errors.py does. None builds a backbone or runs a job.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch
from record_factory import record

from harness.cli import main


def cli(capsys, *args: str) -> tuple[int, list[str], str]:
    """Run `harness ARGS` in this process: (exit code, the non-empty stderr lines, stdout)."""
    code = 0  # `main` returns after a command that succeeds; it exits only with a failure's code
    try:
        main(list(args))
    except SystemExit as exit_:
        code = exit_.code or 0
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.strip()], captured.out


def one_error_line(code: int, lines: list[str], *names: str) -> str:
    """A failed command: non-zero exit, no traceback, exactly one `error:` line, the last one, naming `names`."""
    assert code != 0, lines
    assert not any("Traceback" in line for line in lines), lines
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def experiments(home: Path) -> set[str]:
    """The experiment names in the default MLflow store, read with sqlite (MLflow itself would create nothing,
    but an independent reader is the better witness)."""
    import sqlite3

    with sqlite3.connect(home / "mlflow.db") as conn:
        return {name for (name,) in conn.execute("SELECT name FROM experiments")}


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a GPU machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


# -- 1. a CUDA device that is not there ----------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("extract", "-b", "resnet", "--variant", "tiny", "--dataset", "mini_coop", "--device", "cuda"),
    ("profile", "-b", "resnet", "--variant", "tiny", "--device", "cuda", "--batch-sizes", "1"),
    ("sweep", "-b", "vermouth", "--param", "t=50", "--suite", "SUITE_CUDA"),
    ("run", "-b", "resnet", "--variant", "tiny", "--suite", "SUITE_CUDA"),
])
def test_cuda_on_a_machine_without_it_is_one_line_on_every_command(isolated_env, capsys, no_cuda, args):
    suite = isolated_env / "cuda.yaml"
    suite.write_text(_mini_suite_text().replace("device: cpu", "device: cuda"))
    args = tuple(str(suite) if a == "SUITE_CUDA" else a for a in args)
    code, lines, _ = cli(capsys, *args)
    source = "(--device)" if "--device" in args else "(suite 'mini"
    one_error_line(code, lines, "device 'cuda'", source, "is not available", "--device cpu")
    assert not (isolated_env / "home").exists() and not files_under(isolated_env / "cache")


def _mini_suite_text() -> str:
    from harness.plan.suites import builtin_suites

    text = builtin_suites()["mini"].read_text()
    assert "device: cpu" in text
    return text


def test_extract_from_a_suite_that_asks_for_cuda_names_the_suite(isolated_env, capsys, no_cuda):
    suite = isolated_env / "cuda.yaml"
    suite.write_text(_mini_suite_text().replace("device: cpu", "device: cuda"))
    code, lines, _ = cli(capsys, "extract", "-b", "resnet", "--dataset", "mini_coop", "--suite", str(suite))
    one_error_line(code, lines, "device 'cuda' (suite '", "is not available")


class _RayWithoutGpus:
    """What `init_ray` hands back for a cluster of CPUs only."""

    def __init__(self) -> None:
        self.shut_down = False

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0}

    def shutdown(self) -> None:
        self.shut_down = True


def test_cuda_extraction_on_a_ray_cluster_without_gpus_is_one_line_not_a_hang(isolated_env, capsys, monkeypatch):
    import harness.run.ray_support

    fake = _RayWithoutGpus()
    monkeypatch.setattr(harness.run.ray_support, "init_ray", lambda address=None, num_cpus=None: fake)
    code, lines, _ = cli(capsys, "extract", "-b", "resnet", "--variant", "tiny", "--dataset", "mini_coop",
                         "--device", "cuda", "--executor", "ray")
    one_error_line(code, lines, "need a GPU, and the Ray cluster has none", "--device cpu")
    assert fake.shut_down  # the connection it made is not left behind
    assert not files_under(isolated_env / "cache")


def test_cuda_jobs_on_a_ray_cluster_without_gpus_stop_before_mlflow_or_any_job(isolated_env, capsys, monkeypatch):
    import harness.run.ray_executor

    fake = _RayWithoutGpus()
    monkeypatch.setattr(harness.run.ray_executor, "init_ray", lambda address=None, num_cpus=None: fake)
    code, lines, _ = cli(capsys, "run", "-b", "resnet", "--suite", "mini", "--device", "cuda", "--executor", "ray")
    one_error_line(code, lines, "jobs on CUDA need a GPU, and the Ray cluster has none", "--device cpu")
    assert fake.shut_down
    home = isolated_env / "home"
    assert not (home / "mlflow.db").exists() or "harness-mini" not in experiments(home)  # no MLflow run opened
    assert not files_under(home / "records")


# -- 2. a missing extra: its brackets survive ----------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("run", "-b", "resnet", "--variant", "tiny", "--executor", "ray"),
    ("extract", "-b", "resnet", "--variant", "tiny", "--dataset", "mini_coop", "--executor", "ray"),
])
def test_ray_missing_names_the_extra_with_its_brackets(isolated_env, capsys, monkeypatch, args):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the extra
    code, lines, _ = cli(capsys, *args)
    one_error_line(code, lines, "pip install 'vision-harness[ray]'", "pip install -e '.[ray]'")


@pytest.mark.parametrize("message", [
    "install 'x[ray]' [bold]not bold[/bold] [/] [link=http://a]b[/link] \\[escaped]",
    "[red]",
])
def test_an_error_message_is_printed_verbatim_whatever_brackets_it_holds(isolated_env, capsys, monkeypatch, message):
    import harness.plan.suites
    from harness.errors import HarnessError

    def fail(*_args, **_kwargs):
        raise HarnessError(message)

    monkeypatch.setattr(harness.plan.suites, "load_suite", fail)
    code, lines, _ = cli(capsys, "run", "-b", "resnet", "--variant", "tiny")
    assert one_error_line(code, lines) == f"error: {message}"


# -- 3. leaderboard: a typo, or a suite never run ------------------------------------------------------------------

def test_leaderboard_of_a_mistyped_suite_is_one_line_with_close_matches_and_makes_nothing(isolated_env, capsys):
    code, lines, out = cli(capsys, "leaderboard", "--suite", "mnii")
    one_error_line(code, lines, "unknown suite 'mnii'", "did you mean: mini")
    assert out == "" and files_under(isolated_env) == []  # no leaderboard files, no MLflow store


def test_leaderboard_of_a_suite_without_runs_says_how_to_run_it_and_makes_nothing(isolated_env, capsys):
    code, lines, _ = cli(capsys, "leaderboard", "--suite", "mini")
    one_error_line(code, lines, "no finished runs of suite 'mini'", "harness run --suite mini")
    assert files_under(isolated_env) == []


def test_leaderboard_against_a_store_with_runs_creates_no_experiment_for_a_wrong_name(isolated_env, capsys):
    from harness.track.tracking import Tracker

    home = isolated_env / "home"
    Tracker("t").log_job(record("k0", suite="t"))  # suite 't' is no built-in: it is known by its runs
    before = experiments(home)
    assert before == {"Default", "harness-t"}

    code, lines, _ = cli(capsys, "leaderboard", "--suite", "tt")
    one_error_line(code, lines, "unknown suite 'tt'", "did you mean:", "t")
    code, lines, _ = cli(capsys, "leaderboard", "--suite", "mini")
    one_error_line(code, lines, "no finished runs of suite 'mini'", str(home / "mlflow.db"))
    assert experiments(home) == before and not (home / "leaderboards").exists()

    code, lines, out = cli(capsys, "leaderboard", "--suite", "t")  # the suite with runs still compiles
    assert code == 0, lines
    assert "Leaderboard" in out and (home / "leaderboards" / "t.md").is_file()


def test_leaderboard_of_records_not_yet_in_mlflow_says_sync(isolated_env, capsys):
    from harness.track.records import RecordStore
    from harness.track.tracking import Tracker

    Tracker("t").log_job(record("k0", suite="t"))  # the store exists, without suite 'u'
    RecordStore().write(record("k1", suite="u"))  # finished, its MLflow upload pending
    code, lines, _ = cli(capsys, "leaderboard", "--suite", "u")
    one_error_line(code, lines, "no finished runs of suite 'u'", "1 run record(s)", "harness sync --suite u")
    assert "harness-u" not in experiments(isolated_env / "home")


# -- 4. profile: absent weights, failed rows -----------------------------------------------------------------------

def test_profile_with_absent_weights_is_one_line_naming_them_and_writes_nothing(isolated_env, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(isolated_env / "hf-empty"))  # never the machine's real cache
    code, lines, _ = cli(capsys, "profile", "-b", "resnet", "--batch-sizes", "1")
    one_error_line(code, lines, "weights 'timm/resnet50.a1_in1k' are not available locally",
                   "hf download timm/resnet50.a1_in1k", "--weights")
    assert files_under(isolated_env) == []  # no profiles.csv/.md, no MLflow store: nothing was measured


def _measured(batch_size: int) -> dict:
    return {"backbone": "resnet", "variant": "tiny", "device": "cpu", "dtype": "fp32", "batch_size": batch_size,
            "input_size": [3, 32, 32], "repeats": 1, "warmup": 0, "latency_median_s": 0.01, "latency_p90_s": 0.02,
            "images_per_s": 100.0 * batch_size, "latency_per_image_ms": 10.0 / batch_size, "params": 1000,
            "gflops_per_image": 0.5, "peak_memory_mb": 12.0, "memory_kind": "cpu_peak_rss_increase"}


def test_profile_rows_that_fail_are_said_and_counted_never_written_as_nan_rows(isolated_env, capsys, monkeypatch):
    import mlflow

    import harness.run.profiler

    def rows(config, sizes, warmup=2, repeats=5):
        yield _measured(1)
        yield {"backbone": "resnet", "variant": "tiny", "batch_size": 2,
               "error": "torch.OutOfMemoryError: [ran] out of memory"}

    monkeypatch.setattr(harness.run.profiler, "profile_rows", rows)
    out_dir = isolated_env / "out"
    code, lines, _ = cli(capsys, "profile", "-b", "resnet", "--variant", "tiny", "--batch-sizes", "1,2",
                         "--out-dir", str(out_dir))
    one_error_line(code, lines, "1 of 2 profile row(s) failed", "resnet:tiny bs=2",
                   "torch.OutOfMemoryError: [ran] out of memory", str(out_dir / "profiles.csv"))
    assert "resnet:tiny bs=2: failed: torch.OutOfMemoryError: [ran] out of memory" in lines

    import pandas as pd

    table = pd.read_csv(out_dir / "profiles.csv")
    assert table["batch_size"].tolist() == [1] and "error" not in table.columns
    assert "nan" not in (out_dir / "profiles.md").read_text().lower()
    profile_runs = mlflow.search_runs(experiment_names=["profiles"])
    assert len(profile_runs) == 1  # only the measured row is logged


def test_profile_where_every_row_fails_writes_nothing(isolated_env, capsys, monkeypatch):
    import harness.run.profiler

    def rows(config, sizes, warmup=2, repeats=5):
        for bs in sizes:
            yield {"backbone": "resnet", "variant": "tiny", "batch_size": bs, "error": "RuntimeError: boom"}

    monkeypatch.setattr(harness.run.profiler, "profile_rows", rows)
    out_dir = isolated_env / "out"
    code, lines, _ = cli(capsys, "profile", "-b", "resnet", "--variant", "tiny", "--batch-sizes", "1,2",
                         "--out-dir", str(out_dir))
    one_error_line(code, lines, "2 of 2 profile row(s) failed (nothing written)", "RuntimeError: boom")
    assert not out_dir.exists()


def test_an_older_profiles_file_loses_its_error_rows_on_the_next_update(tmp_path):
    import pandas as pd

    from harness.report.profiles import update_profiles

    pd.DataFrame([_measured(1), {"backbone": "dino", "variant": "tiny", "batch_size": 8, "error": "x"}]).to_csv(
        tmp_path / "profiles.csv", index=False)
    table = update_profiles([_measured(4), {"backbone": "resnet", "variant": "tiny", "batch_size": 2,
                                            "error": "y"}], tmp_path)
    assert table["batch_size"].tolist() == [1, 4] and "error" not in table.columns
    assert pd.read_csv(tmp_path / "profiles.csv")["batch_size"].tolist() == [1, 4]


# -- 5. run --skip-missing with every dataset missing --------------------------------------------------------------

def test_skip_missing_with_every_dataset_missing_is_nothing_to_run(isolated_env, capsys):
    code, lines, out = cli(capsys, "run", "-b", "resnet", "--variant", "tiny", "--suite", "all", "--skip-missing")
    one_error_line(code, lines, "nothing to run: every dataset of suite 'all' is missing", "(table above)")
    assert "datasets not prepared" in "\n".join(lines)  # the table the line points at
    assert out == "" and files_under(isolated_env / "home") == []  # no leaderboard, no MLflow store, no record


# -- 6. cache clear asks first -------------------------------------------------------------------------------------

FP = {"backbone": "resnet", "variant": "tiny", "weights": "random(seed=0,init=v2)"}


@pytest.fixture
def two_backbones_cached():
    """Two resnet entries and one dino entry; their payloads, to read back after a partial clear."""
    from harness.data.cache import FeatureCache, forget_ledgers

    resnet, dino = FeatureCache(FP, "global"), FeatureCache({**FP, "backbone": "dino"}, "global")
    resnet.put("01" * 32, torch.ones(10))
    resnet.put("02" * 32, torch.ones(10) * 2)
    dino.put("03" * 32, torch.arange(10.0))
    forget_ledgers()
    yield
    forget_ledgers()


def cached() -> dict[str, int]:
    from harness.data.cache import cache_info

    return {row["backbone"]: row["entries"] for row in cache_info()}


def entry_files(root: Path) -> int:
    return len(list((root / "features").rglob("*.safetensors"))) if (root / "features").exists() else 0


def test_cache_clear_without_a_terminal_or_yes_refuses_and_keeps_everything(isolated_env, capsys,
                                                                            two_backbones_cached, monkeypatch):
    import harness.cli

    monkeypatch.setattr(harness.cli, "_interactive", lambda: False)
    code, lines, _ = cli(capsys, "cache", "clear")
    one_error_line(code, lines, "would delete 3 cached feature entries", "in 2 namespace(s)", "--yes")
    assert cached() == {"resnet:tiny": 2, "dino:tiny": 1} and entry_files(isolated_env / "cache") == 3


def test_cache_clear_yes_deletes_everything(isolated_env, capsys, two_backbones_cached):
    code, lines, out = cli(capsys, "cache", "clear", "--yes")
    assert code == 0, lines
    assert "cleared" in out and "3 cached feature entries" in out
    assert cached() == {} and entry_files(isolated_env / "cache") == 0


def test_cache_clear_one_backbone_keeps_the_others(isolated_env, capsys, two_backbones_cached):
    from harness.data.cache import FeatureCache

    code, lines, out = cli(capsys, "cache", "clear", "--backbone", "resnet", "-y")
    assert code == 0, lines
    assert "2 cached feature entries" in out and "of backbone 'resnet'" in out
    assert cached() == {"dino:tiny": 1} and entry_files(isolated_env / "cache") == 1
    assert torch.equal(FeatureCache({**FP, "backbone": "dino"}, "global").get("03" * 32), torch.arange(10.0))


@pytest.mark.parametrize("answer, kept", [("n\n", True), ("\n", True), ("y\n", False)])
def test_cache_clear_asks_at_a_terminal(isolated_env, capsys, two_backbones_cached, monkeypatch, answer, kept):
    import harness.cli

    monkeypatch.setattr(harness.cli, "_interactive", lambda: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO(answer))
    code, lines, out = cli(capsys, "cache", "clear")
    assert "delete 3 cached feature entries" in out and "[y/N]" in out  # the question says what and how much
    if kept:
        assert code == 1 and lines == ["nothing deleted"]
        assert cached() == {"resnet:tiny": 2, "dino:tiny": 1} and entry_files(isolated_env / "cache") == 3
    else:
        assert code == 0, lines
        assert cached() == {} and entry_files(isolated_env / "cache") == 0


def test_cache_clear_of_a_backbone_not_cached_is_one_line_naming_what_is(isolated_env, capsys,
                                                                        two_backbones_cached):
    code, lines, _ = cli(capsys, "cache", "clear", "--backbone", "resnt", "--yes")
    one_error_line(code, lines, "no cached features of backbone 'resnt'", "dino:tiny, resnet:tiny")
    assert cached() == {"resnet:tiny": 2, "dino:tiny": 1}


def test_cache_clear_of_an_empty_cache_says_so(isolated_env, capsys):
    code, lines, out = cli(capsys, "cache", "clear")
    assert code == 0 and "nothing to clear" in out, (lines, out)
