"""MLflow: one experiment per suite, a parent run per `harness run`, a nested run per job.

Default store: a SQLite file under `HARNESS_HOME` (artifacts beside it); `MLFLOW_TRACKING_URI`
overrides. mlflow is imported lazily so that the CLI starts fast.

What a user sees in the MLflow UI comes from the run record (`job_metrics`, `job_params`, `job_tags`): the
reported metrics at step 0; each training curve of the record (`CURVES`, e.g. `train.loss`) with one step per
epoch or iteration; timings (`time.*_s`), memory (`memory.*_mb`), backbone throughput and the job's counters;
a run name `backbone:variant/task/dataset/setting/seed`; MLflow's own `mlflow.source.git.commit` tag. The parent
run of a `harness run` gets the leaderboard files and summary metrics (`log_suite_outputs`). Experiments carry
a description (`mlflow.note.content`) and their artifacts live next to the store (`store_artifact_root`), never in
the working directory.

An unreachable tracking server never stops a run: HTTP requests fail fast (short timeout, few
retries, unless the MLFLOW_HTTP_REQUEST_* variables say otherwise), the tracker then goes *offline*
with one warning, records stay the source of truth, jobs not logged are marked pending, and
`harness sync` uploads them later. Offline, `job_runs` is built from the local records, so the
leaderboard still compiles.

A local SQLite store that cannot be used (corrupt, unwritable folder, full disk, file-size limit) is
handled the same way, within seconds: `check_sqlite_store` opens it with the sqlite3 module first, so
that MLflow, whose engine creation retries a failing connection for about 100 s with no setting to
shorten it, only ever sees a file that opens. The one case that stops instead is a store folder that is
a file (HARNESS_HOME pointing at a file), where records could not be kept either. A database server
(postgresql://, mysql://, mssql://, with or without +driver) gets the same treatment from
`check_database_store`: a TCP connect with a short timeout, then one connection attempt, both bounded,
before MLflow (and its retry loop) is handed the URI.

Several processes may share one store: experiment creation tolerates the race, a job key is logged
at most once (a FINISHED run for it is looked up under a per-key claim, see harness.data.locks), and a
parent run left RUNNING by a killed process of this host is closed as KILLED by the next invocation,
with the job runs it left RUNNING under it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from harness import __version__
from harness.data import locks
from harness.errors import HarnessError, warn
from harness.paths import harness_home

JOB_KIND = "job"
INVOCATION_KIND = "invocation"
# Fail fast against an unreachable server (MLflow's defaults: 7 retries with backoff, 120 s timeout).
FAST_FAIL_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


# How long the up-front check of a SQLite store may take (integrity check, then a write probe), and
# how long `log_job` waits for another process that is logging the same job key.
STORE_CHECK_BUDGET_S = 2.0
LOG_CLAIM_WAIT_S = 30.0
# A database server as the store: its default ports, the TCP connect timeout, and the bound on the whole
# up-front check (name lookup, connect, one login); MLflow alone would retry a failing connection ~100 s.
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
DB_CONNECT_TIMEOUT_S = 3.0
DB_CHECK_BUDGET_S = 10.0


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or sqlite_uri(harness_home() / "mlflow.db")


def sqlite_uri(db: Path) -> str:
    """The SQLAlchemy URI of the SQLite file `db`, for any path.

    SQLAlchemy percent-decodes the path of `sqlite:///PATH` and cuts it at '?', so a path holding '%'
    or '?' (a HARNESS_HOME with `%20` in it) names another file. Such a path is passed as a SQLite URI
    filename instead (`sqlite:///file:<quoted>?uri=true`), quoted so that it also holds no '/': MLflow
    creates the parent folders of the raw text after `sqlite:///`, which is then just `.`.
    """
    text = str(db)
    if "%" not in text and "?" not in text:
        return f"sqlite:///{text}"
    return "sqlite:///" + quote("file:" + quote(text, safe="/"), safe=":") + "?uri=true"


def sqlite_path(uri: str) -> Path | None:
    """The file behind a `sqlite:` tracking URI (the inverse of `sqlite_uri`); None for other stores."""
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    database = url.database or ""
    if database in ("", ":memory:"):
        return None
    if url.query.get("uri") == "true" and database.startswith("file:"):
        return Path(unquote(database[len("file:"):].split("?")[0]))
    return Path(database)


def database_backend(uri: str) -> str | None:
    """'postgresql', 'mysql' or 'mssql' for a database-server URI (`postgresql+psycopg2://...` too); else None."""
    scheme = uri.partition("://")[0].lower() if "://" in uri else ""
    backend = scheme.partition("+")[0]
    return backend if backend in DATABASE_PORTS else None


def shown_uri(uri: str) -> str:
    """The URI as messages show it: a password in it is replaced by ***."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None:
        return uri
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


