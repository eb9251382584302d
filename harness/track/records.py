"""Run records: one JSON file per finished job, written atomically before anything else.

The record is the source of truth; MLflow receives a copy. A record that exists *and validates* means the
job is done. Every read validates (`validate_record`): a record that does not parse as a JSON object,
lacks a key that logging or the leaderboard reads, or names another job is moved aside to
`records/corrupt/` (kept byte for byte, never deleted) with a one-line warning, so its job runs again
instead of being skipped forever or crashing whatever reads it next.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import __version__
from harness.errors import HarnessError, warn
from harness.io import atomic_write_json
from harness.paths import harness_home

SCHEMA_VERSION = 1
PACKAGES = ("torch", "torchvision", "timm", "open_clip_torch", "diffusers", "transformers", "scikit-learn",
            "numpy", "pandas", "mlflow", "pillow")


@functools.cache
def git_commit() -> str:
    """The commit of the harness source tree, with `+dirty` when it has local changes."""
    src = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.cache
def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def environment(device: str) -> dict[str, Any]:
    return {
        "harness_version": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "packages": package_versions(),
    }


# What a record must hold: every key that logging to MLflow (`tracking.job_tags`/`job_params`/`log_job`) or the
# offline leaderboard indexes, so a record that validates can never crash them. Other keys are optional.
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "job_key": str, "suite": str, "backbone": dict, "backbone_fingerprint": dict, "weights_fingerprint": str,
    "task": str, "task_version": (str, int), "primary_metric": str, "dataset": str, "data_fingerprint": str,
    "protocol": dict, "column": str, "metrics": dict, "environment": dict,
}
REQUIRED_NESTED: dict[str, dict[str, type]] = {
    "backbone": {"name": str, "variant": str},
    "environment": {"git_commit": str, "device": str, "packages": dict},
}
CORRUPT_DIR = "corrupt"


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_metric(value: Any) -> bool:
    """What MLflow and the leaderboard can take as a metric (`float(v)`): a number, or one written as text
    (a numpy float32 is stored as a string by `json.dumps(default=str)`)."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return _is_number(value)


def validate_record(record: Any, key: str) -> str | None:
    """What is wrong with a parsed record stored under job key `key`, in a few words; None when it is whole."""
    if not isinstance(record, dict):
        return f"the JSON is {_type_name(record)}, not an object"
    for name, kind in REQUIRED.items():
        if name not in record:
            return f"key '{name}' is missing"
        if not isinstance(record[name], kind) or isinstance(record[name], bool):
            return f"key '{name}' is {_type_name(record[name])}"
    for parent, fields in REQUIRED_NESTED.items():
        for name, kind in fields.items():
            if not isinstance(record[parent].get(name), kind):
                return f"key '{parent}.{name}' is missing or {_type_name(record[parent].get(name))}"
    if record["job_key"] != key:
        return f"its job_key '{record['job_key'][:40]}' is not the file's name"
    bad = [m for m, v in record["metrics"].items() if not _is_metric(v)]
    if bad:
        return f"metric '{bad[0]}' is {_type_name(record['metrics'][bad[0]])}, not a number"
    report = record.get("report_metrics")
    if report is not None and not (isinstance(report, list) and all(isinstance(m, str) for m in report)):
        return "key 'report_metrics' is not a list of names"
    item_se = record.get("item_se")
    if item_se is not None and not (isinstance(item_se, dict) and all(
            isinstance(v, dict) and _is_number(v.get("se")) and _is_number(v.get("n")) for v in item_se.values())):
        return "key 'item_se' is not an object of {se, n} numbers"
    return None


@dataclass(frozen=True)
class MovedRecord:
    """A record file that failed validation, where it was moved, and why."""

    path: Path
    moved_to: Path
    reason: str


def unreadable_note(moved: list[MovedRecord]) -> str:
    """One line for a command's summary: how many records it could not read, and where they now are."""
    folders = sorted({str(m.moved_to.parent) for m in moved})
    return (f"{len(moved)} run record(s) could not be read and were moved to {', '.join(folders)}; "
            "their jobs are not finished and run again on the next `harness run`")


