"""Per-task backbone presets: Vermouth's jobs carry the method's setting of their task; suite entries and --opt
override it; job keys keep the settings apart; the leaderboard keeps one row and lists each task's settings."""

import pandas as pd
import pytest

from backbones.vermouth.cards import TASK_PRESETS, VERMOUTH
from harness.config import RunConfig, SuiteSpec
from harness.errors import ConfigError
from harness.plan.planner import plan
from harness.plan.suites import load_suite
from harness.report.leaderboard import backbone_settings, runs_to_values
from harness.run.parallel_extract import backbone_configs


def vermouth_jobs(suite: SuiteSpec | None = None, **kw):
    run = RunConfig(suite="mini", backbones=["vermouth"], **kw)
    return plan(run, suite or load_suite("mini")).jobs


def options_by_task(jobs) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for job in jobs:
        if job.backbone.options not in out.setdefault(job.task, []):
            out[job.task].append(job.backbone.options)
    return out


def test_each_task_runs_the_methods_setting_at_the_tiny_resolution():
    by_task = options_by_task(vermouth_jobs())
    assert by_task == {
        "fsc": [{"resolution": 64, "t": 200, "noise": "ddpm", "prompt": "empty", "cross_attention": False}],
        "sbir": [{"resolution": 64, "t": 200, "noise": "none", "prompt": "blip", "cross_attention": True}],
        "ovss": [{"resolution": 64, "t": 50, "noise": "ddpm", "prompt": "empty", "cross_attention": True}],
    }


def test_sd15_presets_are_the_papers():
    presets = VERMOUTH["sd15"].extra["task_presets"]
    assert presets["fsc"]["resolution"] == presets["sbir"]["resolution"] == 256
    assert (presets["ovss"]["resolution"], presets["ovss"]["t"]) == (512, 50)
    assert (presets["sbir"]["prompt"], presets["sbir"]["noise"], presets["sbir"]["cross_attention"]) == (
        "blip", "none", True)
    assert presets == TASK_PRESETS


def test_opt_and_entry_options_override_the_preset():
    by_task = options_by_task(vermouth_jobs(backbone_options={"t": 10}))
    assert {o["t"] for opts in by_task.values() for o in opts} == {10}
    assert by_task["sbir"][0]["prompt"] == "blip"  # the rest of the preset stays
    data = load_suite("mini").model_dump()
    data["entries"][2]["backbone_options"] = {"t": 7}  # the ovss entry
    data["backbone_options"] = {"noise": "none"}
    by_task = options_by_task(vermouth_jobs(SuiteSpec.model_validate(data)))
    assert (by_task["ovss"][0]["t"], by_task["fsc"][0]["t"]) == (7, 200)
    assert {o["noise"] for opts in by_task.values() for o in opts} == {"none"}  # suite options over presets


def test_a_bad_entry_option_is_a_config_error():
    data = load_suite("mini").model_dump()
    data["entries"][0]["backbone_options"] = {"t": -1}
    with pytest.raises(ConfigError, match="'t'"):
        vermouth_jobs(SuiteSpec.model_validate(data))


def test_job_keys_and_feature_configs_keep_the_settings_apart():
    jobs = vermouth_jobs()
    changed = jobs[0].model_copy(update={"backbone": jobs[0].backbone.model_copy(
        update={"options": {**jobs[0].backbone.options, "t": 50}})})
    assert changed.key != jobs[0].key
    from backbones.vermouth.options import resolve_options
    configs = {j.task: resolve_options(VERMOUTH["tiny"], j.backbone.options).feature_config() for j in jobs}
    assert len({repr(sorted(c.items())) for c in configs.values()}) == 3


def test_plain_backbones_take_no_preset():
    run = RunConfig(suite="mini", backbones=["resnet"])
    assert {tuple(j.backbone.options) for j in plan(run, load_suite("mini")).jobs} == {()}


def test_extract_builds_the_config_of_the_task_that_reads_the_dataset():
    [fsc] = backbone_configs(["vermouth"], "mini", dataset="mini_coop")
    [ovss] = backbone_configs(["vermouth"], "mini", dataset="mini_ovss_train")  # named by the ovss protocol
    assert (fsc.options["t"], ovss.options["t"]) == (200, 50)


def _run(task: str, t: int, seed: int) -> dict:
    return {"tags.harness.job_key": f"{task}{t}{seed}", "tags.harness.backbone": "vermouth",
            "tags.harness.variant": "tiny", "tags.harness.weights_kind": "random", "tags.harness.task": task,
            "tags.harness.task_version": "2", "tags.harness.dataset": "d", "tags.harness.column": "",
            "tags.harness.primary_metric": "m", "params.protocol.seed": str(seed), "metrics.m": 1.0,
            "params.backbone.options.t": str(t)}


def test_options_that_differ_only_between_tasks_keep_one_row_and_are_listed():
    runs = pd.DataFrame([_run("fsc", 200, 1), _run("ovss", 50, 1)])
    values = runs_to_values(runs)
    assert set(values["backbone"]) == {"vermouth:tiny (random init)"}
    settings = backbone_settings(values)
    assert settings.to_dict("records") == [
        {"backbone": "vermouth:tiny (random init)", "task": "fsc", "options": "t=200"},
        {"backbone": "vermouth:tiny (random init)", "task": "ovss", "options": "t=50"}]


def test_options_that_vary_within_a_task_still_split_rows():
    runs = pd.DataFrame([_run("ovss", 50, 1), _run("ovss", 200, 1)])
    assert set(runs_to_values(runs)["backbone"]) == {"vermouth:tiny [t=50] (random init)",
                                                     "vermouth:tiny [t=200] (random init)"}
