"""MLflow: one experiment per suite, a parent run per `harness run`, a nested run per job.

Default store: a SQLite file under `HARNESS_HOME` (artifacts beside it); `MLFLOW_TRACKING_URI`
overrides. mlflow is imported lazily so that the CLI starts fast.

An unreachable tracking server never stops a run: HTTP requests fail fast (short timeout, few
retries, unless the MLFLOW_HTTP_REQUEST_* variables say otherwise), the tracker then goes *offline*
with one warning, records stay the source of truth, jobs not logged are marked pending, and
`harness sync` uploads them later. Offline, `job_runs` is built from the local records, so the
leaderboard still compiles.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.paths import harness_home

JOB_KIND = "job"
INVOCATION_KIND = "invocation"
# Fail fast against an unreachable server (MLflow's defaults: 7 retries with backoff, 120 s timeout).
FAST_FAIL_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{harness_home() / 'mlflow.db'}"


def experiment_name(suite: str) -> str:
    return f"harness-{suite}"


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts → `a.b.c` keys, the shape MLflow params want."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = obj
    return out


def ensure_sqlite_store(uri: str, artifact_root: Path | None = None) -> None:
    """Create a new SQLite tracking database whole or not at all.

    MLflow builds a fresh SQLite store by running its schema migrations in place, and SQLite's alembic
    migrations are not one transaction: a process killed half-way (SIGKILL on the first `harness run`
    of a new HARNESS_HOME) leaves a half-migrated file that every later run fails to open ("table
    _alembic_tmp_... already exists"). So a missing database is migrated in a temp file beside it and
    then hard-linked into place (which never replaces a database a concurrent run made first).
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == prefix + ":memory:":
        return
    db = Path(uri[len(prefix):])
    if db.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=db.parent, prefix=f".{db.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        store = SqlAlchemyStore(prefix + str(tmp), str(artifact_root or Path("mlruns").resolve()))
        store.engine.dispose()
        with contextlib.suppress(FileExistsError):  # a concurrent run created it first: keep that one
            os.link(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)


class TrackerUnavailable(HarnessError):
    """The tracking server could not be reached (the tracker is offline)."""


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class Tracker:
    """A thin, explicit wrapper: everything MLflow sees comes from a run record.

    Jobs are logged through `MlflowClient` (not the fluent API) so that a failure half-way leaves no
    active-run state behind; a job run is FINISHED only once its params, metrics and record are in.
    """

    def __init__(self, suite: str, experiment: str | None = None):
        for name, value in FAST_FAIL_ENV.items():
            os.environ.setdefault(name, value)
        import mlflow

        for noisy in ("mlflow", "alembic", "urllib3"):  # schema-migration chatter would bury the progress bars
            logging.getLogger(noisy).setLevel(logging.ERROR)
        self.mlflow = mlflow
        self.suite = suite
        self.experiment = experiment or experiment_name(suite)
        self.default_store = "MLFLOW_TRACKING_URI" not in os.environ  # set_tracking_uri may export it
        self.uri = tracking_uri()
        self.offline_reason: str | None = None
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        try:  # before the client: creating it opens (and would migrate in place) the store
            ensure_sqlite_store(self.uri, harness_home() / "mlartifacts" if self.default_store else None)
        except Exception as exc:  # noqa: BLE001 (an unusable store means offline)
            self.go_offline(exc)
        mlflow.set_tracking_uri(self.uri)
        self.client = mlflow.MlflowClient()
        try:
            self.experiment_id = self._experiment()
        except Exception as exc:  # noqa: BLE001 (any failure to reach the store means offline)
            self.go_offline(exc)

    # -- availability ------------------------------------------------------------------------------
    @property
    def offline(self) -> bool:
        return self.offline_reason is not None

    def go_offline(self, exc: BaseException) -> None:
        if self.offline:
            return
        text = " ".join(str(exc).split())
        self.offline_reason = f"{type(exc).__name__}: {text[:160]}"
        warn(f"MLflow tracking at {self.uri} is unreachable ({self.offline_reason}); records are kept "
             f"locally under {harness_home() / 'records'} and `harness sync --suite {self.suite}` uploads "
             "them once the server is back")

    def require_online(self) -> None:
        if self.offline:
            raise TrackerUnavailable(f"MLflow tracking at {self.uri} is unreachable: {self.offline_reason}")

    def _experiment(self) -> str:
        name = self.experiment
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        artifact_location = None
        if self.default_store:
            artifact_location = (harness_home() / "mlartifacts").as_uri()
        return self.client.create_experiment(name, artifact_location=artifact_location)

    def finished_keys(self) -> set[str]:
        """Job keys with a FINISHED job run; a run killed half-way (RUNNING/FAILED) does not count."""
        if self.offline:
            return set()
        try:
            runs = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`harness.kind` = '{JOB_KIND}' and attributes.status = 'FINISHED'",
                max_results=50000,
            )
        except Exception as exc:  # noqa: BLE001
            self.go_offline(exc)
            return set()
        return {r.data.tags.get("harness.job_key") for r in runs}

    @contextlib.contextmanager
    def invocation(self, params: dict[str, Any], name: str | None = None) -> Iterator[str | None]:
        """The parent run of one `harness run` (None when offline); never fails the work inside it."""
        from mlflow.entities import Param, RunStatus

        run_id = None
        if not self.offline:
            try:
                run = self.client.create_run(self.experiment_id, run_name=name or f"harness run {self.suite}",
                                             tags={"harness.kind": INVOCATION_KIND, "harness.suite": self.suite})
                run_id = run.info.run_id
                items = [Param(k, str(v)[:500]) for k, v in flatten(params).items()]
                for i in range(0, len(items), 100):
                    self.client.log_batch(run_id, params=items[i:i + 100])
            except Exception as exc:  # noqa: BLE001
                self.go_offline(exc)
        self.parent_run_id = run_id
        status = RunStatus.to_string(RunStatus.FINISHED)
        try:
            yield run_id
        except BaseException:
            status = RunStatus.to_string(RunStatus.FAILED)
            raise
        finally:
            self.parent_run_id = None
            if run_id is not None and not self.offline:
                try:
                    self.client.set_terminated(run_id, status)
                except Exception as exc:  # noqa: BLE001
                    self.go_offline(exc)

    def log_job(self, record: dict[str, Any], artifacts: dict[str, Path] | None = None) -> str:
        """A nested run holding the record's params, metrics, tags and the record itself.

        Raises TrackerUnavailable when offline or when the server fails (the tracker then goes offline).
        """
        from mlflow.entities import Metric, Param, RunStatus

        self.require_online()
        tags = job_tags(record, self.suite)
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        params = job_params(record)
        name = f"{record['backbone']['name']}/{record['task']}/{record['dataset']}/{record['column']}"
        seed = record["protocol"].get("seed")
        run_id = None
        try:
            run = self.client.create_run(self.experiment_id, tags=tags,
                                         run_name=name + (f"/seed={seed}" if seed is not None else ""))
            run_id = run.info.run_id
            stamp = int(run.info.start_time or 0)
            p = [Param(k, v) for k, v in params.items()]
            metrics = {**record["metrics"], **item_se_metrics(record)}
            m = [Metric(k, float(v), stamp, 0) for k, v in metrics.items()]
            for i in range(0, max(len(p), len(m), 1), 100):
                self.client.log_batch(run_id, metrics=m[i:i + 100], params=p[i:i + 100])
            self.client.log_dict(run_id, record, "record.json")
            for art, path in (artifacts or {}).items():
                self.client.log_artifact(run_id, str(path), artifact_path=art)
            self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        except Exception as exc:  # noqa: BLE001
            if run_id is not None:
                with contextlib.suppress(Exception):  # best effort: a FAILED run is never counted
                    self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            self.go_offline(exc)
            raise TrackerUnavailable(f"logging job {record['job_key']} failed: {self.offline_reason}") from exc
        return run_id

    def log_profile(self, row: dict[str, Any]) -> str:
        """One run per (backbone, batch size) profile row: numbers as metrics, the rest as params."""
        self.require_online()
        metrics = {k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        params = {k: str(v)[:500] for k, v in flatten(row).items() if k not in metrics}
        name = f"{row['backbone']}:{row['variant']} bs={row['batch_size']} {row.get('device', '')}"
        with self.mlflow.start_run(experiment_id=self.experiment_id, run_name=name,
                                   tags={"harness.kind": "profile", "harness.backbone": row["backbone"]}):
            self.mlflow.log_params(params)
            self.mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})
            self.mlflow.log_dict(row, "profile.json")
            return self.mlflow.active_run().info.run_id

    def job_runs(self):  # -> pandas.DataFrame
        """Every finished job run of the suite, newest first, as MLflow's own DataFrame.

        Offline, the same columns are built from the suite's local run records (with a warning).
        """
        if not self.offline:
            try:
                return self.mlflow.search_runs(
                    experiment_ids=[self.experiment_id],
                    filter_string=f"tags.`harness.kind` = '{JOB_KIND}' and attributes.status = 'FINISHED'",
                    order_by=["attributes.start_time DESC"],
                    max_results=50000,
                )
            except Exception as exc:  # noqa: BLE001
                self.go_offline(exc)
        warn(f"leaderboard of suite '{self.suite}' compiled from local run records (MLflow is unreachable)")
        return runs_from_records(self.suite)


