"""`harness run --executor ray`: the job grid as Ray tasks, records and MLflow runs written by the driver.

Why this shape: a Ray task only *computes* (builds the backbone, calls `run_job`, returns the record and
its artifact files as bytes); the driver writes each record and logs it through `Executor.run` as the
task finishes, exactly as the local executor does. So records, MLflow runs and the leaderboard are the
same whichever executor ran, a remote worker needs no access to the driver's records or tracking store,
and a driver that dies loses only jobs that had not come back yet (resume recomputes just those).

Each task asks for what its job uses (one GPU when the job's device is CUDA; as many CPUs as it runs
threads) and is retried when its worker dies (`max_retries`); an exception raised by the job itself is
a real error and surfaces once, never retried. Workers run the driver's torch thread count, because CPU
kernels may sum in a different order with a different count and the numbers must be bit-identical; a
task reserves that many CPUs (at most a node's), since tasks sharing cores with more threads than cores
run several times slower than one after the other.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.api import Backbone
from harness.config import BackboneConfig
from harness.errors import ConfigError, HarnessError
from harness.plan.planner import Job
from harness.run.executor import Claim_, Executor, JobDone, JobProgress, build_backbone, run_job
from harness.run.ray_support import init_ray, require_cluster_gpu, require_ray

MAX_RETRIES = 3  # a worker lost (killed, node gone, OOM-killed) is retried this often
FAULT_ENV = "HARNESS_RAY_FAULT_ONCE"
"""Test hook: a path. The first job batch that finds no file there creates it and SIGKILLs its own worker
(so exactly one worker dies, mid-job, per marker file). Unset, as in production, it does nothing."""


@dataclass
class JobOutput:
    """What a task sends back: the record, and each artifact as (file name, contents)."""

    record: dict[str, Any]
    artifacts: dict[str, tuple[str, bytes]]


_built: tuple[BackboneConfig, Backbone] | None = None  # a worker process keeps its last backbone


def _backbone(config: BackboneConfig) -> Backbone:
    """The worker's backbone for `config`: consecutive jobs of one backbone in a worker build it once."""
    global _built
    if _built is None or _built[0] != config:
        _built = None  # free the previous model before building the next
        _built = (config, build_backbone(config))
    return _built[1]


def _fault_once(done: int, total: int) -> None:
    """The FAULT_ENV hook, called on every batch a job reports."""
    marker = os.environ.get(FAULT_ENV)
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def evaluate(job: Job, threads: int) -> JobOutput:
    """The body of one Ray task: evaluate `job` with `threads` torch threads; the workdir does not outlive it."""
    import torch

    torch.set_num_threads(threads)
    try:
        record, extra = run_job(job, _backbone(job.backbone), _fault_once)
    except HarnessError as exc:
        raise _portable(exc) from None
    try:
        artifacts = {name: (Path(path).name, Path(path).read_bytes()) for name, path in extra["artifacts"].items()}
    finally:
        shutil.rmtree(extra["workdir"], ignore_errors=True)
    return JobOutput(record, artifacts)


def _portable(exc: HarnessError) -> HarnessError:
    """`exc` if it survives pickling to the driver, else a HarnessError with its message (a subclass whose
    `__init__` takes other arguments than its message cannot be rebuilt there, and Ray would hide it)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 (whatever fails, the message is what the user needs)
        return HarnessError(str(exc))
    return exc


def gpus_for(job: Job) -> int:
    """Ray assigns GPUs (CUDA_VISIBLE_DEVICES), so a job asks for one and uses `cuda`, never `cuda:N`."""
    device = job.backbone.device
    if device.startswith("cuda:"):
        raise ConfigError(f"--executor ray assigns GPUs itself: use --device cuda, not '{device}'")
    return 1 if device == "cuda" else 0


class RayExecutor(Executor):
    """Jobs as Ray tasks on the cluster at `address` (`auto`, `ray://HOST:PORT`) or on a local instance.

    Ray is started (or connected) only when there is a job to run, and a local instance it started is
    shut down when the executor's `with` block ends, so no Ray process outlives the command.
    """

    def __init__(self, address: str | None = None, cpus_per_job: float | None = None,
                 max_retries: int = MAX_RETRIES, **kwargs: Any):
        super().__init__(**kwargs)
        self.ray = require_ray()  # before any work: a clear error naming the extra
        self.address = address
        self.cpus_per_job = cpus_per_job
        self.max_retries = max_retries
        self._started = False

    def preflight(self, jobs: list[Job]) -> None:
        """Also, before any work: every job asks for resources Ray can give it (no `cuda:N`), and CUDA jobs find
        a GPU in the cluster: found now, before an MLflow run is opened, not by tasks waiting forever."""
        gpus = [gpus_for(job) for job in jobs]
        super().preflight(jobs)
        if any(gpus):
            self._connect()
            try:
                require_cluster_gpu(self.ray, "jobs")
            except HarnessError:
                self.__exit__(None, None, None)  # a local instance it started does not outlive the command
                raise

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False

    def _connect(self) -> None:
        if not self.ray.is_initialized():
            self.ray = init_ray(self.address)
            self._started = True

    def _run_jobs(self, jobs: list[Job], done: JobDone, progress: JobProgress, take: Claim_) -> int:
        jobs = [job for job in jobs if take(job)]  # claimed on submission: the driver holds them while they run
        if not jobs:
            return 0
        import torch

        gpus = {job.key: gpus_for(job) for job in jobs}
        self._connect()
        ray = self.ray
        if any(gpus.values()):
            require_cluster_gpu(ray, "jobs")
        task = ray.remote(evaluate)
        threads = torch.get_num_threads()
        cpus = self.cpus_per_job or min(threads, _largest_node_cpus(ray))
        pending = {
            task.options(num_cpus=cpus, num_gpus=gpus[job.key], max_retries=self.max_retries,
                         retry_exceptions=False, name=job.label).remote(job, threads): job
            for job in jobs
        }
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ref)
                output = self._result(ref, job)
                progress.running(job)
                with tempfile.TemporaryDirectory(prefix="harness-ray-") as tmp:
                    done(job, output.record, _unpack(output.artifacts, Path(tmp)))
            return len(jobs)
        finally:
            for ref in pending:  # an error or an interrupt: nothing keeps computing for nobody
                with contextlib.suppress(Exception):  # best effort: the error that got us here matters
                    ray.cancel(ref)

    def _result(self, ref: Any, job: Job) -> JobOutput:
        """The task's output; its error as the job's own exception (a HarnessError stays one line)."""
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.RayTaskError as exc:
            if isinstance(exc.cause, HarnessError):
                raise exc.cause from None
            raise
        except exceptions.RayError as exc:
            raise HarnessError(f"job {job.label} ({job.key}) failed on Ray ({type(exc).__name__}; a lost worker "
                               f"is retried {self.max_retries} times): {exc}") from None


def _largest_node_cpus(ray: Any) -> float:
    """The most CPUs one alive node has: a task asking for more would never be scheduled."""
    return max([n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")] or [1]) or 1


def _unpack(artifacts: dict[str, tuple[str, bytes]], folder: Path) -> dict[str, Path]:
    """Artifact bytes back into files under `folder`, with their original names (MLflow keeps the names)."""
    paths = {}
    for name, (filename, data) in artifacts.items():
        path = folder / name / filename
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        paths[name] = path
    return paths
