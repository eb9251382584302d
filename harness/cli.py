"""The `harness` command line. Imports stay lazy: `--help` and `list` never load torch or a backbone."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.errors import HarnessError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark vision backbones under identical protocols; results go to MLflow.")
data_app = typer.Typer(no_args_is_help=True, help="Check or prepare datasets under $HARNESS_DATA.")
app.add_typer(data_app, name="data")
cache_app = typer.Typer(no_args_is_help=True, help="Inspect or clear the feature cache under $HARNESS_CACHE.")
app.add_typer(cache_app, name="cache")
out = Console()
err = Console(stderr=True)


ExecutorOption = Annotated[str, typer.Option("--executor", help="local (this process) | ray (Ray tasks; extra 'ray')")]
AddressOption = Annotated[str | None, typer.Option(
    "--address", help="with --executor ray: auto | ray://HOST:PORT (default: start a local Ray instance)")]


FeatureDtypeOption = Annotated[str | None, typer.Option(
    "--feature-dtype", help="fp16 | bf16 | fp32: what heads see and the feature store keeps (default: the suite's)")]
OutDirOption = Annotated[Path | None, typer.Option(
    help="where leaderboards are written [default: $HARNESS_HOME/leaderboards]")]
WorkersOption = Annotated[int | None, typer.Option(
    "--workers", min=0, help="decoding processes beside the model (default: CPUs - 1, at most 8; 0 = decode inline)")]


def _set_workers(workers: int | None) -> None:
    """`--workers` travels as HARNESS_WORKERS, so jobs in this process, spawned workers and Ray tasks all read it
    (results never depend on it: the batches and their order are fixed)."""
    import os

    if workers is not None:
        os.environ["HARNESS_WORKERS"] = str(workers)


def _split_csv(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


@app.command()
def run(
    backbone: Annotated[list[str], typer.Option("--backbone", "-b", help="name(s), comma-separated, or 'all'")],
    suite: Annotated[str, typer.Option(help="suite name or a suite YAML file")] = "mini",
    variant: Annotated[str | None, typer.Option(help="variant (default: the suite's, else the backbone's)")] = None,
    weights: Annotated[str | None, typer.Option(help="hub id, local file/folder, or 'random'")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N | auto (cuda if visible)")] = None,
    dtype: Annotated[str | None, typer.Option(help="fp32 | fp16 | bf16 | fp64 (default: the suite's)")] = None,
    feature_dtype: FeatureDtypeOption = None,
    batch_size: Annotated[int | None, typer.Option(help="images per forward pass")] = None,
    workers: WorkersOption = None,
    seeds: Annotated[str | None, typer.Option(help="override the suite's seeds, e.g. 1,2,3")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a protocol value: KEY=VALUE")] = None,
    opt: Annotated[list[str] | None, typer.Option("--opt", help="backbone feature option: KEY=VALUE (t=50)")] = None,
    resume: Annotated[bool, typer.Option(help="skip jobs whose key already finished")] = True,
    dry_run: Annotated[bool, typer.Option(
        help="print the plan, what is missing and what it would cost (images, bytes, time); run nothing")] = False,
    skip_missing: Annotated[bool, typer.Option(help="run what is prepared, skip missing datasets")] = False,
    limit: Annotated[int, typer.Option(min=0, help=(
        "quick iteration: only the first N items of each split; results go to suite '<suite>@limitN', "
        "never into the full suite's leaderboard"))] = 0,
    out_dir: OutDirOption = None,
    shard_: Annotated[str | None, typer.Option("--shard", help="run slice I/N of the job grid (0-based)")] = None,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
) -> None:
    """Run a suite for one or more backbones, log every job to MLflow, print the leaderboard."""
    from harness.config import RunConfig, parse_ints, parse_overrides, validate
    from harness.plan.suites import load_suite

    seed_list = parse_ints("--seeds", seeds) if seeds is not None else None
    cfg = validate(RunConfig, {
        "suite": suite, "backbones": _split_csv(backbone), "variant": variant, "weights": weights,
        "device": device, "dtype": dtype, "feature_dtype": feature_dtype, "batch_size": batch_size, "seeds": seed_list,
        "overrides": parse_overrides(set_ or []), "backbone_options": parse_overrides(opt or [], "--opt"),
        "resume": resume, "skip_missing": skip_missing, "limit": limit,
        "dry_run": dry_run}, "command line")
    _set_workers(workers)
    _plan_and_run(load_suite(cfg.suite, cfg.limit), cfg, _out_dir(out_dir), shard_, executor, address)


def _plan_and_run(spec, cfg, out_dir: Path, shard_spec: str | None, executor_name: str = "local",
                  address: str | None = None) -> None:
    """Plan a suite, stop on missing data (unless skipped), then dry-run or execute the (sharded) jobs."""
    from harness.plan.planner import parse_shard, plan, shard
    from harness.run.factory import make_executor

    _check_inputs(out_dir)
    if not cfg.dry_run:
        from harness.track.records import RecordStore

        RecordStore().check_writable()  # a job's record must land: found out now, not after the first job
    executor = make_executor(executor_name, address)  # a bad choice or a missing extra fails before planning
    cfg = _resolve_device(spec, cfg, check_here=executor_name == "local")
    the_plan = plan(cfg, spec)
    if cfg.dry_run:
        _dry_run(the_plan, cfg, out_dir, shard_spec)
        return
    if the_plan.missing:
        table = Table(title="datasets not prepared", show_lines=True)
        for col in ("dataset", "expected path", "how to prepare"):
            table.add_column(col, overflow="fold")
        for m in the_plan.missing:
            table.add_row(*map(escape, (m.name, str(m.path), m.hint or f"harness data prepare {m.name}")))
        err.print(table)
        if not cfg.skip_missing:
            raise HarnessError(f"{len(the_plan.missing)} dataset(s) of suite '{spec.name}' are not prepared "
                               "(table above); prepare them or pass --skip-missing")
        if not the_plan.jobs:  # skipping every dataset leaves nothing: no empty leaderboard, no MLflow run
            raise HarnessError(f"nothing to run: every dataset of suite '{spec.name}' is missing, or needs one that "
                               "is (table above); prepare them, then run again")
    if shard_spec:
        the_plan.jobs = shard(the_plan.jobs, *parse_shard(shard_spec))
    where = {"executor": executor_name, **({"address": address} if address else {})}
    _execute(spec.name, cfg, the_plan.jobs, out_dir, executor, where)


@app.command()
def sweep(
    backbone: Annotated[list[str], typer.Option("--backbone", "-b", help="backbone(s) with feature options")],
    param: Annotated[list[str], typer.Option(help="KEY=V1,V2,... ('+' joins a list value: stages=L0+L1,L2)")],
    suite: Annotated[str, typer.Option(help="the suite whose tasks are swept")] = "mini",
    name: Annotated[str | None, typer.Option(help="name of the sweep suite (default: <suite>-sweep)")] = None,
    seeds: Annotated[str | None, typer.Option(help="override the suite's seeds, e.g. 1")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a protocol value: KEY=VALUE")] = None,
    dry_run: Annotated[bool, typer.Option(help="print the plan and stop")] = False,
    out_dir: OutDirOption = None,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
) -> None:
    """Run a grid over backbone feature options (e.g. Vermouth's t x stages) as one suite."""
    from harness.config import RunConfig, parse_ints, parse_overrides, validate
    from harness.plan.suites import load_suite

    grid = {}
    for item in param:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise HarnessError(f"--param expects KEY=V1,V2,..., got '{item}'")
        grid[key.strip()] = [list(v.split("+")) if "+" in v else next(iter(parse_overrides([f"v={v}"]).values()))
                             for v in values.split(",")]
    base = load_suite(suite)
    spec = base.model_copy(update={"name": name or f"{base.name}-sweep", "backbone_grid": grid})
    seed_list = parse_ints("--seeds", seeds) if seeds is not None else None
    cfg = validate(RunConfig, {"suite": spec.name, "backbones": _split_csv(backbone), "seeds": seed_list,
                               "overrides": parse_overrides(set_ or []), "dry_run": dry_run}, "command line")
    _plan_and_run(spec, cfg, _out_dir(out_dir), None, executor, address)


def _resolve_device(spec, cfg, check_here: bool = True):
    """`device: auto` (the suite's or --device) → cuda or cpu, said in one line, before any job key exists.
    `check_here`: the jobs run in this process, so a cuda device this machine lacks is an error now (a Ray
    cluster's workers may have the GPU its driver lacks)."""
    from harness.config import check_device_available
    from harness.plan.planner import resolve_device

    device, why = resolve_device(cfg.device or spec.device)
    if check_here:
        check_device_available(device, "--device" if cfg.device else f"suite '{spec.name}'")
    if why is None:
        return cfg
    err.print(why, highlight=False, markup=False)
    return cfg.model_copy(update={"device": device})


def _out_dir(out_dir: Path | None) -> Path:
    """`--out-dir`, or `$HARNESS_HOME/leaderboards`: a run never writes into the checkout unless told to."""
    from harness.paths import leaderboards_dir

    return out_dir if out_dir is not None else leaderboards_dir()


def _check_inputs(out_dir: Path | None = None) -> None:
    """Values from the environment and the output folder, checked before any work (one line each)."""
    from harness.config import check_out_dir
    from harness.data.cache import budget_gb

    budget_gb()
    if out_dir is not None:
        check_out_dir(out_dir)


def _dry_run(the_plan, cfg, out_dir: Path, shard_spec: str | None) -> None:
    """The plan, one table of what is missing (weights and datasets), the cost of what would run; non-zero exit
    only because something is missing."""
    from harness.plan.cost import estimate, render
    from harness.plan.planner import parse_shard, shard

    jobs = shard(the_plan.jobs, *parse_shard(shard_spec)) if shard_spec else the_plan.jobs
    _print_plan(the_plan, jobs)
    if the_plan.missing_weights or the_plan.missing:
        table = Table(title="missing (a dry run lists them; a run stops on them)", box=None, pad_edge=False,
                      title_justify="left")
        for col in ("missing", "name", "id", "looked for in", "how to get it"):
            table.add_column(col, no_wrap=True)
        for w in the_plan.missing_weights:  # escaped: "pip install 'x[extra]'" keeps its brackets
            table.add_row(*map(escape, ("weights", w.needed_by, w.weights, w.looked_in, w.fetch)))
        for m in the_plan.missing:
            table.add_row(*map(escape, ("dataset", m.name, "", str(m.path), f"harness data prepare {m.name}")))
        Console(stderr=True, width=400).print(table)  # one line per row, on a terminal and in a log file
    print(render(estimate(the_plan, jobs, out_dir, resume=cfg.resume, skip_missing=cfg.skip_missing)))
    n_weights = len(the_plan.missing_weights)
    n_data = 0 if cfg.skip_missing else len(the_plan.missing)
    if n_weights or n_data:
        what = [f"{n_weights} weights"] if n_weights else []
        what += [f"{n_data} dataset{'s' if n_data != 1 else ''}"] if n_data else []
        raise HarnessError(f"dry run: {' and '.join(what)} missing; nothing ran")


def _print_plan(the_plan, jobs=None) -> None:
    from harness.plan.planner import WEIGHTS_MISSING
    from harness.track.records import RecordStore

    jobs = the_plan.jobs if jobs is None else jobs
    store = RecordStore()
    table = Table(title=f"plan: suite '{the_plan.suite.name}', {len(jobs)} jobs")
    for col in ("job key", "backbone", "options", "task", "dataset", "protocol point", "status"):
        table.add_column(col)
    for job in jobs:
        point = ", ".join(f"{k}={v}" for k, v in job.protocol.items() if k in ("shots", "seed", "head"))
        options = ", ".join(f"{k}={v}" for k, v in job.backbone.options.items())
        table.add_row(job.key[:12], f"{job.backbone.name}:{job.backbone.variant}", options,
                      f"{job.task} v{job.task_version}", job.dataset, point,
                      "weights missing" if job.weights_fingerprint == WEIGHTS_MISSING
                      else "done" if store.exists(job.key) else "to run")
    out.print(table)


def _execute(suite: str, cfg, jobs, out_dir: Path, executor, where: dict) -> None:
    """Run the jobs on `executor` (`where`: how it was chosen, logged with the invocation's params)."""
    from harness.track.tracking import Tracker

    try:
        executor.preflight(jobs)  # bad or missing files stop the run before MLflow or any model starts
        tracker = Tracker(suite)
        with executor, tracker.invocation({**cfg.model_dump(mode="json"), **where}):  # Ray, if started, stops here
            summary = executor.run(jobs, tracker, resume=cfg.resume)
    except KeyboardInterrupt:
        _interrupted(jobs)
    err.print(f"[bold]{len(summary.ran)} job(s) ran, {len(summary.skipped)} skipped (already finished)"
              + (f", {len(summary.elsewhere)} finished by another process on this store" if summary.elsewhere else "")
              + (f", {len(summary.relogged)} re-logged to MLflow from their records" if summary.relogged else "")
              + (f", {len(summary.pending)} waiting for `harness sync`" if summary.pending else ""))
    written = _print_leaderboard(suite, out_dir)
    # The parent MLflow run of this invocation gets the leaderboard files and the summary (never fails the run).
    tracker.log_suite_outputs(written, {**summary.metrics(len(jobs)), **tracker.suite_means()})


def _interrupted(jobs) -> NoReturn:
    """Ctrl-C: say how much is done (a finished job's record is kept) and how to go on; exit 130 (SIGINT)."""
    from harness.track.records import RecordStore

    store, keys = RecordStore(), {job.key for job in jobs}
    done = sum(1 for key in keys if store.exists(key))
    err.print(f"interrupted: {done} of {len(keys)} job(s) finished (their records are kept); rerun the same "
              "command to resume", highlight=False, soft_wrap=True)
    raise typer.Exit(130)


def _print_leaderboard(suite: str, out_dir: Path) -> list[Path]:
    """Print the short form (summary, then each task's primary-metric table; no line over 160 characters, plain
    text never wraps); every metric and the provenance are in the files written, which it returns."""
    from harness.report.leaderboard import printed_leaderboard, read_profiles
    from harness.report.publish import publish

    lb, written = publish(suite, out_dir)
    print(printed_leaderboard(lb, read_profiles(out_dir)))
    err.print("written: " + ", ".join(str(p) for p in written))
    return written


@app.command()
def leaderboard(
    suite: Annotated[str, typer.Option(help="suite name")] = "mini",
    out_dir: OutDirOption = None,
) -> None:
    """Compile the suite's leaderboard from MLflow runs; write Markdown, CSV and HTML; print it."""
    out_dir = _out_dir(out_dir)
    _check_inputs(out_dir)
    from harness.report.publish import suite_with_runs

    _print_leaderboard(suite_with_runs(suite), out_dir)


@app.command("profile")
def profile_cmd(
    backbone: Annotated[list[str], typer.Option("--backbone", "-b", help="name(s), comma-separated, or 'all'")],
    variant: Annotated[str | None, typer.Option(help="variant (default: the backbone's)")] = None,
    weights: Annotated[str | None, typer.Option(
        help="hub id, local file/folder, or 'random' (default: the variant's)")] = None,
    batch_sizes: Annotated[str, typer.Option(help="comma-separated batch sizes")] = "1,8,32",
    device: Annotated[str, typer.Option(help="cpu | cuda | auto (cuda if visible)")] = "cpu",
    dtype: Annotated[str, typer.Option(help="fp32 | fp16 | bf16 | fp64")] = "fp32",
    repeats: Annotated[int, typer.Option(min=1, help="timed repeats (median and p90 reported)")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="untimed warm-up passes")] = 2,
    suite: Annotated[str, typer.Option(help="suite whose leaderboard is joined for accuracy")] = "mini",
    out_dir: Annotated[Path | None, typer.Option(
        help="where profiles.{csv,md} are written [default: $HARNESS_HOME/leaderboards]")] = None,
) -> None:
    """Latency, images/s, peak memory, params and FLOPs per backbone and batch size → MLflow + profiles.md."""
    from harness.config import MAX_BATCH_SIZE, parse_ints
    from harness.report.profiles import write_profiles
    from harness.run.profiler import profile_configs, profile_rows
    from harness.track.tracking import Tracker

    sizes = parse_ints("--batch-sizes", batch_sizes, minimum=1, maximum=MAX_BATCH_SIZE)
    out_dir = _out_dir(out_dir)
    _check_inputs(out_dir)
    configs, why = profile_configs(_split_csv(backbone), variant, weights, device, dtype)
    if why:
        err.print(why, highlight=False, markup=False)
    tracker = Tracker("profiles", experiment="profiles")
    rows, failed = [], []
    try:
        for cfg in configs:
            name, var = cfg.name, cfg.variant
            for row in profile_rows(cfg, sizes, warmup=warmup, repeats=repeats):
                label = f"{name}:{var} bs={row['batch_size']}: "
                if row.get("error"):  # said, and counted below; never logged or written as a row of NaNs
                    failed.append(label + row["error"])
                    err.print(label + "failed: " + row["error"], highlight=False, markup=False, soft_wrap=True)
                    continue
                tracker.log_profile(row)
                rows.append(row)
                err.print(label + f"{row['latency_median_s'] * 1000:.1f} ms/batch, {row['images_per_s']:.1f} img/s",
                          highlight=False, markup=False)
    except KeyboardInterrupt:
        _profile_interrupted(rows, len(configs) * len(sizes), out_dir, suite)
    if rows:
        print(write_profiles(rows, out_dir, suite))
    if failed:
        kept = f"the {len(rows)} measured are written to {out_dir / 'profiles.csv'}" if rows else "nothing written"
        raise HarnessError(f"{len(failed)} of {len(failed) + len(rows)} profile row(s) failed ({kept}); first: "
                           f"{failed[0]}")


