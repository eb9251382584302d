"""Named claims between processes sharing one HARNESS_HOME: one lock file per name under `$HARNESS_HOME/locks/`.

Why files and not `flock`: a claim must say who holds it (pid and host, for "job X is being computed by
pid 123 on node-4"), and it must work where several hosts share a home folder. The file is created with
`O_CREAT | O_EXCL`, which is atomic, so of any number of processes racing for one name exactly one wins.

A holder that dies without releasing leaves its file behind. Such a *stale* claim is detected, on the
holder's own host only, by its pid no longer running (or running a different process: the pid's start
time, read from /proc where there is one, must match). A claim from another host is never taken over: it
is held until released or removed by hand. Breaking a stale claim happens under a second short-lived
claim (`<name>.lock.break`), so two processes never both break the same stale file and then both win.

Claims are not re-entrant: a process that already holds a name gets None when it asks again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from harness.paths import harness_home

# A lock file that is still empty or unparseable this long after it was created belongs to a process
# that died between creating it and writing its owner (writing takes microseconds).
UNWRITTEN_GRACE_S = 10.0
# A break guard lives for microseconds; one this old was left by a process killed while breaking.
BREAK_GRACE_S = 30.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def locks_dir() -> Path:
    """Where claims live: `$HARNESS_HOME/locks`."""
    return harness_home() / "locks"


def this_host() -> str:
    return socket.gethostname()


def process_started(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux /proc), or None where unknown.

    Recorded beside the pid so that a pid reused by an unrelated process is not mistaken for the holder.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int, started: str | None = None) -> bool:
    """Whether process `pid` of this host still runs (and, when `started` is given, is the same process)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    if started is not None:
        now = process_started(pid)
        if now is not None and now != started:
            return False
    return True


@dataclass(frozen=True)
class Owner:
    """Who holds a claim, as written in its lock file."""

    pid: int
    host: str
    started: str | None = None
    since: float = 0.0

    def alive(self) -> bool | None:
        """True/False on this host; None (unknown) for another host's process."""
        if self.host != this_host():
            return None
        return pid_alive(self.pid, self.started)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


def current_owner() -> Owner:
    pid = os.getpid()
    return Owner(pid=pid, host=this_host(), started=process_started(pid), since=time.time())


class Claim:
    """A held claim on `name`; `release()` (or leaving the `with` block) removes its lock file."""

    def __init__(self, name: str, path: Path, owner: Owner):
        self.name, self.path, self.owner = name, path, owner
        self.released = False

    def release(self) -> None:
        """Remove the lock file if it is still ours (a claim broken as stale by mistake is not removed)."""
        if self.released:
            return
        self.released = True
        if read_owner(self.path) == self.owner:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Claim({self.name!r}, {self.owner.describe()})"


def valid_name(name: str) -> bool:
    """Whether `name` can name a claim: letters, digits, '.', '_', '-' (a file name on every filesystem)."""
    return bool(_NAME.match(name))


def lock_path(name: str, root: Path | None = None) -> Path:
    if not valid_name(name):
        raise ValueError(f"lock name {name!r} must be letters, digits, '.', '_' or '-' (at most 200)")
    return (root or locks_dir()) / f"{name}.lock"


def read_owner(path: Path) -> Owner | None:
    """The owner written in a lock file; None when it is missing, empty or unparseable."""
    try:
        data = json.loads(path.read_text())
        return Owner(pid=int(data["pid"]), host=str(data["host"]), started=data.get("started"),
                     since=float(data.get("since", 0.0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def holder(name: str, root: Path | None = None) -> Owner | None:
    """Who holds `name` now (None when nobody does, or the lock file is still being written)."""
    return read_owner(lock_path(name, root))


def _create(path: Path, owner: Owner) -> bool:
    """Atomically create `path` holding `owner`; False when it exists. Other OS errors propagate."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, json.dumps({"pid": owner.pid, "host": owner.host, "started": owner.started,
                                 "since": owner.since}).encode())
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return True


def _is_stale(path: Path, grace_s: float = UNWRITTEN_GRACE_S) -> bool:
    owner = read_owner(path)
    if owner is None:  # unwritten: stale only once its creator has had ample time to write it
        try:
            return time.time() - path.stat().st_mtime > grace_s
        except FileNotFoundError:
            return False
    return owner.alive() is False


def _break_stale(path: Path) -> None:
    """Remove `path` if it is stale, under a break guard so that one process at a time decides."""
    guard = path.with_name(path.name + ".break")
    me = current_owner()
    if not _create(guard, me):
        try:  # a guard left by a process killed while breaking: remove it, the next attempt breaks
            if time.time() - guard.stat().st_mtime > BREAK_GRACE_S:
                guard.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        return
    try:
        if _is_stale(path):  # decided again under the guard: nobody else can have replaced it meanwhile
            path.unlink(missing_ok=True)
    finally:
        guard.unlink(missing_ok=True)


def claim(name: str, root: Path | None = None) -> Claim | None:
    """Claim `name` for this process: a Claim, or None when another live process holds it.

    A stale claim (its holder died on this host) is taken over. Errors other than "already claimed"
    (an unwritable HARNESS_HOME) propagate as OSError.
    """
    path = lock_path(name, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = current_owner()
    if not _create(path, me):
        if not _is_stale(path):
            return None
        _break_stale(path)  # by this process or a concurrent one: then one of the creates below wins
        if not _create(path, me):
            return None
    return Claim(name, path, me)


def claim_wait(name: str, timeout_s: float, root: Path | None = None, poll_s: float = 0.05) -> Claim | None:
    """`claim`, retried until `timeout_s` has passed; None when a live process held it all along."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = claim(name, root)
        if got is not None or time.monotonic() >= deadline:
            return got
        time.sleep(poll_s)
