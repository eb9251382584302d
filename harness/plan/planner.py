"""A suite expands into jobs (backbone x task x dataset x protocol point), each with a stable key.

The key hashes the resolved job: backbone config, task name and version, dataset, protocol, the data
fingerprint and the weights fingerprint. Same inputs → same key, so resume is "skip a finished key".
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.api import Dataset, StrictModel
from harness.catalog import BACKBONES, DATASETS, TASKS
from harness.config import BackboneConfig, RunConfig, SuiteEntry, SuiteSpec, validate
from harness.errors import ConfigError, HarnessError, UnknownNameError, WeightsMissingError
from harness.io import canonical_json, sha256_text
from harness.paths import data_root
from harness.plan.suites import split_limit


class Job(StrictModel):
    suite: str
    backbone: BackboneConfig
    task: str
    task_version: str
    dataset: str
    protocol: dict[str, Any]
    column: str
    data_fingerprint: str
    weights_fingerprint: str
    card_fingerprint: str = ""  # the variant card (architecture config), so editing a tiny config re-runs
    limit: int = 0  # `--limit`: first N items of each split; 0 (every item) stays out of the key

    @property
    def key(self) -> str:
        payload = self.model_dump(exclude={"suite", "column"} | (set() if self.limit else {"limit"}))
        return sha256_text(canonical_json(payload))[:24]

    @property
    def label(self) -> str:
        point = ",".join(f"{k}={v}" for k, v in self.protocol.items() if k in ("shots", "seed", "t"))
        return f"{self.backbone.name}:{self.backbone.variant} {self.task}/{self.dataset} {point}"


@dataclass
class MissingDataset:
    name: str
    path: Path
    hint: str


@dataclass
class MissingWeights:
    """Weights a dry run needs and does not find: who needs them, their id, where they were looked for, how to
    get them (the parts of the WeightsMissingError message)."""

    needed_by: str  # "vermouth:sd15", or "clip:vit-l-14 (text space)"
    weights: str
    looked_in: str
    fetch: str


@dataclass
class PlanPoint:
    """One task x dataset x protocol point of the suite, whether or not its data is prepared (the cost model
    prices a point whose data is missing from published split sizes)."""

    task: str
    dataset: str
    protocol: dict[str, Any]
    planned: bool  # every dataset it needs is prepared, so it has one job per backbone config
    entry: int = 0  # its suite entry (`Plan.entry_configs` gives each backbone's config for it)


@dataclass
class Plan:
    suite: SuiteSpec
    jobs: list[Job] = field(default_factory=list)
    missing: list[MissingDataset] = field(default_factory=list)
    backbones: list[BackboneConfig] = field(default_factory=list)  # every distinct config a job runs with
    # Per backbone x backbone-grid point, its config for each suite entry (the task's preset makes them differ).
    entry_configs: list[list[BackboneConfig]] = field(default_factory=list)
    points: list[PlanPoint] = field(default_factory=list)
    missing_weights: list[MissingWeights] = field(default_factory=list)  # dry runs only (a run stops instead)
    unresolved: list[BackboneConfig] = field(default_factory=list)  # configs whose weights are missing (dry run)


WEIGHTS_MISSING = "missing"  # the placeholder weights fingerprint of a dry run's job whose weights are absent


def open_dataset(name: str, generate: bool = True) -> Dataset:
    """The dataset reader rooted at `HARNESS_DATA/<folder>`; embedded `mini` data is generated on first use."""
    cls = DATASETS.get(name)
    ds = cls(data_root() / cls.folder)
    if generate and cls.embedded and not ds.is_present():
        cls.generate(ds.root)
    return ds


def resolve_backbones(names: list[str]) -> list[str]:
    """`all` = every registered backbone whose entry does not say `in_all=False` (the `synthetic` load-test
    backbone says so, as data in the catalog, so nothing is imported); explicit names resolve as given."""
    if names == ["all"]:
        return [e.name for e in BACKBONES.entries() if e.meta.get("in_all", True)]
    for name in names:
        BACKBONES.entry(name)  # raises with close matches
    return names


def resolve_device(device: str) -> tuple[str, str | None]:
    """`auto` → `cuda` when torch sees a CUDA device, else `cpu`, with a line saying which and why; any other
    device as given (no line). Resolved before job keys are computed: the key holds the device that ran."""
    if device != "auto":
        return device, None
    import torch

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return "cuda", f"device auto → cuda ({n} CUDA device{'s' if n > 1 else ''} visible: " \
                       f"{torch.cuda.get_device_name(0)})"
    why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device visible"
    return "cpu", f"device auto → cpu ({why})"


def backbone_option_points(run: RunConfig, suite: SuiteSpec) -> list[dict[str, Any]]:
    """Suite options, then each point of the suite's backbone grid: one backbone config (and leaderboard row)
    each. A job's options add the backbone's task preset below and the entry's options and --opt above."""
    axes = list(suite.backbone_grid)
    points = [dict(zip(axes, values, strict=True)) for values in itertools.product(*suite.backbone_grid.values())]
    return [{**suite.backbone_options, **point} for point in points]