def tcp_address(uri: str) -> tuple[str, int] | None:
    """The (host, port) a database URI connects to over TCP, default port filled in; None where the driver
    connects some other way (no host: a local socket; `host=`/`unix_socket=` in the query; an ODBC DSN)."""
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    backend = database_backend(uri)
    if backend is None or not url.host or {"host", "unix_socket", "odbc_connect"} & set(url.query):
        return None
    if backend == "mssql" and url.get_driver_name() == "pyodbc" and "driver" not in url.query and not url.port:
        return None  # mssql+pyodbc://user:pw@NAME without driver= names an ODBC DSN, not a host
    return url.host, url.port or DATABASE_PORTS[backend]


def check_database_store(uri: str, budget_s: float = DB_CHECK_BUDGET_S,
                         connect_timeout_s: float = DB_CONNECT_TIMEOUT_S) -> None:
    """Raise StoreUnusable unless the database server of `uri` answers within seconds: a TCP connect to its
    host and port (`connect_timeout_s`), then one connection through SQLAlchemy (a missing driver, a wrong
    password or database show here), the whole bounded by `budget_s` (a server that accepts and never
    answers). MLflow's own engine creation retries any failure for about 100 s; it only sees a server that
    answered once.
    """
    shown = shown_uri(uri)
    outcome: dict[str, BaseException | str] = {}

    def probe() -> None:
        try:
            address = tcp_address(uri)
            if address is not None:
                try:
                    socket.create_connection(address, timeout=connect_timeout_s).close()
                except OSError as exc:
                    outcome["cause"] = (f"cannot connect to {address[0]}:{address[1]} within "
                                        f"{connect_timeout_s:g} s: {exc.strerror or exc}")
                    return
            import sqlalchemy
            from sqlalchemy.pool import NullPool

            engine = sqlalchemy.create_engine(uri, poolclass=NullPool)
            try:
                engine.connect().close()
            finally:
                engine.dispose()
        except BaseException as exc:  # noqa: BLE001 (handed to the caller's thread as the cause)
            outcome["error"] = exc

    worker = threading.Thread(target=probe, name="harness-db-store-check", daemon=True)
    worker.start()
    worker.join(budget_s)
    if worker.is_alive():
        cause = f"no answer within {budget_s:g} s"
    elif "cause" in outcome:
        cause = str(outcome["cause"])
    elif "error" in outcome:
        cause = failure_text(outcome["error"])  # type: ignore[arg-type]
    else:
        return
    raise StoreUnusable(f"MLflow tracking database {shown} cannot be used: {cause}", cause)


def experiment_name(suite: str) -> str:
    return f"harness-{suite}"


def store_artifact_root(uri: str) -> Path | None:
    """Where the artifacts of a store's experiments go: next to the store, one folder per store, never the
    working directory (MLflow's own default for a database store is `./mlruns` of wherever the command runs,
    so two stores used from one folder would share `mlruns/<id>`).

    The default store (`HARNESS_HOME/mlflow.db`), and any SQLite store named `mlflow.db`: `mlartifacts` beside
    it; another SQLite file `NAME.db`: `NAME-mlartifacts` beside it; a database server: a folder under
    `HARNESS_HOME/mlartifacts` named after the server's URI. None for a tracking server (it serves artifacts
    itself) and for stores MLflow keeps in a folder of their own.
    """
    db = sqlite_path(uri)
    if db is not None:
        db = db.expanduser().resolve()
        return db.parent / ("mlartifacts" if db.name == "mlflow.db" else f"{db.stem}-mlartifacts")
    backend = database_backend(uri)
    if backend is not None:
        digest = hashlib.sha256(shown_uri(uri).encode()).hexdigest()[:12]
        return harness_home() / "mlartifacts" / f"{backend}-{digest}"
    return None


