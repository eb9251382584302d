"""The CLI as a user runs it: subprocesses, exit codes, one-line errors, resume, MLflow round trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd


def harness(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"harness {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_help_and_list_do_not_import_torch_or_backbones():
    probe = (
        "import sys, atexit\n"
        "atexit.register(lambda: print('HEAVY=' + ','.join(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('torch', 'timm', 'backbones', 'mlflow', 'diffusers', 'open_clip')))))\n"
        "from harness.cli import main\n"
        "sys.argv = ['harness'] + sys.argv[1:]\n"
        "main()\n"
    )
    for args in (["--help"], ["list", "backbones"], ["list", "tasks"], ["list", "datasets"], ["list", "suites"]):
        proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
        heavy = [line for line in proc.stdout.splitlines() if line.startswith("HEAVY=")]
        loaded = set(heavy[0].removeprefix("HEAVY=").split(",")) - {""}
        assert loaded <= {"backbones", "backbones.cards", "backbones.vermouth", "backbones.vermouth.cards"}, loaded
        assert "resnet" in proc.stdout or args != ["list", "backbones"]


def test_unknown_backbone_is_one_line_without_traceback():
    proc = harness("run", "--backbone", "nosuch", check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown backbone 'nosuch'" in lines[0]


def test_suite_with_unknown_key_is_one_line_without_traceback(tmp_path):
    suite = tmp_path / "bad.yaml"
    suite.write_text("name: bad\nentries:\n  - task: fsc\n    datasets: [mini_coop]\n    shots: [1]\n")
    proc = harness("run", "--backbone", "resnet", "--suite", str(suite), check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'entries.0.shots': unknown key" in lines[0]


def test_unknown_protocol_override_names_the_key():
    proc = harness("run", "--backbone", "resnet", "--set", "shotz=4", "--dry-run", check=False)
    assert proc.returncode == 2 and "shotz" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_real_datasets_stop_before_any_work(tmp_path):
    proc = harness("run", "--backbone", "resnet", "--variant", "tiny", "--suite", "all", check=False)
    assert proc.returncode == 2
    assert "datasets not prepared" in proc.stderr and "caltech-101" in proc.stderr
    assert not (tmp_path / "home" / "records").exists()


def without_compile_date(markdown: str) -> str:
    """The provenance header carries the compile time (to the minute); everything else must be identical."""
    return "\n".join(line for line in markdown.splitlines() if "compiled:" not in line)


def records(tmp_path: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (tmp_path / "home" / "records").glob("*.json")}


def test_mini_suite_end_to_end_resume_and_leaderboard(tmp_path):
    first = harness("run", "--backbone", "resnet", "--suite", "mini", "--seeds", "1,2")
    recs = records(tmp_path)
    assert len(recs) == 16  # fsc: 2 heads x 3 shots x 2 seeds; sbir: 2 seeds; ovss: 2 seeds
    assert "16 job(s) ran, 0 skipped" in first.stderr
    csv1 = pd.read_csv(tmp_path / "home" / "leaderboards" / "mini.csv")
    md1 = without_compile_date((tmp_path / "home" / "leaderboards" / "mini.md").read_text())

    second = harness("run", "--backbone", "resnet", "--suite", "mini", "--seeds", "1,2")
    assert "0 job(s) ran, 16 skipped" in second.stderr
    assert records(tmp_path) == recs  # nothing recomputed or rewritten

    again = harness("leaderboard", "--suite", "mini")  # a new process, reading MLflow back
    assert without_compile_date((tmp_path / "home" / "leaderboards" / "mini.md").read_text()) == md1
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "home" / "leaderboards" / "mini.csv"), csv1)
    assert "resnet:tiny (random init)" in again.stdout

    # MLflow holds one nested run per job under one parent per invocation, with the record as artifact.
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["harness-mini"])
    jobs = runs[runs["tags.harness.kind"] == "job"]
    parents = runs[runs["tags.harness.kind"] == "invocation"]
    assert len(jobs) == 16 and len(parents) == 2
    assert set(jobs["tags.mlflow.parentRunId"]) <= set(parents["run_id"])
    assert set(jobs["tags.harness.job_key"]) == set(recs)
    one = jobs[jobs["tags.harness.task"] == "fsc"].iloc[0]
    logged = mlflow.artifacts.load_dict(f"{one['artifact_uri']}/record.json")
    assert logged == recs[one["tags.harness.job_key"]]
    assert one["metrics.top1"] == logged["metrics"]["top1"]

    # Same seed → identical metrics (a fresh home); different seed → a different support set.
    by_point = {(r["protocol"]["shots"], r["protocol"]["seed"]): r for r in recs.values()
                if r["task"] == "fsc" and r["protocol"]["head"] == "linear-probe"}
    assert by_point[(4, 1)]["details"]["support_paths"] != by_point[(4, 2)]["details"]["support_paths"]
    other = tmp_path / "other"
    other.mkdir()
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "-b", "resnet", "--seeds", "1"],
                          capture_output=True, text=True, cwd=other, timeout=900,
                          env={**__import__("os").environ, "HARNESS_HOME": str(other / "home")})
    assert proc.returncode == 0, proc.stderr
    for path in (other / "home" / "records").glob("*.json"):
        rec = json.loads(path.read_text())
        assert rec["metrics"] == recs[rec["job_key"]]["metrics"]


def total_row(stdout: str) -> list[str]:
    """The cells of the dry run's cost total: backbone, task, dataset, images, bytes, time, note."""
    line = next(line for line in stdout.splitlines() if line.startswith("| total "))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_dry_run_of_the_real_suite_prices_it_without_data_or_weights(tmp_path):
    env = {**__import__("os").environ, "HF_HUB_CACHE": str(tmp_path / "empty-hf"), "COLUMNS": "250"}
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--backbone", "vermouth", "--suite", "all",
                           "--dry-run"], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1] == "error: dry run: 2 weights and 21 datasets missing; nothing ran"
    assert lines[0].startswith("device auto → ")  # the `all` suite's device, resolved once
    for text in ("vermouth:sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "clip:vit-l-14 (text space)",
                 "hf download", "caltech101", "coco_stuff_171", "harness data prepare ade150"):
        assert text in proc.stderr, text
    assert proc.stdout.index("plan: suite 'all'") < proc.stdout.index("| total ")
    _, _, _, images, stored, seconds, _ = total_row(proc.stdout)
    # protocols.md's published sizes (tests/core/test_cost.py sums them per dataset): FSC test splits + few-shot
    # train/val draws over 5 shots x 3 seeds 350,343 (ImageNet's 45,000 val draws come from train, not test);
    # SBIR _zero lists + TU-Berlin's sketch train list 249,808; OVSS COCO-Stuff train + ADE-150/847, PC-59
    # (= PC-459 images), VOC-20 128,840. SBIR train lists: unknown.
    assert images == f"≤ {350_343 + 249_808 + 128_840:,} + ?"
    assert stored.endswith(" GiB + ?") and seconds == "unknown"  # FSC and SBIR at the method's 256 px
    assert not (tmp_path / "home" / "records").exists()