def backbone_config(name: str, run: RunConfig, suite: SuiteSpec, point: dict[str, Any] | None = None,
                    entry: SuiteEntry | None = None) -> BackboneConfig:
    """The config one backbone runs a suite entry with. Options, each over the one before: the backbone's preset
    for the entry's task (Vermouth: the method's per-task settings), the suite's options and backbone-grid
    point, the entry's options, the command line's --opt."""
    cls = BACKBONES.get(name)
    # A variant the backbone lacks is an error listing its variants, whether --variant or the suite named it. A
    # family member (`timm:<model>`) is one model: the suite's variant (mini's `tiny`) is not for it.
    variant = run.variant or (None if getattr(cls, "family", None) else suite.variant) or cls.default_variant
    if variant not in cls.variants:
        raise UnknownNameError(f"variant of backbone '{name}'", variant, cls.variants)
    device = resolve_device(run.device or suite.device)[0]  # `auto` → what this machine has
    options = {**(cls.task_options(variant, entry.task) if entry is not None else {}), **(point or {}),
               **(entry.backbone_options if entry is not None else {}), **run.backbone_options}
    cfg = BackboneConfig(name=name, variant=variant, weights=run.weights, device=device,
                         dtype=run.dtype or suite.dtype,
                         feature_dtype=run.feature_dtype or suite.feature_dtype,
                         batch_size=run.batch_size or suite.batch_size, options=options)
    cls.validate_options(cfg)
    return cfg


def _check_overrides(suite: SuiteSpec, overrides: dict[str, Any]) -> None:
    fields: set[str] = set()
    for entry in suite.entries:
        fields |= set(TASKS.get(entry.task).protocol_model.model_fields)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"--set: unknown protocol key(s) {', '.join(unknown)}; "
                          f"the suite's tasks know: {', '.join(sorted(fields))}")


def protocol_points(entry_grid: dict[str, list[Any]], run: RunConfig, overrides: dict[str, Any]
                    ) -> list[dict[str, Any]]:
    grid = dict(entry_grid)
    if run.seeds is not None:
        grid["seed"] = list(run.seeds)
    for key in overrides:
        grid.pop(key, None)  # an override fixes a grid axis to one value
    axes = list(grid)
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*grid.values())]


def plan(run: RunConfig, suite: SuiteSpec) -> Plan:
    """Expand a suite into jobs; datasets that are not prepared are listed, not planned."""
    _check_overrides(suite, run.overrides)
    limit = run.limit or split_limit(suite.name)[1]  # `--limit N`, or a suite named `<suite>@limitN`
    result = Plan(suite=suite)
    bases: list[list[tuple[BackboneConfig, str, str]]] = []  # per backbone x grid point: per entry
    identities: dict[BackboneConfig, tuple[BackboneConfig, str, str]] = {}  # config → (config, weights fp, card fp)
    for name in resolve_backbones(run.backbones):
        cls = BACKBONES.get(name)
        for entry in suite.entries:
            _check_kinds(cls, TASKS.get(entry.task))
        for point in backbone_option_points(run, suite):
            per_entry = []
            for entry in suite.entries:
                cfg = backbone_config(name, run, suite, point, entry)
                if cfg not in identities:  # entries of one task (or equal presets) share a config
                    card = sha256_text(canonical_json(dataclasses.asdict(cls.variants[cfg.variant])))[:16]
                    identities[cfg] = (cfg, _job_weights_fingerprint(cls, cfg, run.dry_run, result), card)
                    result.backbones.append(cfg)
                per_entry.append(identities[cfg])
            result.entry_configs.append([cfg for cfg, _, _ in per_entry])
            bases.append(per_entry)
    data_fps: dict[str, str | None] = {}
    text_spaces: dict[str, None] = {}

    def fingerprint_of(name: str) -> str | None:
        """The dataset's fingerprint, or None (and a row in `missing`) when it is not prepared."""
        if name not in data_fps:
            ds = open_dataset(name)
            if ds.is_present():
                data_fps[name] = ds.fingerprint()
            else:
                result.missing.append(MissingDataset(name, ds.root, ds.prepare_hint))
                data_fps[name] = None
        return data_fps[name]

    for entry_index, entry in enumerate(suite.entries):
        task = TASKS.get(entry.task)
        overrides = {k: v for k, v in run.overrides.items() if k in task.protocol_model.model_fields}
        for ds_name in entry.datasets:
            for point in protocol_points(entry.grid, run, overrides):
                raw = {**entry.protocol, **point, **overrides}
                where = f"suite '{suite.name}', task '{entry.task}', protocol"
                validated = validate(task.protocol_model, raw, where)
                names = [ds_name, *task.required_datasets(validated)]
                fps = [fingerprint_of(n) for n in names]  # every one, so `missing` lists them all
                protocol = validated.model_dump(mode="json")
                if isinstance(protocol.get("text_space"), str):
                    text_spaces[protocol["text_space"]] = None
                result.points.append(PlanPoint(entry.task, ds_name, protocol, planned=None not in fps,
                                               entry=entry_index))
                if any(fp is None for fp in fps):
                    continue
                data_fp = fps[0] if len(fps) == 1 else sha256_text(canonical_json(dict(zip(names, fps, strict=True))))
                for cfg, weights_fp, card_fp in (per_entry[entry_index] for per_entry in bases):
                    result.jobs.append(Job(
                        suite=suite.name, backbone=cfg, task=entry.task, task_version=task.version,
                        dataset=ds_name, protocol=protocol, column=task.column_label(protocol),
                        data_fingerprint=data_fp, weights_fingerprint=weights_fp, card_fingerprint=card_fp,
                        limit=limit))
    order = {cfg: i for i, cfg in enumerate(result.backbones)}
    result.jobs.sort(key=lambda job: order[job.backbone])  # stable: one backbone config built at a time
    result.missing_weights = list({(m.needed_by, m.weights): m for m in result.missing_weights}.values())
    if run.dry_run:  # a run finds a missing text tower when a job builds it; a dry run lists it up front
        for spec in text_spaces:
            _check_text_space(spec, result)
    return result


