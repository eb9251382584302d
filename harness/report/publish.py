"""A suite's leaderboard files: compiled from MLflow runs (never from memory) and written as Markdown, CSV and
HTML. A module of its own so that the table code (`leaderboard`) and the page (`leaderboard_html`, which builds
on it) never import each other."""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError, UnknownNameError
from harness.plan.suites import builtin_suites, load_suite
from harness.report.leaderboard import Leaderboard, build_leaderboard, leaderboard_markdown, read_profiles
from harness.report.leaderboard_html import render_html
from harness.track.records import RecordStore
from harness.track.tracking import Tracker, experiment_name, shown_uri, sqlite_path, tracking_uri


def publish(suite: str, out_dir: Path) -> tuple[Leaderboard, list[Path]]:
    """Read the suite's runs back from MLflow, write `<out_dir>/<suite>.{md,csv,html}`; the board and the files."""
    lb = build_leaderboard(suite, Tracker(suite).job_runs())
    return lb, write_leaderboard(lb, out_dir)


def write_leaderboard(lb: Leaderboard, out_dir: Path, html: bool = True) -> list[Path]:
    """`<suite>.md` (every metric, provenance), `.csv` (the long table `harness compare` reads), `.html`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / f"{lb.suite}.md", out_dir / f"{lb.suite}.csv"]
    lb.long.to_csv(written[1], index=False, float_format="%.4f")
    profiles = read_profiles(out_dir)
    written[0].write_text(leaderboard_markdown(lb, profiles))
    if html:
        written.append(out_dir / f"{lb.suite}.html")
        written[2].write_text(render_html(lb, profiles), encoding="utf-8")
    return written


def suite_with_runs(suite: str) -> str:
    """The suite `harness leaderboard` compiles, looked up read-only first (no MLflow store, experiment or file is
    made): a name that is no suite and has no runs (a typo) is an unknown name with close matches, and a suite
    without a finished run says how to make one, rather than an empty leaderboard."""
    try:
        name, known = load_suite(suite).name, True  # a built-in, `<suite>@limitN`, or a suite file (its name)
    except UnknownNameError:
        name, known = suite, False  # a sweep's or another file's suite is known by its runs
    uri = tracking_uri()
    db = sqlite_path(uri)
    # A SQLite store not made yet holds no runs, and is not made here; one a file blocks is named by the Tracker.
    blocked = db is not None and any(p.exists() and not p.is_dir() for p in (db.parent, *db.parent.parents))
    tracker = Tracker(name, create=False) if db is None or db.exists() or blocked else None
    if tracker is not None and (tracker.experiment_id is not None or tracker.offline):
        if len(tracker.job_runs()):  # offline, the leaderboard (and this count) reads the local records
            return name
    mlflow = f"MLflow {shown_uri(uri)}" + (" (unreachable: see above)" if tracker is not None and tracker.offline
                                           else "")
    store = RecordStore()
    if (records := store.records(name)) and not (tracker is not None and tracker.offline):
        raise HarnessError(f"no finished runs of suite '{name}' in {mlflow}, but {len(records)} run record(s) under "
                           f"{store.root} wait for upload: run `harness sync --suite {name}` first")
    if known:
        raise HarnessError(f"no finished runs of suite '{name}' in {mlflow} or under {store.root}; "
                           f"run `harness run --suite {suite} --backbone NAME` first")
    names = {*builtin_suites(), *(record["suite"] for record in store.records())}
    if tracker is not None and tracker.client is not None and not tracker.offline:
        try:
            prefix = experiment_name("")
            names |= {e.name.removeprefix(prefix) for e in tracker.client.search_experiments()
                      if e.name.startswith(prefix)}
        except Exception:  # noqa: BLE001 (close matches for a message; never a reason to fail)
            pass
    raise UnknownNameError("suite", suite, names)