def experiment_tags(suite: str, experiment: str) -> dict[str, str]:
    """An experiment's tags; `mlflow.note.content` is the description MLflow's UI shows."""
    if experiment == experiment_name(suite):
        note = (f"Runs of harness suite `{suite}`. One parent run per `harness run` (its params are the run's "
                "configuration; the suite's leaderboard files `leaderboard/*` and summary metrics `jobs.*`, "
                "`mean.<task>.<metric>/<backbone>.<variant>` are attached when it ends), and under it one run "
                "per job: the protocol as params, the reported metrics, training curves by step (`train.loss`), "
                "timings (`time.*`), memory (`memory.*`), throughput and counters, and the run record "
                "(`record.json`).")
    else:
        note = f"harness experiment `{experiment}`: one run per measured row (numbers as metrics, the rest as params)."
    return {"mlflow.note.content": note, "harness.suite": suite, "harness.version": __version__}


def mlflow_git_commit(commit: str | None) -> str | None:
    """MLflow's `mlflow.source.git.commit` wants a bare SHA: the harness's `<sha>+dirty` without the mark; None
    when the commit is unknown."""
    sha = (commit or "").split("+")[0]
    return sha if re.fullmatch(r"[0-9a-f]{40}", sha) else None


def run_name(record: dict[str, Any]) -> str:
    """`backbone:variant/task/dataset/setting/seed=N` from a record; empty parts (no setting) are left out, and a
    quick-iteration run (`--limit N`) ends in `/limit=N`."""
    seed, limit = record["protocol"].get("seed"), record.get("limit")
    parts = [f"{record['backbone']['name']}:{record['backbone']['variant']}", record["task"], record["dataset"],
             record.get("column") or "", f"seed={seed}" if seed is not None else "", f"limit={limit}" if limit else ""]
    return "/".join(str(p) for p in parts if p)


def metric_key(text: str) -> str:
    """`text` as an MLflow metric key valid on every platform (slashes, word characters, `.`, `-`, spaces)."""
    return re.sub(r"[^/\w.\- ]", "_", text)


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
    db = sqlite_path(uri)
    if db is None or db.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=db.parent, prefix=f".{db.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        root = artifact_root or store_artifact_root(uri)  # never `./mlruns` of the working directory
        store = SqlAlchemyStore(sqlite_uri(tmp), str(root))
        store.engine.dispose()
        with contextlib.suppress(FileExistsError):  # a concurrent run created it first: keep that one
            os.link(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)


class TrackerUnavailable(HarnessError):
    """The tracking server could not be reached (the tracker is offline)."""


class StoreUnusable(HarnessError):
    """A local tracking store that cannot be opened or written; the message names the file and the cause."""

    def __init__(self, message: str, cause: str | None = None):
        super().__init__(message)
        self.cause = cause or message


def failure_text(exc: BaseException) -> str:
    """One line for a store failure: the innermost SQLite or OS error when there is one.

    MLflow wraps a SQLite error in SQLAlchemy's, which it wraps again, each adding SQL text and links;
    the innermost error ("database disk image is malformed") is the cause a user can act on.
    """
    best, seen, current = exc, set(), exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):
            best = orig
        elif isinstance(current, sqlite3.Error | OSError):
            best = current
        current = current.__cause__ or current.__context__
    text = " ".join(str(best).split())
    return f"{type(best).__name__}: {text[:200]}"


def check_sqlite_store(db: Path, budget_s: float = STORE_CHECK_BUDGET_S) -> None:
    """Raise StoreUnusable unless the existing SQLite file `db` opens, passes a quick integrity check
    and takes a write; a store busy with another process's write is not a failure.

    Cheap by construction: both steps stop after `budget_s` (an interrupted check, or a store locked by
    another writer, counts as passed: MLflow's own errors then decide, and they come fast once the file
    opens). The write probe sets `user_version` to its own value and rolls back, which needs what any
    MLflow write needs (a writable file, a journal beside it) and changes nothing.
    """
    def unusable(cause: str) -> StoreUnusable:
        return StoreUnusable(f"MLflow store {db} cannot be used: {cause}", cause)

    try:
        con = sqlite3.connect(f"file:{quote(str(db))}?mode=rw", uri=True, timeout=budget_s,
                              isolation_level=None)
    except sqlite3.Error as exc:
        raise unusable(failure_text(exc)) from exc
    try:
        deadline = time.monotonic() + budget_s
        con.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            rows = con.execute("PRAGMA quick_check(1)").fetchall()
        except sqlite3.OperationalError as exc:
            if not _inconclusive(exc):
                raise
            rows = [("ok",)]
        con.set_progress_handler(None, 0)
        if rows != [("ok",)]:
            raise unusable(f"integrity check failed: {' '.join(str(rows[0][0]).split())[:160]}")
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                version = int(con.execute("PRAGMA user_version").fetchone()[0])
                con.execute(f"PRAGMA user_version = {version}")
            finally:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                    con.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if not _inconclusive(exc):
                raise
    except sqlite3.Error as exc:
        raise unusable(failure_text(exc)) from exc
    finally:
        con.close()


