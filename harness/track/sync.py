"""`harness sync`: upload run records that are not in MLflow yet (the tracker was down when they finished).

Every record of the suite is compared with the FINISHED job runs on the server, so a job key already
logged is skipped (no duplicates), and a record whose pending marker was never written (process killed
between the two) is still found. Pending markers of uploaded or already-logged jobs are cleared.
A record that fails validation is moved aside by the store (its job runs again on the next `harness run`)
and counted in `SyncSummary.unreadable`, so the command reports it rather than dropping it silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import HarnessError
from harness.track.records import MovedRecord, RecordStore
from harness.track.tracking import Tracker, TrackerUnavailable


@dataclass
class SyncSummary:
    uploaded: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    unreadable: list[MovedRecord] = field(default_factory=list)  # corrupt records moved aside, not uploaded


def sync_suite(suite: str, store: RecordStore | None = None) -> SyncSummary:
    store = store or RecordStore()
    tracker = Tracker(suite)
    if tracker.offline:
        raise HarnessError(f"cannot sync suite '{suite}': {tracker.offline_problem()}; the records stay under "
                           f"{store.root}; {tracker.remedy()}, then run it again")
    logged = tracker.finished_keys()
    if tracker.offline:
        raise HarnessError(f"cannot sync suite '{suite}': {tracker.offline_problem()}; {tracker.remedy()}, "
                           "then run it again")
    keys = sorted(set(store.keys(suite)) | {k for k in store.pending_keys(suite) if store.exists(k)})
    summary = SyncSummary(unreadable=list(store.unreadable))
    todo = [k for k in keys if k not in logged]
    summary.already = [k for k in keys if k in logged]
    for key in summary.already:
        store.clear_pending(key)
    if not todo:
        return summary
    with tracker.invocation({"command": "sync", "suite": suite, "records": len(todo)},
                            name=f"harness sync {suite}"):
        for key in todo:
            try:  # None: a concurrent run or sync logged the key since `logged` was read (never logged twice)
                run_id = tracker.log_job(store.read(key), store.pending_artifacts(key))
            except TrackerUnavailable as exc:
                then = f"{tracker.remedy()}, then run it again" if tracker.offline else "run it again"
                raise HarnessError(f"sync of suite '{suite}' stopped after {len(summary.uploaded)} upload(s): "
                                   f"{exc}; {then}") from None
            store.clear_pending(key)
            (summary.uploaded if run_id is not None else summary.already).append(key)
    return summary