def _profile_interrupted(rows: list[dict], total: int, out_dir: Path, suite: str) -> NoReturn:
    """Ctrl-C in `profile`: the rows measured so far (each already logged to MLflow) are written to profiles.csv
    and .md as a finished run would, said in one line with how to go on; exit 130 (SIGINT)."""
    from harness.report.profiles import write_profiles

    kept = "nothing written"
    if rows:
        write_profiles(rows, out_dir, suite)
        kept = f"logged to MLflow and written to {out_dir / 'profiles.csv'}"
    err.print(f"interrupted: {len(rows)} of {total} profile row(s) measured, {kept}; rerun the same command to "
              "finish (it measures every row again; a new row replaces its old one)", highlight=False, soft_wrap=True)
    raise typer.Exit(130)


@app.command("compare")
def compare_cmd(
    current: Annotated[str, typer.Argument(help="leaderboard CSV or suite name")],
    baseline: Annotated[str, typer.Argument(help="leaderboard CSV or suite name")],
    tolerance: Annotated[float, typer.Option(help="floor: the smallest drop that counts, in the metric's units")] = 0.5,
    z: Annotated[float, typer.Option("--z", help="a drop counts when larger than z × its noise (seed, items)")] = 2.0,
) -> None:
    """Exit non-zero when a row of CURRENT dropped beyond max(tolerance, z·noise) against BASELINE, or was lost."""
    import pandas as pd

    from harness.report.compare import compare, read_leaderboard

    result = compare(read_leaderboard(current), read_leaderboard(baseline), tolerance, z)
    for title, frame in (("regressed", result.regressed), ("missing", result.missing),
                         ("improved", result.improved), ("new", result.new)):
        if frame.empty:
            continue
        out.print(f"[bold]{title}[/bold] ({len(frame)}):")
        for _, r in frame.iterrows():
            delta = "" if pd.isna(r["delta"]) else f"  Δ {r['delta']:+.2f}"
            why = f"  {r['reason']}" if isinstance(r.get("reason"), str) and r["reason"] else ""
            out.print(f"  {r['backbone']} {r['task']}.v{r['task_version']}/{r['dataset']} [{r['setting']}] "
                      f"{r['metric']}: {r['mean_baseline']:.2f} → {r['mean_current']:.2f}{delta}{why}",
                      highlight=False, markup=False, soft_wrap=True)  # "[head=...]" is not rich markup
    out.print(f"{len(result.unchanged)} unchanged within max(±{tolerance:g}, {z:g}·noise)", highlight=False)
    if not result.ok:
        raise HarnessError(f"{len(result.regressed)} regression(s) beyond max({tolerance:g}, {z:g}·noise) and "
                           f"{len(result.missing)} missing row(s) against {baseline}")


