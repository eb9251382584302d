"""MLflow: one experiment per suite, a parent run per `harness run`, a nested run per job.

Default store: a SQLite file under `HARNESS_HOME` (artifacts beside it); `MLFLOW_TRACKING_URI`
overrides. mlflow is imported lazily so that the CLI starts fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.paths import harness_home

JOB_KIND = "job"
INVOCATION_KIND = "invocation"


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


class Tracker:
    """A thin, explicit wrapper: everything MLflow sees comes from a run record."""

    def __init__(self, suite: str, experiment: str | None = None):
        import mlflow

        for noisy in ("mlflow", "alembic"):  # schema-migration chatter would bury the progress bars
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.mlflow = mlflow
        self.suite = suite
        self.experiment = experiment or experiment_name(suite)
        self.default_store = "MLFLOW_TRACKING_URI" not in os.environ  # set_tracking_uri may export it
        mlflow.set_tracking_uri(tracking_uri())
        self.client = mlflow.MlflowClient()
        self.experiment_id = self._experiment()

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
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`harness.kind` = '{JOB_KIND}' and attributes.status = 'FINISHED'",
            max_results=50000,
        )
        return {r.data.tags.get("harness.job_key") for r in runs}

    @contextlib.contextmanager
    def invocation(self, params: dict[str, Any]) -> Iterator[str]:
        """The parent run of one `harness run`."""
        with self.mlflow.start_run(experiment_id=self.experiment_id, run_name=f"harness run {self.suite}",
                                   tags={"harness.kind": INVOCATION_KIND, "harness.suite": self.suite}) as run:
            self.mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
            yield run.info.run_id

    def log_job(self, record: dict[str, Any], artifacts: dict[str, Path] | None = None) -> str:
        """A nested run holding the record's params, metrics, tags and the record itself."""
        tags = {
            "harness.kind": JOB_KIND,
            "harness.suite": self.suite,
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
        params = flatten({"backbone": record["backbone"], "protocol": record["protocol"],
                          "task": record["task"], "task_version": record["task_version"],
                          "dataset": record["dataset"], "data_fingerprint": record["data_fingerprint"]})
        name = f"{record['backbone']['name']}/{record['task']}/{record['dataset']}/{record['column']}"
        seed = record["protocol"].get("seed")
        with self.mlflow.start_run(experiment_id=self.experiment_id, nested=True,
                                   run_name=name + (f"/seed={seed}" if seed is not None else ""),
                                   tags=tags) as run:
            self.mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            self.mlflow.log_metrics({k: float(v) for k, v in record["metrics"].items()})
            self.mlflow.log_dict(record, "record.json")
            for name, path in (artifacts or {}).items():
                self.mlflow.log_artifact(str(path), artifact_path=name)
            return run.info.run_id

    def log_profile(self, row: dict[str, Any]) -> str:
        """One run per (backbone, batch size) profile row: numbers as metrics, the rest as params."""
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
        """Every finished job run of the suite, newest first, as MLflow's own DataFrame."""
        return self.mlflow.search_runs(
            experiment_ids=[self.experiment_id],
            filter_string=f"tags.`harness.kind` = '{JOB_KIND}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=50000,
        )


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="harness-job-"))