def _inconclusive(exc: sqlite3.Error) -> bool:
    """Out of time, or another process holds the write lock: says nothing about the store itself."""
    text = str(exc).lower()
    return "interrupted" in text or "locked" in text or "busy" in text


class Tracker:
    """A thin, explicit wrapper: everything MLflow sees comes from a run record.

    Jobs are logged through `MlflowClient` (not the fluent API) so that a failure half-way leaves no
    active-run state behind; a job run is FINISHED only once its params, metrics and record are in.
    """

    def __init__(self, suite: str, experiment: str | None = None, create: bool = True):
        for name, value in FAST_FAIL_ENV.items():
            os.environ.setdefault(name, value)
        import mlflow

        for noisy in ("mlflow", "alembic", "urllib3"):  # schema-migration chatter would bury the progress bars
            logging.getLogger(noisy).setLevel(logging.ERROR)
        # Every database error is caught here and named in one warning; MLflow would log each with a traceback.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.mlflow = mlflow
        self.suite = suite
        self.experiment = experiment or experiment_name(suite)
        self.uri = tracking_uri()
        # The URI may be set while still naming the default store: `mlflow.set_tracking_uri` exports it.
        self.default_store = self.uri == sqlite_uri(harness_home() / "mlflow.db")
        self.db = sqlite_path(self.uri)  # the local store's file; None for a tracking server
        self.database = database_backend(self.uri)  # 'postgresql' | 'mysql' | 'mssql' for a database server
        self.artifact_root = store_artifact_root(self.uri)
        self.offline_reason: str | None = None
        self.parent_run_id: str | None = None
        self.invocation_run_id: str | None = None  # the last parent run, kept after it ends (`log_suite_outputs`)
        self.jobs_logged = 0  # job runs logged under the current parent run
        self.experiment_id: str | None = None
        self.client = None  # stays None when the store fails before MLflow is handed it
        self.create = create  # False: read-only, a missing experiment is not made (experiment_id stays None)
        if self.db is not None:
            self._refuse_file_as_folder(self.db)
        try:
            self._open()
        except Exception as exc:  # noqa: BLE001 (a store that fails to open or write means offline)
            self.go_offline(exc)

    def _refuse_file_as_folder(self, db: Path) -> None:
        """Stop in one line when the store's folder is a file: neither the store nor records could live there."""
        blocker = next((p for p in (db.parent, *db.parent.parents) if p.exists()), None)
        if blocker is None or blocker.is_dir():
            return
        if self.default_store:
            raise StoreUnusable(f"HARNESS_HOME {harness_home()} cannot hold the MLflow store and run records: "
                                f"{blocker} is a file, not a folder; point HARNESS_HOME at a folder")
        raise StoreUnusable(f"MLflow store {db} cannot be created: {blocker} is a file, not a folder; "
                            "fix MLFLOW_TRACKING_URI")

    def _open(self) -> None:
        """Check a local store before MLflow sees it, then open it and find (or create) the experiment.

        Creating the client opens (and would migrate in place) the store, and MLflow retries a connection
        that fails for about 100 s, so a SQLite file must first be made whole and pass `check_sqlite_store`,
        and a database server must answer `check_database_store`.
        """
        if self.db is not None:
            ensure_sqlite_store(self.uri, self.artifact_root)
            check_sqlite_store(self.db)
        elif self.database is not None:
            check_database_store(self.uri)
        self.mlflow.set_tracking_uri(self.uri)
        self.client = self.mlflow.MlflowClient()
        self.experiment_id = self._experiment()

    # -- availability ------------------------------------------------------------------------------
    @property
    def offline(self) -> bool:
        return self.offline_reason is not None

    def go_offline(self, exc: BaseException) -> None:
        if self.offline:
            return
        self.offline_reason = exc.cause if isinstance(exc, StoreUnusable) else failure_text(exc)
        warn(f"{self.offline_problem()}; records are kept locally under {harness_home() / 'records'}; "
             f"{self.remedy()}, then `harness sync --suite {self.suite}` uploads them")

    def offline_problem(self) -> str:
        """What is wrong with the store, in words: which store, and why it cannot be used."""
        if self.db is not None:
            return f"MLflow store {self.db} cannot be used ({self.offline_reason})"
        if self.database is not None:
            return f"MLflow tracking database {shown_uri(self.uri)} cannot be used ({self.offline_reason})"
        return f"MLflow tracking at {shown_uri(self.uri)} is unreachable ({self.offline_reason})"

    def remedy(self) -> str:
        if self.db is not None:
            return "fix the cause (free disk space, write permission, or move a damaged store aside to start anew)"
        if self.database is not None:
            return "fix the cause (start the database server, check host, port and credentials, install its driver)"
        return "wait until the server is back"

    def require_online(self) -> None:
        if self.offline:
            raise TrackerUnavailable(self.offline_problem())

    def _experiment(self) -> str | None:
        """The experiment's id, created if missing; a concurrent process creating it first is no failure."""
        name = self.experiment
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        if not self.create:
            return None
        location = self.artifact_root.as_uri() if self.artifact_root is not None else None
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags=experiment_tags(self.suite, name))
        except Exception:
            # Lost the race (SQLite: UNIQUE constraint failed; a server: RESOURCE_ALREADY_EXISTS): use the
            # winner's experiment. Any other failure leaves it missing, and the first error stands.
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

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
        """The parent run of one `harness run` (None when offline); never fails the work inside it.

        It ends with `jobs.logged`, the job runs logged under it (also when the work inside fails), and stays
        `invocation_run_id` afterwards, for `log_suite_outputs`.
        """
        from mlflow.entities import Metric, Param, RunStatus

        from harness.track.records import git_commit

        run_id = None
        if not self.offline:
            try:
                self.close_killed_invocations()
                self._refresh_experiment_tags()
                me = locks.current_owner()
                tags = {"harness.kind": INVOCATION_KIND, "harness.suite": self.suite, "harness.pid": str(me.pid),
                        "harness.host": me.host, "harness.pid_started": me.started or "",
                        "harness.version": __version__, "harness.git_commit": git_commit(),
                        "mlflow.note.content": f"One `harness` invocation on suite `{self.suite}`: its job runs "
                                               "are nested under it; the leaderboard files it wrote are its "
                                               "artifacts."}
                sha = mlflow_git_commit(git_commit())
                if sha:
                    tags["mlflow.source.git.commit"] = sha
                run = self.client.create_run(self.experiment_id, run_name=name or f"harness run {self.suite}",
                                             tags=tags)
                run_id = run.info.run_id
                # A value left unset (None: the suite's or the variant's default) reads "(default)", not "None".
                items = [Param(k, "(default)" if v is None else str(v)[:500]) for k, v in flatten(params).items()]
                for i in range(0, len(items), 100):
                    self.client.log_batch(run_id, params=items[i:i + 100])
            except Exception as exc:  # noqa: BLE001
                self.go_offline(exc)
        self.parent_run_id = self.invocation_run_id = run_id
        self.jobs_logged = 0
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
                    self.client.log_batch(run_id, metrics=[Metric("jobs.logged", float(self.jobs_logged),
                                                                  int(time.time() * 1000), 0)])
                    self.client.set_terminated(run_id, status)
                except Exception as exc:  # noqa: BLE001
                    self.go_offline(exc)

    def _refresh_experiment_tags(self) -> None:
        """Give the experiment its description and tags where they are missing or stale (an experiment made by
        an older harness has none)."""
        have = self.client.get_experiment(self.experiment_id).tags
        for key, value in experiment_tags(self.suite, self.experiment).items():
            if have.get(key) != value:
                self.client.set_experiment_tag(self.experiment_id, key, value)

    def log_suite_outputs(self, paths: list[Path], metrics: dict[str, float], run_id: str | None = None) -> bool:
        """Attach what a `harness run` produced to its parent run (default: the last `invocation`): the files
        under `leaderboard/`, the metrics at step 0 (keys made MLflow-valid). Whether they were logged.

        Never raises: without a parent run (offline) nothing is done; a store failing now is one warning, since
        the files are on disk and the job runs already logged.
        """
        from mlflow.entities import Metric

        run_id = run_id or self.invocation_run_id
        if run_id is None or self.offline:
            return False
        try:
            stamp = int(time.time() * 1000)
            items = [Metric(metric_key(k), float(v), stamp, 0) for k, v in metrics.items()]
            for i in range(0, len(items), 1000):
                self.client.log_batch(run_id, metrics=items[i:i + 1000])
            for path in paths:
                self.client.log_artifact(run_id, str(path), artifact_path="leaderboard")
        except Exception as exc:  # noqa: BLE001
            warn(f"the leaderboard files and summary of suite '{self.suite}' could not be attached to MLflow run "
                 f"{run_id} ({failure_text(exc)}); they are on disk")
            return False
        return True

    def suite_means(self) -> dict[str, float]:
        """Per backbone:variant and task, the mean primary metric over the suite's finished job runs (one per job
        key, the newest), as `mean.<task>.<metric>/<backbone>.<variant>`; plus `suite.jobs_finished`. Empty when
        offline (the parent run they are for does not exist then)."""
        if self.offline:
            return {}
        runs = self.job_runs()
        if self.offline or runs.empty:
            return {}
        runs = runs.drop_duplicates(subset="tags.harness.job_key", keep="first")
        sums: dict[str, list[float]] = {}
        for _, run in runs.iterrows():
            primary = run.get("tags.harness.primary_metric")
            value = run.get(f"metrics.{primary}")
            if value is None or not math.isfinite(float(value)):
                continue
            key = (f"mean.{run['tags.harness.task']}.{primary}/"
                   f"{run['tags.harness.backbone']}.{run['tags.harness.variant']}")
            sums.setdefault(metric_key(key), []).append(float(value))
        out = {"suite.jobs_finished": float(len(runs))}
        out.update({k: sum(v) / len(v) for k, v in sorted(sums.items())})
        return out

    def close_killed_invocations(self) -> list[str]:
        """Mark parent runs left RUNNING by a killed process of this host KILLED, and the job runs left RUNNING
        under them; returns the parents' run ids.

        A parent run records its process (pid, host, start time); one whose process no longer runs can never
        finish, nor can a job run it left RUNNING (never counted: only FINISHED runs are; the resumed run logs
        the job anew). Runs of other hosts, and older runs without these tags, are left alone.
        """
        from mlflow.entities import RunStatus

        killed = RunStatus.to_string(RunStatus.KILLED)
        closed = []
        running = self.client.search_runs(
            [self.experiment_id], max_results=1000,
            filter_string=f"tags.`harness.kind` = '{INVOCATION_KIND}' and attributes.status = 'RUNNING'")
        for run in running:
            tags = run.data.tags
            try:
                pid = int(tags.get("harness.pid", ""))
            except ValueError:
                continue
            started = tags.get("harness.pid_started") or None
            if tags.get("harness.host") != locks.this_host() or locks.pid_alive(pid, started):
                continue
            self.client.set_terminated(run.info.run_id, killed)
            closed.append(run.info.run_id)
        children = self._close_running_children(closed, killed)
        if closed:
            jobs = f" (and {children} job run(s) left RUNNING under them)" if children else ""
            warn(f"{len(closed)} parent run(s) of experiment '{self.experiment}' were left RUNNING by a killed "
                 f"process; marked KILLED in MLflow{jobs}")
        return closed

    def _close_running_children(self, parents: list[str], status: str) -> int:
        """Set the job runs still RUNNING under `parents` to `status`; how many there were."""
        n = 0
        for parent in parents:
            children = self.client.search_runs(
                [self.experiment_id], max_results=50000,
                filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'")
            for child in children:
                self.client.set_terminated(child.info.run_id, status)
                n += 1
        return n

    def finished_run(self, key: str) -> str | None:
        """The id of a FINISHED job run of `key` in this experiment, or None."""
        runs = self.client.search_runs(
            [self.experiment_id], max_results=1,
            filter_string=f"tags.`harness.job_key` = '{key}' and attributes.status = 'FINISHED'")
        return runs[0].info.run_id if runs else None

    def log_job(self, record: dict[str, Any], artifacts: dict[str, Path] | None = None) -> str | None:
        """A nested run holding the record's params, metrics, tags and the record itself; its run id.

        Logged at most once per job key: under a claim on the key (harness.data.locks), a FINISHED run of the
        key is looked up first, and when one exists (a concurrent run or `harness sync` logged it) nothing
        is logged and None is returned. The claim narrows, but across hosts sharing one server cannot
        close, the window between that look-up and the new run.

        Raises TrackerUnavailable when offline or when the server fails (the tracker then goes offline),
        and when another live process held the key's claim for LOG_CLAIM_WAIT_S (the job stays pending).
        """
        self.require_online()
        key = record["job_key"]
        claim_name = log_claim_name(key)
        try:
            claim = locks.claim_wait(claim_name, LOG_CLAIM_WAIT_S)
        except OSError:  # no writable locks folder: log unguarded, the FINISHED look-up still applies
            claim = contextlib.nullcontext()
        if claim is None:
            owner = locks.holder(claim_name)
            raise TrackerUnavailable(f"job {key} is being logged by {owner.describe() if owner else 'another process'}"
                                     "; it stays pending for `harness sync`")
        with claim:
            try:
                if self.finished_run(key) is not None:
                    return None
            except Exception as exc:  # noqa: BLE001
                self.go_offline(exc)
                raise TrackerUnavailable(f"logging job {key} failed: {self.offline_reason}") from exc
            return self._log_job_run(record, artifacts)

    def _log_job_run(self, record: dict[str, Any], artifacts: dict[str, Path] | None) -> str:
        """Create the job's run and fill it; FINISHED only once everything is in, FAILED if anything fails."""
        from mlflow.entities import Metric, Param, RunStatus

        tags = job_tags(record, self.suite)
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        params = job_params(record)
        run_id = None
        try:
            run = self.client.create_run(self.experiment_id, tags=tags, run_name=run_name(record))
            run_id = run.info.run_id
            stamp = int(run.info.start_time or 0)
            p = [Param(k, v) for k, v in params.items()]
            m = [Metric(k, v, stamp, step) for k, v, step in job_metrics(record)]
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
        if self.parent_run_id:
            self.jobs_logged += 1
        return run_id

    def log_profile(self, row: dict[str, Any]) -> str:
        """One run per (backbone, batch size) profile row: numbers as metrics, the rest as params.

        Raises TrackerUnavailable when offline or when the store fails (the tracker then goes offline).
        """
        self.require_online()
        metrics = {k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        params = {k: str(v)[:500] for k, v in flatten(row).items() if k not in metrics}
        name = f"{row['backbone']}:{row['variant']} bs={row['batch_size']} {row.get('device', '')}"
        try:
            with self.mlflow.start_run(experiment_id=self.experiment_id, run_name=name,
                                       tags={"harness.kind": "profile", "harness.backbone": row["backbone"]}):
                self.mlflow.log_params(params)
                self.mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})
                self.mlflow.log_dict(row, "profile.json")
                return self.mlflow.active_run().info.run_id
        except Exception as exc:  # noqa: BLE001
            self.go_offline(exc)
            raise TrackerUnavailable(f"logging a profile row failed: {self.offline_problem()}") from exc

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


