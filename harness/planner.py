"""A suite expands into jobs (backbone x task x dataset x protocol point), each with a stable key.

The key hashes the resolved job: backbone config, task name and version, dataset, protocol, the data
fingerprint and the weights fingerprint. Same inputs → same key, so resume is "skip a finished key".
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.api import Dataset, StrictModel
from harness.catalog import BACKBONES, DATASETS, TASKS
from harness.config import BackboneConfig, RunConfig, SuiteSpec, validate
from harness.errors import ConfigError, UnknownNameError
from harness.io import canonical_json, sha256_text
from harness.paths import data_root


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

    @property
    def key(self) -> str:
        payload = self.model_dump(exclude={"suite", "column"})
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
class Plan:
    suite: SuiteSpec
    jobs: list[Job] = field(default_factory=list)
    missing: list[MissingDataset] = field(default_factory=list)


def open_dataset(name: str, generate: bool = True) -> Dataset:
    """The dataset reader rooted at `HARNESS_DATA/<folder>`; embedded `mini` data is generated on first use."""
    cls = DATASETS.get(name)
    ds = cls(data_root() / cls.folder)
    if generate and cls.embedded and not ds.is_present():
        cls.generate(ds.root)
    return ds


def resolve_backbones(names: list[str]) -> list[str]:
    if names == ["all"]:
        return BACKBONES.names()
    for name in names:
        BACKBONES.entry(name)  # raises with close matches
    return names


def backbone_option_points(run: RunConfig, suite: SuiteSpec) -> list[dict[str, Any]]:
    """Suite options, then each point of the suite's backbone grid, then the command line's --opt."""
    axes = list(suite.backbone_grid)
    points = [dict(zip(axes, values, strict=True)) for values in itertools.product(*suite.backbone_grid.values())]
    return [{**suite.backbone_options, **point, **run.backbone_options} for point in points]


def backbone_config(name: str, run: RunConfig, suite: SuiteSpec, options: dict[str, Any] | None = None
                    ) -> BackboneConfig:
    cls = BACKBONES.get(name)
    variant = run.variant or (suite.variant if suite.variant in cls.variants else None) or cls.default_variant
    if variant not in cls.variants:
        raise UnknownNameError(f"variant of backbone '{name}'", variant, cls.variants)
    cfg = BackboneConfig(name=name, variant=variant, weights=run.weights, device=run.device or suite.device,
                         dtype=run.dtype or suite.dtype, batch_size=run.batch_size or suite.batch_size,
                         options=run.backbone_options if options is None else options)
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
    result = Plan(suite=suite)
    backbones = []
    for name in resolve_backbones(run.backbones):
        for options in backbone_option_points(run, suite):
            cfg = backbone_config(name, run, suite, options)
            cls = BACKBONES.get(name)
            card = sha256_text(canonical_json(dataclasses.asdict(cls.variants[cfg.variant])))[:16]
            backbones.append((cfg, cls.weights_fingerprint(cfg), card))
    data_fps: dict[str, str | None] = {}

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

    for entry in suite.entries:
        task = TASKS.get(entry.task)
        overrides = {k: v for k, v in run.overrides.items() if k in task.protocol_model.model_fields}
        for ds_name in entry.datasets:
            for point in protocol_points(entry.grid, run, overrides):
                raw = {**entry.protocol, **point, **overrides}
                where = f"suite '{suite.name}', task '{entry.task}', protocol"
                validated = validate(task.protocol_model, raw, where)
                names = [ds_name, *task.required_datasets(validated)]
                fps = [fingerprint_of(n) for n in names]  # every one, so `missing` lists them all
                if any(fp is None for fp in fps):
                    continue
                protocol = validated.model_dump(mode="json")
                data_fp = fps[0] if len(fps) == 1 else sha256_text(canonical_json(dict(zip(names, fps, strict=True))))
                for cfg, weights_fp, card_fp in backbones:
                    result.jobs.append(Job(
                        suite=suite.name, backbone=cfg, task=entry.task, task_version=task.version,
                        dataset=ds_name, protocol=protocol, column=task.column_label(protocol),
                        data_fingerprint=data_fp, weights_fingerprint=weights_fp, card_fingerprint=card_fp))
    order = {cfg: i for i, (cfg, _, _) in enumerate(backbones)}
    result.jobs.sort(key=lambda job: order[job.backbone])  # stable: one backbone built at a time
    return result


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
