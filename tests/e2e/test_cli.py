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
    csv1 = pd.read_csv(tmp_path / "leaderboards" / "mini.csv")
    md1 = without_compile_date((tmp_path / "leaderboards" / "mini.md").read_text())

    second = harness("run", "--backbone", "resnet", "--suite", "mini", "--seeds", "1,2")
    assert "0 job(s) ran, 16 skipped" in second.stderr
    assert records(tmp_path) == recs  # nothing recomputed or rewritten

    again = harness("leaderboard", "--suite", "mini")  # a new process, reading MLflow back
    assert without_compile_date((tmp_path / "leaderboards" / "mini.md").read_text()) == md1
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "leaderboards" / "mini.csv"), csv1)
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
