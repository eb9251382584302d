"""A realistic synthetic suite for the leaderboard layout tests: MLflow-shaped job runs of 4 backbones on 3 task
versions (FSC with 6 settings and 3 seeds, OVSS with 3 metrics and 3 seeds, SBIR with 6 metrics and 1 seed), and
`harness profile` rows for their cost. Values come from a fixed formula (no randomness).

Imported as `from leaderboard_factory import ...` (tests/core is on the path of its tests; the e2e test adds it).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

BACKBONES = {"resnet": 30.0, "clip": 12.0, "dino": 11.0, "vermouth": 8.0}  # base score per backbone
FSC_SETTINGS = [f"head={head},shots={shots}" for head in ("linear-probe", "text-classifier") for shots in (1, 4, 16)]
SBIR_METRICS = ["map_200", "map_all", "map_all_class_avg", "map_all_noninterp", "p_100", "p_200"]
OVSS_METRICS = ["miou", "miou_gt_classes", "pixel_acc"]


def job_run(key: str, backbone: str, task: str, dataset: str, setting: str, seed: int, metrics: dict[str, float],
            primary: str, extra: dict | None = None) -> dict:
    """One job run as `Tracker.job_runs()` returns it."""
    return {"tags.harness.job_key": key, "tags.harness.primary_metric": primary,
            "tags.harness.report_metrics": ",".join(metrics), **{f"metrics.{m}": v for m, v in metrics.items()},
            "tags.harness.backbone": backbone, "tags.harness.variant": "tiny", "tags.harness.weights_kind": "random",
            "tags.harness.weights_fingerprint": "random(seed=0,init=v2)", "tags.harness.task": task,
            "tags.harness.task_version": "2", "tags.harness.dataset": dataset, "tags.harness.column": setting,
            "tags.harness.git_commit": "d6eb0ec83b6d59eefff2c76ae43d2715b00046ba", "params.protocol.seed": str(seed),
            **(extra or {})}


def realistic_runs(grid: bool = False) -> pd.DataFrame:
    """The mini suite's shape; with `grid`, Vermouth also over t x stages on FSC (long option labels)."""
    rows = []
    for b, base in BACKBONES.items():
        options = {"params.backbone.options.t": "200", "params.backbone.options.resolution": "64",
                   **({"params.backbone.options.stages": "['L0', 'L1']"} if grid else {})} if b == "vermouth" else {}
        for i, setting in enumerate(FSC_SETTINGS):
            for seed in (1, 2, 3):
                jitter = ((7 * i + 3 * seed + len(b)) % 5) * 0.3  # seed-to-seed spread, not the same everywhere
                value = base * (1 + 0.4 * (i % 3)) + jitter - (3.0 if i >= 3 else 0.0)
                rows.append(job_run(f"{b}-fsc-{i}-{seed}", b, "fsc", "mini_coop", setting, seed, {"top1": value},
                                    "top1", options))
        for seed in (1, 2, 3):
            miou = base * 0.9 + ((seed * 5 + len(b)) % 3) * 0.4
            rows.append(job_run(f"{b}-ovss-{seed}", b, "ovss", "mini_ovss", "eval_style=whole", seed,
                                {"miou": miou, "miou_gt_classes": miou, "pixel_acc": miou + 25.0}, "miou", options))
        rows.append(job_run(f"{b}-sbir", b, "sbir", "mini_sbir", "", 1,
                            {m: 13.0 + base / 10 + j for j, m in enumerate(SBIR_METRICS)}, "map_all", options))
    if grid:
        for t in (50, 400):
            for stages in ("['L0', 'L1']", "['L0', 'L1', 'L2']"):
                for seed in (1, 2, 3):
                    rows.append(job_run(f"grid-{t}-{stages}-{seed}", "vermouth", "fsc", "mini_coop",
                                        FSC_SETTINGS[0], seed, {"top1": 9.0 + t / 100 + seed}, "top1",
                                        {"params.backbone.options.t": str(t),
                                         "params.backbone.options.resolution": "64",
                                         "params.backbone.options.stages": stages}))
    return pd.DataFrame(rows)


PROFILES = """backbone,variant,device,dtype,batch_size,latency_per_image_ms,params,gflops_per_image,peak_memory_mb,\
memory_kind
resnet,tiny,cpu,fp32,1,1.2,4900000,0.01,180.5,cpu_peak_rss_increase
resnet,tiny,cpu,fp32,8,0.35,4900000,0.01,230.2,cpu_peak_rss_increase
clip,tiny,cpu,fp32,8,0.14,3425857,0.004,171.8,cpu_peak_rss_increase
dino,tiny,cpu,fp32,8,0.12,150464,0.005,223.3,cpu_peak_rss_increase
vermouth,tiny,cpu,fp32,8,42.0,96000000,1.2,1650.0,cpu_peak_rss_increase
resnet,tiny,cuda,fp16,8,0.05,4900000,0.01,90.0,cuda_max_allocated
"""


def write_profiles(out_dir: Path) -> Path:
    path = Path(out_dir) / "profiles.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PROFILES)
    return path
