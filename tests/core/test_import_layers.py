"""The layout of `harness/` is its architecture (docs/architecture.md): stages data → track → plan → run →
report, each importing only its own stage, lower stages and the shared top, and an import graph with no cycle.

The graph is read from the source with `ast` (no module is imported), every import counted, those inside
functions included; only `if TYPE_CHECKING:` blocks are left out, since they never run.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "harness"
STAGES = ("data", "track", "plan", "run", "report")  # lowest first
RANK = {stage: i for i, stage in enumerate(STAGES)}
# The shared top may reach into a stage only here: the CLI (it parses and prints every command), and api's two
# base-class defaults (`Dataset.load_image` decodes through data.images, `Backbone.weights_fingerprint`
# resolves through data.weights), imported inside those functions.
TOP_MAY_REACH = {"harness.cli": set(STAGES), "harness.__main__": set(STAGES), "harness.api": {"data"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The harness modules `path` imports (`from harness.x import y` is module `harness.x.y` when y is one)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            if not (node.module or "").startswith("harness"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "harness"}
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) - {name} for name, path in mods.items()}


def stage_of(module: str) -> str | None:
    """The stage a module belongs to; None for the shared top (`harness/*.py`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in graph.items():
        for dst in targets:
            s, d = stage_of(src), stage_of(dst)
            if d is None:
                continue  # anyone may import the shared top
            if s is None:
                if d not in TOP_MAY_REACH.get(src, set()):
                    bad.append(f"{src} (shared top) imports {dst} (stage {d})")
            elif RANK[d] > RANK[s]:
                bad.append(f"{src} (stage {s}) imports {dst} (higher stage {d})")
    return sorted(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None when the graph is a DAG."""
    state: dict[str, int] = {}  # 1: on the DFS stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_every_module_imports():
    for name in modules():
        importlib.import_module(name)


def test_the_import_graph_is_a_dag_and_respects_the_stages():
    graph = import_graph()
    assert {stage_of(m) for m in graph} == {None, *STAGES}  # every stage exists, nothing else is a subpackage
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))
    assert layer_violations(graph) == []


def test_the_checks_fail_when_a_cycle_or_an_upward_import_is_added():
    graph = import_graph()
    assert "harness.report.leaderboard" in graph["harness.report.publish"]
    cyclic = {**graph, "harness.report.leaderboard": graph["harness.report.leaderboard"] | {"harness.report.publish"}}
    assert find_cycle(cyclic) == ["harness.report.leaderboard", "harness.report.publish",
                                  "harness.report.leaderboard"]
    upward = {**graph, "harness.data.cache": graph["harness.data.cache"] | {"harness.track.records"}}
    assert find_cycle(upward) is None
    assert layer_violations(upward) == ["harness.data.cache (stage data) imports harness.track.records "
                                        "(higher stage track)"]
    top = {**graph, "harness.config": graph["harness.config"] | {"harness.plan.planner"}}
    assert layer_violations(top) == ["harness.config (shared top) imports harness.plan.planner (stage plan)"]


def test_a_function_level_import_counts_and_type_checking_does_not(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from harness.plan.planner import Job\n"
                   "def f():\n    from harness.data import cache\n    import harness.track.records\n")
    known = {"harness.data.cache", "harness.track.records", "harness.plan.planner"}
    assert imports_of(src, known) == {"harness.data.cache", "harness.track.records"}


@pytest.mark.parametrize("stage", STAGES)
def test_each_subpackage_says_what_it_owns_and_may_import(stage):
    doc = importlib.import_module(f"harness.{stage}").__doc__ or ""
    owns, may = [part.strip() for part in doc.strip().split("\n\n")]
    assert owns and "\n" not in owns
    lower = [f"harness.{s}" for s in STAGES[: RANK[stage]]]
    expected = "May import: the shared top (harness/*.py) only." if not lower else (
        "May import: the shared top" + (f" and {lower[0]}." if len(lower) == 1
                                        else ", " + ", ".join(lower[:-1]) + f" and {lower[-1]}."))
    assert may == expected


def test_the_architecture_doc_names_every_stage_in_its_diagram_in_order():
    text = (ROOT / "docs" / "architecture.md").read_text()
    diagram = re.search(r"```mermaid\n(.*?)```", text, re.S).group(1)
    for stage in STAGES:
        assert f"harness/{stage}/" in diagram, stage
    assert "**" + " → ".join(STAGES) + "**" in text
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()
