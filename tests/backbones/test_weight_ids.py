"""Default weights ids that exist on the hub: SD 1.5's maintained copy, pinned; the removed runwayml id as an
alias; every card default listed in the README.

The SD resolver is exercised end to end offline: a Hugging Face cache in the hub's own layout
(models--org--name/{refs/main, snapshots/<commit>/...}) under a temporary HF_HOME, read by
`VermouthBackbone.weights_fingerprint`, the call a job key is built from. The resolver only checks the release
layout (nothing is loaded), so the snapshot holds the required files as small config stubs.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from backbones.cards import CLIP, DINO, RESNET
from backbones.vermouth.backbone import VermouthBackbone
from backbones.vermouth.cards import SD15_WEIGHTS, VERMOUTH
from backbones.vermouth.components import SD_REQUIRED
from harness.config import BackboneConfig
from harness.data import weights
from harness.errors import WeightsMissingError

OLD = "runwayml/stable-diffusion-v1-5"
NEW = "stable-diffusion-v1-5/stable-diffusion-v1-5"
PIN = "451f4fe16113bff5a5d2269ed5ad43b0592e9a14"
LATER = "fedcba9876543210fedcba9876543210fedcba98"  # a later commit on main that the pin must not follow
README = Path(__file__).resolve().parents[2] / "README.md"


def sd15(weights_spec: str | None = None) -> BackboneConfig:
    return BackboneConfig(name="vermouth", variant="sd15", weights=weights_spec)


def fake_sd_snapshot(hub: Path, repo_id: str, commit: str, main: str | None = None) -> Path:
    """One snapshot of a diffusers pipeline repo in the HF cache layout; refs/main -> `main` (default: it)."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    for rel in SD_REQUIRED:
        path = snap / rel
        if path.suffix == ".json":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"_commit": commit}))
        else:
            path.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(main or commit)
    return snap


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline HF cache under a temporary HF_HOME, and a fresh 'note printed' memory."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(weights, "_ALIASES_NOTED", set())
    return tmp_path / "hf" / "hub"


def test_the_sd15_default_is_the_maintained_repo_pinned_to_a_commit() -> None:
    assert VERMOUTH["sd15"].weights == SD15_WEIGHTS == f"{NEW}@{PIN}"
    assert weights.HUB_ALIASES[OLD] == SD15_WEIGHTS  # the alias lands on the card's pinned default


def test_the_old_id_resolves_to_the_pinned_maintained_copy_and_notes_it_once(hub, capsys) -> None:
    snap = fake_sd_snapshot(hub, NEW, PIN)
    expected = f"{NEW}@{PIN}"
    assert VermouthBackbone.weights_fingerprint(sd15()) == expected  # the card default
    assert capsys.readouterr().err == ""  # the new id is silent
    assert VermouthBackbone.weights_fingerprint(sd15(OLD)) == expected
    assert VermouthBackbone.weights_fingerprint(sd15(f"hf-hub:{OLD}")) == expected
    resolved = weights.resolve_model_folder(OLD, required=SD_REQUIRED)
    assert (resolved.kind, resolved.path, resolved.fingerprint) == ("hub", snap, expected)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(notes) == 1, notes  # three resolutions of the old id, one note
    assert OLD in notes[0] and f"{NEW}@{PIN}" in notes[0] and "removed from the Hugging Face hub" in notes[0]


def test_the_fingerprint_records_the_pinned_revision_not_main(hub) -> None:
    fake_sd_snapshot(hub, NEW, PIN, main=LATER)
    fake_sd_snapshot(hub, NEW, LATER)
    assert VermouthBackbone.weights_fingerprint(sd15()) == f"{NEW}@{PIN}"
    assert VermouthBackbone.weights_fingerprint(sd15(OLD)) == f"{NEW}@{PIN}"
    assert VermouthBackbone.weights_fingerprint(sd15(NEW)) == f"{NEW}@{LATER}"  # unpinned: what main names
    # A revision given with the old id is kept (the maintained copy carries the same commits).
    assert VermouthBackbone.weights_fingerprint(sd15(f"{OLD}@{LATER}")) == f"{NEW}@{LATER}"


@pytest.mark.parametrize("spec", [None, OLD])
def test_missing_weights_name_the_new_id_and_a_pinned_download(hub, spec) -> None:
    with pytest.raises(WeightsMissingError) as err:
        VermouthBackbone.weights_fingerprint(sd15(spec))
    message = str(err.value)
    assert f"`hf download {NEW} --revision {PIN}`" in message
    assert OLD not in message and "\n" not in message
    assert err.value.weights == f"{NEW}@{PIN}" and err.value.fetch.startswith(f"`hf download {NEW} --revision {PIN}`")


def _card_hub_ids() -> dict[str, str]:
    """Every default hub id of the built-in cards: variant weights, Vermouth's experts and captioner."""
    ids: dict[str, str] = {}
    for family, cards in (("resnet", RESNET), ("clip", CLIP), ("dino", DINO), ("vermouth", VERMOUTH)):
        for name, card in cards.items():
            ids[f"{family}:{name}"] = card.weights
            for expert, spec in card.extra.get("experts", {}).items():
                ids[f"{family}:{name} expert {expert}"] = spec["weights"]
            if "default_captioner" in card.extra:
                ids[f"{family}:{name} captioner"] = card.extra["default_captioner"]
    return {who: spec for who, spec in ids.items() if spec != "random"}


def _readme_table() -> dict[str, str]:
    """The README's default-weights table: hub id (brace groups expanded) -> its revision cell."""
    text = README.read_text()
    section = text.split("### Default weights ids", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[1].startswith("`"):
            continue
        pattern, revision = cells[1].strip("`"), cells[2].strip("`")
        parts = re.split(r"\{([^}]*)\}", pattern)  # literal, group, literal, ...
        choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
        for combo in itertools.product(*choices):
            rows["".join(combo)] = revision
    return rows


def test_every_default_hub_id_is_in_the_readme_with_its_pin_and_none_is_a_moved_id() -> None:
    table = _readme_table()
    ids = _card_hub_ids()
    assert len(ids) >= 13  # 2 resnet, 3 clip, 5 dino, sd15 + 2 experts + captioner
    for who, spec in ids.items():
        repo, _, revision = spec.partition("@")
        assert repo not in weights.HUB_ALIASES, f"{who} defaults to the moved id {repo}"
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", repo), (who, spec)
        assert repo in table, f"{who}'s default {repo} is not in the README's weights table"
        assert table[repo] == revision, f"{who}: README revision {table[repo]!r}, card {revision!r}"
        assert revision == "" or re.fullmatch(r"[0-9a-f]{40}", revision), (who, revision)
