import pytest

from harness.config import RunConfig
from harness.errors import ConfigError, UnknownNameError
from harness.plan.planner import parse_shard, plan, shard
from harness.plan.suites import load_suite


def make_plan(**kw):
    run = RunConfig(suite="mini", backbones=kw.pop("backbones", ["resnet"]), **kw)
    return plan(run, load_suite("mini"))


def test_mini_suite_expands_to_grid_with_tiny_variant():
    p = make_plan()
    assert {j.task for j in p.jobs} == {"fsc", "sbir", "ovss"}
    ovss = [(j.dataset, j.protocol["seed"]) for j in p.jobs if j.task == "ovss"]
    assert ovss == [("mini_ovss", s) for s in (1, 2, 3)]
    assert {j.backbone.dtype for j in p.jobs} == {"fp64"}  # the suite's precision reaches every backbone
    p.jobs = [j for j in p.jobs if j.task == "fsc"]
    assert len(p.jobs) == 18  # heads {linear-probe, text-classifier} x shots {1,4,16} x seeds {1,2,3}
    assert {j.backbone.variant for j in p.jobs} == {"tiny"}
    assert {(j.protocol["head"], j.protocol["shots"], j.protocol["seed"]) for j in p.jobs} == {
        (h, k, s) for h in ("linear-probe", "text-classifier") for k in (1, 4, 16) for s in (1, 2, 3)}
    assert all(j.task_version == "2" for j in p.jobs)


def test_job_keys_are_stable_and_unique():
    keys1 = [j.key for j in make_plan().jobs]
    keys2 = [j.key for j in make_plan().jobs]
    assert keys1 == keys2
    assert len(set(keys1)) == len(keys1)


def test_key_changes_with_protocol_weights_data_and_version():
    job = make_plan().jobs[0]
    assert job.model_copy(update={"protocol": {**job.protocol, "max_iter": 10}}).key != job.key
    assert job.model_copy(update={"weights_fingerprint": "sha256:00"}).key != job.key
    assert job.model_copy(update={"data_fingerprint": "other"}).key != job.key
    assert job.model_copy(update={"task_version": "999"}).key != job.key
    assert job.model_copy(update={"suite": "another"}).key == job.key  # the same job in two suites


def test_seeds_and_set_override_the_grid():
    p = make_plan(seeds=[7], overrides={"shots": 2, "head": "linear-probe"})
    assert [(j.protocol["shots"], j.protocol["seed"]) for j in p.jobs if j.task == "fsc"] == [(2, 7)]
    assert {j.protocol["seed"] for j in p.jobs} == {7}


def test_bad_override_value_names_the_key():
    with pytest.raises(ConfigError, match="'shots'"):
        make_plan(overrides={"shots": 0})
    with pytest.raises(ConfigError, match="unknown protocol key"):
        make_plan(overrides={"shotz": 1})


def test_unknown_backbone_and_variant():
    with pytest.raises(UnknownNameError, match="did you mean: resnet"):
        make_plan(backbones=["resnett"])
    with pytest.raises(UnknownNameError, match="variant"):
        make_plan(variant="nosuch")


def test_all_suite_lists_missing_datasets_without_jobs():
    run = RunConfig(suite="all", backbones=["resnet"], variant="tiny")
    p = plan(run, load_suite("all"))
    assert p.jobs == []
    assert len(p.missing) == 11 + 4 + 6  # FSC, SBIR, and OVSS test sets plus the COCO-Stuff training set
    assert "coco_stuff_171" in {m.name for m in p.missing}
    assert all(m.hint for m in p.missing)


def test_shards_cover_the_grid_exactly_once():
    jobs = make_plan().jobs
    parts = [shard(jobs, i, 3) for i in range(3)]
    keys = [j.key for part in parts for j in part]
    assert sorted(keys) == sorted(j.key for j in jobs) and len(set(keys)) == len(keys)
    assert [j.key for j in shard(list(reversed(jobs)), 1, 3)] == [j.key for j in reversed(parts[1])]
    assert parse_shard("2/4") == (2, 4)
    with pytest.raises(ConfigError, match="--shard"):
        parse_shard("4/4")


