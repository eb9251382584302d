"""docs/plugins.md's examples, installed as a real distribution and run through the CLI, so the guide cannot go stale.

The page's `pyproject.toml` table becomes the entry points of a `*.dist-info` folder on PYTHONPATH (what `pip
install` writes), its `# plugin: backbone|dataset|task` blocks the modules those entry points name, and its
`# plugin: suite` block the suite `harness run` gets, in subprocesses with their own HARNESS_* folders.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
GROUPS = {"harness.backbones": "backbone", "harness.datasets": "dataset", "harness.tasks": "task"}
BROKEN = "broken_cnn"  # an extra backbone entry point whose module does not exist (not in the guide)
CLASSES = {"red": (170, 110, 110), "green": (110, 170, 110), "blue": (110, 110, 170)}
PER_SPLIT = {"train": 4, "val": 2, "test": 6}


def entry_point_tables(toml: str) -> dict[str, dict[str, str]]:
    """`[project.entry-points."GROUP"]` tables of `name = "module:attr"` lines (tomllib is Python 3.11+)."""
    tables: dict[str, dict[str, str]] = {}
    for line in filter(None, (raw.strip() for raw in toml.splitlines())):
        header = re.fullmatch(r'\[project\.entry-points\."([\w.]+)"\]', line)
        if header:
            group = tables.setdefault(header.group(1), {})
        else:
            name, value = re.fullmatch(r'([\w-]+)\s*=\s*"([\w.]+:[\w.]+)"', line).groups()
            group[name] = value
    return tables


def doc_blocks() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The marked code blocks by kind (`# plugin: KIND` first line), and the entry points of the toml block."""
    text = DOC.read_text()
    blocks = {}
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        marker = re.match(r"# plugin: (\w+)\n", body)
        if marker:
            blocks[marker.group(1)] = body
        elif lang == "toml":
            entry_points = entry_point_tables(body)
    assert set(blocks) == {"backbone", "dataset", "task", "suite"}, sorted(blocks)
    assert set(entry_points) == set(GROUPS), sorted(entry_points)
    return blocks, entry_points


def install(site: Path) -> dict[str, str]:
    """Write the guide's plug-in as an installed distribution under `site`; the plug-in names by kind."""
    blocks, entry_points = doc_blocks()
    lines, names = [], {}
    for group, eps in entry_points.items():
        (name, target), = eps.items()  # one plug-in per kind in the guide
        module = target.partition(":")[0]
        path = site / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(blocks[GROUPS[group]])
        lines += [f"[{group}]", f"{name} = {target}"] + ([f"{BROKEN} = harness_example.nosuch:Nothing"]
                                                          if group == "harness.backbones" else []) + [""]
        names[GROUPS[group]] = name
    dist = site / "harness_example-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-example\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("\n".join(lines))
    (site / "my_suite.yaml").write_text(blocks["suite"])
    return names


def write_images(root: Path) -> None:
    """`<split>/<class>/<n>.png`: 16x16 images of a class colour, shifted per image and noised per pixel (seeded)
    so that the classes overlap and a wrong label, feature or mean shows in the accuracy."""
    rng = np.random.default_rng(7)
    for split, count in PER_SPLIT.items():
        for cname, rgb in CLASSES.items():
            (root / split / cname).mkdir(parents=True)
            for n in range(count):
                shift, noise = rng.normal(0, 45, size=3), rng.normal(0, 30, size=(16, 16, 3))
                pixels = np.clip(np.array(rgb) + shift + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "RGB").save(root / split / cname / f"{n}.png")


@pytest.fixture
def plugin(isolated_env):
    site = isolated_env / "site"
    names = install(site)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "HARNESS_WORKERS": "0", "COLUMNS": "250"}
    return site, names, env


def harness(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, f"harness {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_the_listing_shows_the_plugins_with_their_variants_and_a_broken_one_with_its_error(plugin):
    site, names, env = plugin
    listing = harness(env, "list", "backbones").stdout
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in listing.splitlines() if line.startswith("│")]
    at = next(i for i, r in enumerate(rows) if r[0] == names["backbone"])
    assert [r[1] for r in rows[at:at + 2]] == ["w8", "w16"] and rows[at + 2][0] != ""  # its variants, no more
    assert rows[at][2] == "random" and rows[at][3] == "32" and rows[at][5] == "global"
    assert rows[at][6] == "plugin:harness-example"
    broken = " ".join(" ".join(r) for r in rows[next(i for i, r in enumerate(rows) if r[0] == BROKEN):])
    assert "unavailable: PluginError" in broken and "ModuleNotFoundError" in broken
    assert next(r for r in rows if r[0] == "resnet")[1] == "resnet50"  # built-ins still listed from their cards
    tasks = harness(env, "list", "tasks").stdout
    assert re.search(rf"{names['task']}\s+│ plugin:harness-example │ nearest class mean", tasks)
    datasets = harness(env, "list", "datasets").stdout
    assert re.search(rf"{names['dataset']}\s+│ fsc\s+│ plugin:harness-example", datasets)


def direct_ncm_top1(site: Path, data: Path) -> float:
    """The guide's backbone built here, and the nearest-centroid rule from scikit-learn: the expected top-1 %."""
    from sklearn.neighbors import NearestCentroid

    from harness.config import BackboneConfig

    sys.path.insert(0, str(site))
    try:
        from harness_example.backbone import TinyCNN
    finally:
        sys.path.remove(str(site))
    backbone = TinyCNN(BackboneConfig(name="tinycnn", variant="w8"))
    feats, labels = {}, {}
    for split in ("train", "test"):
        paths = [(label, p) for label, c in enumerate(sorted(CLASSES)) for p in sorted((data / split / c).iterdir())]
        x = backbone.image_features(backbone.preprocess([Image.open(p) for _, p in paths])).global_.numpy()
        feats[split] = x / np.linalg.norm(x, axis=1, keepdims=True)
        labels[split] = np.array([label for label, _ in paths])
    pred = NearestCentroid().fit(feats["train"], labels["train"]).predict(feats["test"])
    return float((pred == labels["test"]).mean() * 100)


@pytest.mark.filterwarnings("ignore:self.within_class_std_dev_:UserWarning")  # a dead ReLU channel: constant 0
def test_the_plugin_task_backbone_and_dataset_run_through_the_cli_onto_the_leaderboard(plugin, isolated_env):
    site, names, env = plugin
    data = isolated_env / "data" / "color_folders"
    write_images(data)
    harness(env, "run", "-b", names["backbone"], "--suite", str(site / "my_suite.yaml"), "--out-dir", "lb")
    board = pd.read_csv(isolated_env / "lb" / "my_suite.csv")
    label = f"{names['backbone']}:w8 (random init)"
    ncm = board[(board.task == names["task"]) & (board.backbone == label) & (board.dataset == names["dataset"])]
    assert len(ncm) == 1 and ncm.metric.iloc[0] == "top1"
    assert ncm["mean"].iloc[0] == pytest.approx(direct_ncm_top1(site, data), abs=1e-3)
    fsc = board[(board.task == "fsc") & (board.backbone == label) & (board.dataset == names["dataset"])]
    assert fsc.setting.tolist() == ["head=linear-probe,shots=2"] and fsc.n_items.tolist() == [18]