def job_tags(record: dict[str, Any], suite: str | None = None) -> dict[str, str]:
    """The tags of a job run, all from its record."""
    return {
        "harness.kind": JOB_KIND,
        "harness.suite": suite or record["suite"],
        "harness.job_key": record["job_key"],
        "harness.backbone": record["backbone"]["name"],
        "harness.variant": record["backbone"]["variant"],
        "harness.weights_kind": record["backbone_fingerprint"].get("weights_kind", ""),
        "harness.weights_fingerprint": record["weights_fingerprint"],
        "harness.task": record["task"],
        "harness.task_version": record["task_version"],
        "harness.dataset": record["dataset"],
        "harness.column": record["column"],
        "harness.primary_metric": record["primary_metric"],
        "harness.report_metrics": ",".join(record.get("report_metrics") or [record["primary_metric"]]),
        "harness.git_commit": record["environment"]["git_commit"],
        "harness.device": record["environment"]["device"],
        "harness.packages": ",".join(f"{k}=={v}" for k, v in record["environment"]["packages"].items()),
    }


# Item-level uncertainty rides along as extra MLflow metrics named after the metric (never a leaderboard row:
# the leaderboard reads only the reported metrics): `<m>.se_items` (or `<m>.se_binomial` for a proportion,
# pooled over seeds as a binomial) and `<m>.n_items`. Runs without them (older ones) mean "unknown".
SE_ITEMS, SE_BINOMIAL, N_ITEMS = "se_items", "se_binomial", "n_items"


