import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from harness.report.compare import compare, read_leaderboard

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


# --- the noise-aware gate: drop > max(tolerance, z·sqrt(se_seed² + se_item²)); numbers worked out by hand ---

BASE_SEEDS = "1:50.0000;2:52.0000;3:48.0000"  # mean 50
DROP_SEEDS = "1:47.3000;2:48.7000;3:45.0000"  # mean 47; paired diffs -2.7, -3.3, -3.0: sd 0.3, se_seed 0.3/√3


def gate_frames(base_mean, cur_mean, base_seeds="", cur_seeds="", se_items=float("nan"), metric="top1"):
    row = {**ROW, "setting": "shots=16", "metric": metric}
    base = pd.DataFrame([{**row, "mean": base_mean, "n_items": 120, "se_items": se_items, "seed_values": base_seeds}])
    cur = pd.DataFrame([{**row, "mean": cur_mean, "n_items": 120, "se_items": se_items, "seed_values": cur_seeds}])
    return cur, base


def only(frame):
    assert len(frame) == 1
    return frame.iloc[0]


def test_identical_is_ok():
    res = compare(*gate_frames(50.0, 50.0, BASE_SEEDS, BASE_SEEDS, se_items=0.4), tolerance=0.5)
    assert res.ok and len(res.unchanged) == 1 and res.improved.empty
    assert only(res.unchanged)["noise"] == pytest.approx(0.4)  # identical seeds: se_seed 0, items 0.4


def test_a_drop_below_the_floor_is_ok():
    res = compare(*gate_frames(50.0, 49.6), tolerance=0.5)
    assert res.ok and len(res.unchanged) == 1


def test_a_drop_within_two_noise_is_ok_when_the_item_se_is_big():
    # drop 3 > floor 0.5, but noise = sqrt(0.03 + 2²) = 2.0075 -> threshold 4.015
    res = compare(*gate_frames(50.0, 47.0, BASE_SEEDS, DROP_SEEDS, se_items=2.0), tolerance=0.5)
    assert res.ok
    r = only(res.unchanged)
    assert r["se_seed"] == pytest.approx(0.3 / math.sqrt(3)) and r["k_seeds"] == 3
    assert r["threshold"] == pytest.approx(2 * math.sqrt(0.03 + 4.0))


def test_the_same_drop_with_small_noise_regresses_and_names_the_numbers():
    # noise = sqrt((0.3/√3)² + 0.4²) = sqrt(0.19) = 0.4359 -> 2·noise 0.8718 > floor 0.5; drop 3 > 0.87
    res = compare(*gate_frames(50.0, 47.0, BASE_SEEDS, DROP_SEEDS, se_items=0.4), tolerance=0.5)
    assert not res.ok
    r = only(res.regressed)
    assert r["drop"] == pytest.approx(3.0) and r["noise"] == pytest.approx(math.sqrt(0.19))
    assert r["threshold"] == pytest.approx(2 * math.sqrt(0.19))
    assert r["reason"] == "drop 3.00 > 2·noise 0.87 (seed 0.17, items 0.40; floor 0.50)"


def test_a_consistent_paired_drop_is_caught_though_the_seed_spread_is_large():
    # the seeds differ by 20 points, but every seed lost 1.4-1.6: paired diffs sd 0.1, se_seed 0.0577
    base, cur = "1:40.0000;2:50.0000;3:60.0000", "1:38.5000;2:48.4000;3:58.6000"
    res = compare(*gate_frames(50.0, 48.5, base, cur), tolerance=1.0)
    r = only(res.regressed)
    assert r["se_seed"] == pytest.approx(0.1 / math.sqrt(3))
    assert r["reason"] == "drop 1.50 > floor 1.00 (2·noise 0.12: seed 0.06, items 0.00)"
    unpaired = 2 * math.sqrt(2 * np.var([40, 50, 60], ddof=1) / 3)  # what an unpaired 2·SE would allow: 16.3
    assert unpaired > 10 * r["drop"]
    # the same mean drop from inconsistent seeds (diffs -6, +3, -1.5: sd 4.5) is within 2·noise = 5.196
    res = compare(*gate_frames(50.0, 48.5, base, "1:34.0000;2:53.0000;3:58.5000"), tolerance=1.0)
    assert res.ok and only(res.unchanged)["threshold"] == pytest.approx(2 * 4.5 / math.sqrt(3))