def log_claim_name(key: str) -> str:
    """The harness.data.locks name under which job `key` is logged (a digest when the key is no valid name)."""
    import hashlib

    name = f"mlflow-log-{key}"
    return name if locks.valid_name(name) else f"mlflow-log-{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def job_tags(record: dict[str, Any], suite: str | None = None) -> dict[str, str]:
    """The tags of a job run, all from its record."""
    tags = {
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
    if record["environment"].get("harness_version"):  # the leaderboard's provenance reads it
        tags["harness.version"] = str(record["environment"]["harness_version"])
    sha = mlflow_git_commit(record["environment"]["git_commit"])
    if sha:
        tags["mlflow.source.git.commit"] = sha
    return tags


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


def readable_weights(record: dict[str, Any]) -> str:
    """The weights a job ran with, in words: as configured, or where the config left them to the variant's
    default (`None`), the resolved identity (`random(seed=0,init=v2)`, `<hub id>@<revision>`, `sha256:...`)."""
    weights = record["backbone"].get("weights")
    if weights is not None:
        return str(weights)
    resolved = record["backbone_fingerprint"].get("weights") or record.get("weights_fingerprint")
    kind = record["backbone_fingerprint"].get("weights_kind")
    return str(resolved or (f"variant default ({kind})" if kind else "variant default"))


# Training curves of a record (`details` keys), logged as one metric with a step per value: the MLflow key, and
# the `details` key that says every how many iterations a value was kept (None: one value per epoch, step =
# epochs done, 1..N; else step = iterations done, as OVSS keeps its curve with `train_loss_every`).
CURVES = {"loss_per_epoch": ("train.loss", None), "train_losses": ("train.loss", "train_loss_every")}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def curve_points(record: dict[str, Any]) -> list[tuple[str, float, int]]:
    """Every training curve of the record as (key, value, step)."""
    details = record.get("details") or {}
    out: list[tuple[str, float, int]] = []
    for name, (key, every_key) in CURVES.items():
        values = details.get(name)
        if not isinstance(values, list):
            continue
        stride = int(_number(details.get(every_key)) or 1) if every_key else 1
        for i, value in enumerate(values):
            number = _number(value)
            if number is not None:
                out.append((key, number, i * stride + 1))
    return out


def job_stats(record: dict[str, Any]) -> dict[str, float]:
    """How the job ran, as metrics: `time.<stage>_s` (the record's timings, and a task's `<stage>_seconds` in
    its details), `memory.peak_rss_mb` / `memory.cuda_peak_mb`, `count.<counter>`, and
    `throughput.images_per_s`: images (or crops) the backbone encoded in this job per second of the whole job
    (head training included, so a lower bound of the backbone's own speed; absent when every feature was cached).
    """
    out: dict[str, float] = {}
    for name, value in (record.get("timings") or {}).items():
        if (number := _number(value)) is not None:
            out[f"time.{name}" if name.endswith("_s") else f"time.{name}_s"] = number
    details = record.get("details") or {}
    for name, value in details.items():
        if not name.endswith("_seconds") or (number := _number(value)) is None:
            continue
        if name == "train_seconds" and details.get("head_reused"):
            continue  # the head was loaded: its training time belongs to the job that trained it
        out[f"time.{name.removesuffix('_seconds')}_s"] = number
    memory = record.get("memory") or {}
    for name, key in (("peak_rss_mb", "memory.peak_rss_mb"), ("cuda_peak_allocated_mb", "memory.cuda_peak_mb")):
        if (number := _number(memory.get(name))) is not None:
            out[key] = number
    counters = record.get("counters") or {}
    for name, value in counters.items():
        if (number := _number(value)) is not None:
            out[f"count.{name}"] = number
    encoded = sum(_number(v) or 0.0 for k, v in counters.items()
                  if k.endswith("_extracted") or k == "images_recomputed")
    total = _number((record.get("timings") or {}).get("total_s"))
    if encoded > 0 and total:
        out["throughput.images_per_s"] = encoded / total
    return {metric_key(k): v for k, v in out.items()}


def job_metrics(record: dict[str, Any]) -> list[tuple[str, float, int]]:
    """Everything a job run shows as MLflow metrics, as (key, value, step): the task's metrics and their item
    SEs (step 0: these are what the leaderboard reads), `job_stats` (step 0), and the training curves."""
    head = {**record["metrics"], **item_se_metrics(record)}
    stats = {k: v for k, v in job_stats(record).items() if k not in head}
    return ([(k, float(v), 0) for k, v in head.items()] + [(k, v, 0) for k, v in stats.items()]
            + curve_points(record))


def job_params(record: dict[str, Any]) -> dict[str, str]:
    """The params of a job run (flattened, as strings, as MLflow stores them); `backbone.weights` is readable
    (`readable_weights`), never `None`."""
    backbone = {**record["backbone"], "weights": readable_weights(record)}
    params = flatten({"backbone": backbone, "protocol": record["protocol"],
                      "task": record["task"], "task_version": record["task_version"],
                      "dataset": record["dataset"], "data_fingerprint": record["data_fingerprint"]})
    return {k: str(v)[:500] for k, v in params.items()}


def runs_from_records(suite: str, root: Path | None = None):  # -> pandas.DataFrame
    """The suite's local records in the shape of `mlflow.search_runs` (the columns the leaderboard reads).

    Records that fail validation are moved aside by the store and counted in one warning (and in the
    frame's `attrs["unreadable_records"]`), so a leaderboard never silently lacks a finished job.
    """
    import pandas as pd

    from harness.track.records import RecordStore, unreadable_note

    store = RecordStore(root)
    rows = []
    for record in store.records(suite):
        row = {f"tags.{k}": v for k, v in job_tags(record).items()}
        row.update({f"params.{k}": v for k, v in job_params(record).items()})
        row.update({f"metrics.{k}": float(v) for k, v in {**record["metrics"], **item_se_metrics(record)}.items()})
        row["run_id"] = ""
        row["end_time"] = record.get("finished_at")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values("end_time", ascending=False, kind="stable").reset_index(drop=True)
    frame.attrs["unreadable_records"] = len(store.unreadable)
    if store.unreadable:
        warn(f"leaderboard of suite '{suite}': {unreadable_note(store.unreadable)}")
    return frame


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="harness-job-"))