def item_se_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The record's `item_se` as MLflow metrics (empty for records written before it existed)."""
    out: dict[str, float] = {}
    for metric, v in (record.get("item_se") or {}).items():
        out[f"{metric}.{SE_BINOMIAL if v.get('binomial') else SE_ITEMS}"] = float(v["se"])
        out[f"{metric}.{N_ITEMS}"] = float(v["n"])
    return out


def job_params(record: dict[str, Any]) -> dict[str, str]:
    """The params of a job run (flattened, as strings, as MLflow stores them)."""
    params = flatten({"backbone": record["backbone"], "protocol": record["protocol"],
                      "task": record["task"], "task_version": record["task_version"],
                      "dataset": record["dataset"], "data_fingerprint": record["data_fingerprint"]})
    return {k: str(v)[:500] for k, v in params.items()}


def runs_from_records(suite: str, root: Path | None = None):  # -> pandas.DataFrame
    """The suite's local records in the shape of `mlflow.search_runs` (the columns the leaderboard reads)."""
    import pandas as pd

    rows = []
    for path in sorted((Path(root) if root else harness_home() / "records").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("suite") != suite:
            continue
        row = {f"tags.{k}": v for k, v in job_tags(record).items()}
        row.update({f"params.{k}": v for k, v in job_params(record).items()})
        row.update({f"metrics.{k}": float(v) for k, v in {**record["metrics"], **item_se_metrics(record)}.items()})
        row["run_id"] = ""
        row["end_time"] = record.get("finished_at")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values("end_time", ascending=False, kind="stable").reset_index(drop=True)
    return frame


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="harness-job-"))