def test_lower_is_better_metrics_regress_upwards():
    worse = compare(*gate_frames(10.0, 12.0, metric="error"), tolerance=0.5)
    assert only(worse.regressed)["reason"] == "drop 2.00 > floor 0.50 (2·noise 0.00: seed 0.00, items 0.00)"
    better = compare(*gate_frames(10.0, 8.0, metric="error"), tolerance=0.5)
    assert better.ok and only(better.improved)["reason"].startswith("gain 2.00 > floor 0.50")
    assert not compare(*gate_frames(10.0, 8.0, metric="top1"), tolerance=0.5).ok


def test_fewer_than_two_shared_seeds_leave_no_seed_term():
    res = compare(*gate_frames(50.0, 47.0, "1:50.0000;2:52.0000", "2:47.0000;3:45.0000", se_items=0.4),
                  tolerance=0.5)
    r = only(res.regressed)
    assert (r["k_seeds"], r["se_seed"], r["noise"]) == (1, 0.0, pytest.approx(0.4))


def test_an_old_csv_without_the_new_columns_compares_on_the_flat_tolerance(tmp_path):
    path = board(tmp_path / "old.csv", [{"setting": "shots=1", "mean": 20.0}, {"setting": "shots=4", "mean": 30.0}])
    assert not {"n_items", "se_items", "seed_values"} & set(pd.read_csv(path).columns)
    old = read_leaderboard(str(path))
    # the current side in the new format (a big item SE): the baseline's unknown SE means no noise term
    cur = pd.DataFrame([{**ROW, "setting": "shots=1", "mean": 19.6, "se_items": 9.0, "seed_values": "1:19.6000"},
                        {**ROW, "setting": "shots=4", "mean": 29.4, "se_items": 9.0, "seed_values": "1:29.4000"}])
    res = compare(cur, old, tolerance=0.5)
    assert list(res.unchanged.setting) == ["shots=1"] and list(res.regressed.setting) == ["shots=4"]
    assert only(res.regressed)["noise"] == 0.0
    assert compare(old, old).ok


def test_cli_prints_why_a_row_regressed(tmp_path):
    cur, base = gate_frames(50.0, 47.0, BASE_SEEDS, DROP_SEEDS, se_items=0.4)
    cur.to_csv(tmp_path / "c.csv", index=False)
    base.to_csv(tmp_path / "b.csv", index=False)
    args = [sys.executable, "-m", "harness", "compare", str(tmp_path / "c.csv"), str(tmp_path / "b.csv")]
    bad = subprocess.run(args, capture_output=True, text=True)
    assert bad.returncode == 2 and "regressed" in bad.stdout and "[shots=16]" in bad.stdout
    assert "drop 3.00 > 2·noise 0.87 (seed 0.17, items 0.40; floor 0.50)" in bad.stdout
    assert subprocess.run([*args, "--z", "8"], capture_output=True, text=True).returncode == 0  # 8·0.436 > 3


def test_a_row_measured_on_other_test_items_fails_whichever_way_it_moved():
    """A query/gallery mix-up or a misread split changes how many items a metric averages over: not the same
    measurement, so it fails the gate even when the value went up."""
    cur, base = gate_frames(40.0, 60.0, se_items=0.3)
    cur["n_items"] = 700
    res = compare(cur, base, tolerance=1.0)
    assert not res.ok and len(res.regressed) == 1 and res.improved.empty
    assert "measured on 700 test items, the baseline on 120" in only(res.regressed)["reason"]
    same = compare(*gate_frames(40.0, 40.0, se_items=0.3), tolerance=1.0)
    assert same.ok
    unknown = gate_frames(40.0, 40.0)[0].assign(n_items=float("nan"))  # an old CSV: no count, no such check
    assert compare(unknown, gate_frames(40.0, 40.0)[1], tolerance=1.0).ok