@app.command("list")
def list_(what: Annotated[str, typer.Argument(help="backbones | tasks | datasets | suites")]) -> None:
    """List what is registered. Built-ins import no model code; a plug-in's class is imported to describe it."""
    from harness.catalog import BACKBONES, DATASETS, TASKS
    from harness.errors import UnknownNameError

    table = Table(title=what)
    if what == "backbones":
        for col in ("name", "variant", "default weights", "resolution", "params", "features", "source"):
            table.add_column(col, overflow="fold")
        for e in BACKBONES.entries():
            try:  # a broken plug-in shows as such, its error in one cell; it cannot break the listing
                rows = _backbone_rows(e)
            except Exception as exc:
                rows = [["?", f"(unavailable: {type(exc).__name__}: {exc})", "", "", ""]]
            for i, row in enumerate(rows):
                table.add_row(e.name if i == 0 else "", *row, e.source if i == 0 else "")
        for fam in BACKBONES.families():  # any member by name; listed as the family, nothing imported
            table.add_row(f"{fam.name}<name>", "(one per model)", "--weights (default: the hub copy)", "", "",
                          fam.meta.get("features", ""), "family")
    elif what == "tasks":
        for col in ("name", "source", "description"):
            table.add_column(col)
        for e in TASKS.entries():
            table.add_row(e.name, e.source, e.meta.get("description") or _plugin_attr(TASKS, e, "description"))
    elif what == "datasets":
        for col in ("name", "task", "source"):
            table.add_column(col)
        for e in DATASETS.entries():
            table.add_row(e.name, e.meta.get("task") or _plugin_attr(DATASETS, e, "task_family"), e.source)
    elif what == "suites":
        from harness.plan.suites import builtin_suites, load_suite

        for col in ("name", "tasks x datasets", "description"):
            table.add_column(col)
        for name in builtin_suites():
            spec = load_suite(name)
            body = "; ".join(f"{e.task}: {', '.join(e.datasets)}" for e in spec.entries)
            table.add_row(name, body, spec.description)
    else:
        raise UnknownNameError("list target", what, ["backbones", "tasks", "datasets", "suites"])
    out.print(table)


