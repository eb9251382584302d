"""Weights resolution: random, local file/dir, HF cache (offline), and the missing-weights error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from harness.data.weights import load_state_dict, resolve_weights
from harness.errors import WeightsError, WeightsMissingError

REV = "0123456789abcdef0123456789abcdef01234567"


def fake_hf_cache(cache: Path, repo_id: str, files: dict[str, dict[str, torch.Tensor]],
                  rev: str = REV) -> Path:
    """The HF hub cache layout: models--org--name/{refs/main, snapshots/<rev>/<file>}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    for name, state in files.items():
        save_file(state, str(snap / name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    return snap


def test_random():
    w = resolve_weights("random", seed=7)
    assert (w.kind, w.path, w.fingerprint) == ("random", None, "random(seed=7,init=v2)")


def test_local_file_sha256_matches_hashlib(tmp_path):
    f = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(10.0)}, str(f))
    w = resolve_weights(str(f))
    assert w.kind == "file" and w.path == f
    assert w.fingerprint == "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()


def test_local_dir_picks_first_expected_name(tmp_path):
    save_file({"a": torch.zeros(1)}, str(tmp_path / "open_clip_model.safetensors"))
    torch.save({"a": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    assert resolve_weights(str(tmp_path)).path == tmp_path / "open_clip_model.safetensors"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsMissingError, match="model.safetensors") as err:
        resolve_weights(str(empty))
    assert str(empty) in str(err.value)


def test_missing_local_path_is_an_error_not_a_hub_lookup(tmp_path):
    with pytest.raises(WeightsMissingError, match="does not exist"):
        resolve_weights(str(tmp_path / "nope.safetensors"))


def test_bin_loads_with_weights_only_and_refuses_pickles(tmp_path):
    state = {"w": torch.randn(3, 3), "b": torch.zeros(3)}
    torch.save(state, tmp_path / "pytorch_model.bin")
    loaded = load_state_dict(tmp_path / "pytorch_model.bin")
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    torch.save({"w": torch.zeros(1), "obj": Path("x")}, tmp_path / "evil.bin")  # arbitrary object
    with pytest.raises(WeightsError, match="evil.bin was refused: it holds a Python object"):
        load_state_dict(tmp_path / "evil.bin")


def test_hub_id_from_offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # HF_HOME/hub, read at call time
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = fake_hf_cache(cache, "org/name", {"model.safetensors": {"a": torch.ones(2)}})
    for spec in ("org/name", "hf-hub:org/name", "org/name@main", f"hf-hub:org/name@{REV}"):
        w = resolve_weights(spec)
        assert (w.kind, w.path, w.fingerprint) == ("hub", snap / "model.safetensors", f"org/name@{REV}")


def test_missing_hub_id_offline_names_id_and_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsMissingError) as err:
        resolve_weights("timm/resnet50.a1_in1k")
    msg = str(err.value)
    for part in ("timm/resnet50.a1_in1k", "hf download timm/resnet50.a1_in1k", str(tmp_path / "hub"),
                 "--weights", "never falls back to random"):
        assert part in msg


def test_online_download_path(tmp_path, monkeypatch):
    """Not cached and not offline: a download is tried (here faked), failing → WeightsMissingError."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    calls = []

    def fake_download(repo_id, *, revision=None, cache_dir=None, local_files_only=False, allow_patterns=None):
        calls.append(allow_patterns)
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        if repo_id == "org/down":
            raise ConnectionError("no network")
        snap = Path(cache_dir) / "snapshots" / REV
        snap.mkdir(parents=True, exist_ok=True)
        if "open_clip_model.safetensors" in allow_patterns:  # the repo only has this weight file
            save_file({"a": torch.ones(1)}, str(snap / "open_clip_model.safetensors"))
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    with pytest.raises(WeightsMissingError, match="download failed: ConnectionError"):
        resolve_weights("org/down")
    calls.clear()
    w = resolve_weights("org/up")
    assert w.fingerprint == f"org/up@{REV}" and w.path.name == "open_clip_model.safetensors"
    assert calls[1:] == [["model.safetensors", "config.json", "open_clip_config.json"],
                         ["open_clip_model.safetensors", "config.json", "open_clip_config.json"]]


class _CodePayload:
    """Unpickling this would run a shell command: the classic malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_a_code_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(1), "payload": _CodePayload(marker)}, tmp_path / "evil.bin")
    with pytest.raises(WeightsError, match=r"refused: it holds a Python object \(\w+\.system\)"):
        load_state_dict(tmp_path / "evil.bin")
    assert not marker.exists()


def test_no_code_path_passes_trust_remote_code():
    """`trust_remote_code` is never passed to a loader anywhere in the shipped packages."""
    root = Path(__file__).resolve().parents[2]
    hits = [p for pkg in ("harness", "backbones", "tasks") for p in (root / pkg).rglob("*.py")
            if "trust_remote_code=True" in p.read_text()]
    assert hits == []
