import subprocess
import sys

import pandas as pd

from harness.compare import compare, read_leaderboard

ROW = {"backbone": "resnet:tiny (random init)", "task": "fsc", "task_version": "1", "dataset": "mini_coop",
       "metric": "top1", "std": 0.0, "n": 3}


def board(path, rows):
    pd.DataFrame([{**ROW, **r} for r in rows]).to_csv(path, index=False)
    return path


def test_improved_regressed_missing_new(tmp_path):
    base = read_leaderboard(str(board(tmp_path / "b.csv", [
        {"setting": "shots=1", "mean": 20.0}, {"setting": "shots=4", "mean": 30.0},
        {"setting": "shots=16", "mean": 40.0}, {"setting": "shots=8", "mean": 35.0}])))
    cur = read_leaderboard(str(board(tmp_path / "c.csv", [
        {"setting": "shots=1", "mean": 20.4}, {"setting": "shots=4", "mean": 31.0},
        {"setting": "shots=16", "mean": 39.0}, {"setting": "shots=2", "mean": 1.0}])))
    res = compare(cur, base, tolerance=0.5)
    assert list(res.unchanged.setting) == ["shots=1"]
    assert list(res.improved.setting) == ["shots=4"]
    assert list(res.regressed.setting) == ["shots=16"]
    assert list(res.missing.setting) == ["shots=8"]
    assert list(res.new.setting) == ["shots=2"]
    assert not res.ok


def test_cli_exit_codes(tmp_path):
    base = board(tmp_path / "b.csv", [{"setting": "shots=1", "mean": 20.0}])
    same = board(tmp_path / "s.csv", [{"setting": "shots=1", "mean": 19.8}])
    worse = board(tmp_path / "w.csv", [{"setting": "shots=1", "mean": 18.0}])

    def run(*args):
        return subprocess.run([sys.executable, "-m", "harness", "compare", *args], capture_output=True, text=True)

    assert run(str(same), str(base)).returncode == 0
    bad = run(str(worse), str(base))
    assert bad.returncode == 2 and "regressed" in bad.stdout and "[shots=1]" in bad.stdout
    assert "Traceback" not in bad.stderr
    assert run(str(worse), str(base), "--tolerance", "3").returncode == 0