def _plugin_attr(registry, entry, attr: str) -> str:
    """A class attribute of a plug-in (built-ins declare theirs as catalog data), or its load error."""
    if entry.source == "builtin":
        return "?"
    try:
        return str(getattr(registry.get(entry.name), attr, "?"))
    except Exception as exc:  # a broken plug-in shows its error in this cell; the listing goes on
        return f"(unavailable: {type(exc).__name__}: {exc})"


def _backbone_rows(entry) -> list[list[str]]:
    """One row per variant: variant, default weights, resolution, params, features.

    A built-in's cards come from its torch-free `cards` module, so listing imports no model code; a plug-in
    declares no such module, so its class is imported (as `harness run` would) and its `variants` read."""
    from harness.catalog import BACKBONES
    from harness.registry import import_target

    if "cards" in entry.meta:
        cards, kinds = import_target(entry.meta["cards"]), ()
    else:
        cls = BACKBONES.get(entry.name)
        cards, kinds = cls.variants, tuple(cls.feature_kinds)
    rows = []
    for vname, card in cards.items():
        params = card.extra.get("params")
        rows.append([vname, str(card.weights), str(card.extra.get("resolution", "")),
                     f"{params / 1e6:.1f}M" if params else "", ", ".join(card.extra.get("feature_kinds", kinds))])
    return rows or [["?", "(no variants)", "", "", ""]]