@contextlib.contextmanager
def _no_downloads() -> Iterator[None]:
    """HF_HUB_OFFLINE for the block: a dry run looks for weights in the local cache and never fetches them."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def _missing_weights(needed_by: str, spec: str, exc: WeightsMissingError) -> MissingWeights:
    fetch = exc.fetch or "give an existing file or folder with --weights (or 'random' for a smoke test)"
    if exc.fetch and os.environ.get("HF_HUB_OFFLINE", "").upper() not in {"1", "ON", "YES", "TRUE"}:
        fetch += " (a run that is not a dry run downloads it itself)"
    return MissingWeights(needed_by, exc.weights or spec, exc.looked_in or str(exc), fetch)


def _check_kinds(cls: Any, task: Any) -> None:
    """A backbone lacking a feature kind the task needs (a global-only model for OVSS) stops the plan."""
    missing = [k for k in task.required_kinds if k not in cls.feature_kinds]
    if missing:
        raise ConfigError(f"backbone '{cls.name}' gives no {'/'.join(missing)} features, which task '{task.name}' "
                          f"needs; drop the task from the suite or choose a backbone with them "
                          f"(it gives: {', '.join(cls.feature_kinds)})")


def _job_weights_fingerprint(cls: Any, cfg: BackboneConfig, dry_run: bool, result: Plan) -> str:
    """The weights fingerprint of a job's config; a dry run lists missing weights (and the config as unresolved)
    and gives only that config's jobs the placeholder."""
    if not dry_run:
        return cls.weights_fingerprint(cfg)
    weights_fp = _weights_fingerprint(cls, cfg, f"{cfg.name}:{cfg.variant}", result)
    if weights_fp is None:
        result.unresolved.append(cfg)
        return WEIGHTS_MISSING
    return weights_fp


def _weights_fingerprint(cls: Any, cfg: BackboneConfig, needed_by: str, result: Plan) -> str | None:
    """A dry run's weights fingerprint (looked up in the local cache only), or None with a row in
    `missing_weights`."""
    try:
        with _no_downloads():
            return cls.weights_fingerprint(cfg)
    except WeightsMissingError as exc:  # the environment is restored here: the note reads the user's setting
        result.missing_weights.append(_missing_weights(needed_by, cfg.weights or cls.variants[cfg.variant].weights,
                                                       exc))
        return None


def _check_text_space(spec: str, result: Plan) -> None:
    """A row in `missing_weights` when the weights of text space `spec` (`<backbone>:<variant>`) are absent."""
    from harness.data.text_space import parse_text_space

    try:
        name, variant = parse_text_space(spec)
        cls = BACKBONES.get(name)
    except HarnessError:
        return  # a bad spec is the job's error, with its own message
    if variant not in cls.variants:
        return
    _weights_fingerprint(cls, BackboneConfig(name=name, variant=variant), f"{spec} (text space)", result)


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` (0-based I) → (I, N)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard expects I/N with 0 <= I < N, got '{text}'") from None
    if not 0 <= i < n:
        raise ConfigError(f"--shard expects I/N with 0 <= I < N, got '{text}'")
    return i, n


def shard(jobs: list[Job], index: int, count: int) -> list[Job]:
    """A deterministic slice: job keys sorted, every `count`-th from `index`. The N slices cover the grid
    exactly once, whatever order the suite lists things in, so N processes need not talk to each other."""
    mine = set(sorted(job.key for job in jobs)[index::count])
    return [job for job in jobs if job.key in mine]
