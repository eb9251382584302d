"""A database server as the MLflow store (postgresql://, mysql://, mssql://, with or without +driver) that cannot
be used goes offline within seconds, in one line, with any password hidden (issue 16).

MLflow retries a failing engine creation 10 times with backoff (about 100 s) before it gives up; the tracker
checks the server first (`check_database_store`: a bounded TCP connect, then one bounded connection). The
timings below are hang guards only (generous upper bounds), never performance targets.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from harness.cli import main
from harness.track.tracking import StoreUnusable, Tracker, check_database_store, shown_uri, tcp_address

HANG_GUARD_S = 20.0


def free_port() -> int:
    """A localhost port nobody listens on: bound once to get it, then closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def listener() -> Iterator[int]:
    """A localhost port that accepts TCP connections (into the backlog) and never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg2", "mysql", "mysql+pymysql", "mssql+pymssql"])
def test_an_unreachable_database_server_goes_offline_within_seconds(monkeypatch, capsys, scheme):
    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{scheme}://harness:s3cret@127.0.0.1:{port}/mlflow")
    start = time.monotonic()
    tracker = Tracker("t")
    elapsed = time.monotonic() - start
    assert elapsed < HANG_GUARD_S
    assert tracker.offline and tracker.client is None  # MLflow (and its retry loop) never saw the URI
    assert f"cannot connect to 127.0.0.1:{port}" in tracker.offline_reason
    assert "refused" in tracker.offline_reason.lower()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: MLflow tracking database"), lines
    assert f"{scheme}://harness:***@127.0.0.1:{port}/mlflow" in lines[0] and "s3cret" not in lines[0]
    assert "harness sync --suite t" in lines[0]


def test_the_leaderboard_command_goes_on_offline_against_an_unreachable_database(monkeypatch, capsys):
    from record_factory import record

    from harness.track.records import RecordStore

    RecordStore().write(record("k1", suite="mini"))  # offline, the local records are what it compiles
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql://u:pw@127.0.0.1:{free_port()}/mlflow")
    start = time.monotonic()
    main(["leaderboard", "--suite", "mini", "--out-dir", "lb"])  # returns: exit 0
    # three trackers: the read-only look for the suite's runs, the run listing, then the page
    assert time.monotonic() - start < 3 * HANG_GUARD_S
    err = capsys.readouterr().err
    assert "Traceback" not in err and "cannot connect to 127.0.0.1" in err and ":pw@" not in err


def test_the_leaderboard_of_a_suite_without_records_against_an_unreachable_database_is_one_line(monkeypatch,
                                                                                                capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql://u:pw@127.0.0.1:{free_port()}/mlflow")
    with pytest.raises(SystemExit) as exit_:
        main(["leaderboard", "--suite", "mini", "--out-dir", "lb"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_.value.code == 2 and len(errors) == 1, errors
    assert "no finished runs of suite 'mini' in MLflow postgresql://u:***@" in errors[0]
    assert "(unreachable: see above)" in errors[0] and ":pw@" not in errors[0]


def test_a_server_that_answers_tcp_but_lacks_a_driver_is_named_fast(listener):
    start = time.monotonic()
    with pytest.raises(StoreUnusable) as exc:
        check_database_store(f"postgresql+nosuchdriver://u:pw@127.0.0.1:{listener}/db")
    assert time.monotonic() - start < HANG_GUARD_S
    assert "nosuchdriver" in exc.value.cause and "\n" not in str(exc.value) and ":pw@" not in str(exc.value)


def test_a_server_that_never_answers_is_given_up_on_after_the_budget(listener, monkeypatch):
    """The connection attempt (driver code, no timeout of its own) is bounded by the check's budget."""
    import sqlalchemy

    def hangs(*args, **kwargs):
        time.sleep(60)

    monkeypatch.setattr(sqlalchemy, "create_engine", hangs)
    start = time.monotonic()
    with pytest.raises(StoreUnusable, match=r"no answer within 0\.5 s"):
        check_database_store(f"mysql+pymysql://u@127.0.0.1:{listener}/db", budget_s=0.5)
    assert time.monotonic() - start < HANG_GUARD_S


@pytest.mark.parametrize("uri, address", [
    ("postgresql://u:p@db.example/x", ("db.example", 5432)),
    ("postgresql+psycopg2://db.example:6543/x", ("db.example", 6543)),
    ("mysql://u@db.example/x", ("db.example", 3306)),
    ("mysql+pymysql://u@db.example:3307/x", ("db.example", 3307)),
    ("mssql+pymssql://u:p@db.example/x", ("db.example", 1433)),
    ("mssql+pyodbc://u:p@db.example/x?driver=ODBC+Driver+18+for+SQL+Server", ("db.example", 1433)),
    # the driver connects some other way: no TCP probe, only the bounded connection attempt
    ("postgresql:///x", None),  # a local Unix socket
    ("postgresql://u@/x?host=/var/run/postgresql", None),
    ("mysql+pymysql://u@localhost/x?unix_socket=/tmp/mysql.sock", None),
    ("mssql+pyodbc://u:p@my_dsn", None),  # an ODBC data source name, not a host
])
def test_the_tcp_address_of_a_database_uri(uri, address):
    assert tcp_address(uri) == address


@pytest.mark.parametrize("uri, shown", [
    ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("http://u:secret@h:5000", "http://u:***@h:5000"),
    ("mysql://u@h/db", "mysql://u@h/db"),
    ("http://localhost:5000", "http://localhost:5000"),
])
def test_a_password_in_the_tracking_uri_is_never_shown(uri, shown):
    assert shown_uri(uri) == shown