VERIFY_EXAMPLES = 5  # example paths per category in the `data verify --deep` table


@data_app.command("verify")
def data_verify(
    name: Annotated[str, typer.Argument(help="dataset name")],
    deep: Annotated[bool, typer.Option(
        "--deep", help="decode every image; name missing, empty, malformed, oversized and out-of-tree files")] = False,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=0, help="with --deep: decoding processes (default: CPUs - 1, at most 8; 0 = inline)")] = None,
) -> None:
    """Check that a prepared dataset's listed files exist (the first missing one is named); --deep decodes them."""
    from harness.plan.planner import open_dataset

    if workers is not None and not deep:
        raise HarnessError("--workers goes with --deep")
    ds = open_dataset(name, generate=False)
    if not deep:
        ds.verify()
        out.print(f"ok: {name} at {ds.root} (fingerprint {ds.fingerprint()[:16]})", markup=False)
        return
    from harness.data.verify import deep_verify

    report = deep_verify(ds, workers)
    if report.ok:
        out.print(f"ok: {name} at {ds.root} (fingerprint {ds.fingerprint()[:16]})\n{report.summary(name)}",
                  highlight=False, markup=False)
        return
    table = Table(title=f"{name}: unusable files under {ds.root} (up to {VERIFY_EXAMPLES} per category)")
    for col in ("category", "files", "example", "why"):
        table.add_column(col, overflow="fold")
    for category, count in report.counts().items():
        for i, f in enumerate(report.examples(category, VERIFY_EXAMPLES)):
            shown = f.path.relative_to(ds.root) if f.path.is_relative_to(ds.root) else f.path
            table.add_row(category if i == 0 else "", str(count) if i == 0 else "", escape(str(shown)), escape(f.why))
    out.print(table)
    raise HarnessError(report.summary(name))