def test_backbone_options_are_validated_and_keyed():
    with pytest.raises(ConfigError, match="takes no options"):
        make_plan(backbone_options={"t": 50})
    base = {j.key for j in make_plan(backbones=["vermouth"]).jobs}
    t10 = make_plan(backbones=["vermouth"], backbone_options={"t": 10}).jobs
    assert {j.backbone.options["t"] for j in t10} == {10}
    assert base.isdisjoint(j.key for j in t10)
    with pytest.raises(ConfigError, match="tt"):
        make_plan(backbones=["vermouth"], backbone_options={"tt": 50})


def test_suite_backbone_grid_is_one_config_per_point(tmp_path):
    from harness.config import SuiteSpec

    base = load_suite("mini")
    spec = base.model_copy(update={"name": "sw", "backbone_grid": {"t": [0, 100], "stages": ["L0", ["L1", "L2"]]},
                                   "entries": base.entries[:1]})
    p = plan(RunConfig(suite="sw", backbones=["vermouth"], seeds=[1], overrides={"shots": 4}), spec)
    assert sorted((j.backbone.options["t"], str(j.backbone.options["stages"])) for j in p.jobs
                  if j.protocol["head"] == "linear-probe") == [
        (0, "L0"), (0, "['L1', 'L2']"), (100, "L0"), (100, "['L1', 'L2']")]
    assert len({j.key for j in p.jobs}) == len(p.jobs) == 8
    assert isinstance(SuiteSpec.model_validate(spec.model_dump()), SuiteSpec)


def test_dry_run_lists_missing_weights_and_keeps_the_other_keys(monkeypatch):
    """A dry run plans a backbone whose weights are absent (placeholder fingerprint, a row in missing_weights);
    the other backbones' job keys are those of a real run. A real run still stops on the missing weights."""
    from harness.catalog import BACKBONES
    from harness.errors import WeightsMissingError
    from harness.plan.planner import WEIGHTS_MISSING

    def absent(cls, config):
        raise WeightsMissingError("weights 'org/dino' are not available locally", weights="org/dino",
                                  looked_in="/hf", fetch="`hf download org/dino`")

    monkeypatch.setattr(BACKBONES.get("dino"), "weights_fingerprint", classmethod(absent))
    dry = make_plan(backbones=["resnet", "dino"], dry_run=True)
    assert [(m.needed_by, m.weights, m.looked_in) for m in dry.missing_weights] == [("dino:tiny", "org/dino", "/hf")]
    assert {j.weights_fingerprint for j in dry.jobs if j.backbone.name == "dino"} == {WEIGHTS_MISSING}
    assert [j.key for j in dry.jobs if j.backbone.name == "resnet"] == [j.key for j in make_plan().jobs]
    assert [c.name for c in dry.unresolved] == ["dino"]
    with pytest.raises(WeightsMissingError, match="org/dino"):
        make_plan(backbones=["resnet", "dino"])


def test_plan_points_include_those_whose_data_is_missing():
    run = RunConfig(suite="all", backbones=["resnet"], variant="tiny")
    p = plan(run, load_suite("all"))
    assert len(p.points) == 11 * 2 * 5 * 3 + 4 * 3 + 5 * 2 and not any(pt.planned for pt in p.points)
    assert {pt.task for pt in p.points} == {"fsc", "sbir", "ovss"}
    assert all(pt.planned for pt in make_plan().points)


@pytest.mark.parametrize("cuda", [False, True])
def test_device_auto_resolves_before_job_keys(monkeypatch, cuda):
    import torch

    from harness.plan.planner import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU")
    device, why = resolve_device("auto")
    assert device == ("cuda" if cuda else "cpu") and why.startswith(f"device auto → {device} (")
    assert resolve_device("cuda:1") == ("cuda:1", None)
    auto = make_plan(device="auto")
    assert {j.backbone.device for j in auto.jobs} == {device}
    assert [j.key for j in auto.jobs] == [j.key for j in make_plan(device=device).jobs]


def test_all_suite_device_is_auto_and_mini_stays_on_the_cpu():
    assert load_suite("all").device == "auto"
    assert load_suite("mini").device == "cpu"