def test_mini_dry_run_exits_zero_and_prices_what_the_cache_does_not_hold(tmp_path):
    from e2e_helpers import fsc_entry, write_suite

    suite = str(write_suite(tmp_path / "one.yaml", "one", [fsc_entry([1], [1])]))
    first = harness("run", "-b", "resnet", "--suite", suite, "--device", "auto", "--dry-run")
    assert "device auto → " in first.stderr
    # mini_coop: 12 classes x (1 train shot + min(1, 4) val shot) + 12 x 40 test images, none cached yet
    assert total_row(first.stdout)[3] == f"{12 * 1 + 12 * 1 + 12 * 40:,}"
    assert total_row(first.stdout)[4] == "24.0 KiB"  # 24 stored few-shot images x 512 fp16 values (resnet10t)
    harness("run", "-b", "resnet", "--suite", suite, "--device", "auto")
    again = harness("run", "-b", "resnet", "--suite", suite, "--device", "auto", "--dry-run")
    assert "0 job(s) to run (1 finished, skipped)" in again.stdout and total_row(again.stdout)[3] == "0"
    harness("extract", "-b", "resnet", "--dataset", "mini_coop", "--suite", suite, "--device", "auto")
    rerun = harness("run", "-b", "resnet", "--suite", suite, "--device", "auto", "--dry-run", "--no-resume")
    assert total_row(rerun.stdout)[3] == "0" and "504 image(s) already cached" in rerun.stdout