@data_app.command("prepare")
def data_prepare(
    name: Annotated[str, typer.Argument(help="dataset name")],
    archive: Annotated[list[Path] | None, typer.Option(
        "--archive", help="a downloaded archive to unpack into place (.zip, .tar[.gz|.bz2|.xz]); repeatable")] = None,
    into: Annotated[str | None, typer.Option(help="with --archive: unpack into this subfolder of the dataset")] = None,
    max_unpacked_gb: Annotated[float | None, typer.Option(
        help="with --archive: refuse an archive declaring more than this many GB unpacked (default 200)")] = None,
) -> None:
    """Generate an embedded dataset, unpack downloaded archives into place, or print the steps to prepare one."""
    from harness.errors import DataMissingError
    from harness.plan.planner import open_dataset

    if into is not None and not archive:
        raise HarnessError("--into goes with --archive")
    if max_unpacked_gb is not None and not archive:
        raise HarnessError("--max-unpacked-gb goes with --archive (it caps what an archive may unpack to)")
    ds = open_dataset(name, generate=not archive)
    if not archive:
        if ds.embedded:
            out.print(f"generated: {name} at {ds.root}", markup=False)
        else:
            out.print(f"{name}: prepare it under {ds.root}\n{ds.prepare_hint}", markup=False)
        return
    if ds.embedded:
        raise HarnessError(f"dataset '{name}' is generated by the harness: nothing to unpack")
    from harness.data.archives import unpack_for_dataset

    for path in archive:
        dest, n = unpack_for_dataset(ds.folder, ds.root, path, into, max_unpacked_gb)
        out.print(f"unpacked: {path} -> {dest} ({n} members)", highlight=False, markup=False)
    try:
        ds.verify()
    except DataMissingError as exc:
        out.print(f"not complete yet: {exc}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    out.print(f"ok: {name} at {ds.root}", highlight=False, markup=False)


@cache_app.command("info")
def cache_info_cmd() -> None:
    """Namespaces (backbone fingerprint x feature kind), entries and size."""
    from harness.data.cache import budget_bytes, cache_info
    from harness.paths import cache_root

    _check_inputs()
    rows = cache_info()
    total = sum(r["bytes"] for r in rows)
    table = Table(title=f"feature cache: {cache_root() / 'features'} ({total / 2**30:.2f} of "
                        f"{budget_bytes() / 2**30:.1f} GiB budget, least recently used evicted past it)")
    for col in ("namespace", "backbone", "kind", "dtype", "entries", "MiB"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["namespace"], r["backbone"], r["kind"], r["dtype"], str(r["entries"]),
                      f"{r['bytes'] / 2**20:.1f}")
    out.print(table)


@cache_app.command("clear")
def cache_clear_cmd(
    backbone: Annotated[str | None, typer.Option(
        "--backbone", "-b", help="clear only this backbone's namespaces (name, or name:variant)")] = None,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="delete without asking (required when stdin is not a terminal)")] = False,
) -> None:
    """Delete cached features (every namespace, or one backbone's), after saying how many and asking."""
    from harness.data.cache import cache_info, cache_selection, clear_cache
    from harness.paths import cache_root

    root = cache_root() / "features"
    rows = cache_selection(backbone)
    if not rows and backbone is not None:  # a typo, or a backbone never cached: nothing done is no success
        cached = sorted({row["backbone"] for row in cache_info()})
        raise HarnessError(f"no cached features of backbone '{backbone}' under {root}; cached: "
                           f"{', '.join(cached) or '(nothing)'}")
    if not rows:
        out.print(f"nothing to clear: the feature cache {root} is empty", highlight=False, markup=False)
        return
    entries, size = sum(row["entries"] for row in rows), sum(row["bytes"] for row in rows)
    what = (f"{entries} cached feature entr{'y' if entries == 1 else 'ies'} ({size / 2**20:.1f} MiB) in "
            f"{len(rows)} namespace(s)"
            + (f" of backbone '{backbone}'" if backbone else "") + f" under {root}")
    if not yes:
        if not _interactive():
            raise HarnessError(f"`cache clear` would delete {what}, and stdin is no terminal to confirm on; "
                               "pass --yes to delete")
        if not typer.confirm(f"delete {what}?", default=False):
            err.print("nothing deleted", highlight=False)
            raise typer.Exit(1)
    clear_cache(backbone=backbone)
    out.print(f"cleared {what}", highlight=False, markup=False, soft_wrap=True)