class RecordStore:
    """`<HARNESS_HOME>/records/<job key>.json`; the job key already names everything that defines the job.

    `unreadable` lists the records this store moved aside since it was made, for commands to report.
    """

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else harness_home() / "records"
        self.unreadable: list[MovedRecord] = []

    @property
    def corrupt_root(self) -> Path:
        return self.root / CORRUPT_DIR

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def check_writable(self) -> None:
        """Write and remove a probe record file: a read-only, full or misplaced HARNESS_HOME stops a run in one
        line before any job computes (the record is the job's result: it must land)."""
        probe = self.root / f".probe-{os.getpid()}.json"
        created = [d for d in (self.root, *self.root.parents) if not d.exists()]  # innermost first
        try:
            atomic_write_json(probe, {})
            probe.unlink()
        except OSError as exc:
            raise HarnessError(f"run records cannot be written under {self.root} ({exc.strerror or exc}); set "
                               "HARNESS_HOME to a folder you can write to, or free space there") from None
        for folder in created:  # leave no trace (the folders appear with the first record); another run's stay
            with contextlib.suppress(OSError):
                folder.rmdir()

    def load(self, key: str) -> dict[str, Any] | None:
        """The job's record when it exists and validates; None when there is none, or it was moved aside."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:  # a directory, no permission: as unusable as a corrupt file
            return self._move_aside(path, None, f"cannot be read: {type(exc).__name__}: {exc.strerror or exc}")
        try:
            record = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            return self._move_aside(path, data, f"not UTF-8 text (byte {exc.start})")
        except ValueError as exc:  # JSONDecodeError: a NUL byte, a truncated file
            return self._move_aside(path, data, "empty file" if not data.strip() else f"not valid JSON: {exc}")
        except RecursionError:
            return self._move_aside(path, data, "not valid JSON: nested too deep")
        problem = validate_record(record, key)
        return record if problem is None else self._move_aside(path, data, problem)

    def exists(self, key: str) -> bool:
        """Whether the job is finished: its record exists and validates (a corrupt one is moved aside)."""
        return self.load(key) is not None

    def read(self, key: str) -> dict[str, Any]:
        """The job's record; a one-line HarnessError when it is missing or was just found corrupt."""
        record = self.load(key)
        if record is None:
            raise HarnessError(f"no readable run record for job {key} under {self.root}; run the suite again "
                               "to recompute it")
        return record

    def write(self, record: dict[str, Any]) -> Path:
        """Store a record atomically; one that would fail validation on read is refused here, in one line,
        rather than landing and being moved aside and recomputed on every later run."""
        key = record.get("job_key") if isinstance(record, dict) else None
        problem = validate_record(json.loads(json.dumps(record, default=str)), str(key))
        if problem is not None:
            raise HarnessError(f"the run record of job {key} cannot be stored: {problem}; the task or backbone "
                               "that built it returned a malformed result")
        path = self.path(record["job_key"])
        atomic_write_json(path, record)
        return path

    def records(self, suite: str | None = None) -> list[dict[str, Any]]:
        """Every record that validates (of one suite when given), by job key; corrupt ones are moved aside."""
        if not self.root.is_dir():
            return []
        out = []
        for path in sorted(self.root.glob("*.json")):
            record = self.load(path.stem)
            if record is not None and (suite is None or record["suite"] == suite):
                out.append(record)
        return out

    def keys(self, suite: str | None = None) -> list[str]:
        """Job keys with a valid record (of one suite when given), sorted; corrupt ones are moved aside."""
        return [r["job_key"] for r in self.records(suite)]

    def _move_aside(self, path: Path, data: bytes | None, reason: str) -> dict[str, Any] | None:
        """Keep a failed record under `records/corrupt/<name>.<UTC time>` and warn in one line; returns None.

        If the file changed between our read and the move (a concurrent run wrote a whole record), that whole
        record is put back and returned, so a race never costs a finished job.
        """
        reason = " ".join(reason.split())
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        dest = self.corrupt_root / f"{path.name}.{stamp}"
        n = 0
        while dest.exists():  # same microsecond: never overwrite an earlier copy
            n += 1
            dest = self.corrupt_root / f"{path.name}.{stamp}-{n}"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, dest)
        except FileNotFoundError:
            return None  # a concurrent run moved it first, and reports it
        except OSError as exc:
            raise HarnessError(f"run record {path} is unreadable ({reason}) and could not be moved aside to "
                               f"{dest.parent} ({exc.strerror or exc}); move or delete it, then run again") from None
        if data is not None and dest.is_file():
            moved = dest.read_bytes()
            if moved != data:
                try:
                    record = json.loads(moved)
                except (ValueError, RecursionError):
                    record = None
                if validate_record(record, path.stem) is None:
                    with contextlib.suppress(OSError):  # an even newer record is there (or no hard links): keep it
                        os.link(dest, path)
                        dest.unlink()
                    return record
        self.unreadable.append(MovedRecord(path, dest, reason))
        warn(f"run record {path} is unreadable ({reason}); moved to {dest}, so its job is not finished and runs "
             "again")
        return None

    # -- jobs whose record is not yet in MLflow (tracker down): `<HARNESS_HOME>/pending/<key>/` ---------
    @property
    def pending_root(self) -> Path:
        return self.root.parent / "pending"

    def mark_pending(self, record: dict[str, Any], artifacts: dict[str, Path] | None = None) -> Path:
        """Remember that a record still has to reach MLflow, keeping its artifact files beside the marker."""
        folder = self.pending_root / record["job_key"]
        for name, src in (artifacts or {}).items():
            src = Path(src)
            dest = folder / "artifacts" / name / src.name
            if src.is_file() and src.resolve() != dest.resolve():  # already kept when marked before
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
        atomic_write_json(folder / "pending.json", {"job_key": record["job_key"], "suite": record["suite"],
                                                    "since": now_iso()})
        return folder

    def pending_keys(self, suite: str | None = None) -> list[str]:
        if not self.pending_root.is_dir():
            return []
        keys = []
        for marker in sorted(self.pending_root.glob("*/pending.json")):
            try:
                meta = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            if suite is None or meta.get("suite") == suite:
                keys.append(marker.parent.name)
        return keys

    def pending_artifacts(self, key: str) -> dict[str, Path]:
        """`{artifact folder: file}` kept for a pending job (files with the same folder: the last wins)."""
        folder = self.pending_root / key / "artifacts"
        if not folder.is_dir():
            return {}
        return {f.parent.name: f for f in sorted(folder.glob("*/*")) if f.is_file()}

    def clear_pending(self, key: str) -> None:
        shutil.rmtree(self.pending_root / key, ignore_errors=True)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
