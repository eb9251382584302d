"""Executors: run planned jobs, skipping finished keys, with progress bars.

`LocalExecutor` evaluates jobs one by one in this process; `harness.run.ray_executor.RayExecutor` evaluates
them as Ray tasks. Both share `Executor.run`, so whatever computes a job, this process writes its record
and logs it the same way.

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

import abc
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from harness.api import Backbone, JobContext
from harness.catalog import BACKBONES, TASKS
from harness.config import BackboneConfig
from harness.data.locks import Claim, claim, holder
from harness.data.memory import mark_peak, peak_rss_mb
from harness.plan.planner import Job, open_dataset
from harness.track.records import SCHEMA_VERSION, RecordStore, environment, now_iso
from harness.track.tracking import Tracker, TrackerUnavailable, scratch_dir, warn


@dataclass
class RunSummary:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    relogged: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # records not in MLflow yet (tracker unreachable)
    elsewhere: list[str] = field(default_factory=list)  # finished meanwhile by another process on this store

    def metrics(self, planned: int) -> dict[str, float]:
        """The counts as the parent MLflow run's summary metrics (`jobs.*`)."""
        counts = {"planned": planned, "ran": len(self.ran), "skipped": len(self.skipped),
                  "relogged": len(self.relogged), "pending": len(self.pending), "elsewhere": len(self.elsewhere)}
        return {f"jobs.{k}": float(v) for k, v in counts.items()}


def build_backbone(config: BackboneConfig) -> Backbone:
    return BACKBONES.get(config.name)(config)


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
    rss_scope = mark_peak()  # this job's peak, not an earlier job's
    start = time.perf_counter()
    ctx = JobContext(workdir, on_batch, limit=job.limit)
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
        **({"limit": job.limit} if job.limit else {}),  # a quick-iteration run on the first N items per split
        "metrics": result.metrics,
        "item_se": {m: {"se": float(v.se), "n": int(v.n), "binomial": bool(v.binomial)}
                    for m, v in result.item_se.items() if math.isfinite(v.se)},
        "details": result.details,
        "timings": {"total_s": round(elapsed, 3)},
        "counters": ctx.counters,
        "memory": {"peak_rss_mb": round(peak_rss_mb(), 1), "rss_scope": rss_scope,
                   "cuda_peak_allocated_mb": _cuda_peak_mb(job.backbone.device)},
        "environment": environment(job.backbone.device),
        "finished_at": now_iso(),
    }
    return record, {"workdir": workdir, "artifacts": result.artifacts}


JobDone = Callable[[Job, dict, dict], None]
"""`done(job, record, artifacts)`: write the record, log it with its artifact files, count it."""
Claim_ = Callable[[Job], bool]
"""`take(job)`: claim the job for this process right before computing it; False means skip it."""
WAIT_POLL_S = 2.0  # how often a process waiting for another's jobs looks again


def job_lock_name(key: str) -> str:
    """The claim a job's key is computed under (`harness.data.locks`)."""
    return f"job-{key}"


@dataclass
class JobProgress:
    """The progress display an executor reports into: the jobs bar, and batches of the running job."""

    progress: Progress
    jobs_bar: TaskID

    def running(self, job: Job) -> None:
        self.progress.update(self.jobs_bar, description=f"jobs  {job.label}")