def _interactive() -> bool:
    """Whether a person can answer a question on stdin (a pipe, a file or CI cannot)."""
    return sys.stdin is not None and sys.stdin.isatty()


@app.command("extract")
def extract_cmd(
    backbone: Annotated[list[str], typer.Option("--backbone", "-b", help="name(s), comma-separated, or 'all'")],
    dataset: Annotated[str, typer.Option(help="the dataset whose images are extracted (every split)")],
    shards: Annotated[int, typer.Option(min=1, help="data-parallel model workers (processes, or Ray tasks)")] = 1,
    workers: WorkersOption = None,
    executor: Annotated[str, typer.Option(help="processes (this machine) | ray (Ray tasks; extra 'ray')")
                        ] = "processes",
    address: Annotated[str | None, typer.Option(
        help="with --executor ray: auto | ray://HOST:PORT (default: start a local Ray instance)")] = None,
    kind: Annotated[list[str] | None, typer.Option(
        "--kind", help="global | dense, comma-separated or repeated (default: global)")] = None,
    split: Annotated[list[str] | None, typer.Option(help="only these splits (default: all)")] = None,
    suite: Annotated[str | None, typer.Option(
        help="the suite you will run, for its variant, batch size, device and options "
             "(default: the built-in suite that lists the dataset)")] = None,
    variant: Annotated[str | None, typer.Option(help="variant (default: the suite's, else the backbone's)")] = None,
    weights: Annotated[str | None, typer.Option(help="hub id, local file/folder, or 'random'")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N | auto (cuda if visible)")] = None,
    dtype: Annotated[str | None, typer.Option(help="fp32 | fp16 | bf16 | fp64 (default: the suite's)")] = None,
    feature_dtype: FeatureDtypeOption = None,
    batch_size: Annotated[int | None, typer.Option(help="images per forward pass")] = None,
    opt: Annotated[list[str] | None, typer.Option("--opt", help="backbone feature option: KEY=VALUE (t=50)")] = None,
    threads: Annotated[int | None, typer.Option(
        help="torch threads per shard (default: 1 on the CPU, so the bits never depend on --shards)")] = None,
) -> None:
    """Prewarm the feature cache for one dataset with data-parallel workers; a later `run` reads only hits."""
    from harness.config import check_device_available, parse_overrides
    from harness.run.parallel_extract import backbone_configs, extract_dataset, suite_for_dataset

    _check_inputs()
    suite_name = suite or suite_for_dataset(dataset)
    configs = backbone_configs(_split_csv(backbone), suite_name, variant=variant,
                               weights=weights, device=device, dtype=dtype, batch_size=batch_size,
                               options=parse_overrides(opt or [], "--opt"), feature_dtype=feature_dtype,
                               dataset=dataset)
    if executor == "processes":  # Ray workers may have the GPU this driver lacks
        for cfg in configs:
            check_device_available(cfg.device, "--device" if device else f"suite '{suite_name}'")
    ray = _ray_with_gpu(address) if executor == "ray" and any(c.device.startswith("cuda") for c in configs) else None
    _set_workers(workers)
    entries_before, done = _cache_entries(), 0
    try:
        for cfg in configs:
            s = extract_dataset(cfg, dataset, kinds=_split_csv(kind) or ["global"], split=_split_csv(split) or None,
                                workers=shards, executor=executor, address=address, threads=threads)
            done += 1
            options = "".join(f" {k}={v}" for k, v in cfg.options.items())
            twins = f" (+{s.items - s.images} files with the same bytes)" if s.items > s.images else ""
            out.print(f"{s.backbone}{options} {s.dataset}: {s.images} images{twins} x {'+'.join(s.kinds)}, "
                      f"{s.shards} shard(s) on {s.workers} {s.executor} worker(s): {s.extracted} extracted, "
                      f"{s.cached} already cached, {s.seconds:.1f} s", highlight=False, soft_wrap=True, markup=False)
            if s.streamed:
                err.print(f"[yellow]warning:[/yellow] {s.streamed} feature(s) were computed but not stored: the "
                          "cache budget (HARNESS_CACHE_BUDGET_GB) is spent")
    except KeyboardInterrupt:
        _extract_interrupted(dataset, done, len(configs), entries_before)
    finally:
        if ray is not None:
            ray.shutdown()


def _ray_with_gpu(address: str | None):
    """Ray, connected for a CUDA extraction and checked to have a GPU: a cluster without one would leave every
    task waiting for it forever. Stays connected for `extract_dataset` (which then neither connects nor stops it)."""
    from harness.run.ray_support import init_ray, require_cluster_gpu

    ray = init_ray(address)
    try:
        require_cluster_gpu(ray, "extraction workers")
    except HarnessError:
        ray.shutdown()
        raise
    return ray


def _cache_entries() -> int | None:
    """Entries in the feature cache (from its ledger); None when it cannot be read (then nothing is counted)."""
    from harness.data.cache import cache_info

    try:
        return sum(row["entries"] for row in cache_info())
    except Exception:  # noqa: BLE001 (a count for a message; never a reason to fail)
        return None


def _extract_interrupted(dataset: str, done: int, total: int, entries_before: int | None) -> NoReturn:
    """Ctrl-C in `extract`: how many backbone configs finished and how much the cache grew (entries are written
    whole, one by one, and kept), and that the same command goes on where it stopped; exit 130 (SIGINT)."""
    now = _cache_entries()
    grew = f"; the feature cache grew by {now - entries_before} entries (kept)" if (
        now is not None and entries_before is not None) else ""
    err.print(f"interrupted: {done} of {total} backbone config(s) finished extracting {dataset}{grew}; rerun the "
              "same command to extract only what is missing (cached entries are skipped)", highlight=False,
              soft_wrap=True)
    raise typer.Exit(130)


@app.command()
def version() -> None:
    """Print the harness version and the source commit."""
    from harness import __version__
    from harness.track.records import git_commit

    out.print(f"harness {__version__} ({git_commit()})")


def main(argv: list[str] | None = None) -> None:
    """The console script: a HarnessError is its one-line message (exit 2); any other exception is one line
    naming a log file that holds the traceback (exit 1), never a bare traceback."""
    from rich.markup import escape
    from typer import _click as click  # typer's own click: its exceptions are these

    try:
        code = app(args=argv, standalone_mode=False)  # not standalone: usage errors come here, to be one line
    except click.exceptions.NoArgsIsHelpError as exc:  # `harness` or `harness data` alone: the help, as click does
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
        sys.exit(exc.exit_code)
    except click.exceptions.UsageError as exc:  # a bad option value or name: typer's boxed message as one line
        where = f"; see `{exc.ctx.command_path} --help`" if exc.ctx is not None else ""
        detail = " ".join(exc.format_message().split())
        err.print(f"[red]error:[/red] {escape(detail)}{escape(where)}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted", highlight=False)
        sys.exit(1)
    except click.exceptions.ClickException as exc:
        err.print(f"[red]error:[/red] {escape(' '.join(exc.format_message().split()))}", highlight=False,
                  soft_wrap=True)
        sys.exit(exc.exit_code)
    except HarnessError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # a bug, or a failure nobody anticipated: one line, the traceback in a file
        log = _log_traceback(exc, argv)
        detail = " ".join(str(exc).split())[:300] or "(no message)"
        where = f"traceback in {log}" if log else "the traceback could not be written to a log file"
        err.print(f"[red]error:[/red] {escape(type(exc).__name__)}: {escape(detail)} ({escape(where)})",
                  highlight=False, soft_wrap=True)
        sys.exit(1)
    if isinstance(code, int) and code:  # a command's `typer.Exit(code)`, or 130 after Ctrl-C
        sys.exit(code)


def _log_traceback(exc: BaseException, argv: list[str] | None) -> Path | None:
    """Write the command and the traceback to `$HARNESS_HOME/logs/error-<time>-<pid>.log` (the temp folder when
    the home is unusable); None when neither can be written."""
    import os
    import tempfile
    import time
    import traceback

    from harness.io import atomic_write_bytes
    from harness.paths import harness_home

    name = f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = f"harness {' '.join(sys.argv[1:] if argv is None else argv)}\n\n" + "".join(traceback.format_exception(exc))
    for folder in (lambda: harness_home() / "logs", lambda: Path(tempfile.gettempdir()) / "harness-logs"):
        try:
            path = folder() / name
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, text.encode("utf-8", "replace"), durable=False)
            return path
        except Exception:  # an unusable home: try the next place; the one line is printed regardless
            continue
    return None


@app.command("sync")
def sync_cmd(
    suite: Annotated[str, typer.Option(help="suite name")] = "mini",
) -> None:
    """Upload run records that are not in MLflow yet (the tracker was unreachable); skips jobs already logged."""
    from harness.track.sync import sync_suite

    summary = sync_suite(suite)
    err.print(f"{len(summary.uploaded)} record(s) uploaded to MLflow, {len(summary.already)} already there")
    if summary.unreadable:
        from harness.track.records import unreadable_note
        from harness.track.tracking import warn

        warn(unreadable_note(summary.unreadable))