def test_old_baseline_with_zero_std_reads_like_the_new_csv(tmp_path):
    """Leaderboards written before issue 19 sorted settings as text (shots=1, 16, 4) and wrote std 0.0000 for one
    seed; the new ones sort naturally and leave that std blank. Either reads as a baseline for the other."""
    from harness.report.leaderboard import build_leaderboard
    from harness.report.publish import write_leaderboard

    seeds = {1: (1, 2), 4: (1,), 16: (1, 2)}
    runs = pd.DataFrame([{"tags.harness.job_key": f"k{k}-{seed}", "tags.harness.primary_metric": "top1",
                          "metrics.top1": 10.0 + k + seed, "tags.harness.backbone": "resnet",
                          "tags.harness.variant": "tiny", "tags.harness.weights_kind": "random",
                          "tags.harness.task": "fsc", "tags.harness.task_version": "2",
                          "tags.harness.dataset": "mini_coop", "tags.harness.column": f"head=linear-probe,shots={k}",
                          "params.protocol.seed": str(seed)} for k, ks in seeds.items() for seed in ks])
    new = write_leaderboard(build_leaderboard("mini", runs), tmp_path / "new", html=False)[1]
    header, *rows = new.read_text().splitlines()
    assert [r.split('"')[1] for r in rows] == [f"head=linear-probe,shots={k}" for k in (1, 4, 16)]
    assert ",top1,15.0000,,1," in rows[1]  # shots=4, one seed: std blank
    old_rows = sorted(rows, key=lambda line: line.split('"')[1])  # the old writer's text order: 1, 16, 4
    old_rows = [line.replace(",top1,15.0000,,1,", ",top1,15.0000,0.0000,1,") for line in old_rows]
    old = tmp_path / "old.csv"
    old.write_text("\n".join([header, *old_rows]) + "\n")
    assert ",15.0000,0.0000,1," in old_rows[2]
    for current, baseline in ((new, old), (old, new)):
        res = compare(read_leaderboard(str(current)), read_leaderboard(str(baseline)))
        assert res.ok and res.missing.empty and res.new.empty and res.regressed.empty and res.improved.empty
        assert len(res.unchanged) == 3 and (res.unchanged["delta"] == 0).all()
    proc = subprocess.run([sys.executable, "-m", "harness", "compare", str(new), str(old)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_committed_mini_baseline_in_the_old_and_the_new_form(tmp_path):
    """The committed `leaderboards/mini.csv`'s rows written the old way (text order, std 0.0000 for one seed) and
    the new way (natural order, blank std): each is a clean baseline for the other."""
    import csv
    from pathlib import Path

    from harness.report.leaderboard import KEYS, sort_long

    committed = Path(__file__).resolve().parents[2] / "leaderboards" / "mini.csv"
    rows = pd.read_csv(committed, dtype={"task_version": str, "setting": str, "seed_values": str})
    rows["setting"] = rows["setting"].fillna("")
    one = rows["n"] == 1
    assert one.any() and (rows["n"] > 1).any()
    old = rows.assign(std=rows["std"].where(~one, 0.0)).sort_values(KEYS)
    new = sort_long(rows.assign(std=rows["std"].where(~one)))
    old.to_csv(tmp_path / "old.csv", index=False, float_format="%.4f")
    new.to_csv(tmp_path / "new.csv", index=False, float_format="%.4f")
    written = list(csv.DictReader((tmp_path / "new.csv").open()))
    assert {r["std"] for r in written if r["n"] == "1"} == {""}
    assert {r["std"] for r in csv.DictReader((tmp_path / "old.csv").open()) if r["n"] == "1"} == {"0.0000"}
    for current, baseline in (("new", "old"), ("old", "new")):
        res = compare(read_leaderboard(str(tmp_path / f"{current}.csv")),
                      read_leaderboard(str(tmp_path / f"{baseline}.csv")))
        assert res.ok and res.missing.empty and res.new.empty and len(res.unchanged) == len(rows)