class Executor(abc.ABC):
    """What every executor shares, so that records and MLflow runs are the same whichever one computes:
    preflight, skip-or-relog of finished keys, and for each job that finishes, record first, then MLflow.

    Subclasses only decide *where* jobs are evaluated (`_run_jobs`); the driver process always writes the
    records and logs them, as each job finishes.
    """

    def __init__(self, store: RecordStore | None = None, console: Console | None = None):
        self.store = store or RecordStore()
        self.console = console or Console(stderr=True)
        self._verified: set[str] = set()

    def __enter__(self) -> Executor:
        """The `with` block holds whatever the executor needs while it runs (a Ray connection)."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Release what `run` started; nothing to release for the local executor."""
        return None

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
        """Skip (and re-log when MLflow lacks them) finished keys, evaluate the rest, record and log each one.

        A key listed twice is evaluated once; its second listing counts as skipped. Each job's key is claimed
        (`harness.data.locks`) right before it is computed, so processes sharing a store split the work: a key
        another live process holds is left to it, and waited for at the end (taken over if its holder dies).
        """
        summary = RunSummary()
        claims: dict[str, Claim] = {}
        contested: dict[str, Job] = {}

        def take(job: Job) -> bool:
            """Claim the job before computing it; False when another process holds it or just finished it."""
            got = claim(job_lock_name(job.key))
            if got is None:
                contested[job.key] = job
                return False
            if resume and self.store.exists(job.key):  # finished by another process since the plan was made
                got.release()
                summary.elsewhere.append(job.key)
                progress.advance(jobs_bar)
                return False
            claims[job.key] = got
            return True

        todo: dict[str, Job] = {}
        finished: list[str] = []
        for job in jobs:
            if (resume and self.store.exists(job.key)) or job.key in todo:
                finished.append(job.key)
            else:
                todo[job.key] = job
        self.preflight(list(todo.values()))
        logged = tracker.finished_keys()
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=self.console, transient=False) as progress:
            jobs_bar = progress.add_task("jobs", total=len(jobs))
            for key in finished:
                if key not in logged and key not in todo:
                    if self._log(tracker, self.store.read(key), self.store.pending_artifacts(key), summary):
                        summary.relogged.append(key)
                    logged.add(key)
                summary.skipped.append(key)
                progress.advance(jobs_bar)

            def done(job: Job, record: dict, artifacts: dict) -> None:
                # The artifacts are kept beside the record before it lands: a process killed between the
                # record and its MLflow run re-logs both on resume (the job's scratch files are gone by then).
                self.store.mark_pending(record, artifacts)
                self.store.write(record)
                self._log(tracker, record, self.store.pending_artifacts(job.key), summary)
                claims.pop(job.key).release()
                logged.add(job.key)
                summary.ran.append(job.key)
                progress.advance(jobs_bar)

            try:
                self._run_jobs(list(todo.values()), done, JobProgress(progress, jobs_bar), take)
                self._wait_for_others(contested, done, JobProgress(progress, jobs_bar), take)
            finally:  # an error or Ctrl-C: what this process had claimed is free for the next run at once
                for held in claims.values():
                    held.release()
        if summary.pending:
            suite = jobs[0].suite if jobs else "?"
            warn(f"{len(summary.pending)} job(s) finished but are not in MLflow yet (tracker unreachable); their "
                 f"records are kept, run `harness sync --suite {suite}` when the server is back")
        return summary

    def _wait_for_others(self, contested: dict[str, Job], done: JobDone, progress: JobProgress,
                         take: Claim_) -> None:
        """Wait for the jobs other processes were computing; compute those whose holder died unfinished."""
        announced = False
        while contested:
            jobs = list(contested.values())
            contested.clear()
            self._run_jobs(jobs, done, progress, take)  # `take` puts back what is still held elsewhere
            if contested and not announced:
                owner = next((o for o in map(holder, map(job_lock_name, contested)) if o is not None), None)
                who = owner.describe() if owner else "another process"
                self.console.print(f"waiting for {len(contested)} job(s) being computed by {who} on this store "
                                   "(a job is never computed twice)", highlight=False)
                announced = True
            if contested:
                time.sleep(WAIT_POLL_S)

    @abc.abstractmethod
    def _run_jobs(self, jobs: list[Job], done: JobDone, progress: JobProgress, take: Claim_) -> int:
        """Evaluate those of `jobs` (none finished yet) that `take(job)` claims, right before each, and call
        `done` in this process as each one finishes; returns how many were evaluated."""


class LocalExecutor(Executor):
    """Jobs one by one in this process; a backbone is built once for consecutive jobs that share it."""

    def _run_jobs(self, jobs: list[Job], done: JobDone, progress: JobProgress, take: Claim_) -> int:
        batch_bar = progress.progress.add_task("batches", total=None, visible=False)

        def on_batch(n: int, total: int) -> None:
            progress.progress.update(batch_bar, completed=n, total=total, visible=True)

        backbone: Backbone | None = None
        evaluated = 0
        for job in jobs:
            if not take(job):
                continue
            progress.running(job)
            if backbone is None or backbone.config != job.backbone:
                backbone = None  # free the previous model before building the next
                backbone = build_backbone(job.backbone)
            record, extra = run_job(job, backbone, on_batch)
            done(job, record, extra["artifacts"])
            shutil.rmtree(extra["workdir"], ignore_errors=True)
            evaluated += 1
        progress.progress.remove_task(batch_bar)
        return evaluated
