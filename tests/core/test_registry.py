import sys
import textwrap
from importlib import metadata

import pytest

from harness.api import Task
from harness.catalog import BACKBONES, DATASETS, TASKS
from harness.errors import PluginError, UnknownNameError
from harness.registry import Registry


class Base:
    pass


def test_decorator_registers_and_get_returns_object():
    reg = Registry("thing", Base)

    @reg.register("a")
    class A(Base):
        pass

    assert reg.get("a") is A
    assert reg.names() == ["a"]


def test_unknown_name_lists_close_matches():
    reg = Registry("thing", Base)
    for name in ("resnet", "resnet101", "clip"):
        reg.register(name, type(name, (Base,), {}))
    with pytest.raises(UnknownNameError) as exc:
        reg.get("resnt")
    assert "unknown thing 'resnt'" in str(exc.value)
    assert "resnet" in exc.value.close


def test_wrong_base_class_is_rejected():
    reg = Registry("thing", Base)
    with pytest.raises(PluginError, match="subclass of Base"):
        reg.register("x", int)


def test_duplicate_name_with_a_different_object_is_an_error():
    reg = Registry("thing", Base)
    reg.register("x", type("X1", (Base,), {}))
    with pytest.raises(PluginError, match="registered twice"):
        reg.register("x", type("X2", (Base,), {}))


def test_lazy_entry_imports_only_on_get(tmp_path, monkeypatch):
    pkg = tmp_path / "lazy_mod_for_test.py"
    pkg.write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("thing")
    reg.add_lazy("t", "lazy_mod_for_test:Thing", description="d")
    assert "lazy_mod_for_test" not in sys.modules
    assert reg.entry("t").meta["description"] == "d"
    assert reg.get("t").__name__ == "Thing"


def test_broken_lazy_entry_fails_only_when_asked_for():
    reg = Registry("thing")
    reg.add_lazy("broken", "no_such_module_xyz:Thing", source="plugin:broken")
    assert reg.names() == ["broken"]
    with pytest.raises(PluginError, match="no_such_module_xyz"):
        reg.get("broken")


def _install_entry_point_plugin(tmp_path, monkeypatch, group: str, name: str, value: str) -> None:
    """A throwaway installed distribution: a module plus a .dist-info with entry_points.txt."""
    (tmp_path / "myplugin_mod.py").write_text(textwrap.dedent("""
        from harness.api import Task, StrictModel, Result

        class P(StrictModel):
            seed: int = 0

        class PluginTask(Task):
            name = "plugtask"
            version = "7"
            protocol_model = P
            primary_metric = "score"

            def evaluate(self, backbone, dataset, protocol, ctx):
                return Result(metrics={"score": 1.0})
    """))
    dist = tmp_path / "myplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n{name} = {value}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_entry_point_plugin_is_found_and_loaded(tmp_path, monkeypatch):
    _install_entry_point_plugin(tmp_path, monkeypatch, "harness.tasks", "plugtask", "myplugin_mod:PluginTask")
    assert any(ep.name == "plugtask" for ep in metadata.entry_points(group="harness.tasks"))
    reg = Registry("task", Task, "harness.tasks")
    assert "plugtask" in reg.names()
    entry = reg.entry("plugtask")
    assert entry.source == "plugin:myplugin"
    assert reg.get("plugtask").version == "7"


def test_builtin_wins_over_plugin_of_same_name(tmp_path, monkeypatch):
    _install_entry_point_plugin(tmp_path, monkeypatch, "harness.tasks", "fsc", "myplugin_mod:PluginTask")
    reg = Registry("task", Task, "harness.tasks")
    reg.add_lazy("fsc", "tasks.fsc.task:FewShotClassification")
    assert reg.entry("fsc").source == "builtin"


def test_builtin_catalog_is_declared():
    assert "resnet" in BACKBONES.names()
    assert "fsc" in TASKS.names()
    assert {"mini_coop", "imagenet", "dtd", "eurosat"} <= set(DATASETS.names())
