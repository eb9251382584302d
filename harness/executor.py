"""The local executor: runs planned jobs one by one, skipping finished keys, with progress bars.

Order of effects per job: compute → write the run record (atomic) → log to MLflow. A job whose record
exists is never recomputed; if its MLflow run is missing (tracker was down, process killed) the record
is logged again, so MLflow and the records never disagree for long.

A process killed at any moment leaves either no record (the job runs again) or a whole one (it is
skipped); an MLflow job run cut short stays RUNNING/FAILED and is not counted as finished, so the
record is logged again and the leaderboard (FINISHED runs only) holds each job key once. When the
tracker is unreachable the run goes on: records are kept, the jobs are marked pending, and
`harness sync` uploads them later.
"""

from __future__ import annotations

import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.api import Backbone, JobContext
from harness.catalog import BACKBONES, TASKS
from harness.config import BackboneConfig
from harness.planner import Job, open_dataset
from harness.records import SCHEMA_VERSION, RecordStore, environment, now_iso
from harness.tracking import Tracker, TrackerUnavailable, scratch_dir, warn


@dataclass
class RunSummary:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    relogged: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # records not in MLflow yet (tracker unreachable)


def build_backbone(config: BackboneConfig) -> Backbone:
    return BACKBONES.get(config.name)(config)


def _peak_rss_mb() -> float:
    """The process's peak resident set so far (ru_maxrss: bytes on macOS, KiB on Linux)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 2**10


def _cuda_peak_mb(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def run_job(job: Job, backbone: Backbone, on_batch=None) -> tuple[dict[str, Any], dict]:
    """Evaluate one job and build its record (not yet written)."""
    task_cls = TASKS.get(job.task)
    protocol = task_cls.protocol_model.model_validate(job.protocol)
    dataset = open_dataset(job.dataset)
    workdir = scratch_dir()
    if job.backbone.device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    ctx = JobContext(workdir, on_batch)
    result = task_cls().evaluate(backbone, dataset, protocol, ctx)
    elapsed = time.perf_counter() - start
    record = {
        "schema_version": SCHEMA_VERSION,
        "job_key": job.key,
        "suite": job.suite,
        "backbone": job.backbone.model_dump(mode="json"),
        "backbone_fingerprint": backbone.fingerprint(),
        "weights_fingerprint": job.weights_fingerprint,
        "task": job.task,
        "task_version": job.task_version,
        "primary_metric": task_cls.primary_metric,
        "report_metrics": list(task_cls.report_metrics or (task_cls.primary_metric,)),
        "dataset": job.dataset,
        "data_fingerprint": job.data_fingerprint,
        "protocol": job.protocol,
        "column": job.column,
        "metrics": result.metrics,
        "details": result.details,
        "timings": {"total_s": round(elapsed, 3)},
        "counters": ctx.counters,
        "memory": {"process_peak_rss_mb": round(_peak_rss_mb(), 1),
                   "cuda_peak_allocated_mb": _cuda_peak_mb(job.backbone.device)},
        "environment": environment(job.backbone.device),
        "finished_at": now_iso(),
    }
    return record, {"workdir": workdir, "artifacts": result.artifacts}


class LocalExecutor:
    def __init__(self, store: RecordStore | None = None, console: Console | None = None):
        self.store = store or RecordStore()
        self.console = console or Console(stderr=True)
        self._verified: set[str] = set()

    def preflight(self, jobs: list[Job]) -> None:
        """Before any work: every dataset a job to run reads passes its `verify()` (listed files exist).
        Each dataset is verified once per executor, however often it is asked."""
        for job in jobs:
            if job.dataset not in self._verified:
                open_dataset(job.dataset).verify()
                self._verified.add(job.dataset)

    def _log(self, tracker: Tracker, record: dict, artifacts: dict | None, summary: RunSummary) -> bool:
        """Log one record; when the tracker is unreachable, mark it pending instead (never raises)."""
        key = record["job_key"]
        if not tracker.offline:
            try:
                tracker.log_job(record, artifacts)
                self.store.clear_pending(key)
                return True
            except TrackerUnavailable:
                pass
        self.store.mark_pending(record, artifacts)
        summary.pending.append(key)
        return False

    def run(self, jobs: list[Job], tracker: Tracker, resume: bool = True) -> RunSummary:
        summary = RunSummary()
        self.preflight([j for j in jobs if not (resume and self.store.exists(j.key))])
        logged = tracker.finished_keys()
        backbone: Backbone | None = None
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=self.console, transient=False) as progress:
            jobs_bar = progress.add_task("jobs", total=len(jobs))
            batch_bar = progress.add_task("batches", total=None, visible=False)

            def on_batch(done: int, total: int) -> None:
                progress.update(batch_bar, completed=done, total=total, visible=True)

            for job in jobs:
                key = job.key
                progress.update(jobs_bar, description=f"jobs  {job.label}")
                if resume and self.store.exists(key):
                    if key not in logged:
                        if self._log(tracker, self.store.read(key), self.store.pending_artifacts(key), summary):
                            summary.relogged.append(key)
                        logged.add(key)
                    summary.skipped.append(key)
                    progress.advance(jobs_bar)
                    continue
                if backbone is None or backbone.config != job.backbone:
                    backbone = None  # free the previous model before building the next
                    backbone = build_backbone(job.backbone)
                record, extra = run_job(job, backbone, on_batch)
                self.store.write(record)
                self._log(tracker, record, extra["artifacts"], summary)
                logged.add(key)
                shutil.rmtree(extra["workdir"], ignore_errors=True)
                summary.ran.append(key)
                progress.advance(jobs_bar)
        if summary.pending:
            suite = jobs[0].suite if jobs else "?"
            warn(f"{len(summary.pending)} job(s) finished but are not in MLflow yet (tracker unreachable); their "
                 f"records are kept, run `harness sync --suite {suite}` when the server is back")
        return summary
