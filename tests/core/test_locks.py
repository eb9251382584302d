"""harness.data.locks: one winner per name among racing processes, stale claims taken over, live ones never."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import time

import pytest

from harness.data import locks


def dead_pid() -> int:
    """The pid of a process that has really exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def write_lock(path, **owner) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(owner))


def test_claim_is_exclusive_and_release_frees_it(tmp_path):
    first = locks.claim("job-abc")
    assert first is not None
    path = tmp_path / "home" / "locks" / "job-abc.lock"
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert locks.claim("job-abc") is None  # not re-entrant, even for the holder
    assert locks.holder("job-abc") == first.owner
    first.release()
    assert not path.exists() and locks.holder("job-abc") is None
    with locks.claim("job-abc") as again:
        assert again is not None and path.exists()
    assert not path.exists()


def test_invalid_names_are_refused():
    for name in ("", "../x", "a/b", ".hidden", "x" * 201):
        with pytest.raises(ValueError):
            locks.claim(name)
    assert locks.valid_name("mlflow-log-0123abcd") and not locks.valid_name("a b")


def test_a_stale_claim_of_a_dead_process_is_taken_over(tmp_path):
    path = tmp_path / "home" / "locks" / "k.lock"
    write_lock(path, pid=dead_pid(), host=locks.this_host(), started=None, since=0)
    got = locks.claim("k")
    assert got is not None and locks.holder("k").pid == os.getpid()
    assert not (tmp_path / "home" / "locks" / "k.lock.break").exists()


def test_a_reused_pid_does_not_keep_a_claim_alive(tmp_path):
    """The pid runs (it is ours) but is not the process that claimed: its start time differs."""
    path = tmp_path / "home" / "locks" / "k.lock"
    mine = locks.process_started(os.getpid())
    if mine is None:
        pytest.skip("no /proc: start times unknown")
    write_lock(path, pid=os.getpid(), host=locks.this_host(), started=str(int(mine) + 1), since=0)
    assert locks.claim("k") is not None


def test_live_and_foreign_claims_are_never_taken_over(tmp_path):
    parent = os.getppid()  # alive for the whole test
    write_lock(tmp_path / "home" / "locks" / "live.lock", pid=parent, host=locks.this_host(),
               started=locks.process_started(parent), since=0)
    write_lock(tmp_path / "home" / "locks" / "foreign.lock", pid=dead_pid(), host="another-host", started=None,
               since=0)
    assert locks.claim("live") is None and locks.claim("foreign") is None
    assert locks.holder("foreign").describe().endswith("on another-host")


def test_an_unwritten_lock_file_is_held_until_its_grace_passes(tmp_path):
    path = tmp_path / "home" / "locks" / "k.lock"
    path.parent.mkdir(parents=True)
    path.write_text("")  # its creator died (or is about to write) between create and write
    assert locks.claim("k") is None
    old = time.time() - locks.UNWRITTEN_GRACE_S - 5
    os.utime(path, (old, old))
    assert locks.claim("k") is not None


def test_claim_wait_gets_the_claim_once_released(tmp_path):
    held = locks.claim("k")
    assert locks.claim_wait("k", timeout_s=0.2, poll_s=0.05) is None
    held.release()
    assert locks.claim_wait("k", timeout_s=0.2) is not None


def _race(name: str, home: str, start, results) -> None:
    os.environ["HARNESS_HOME"] = home
    start.wait()
    got = locks.claim(name)
    results.put(os.getpid() if got is not None else None)
    time.sleep(0.5)  # hold it while the others try


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "over-a-stale-lock"])
def test_four_processes_racing_for_one_key_exactly_one_wins(tmp_path, stale):
    home = tmp_path / "home"
    if stale:
        write_lock(home / "locks" / "job-k.lock", pid=dead_pid(), host=locks.this_host(), started=None, since=0)
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=("job-k", str(home), start, results)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    winners = [pid for pid in outcomes if pid is not None]
    assert len(winners) == 1 and all(p.exitcode == 0 for p in procs)
    # The winner has exited without releasing: its claim is stale now and taken over.
    assert locks.holder("job-k").pid == winners[0]
    assert locks.claim("job-k") is not None
