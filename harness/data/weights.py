"""Where a backbone's weights come from, and what identifies them.

A weights spec is "random", a local file, a local directory, or a Hugging Face hub id. Resolving it
gives the weight file plus a fingerprint (seed, file hash or hub commit) that job and cache keys use,
so two runs share results only when they truly used the same weights. Missing pretrained weights are
an error: the harness never falls back to random weights. Torch-free at import (planning stays cheap);
huggingface_hub and torch are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.errors import WeightsError, WeightsMissingError, warn

DEFAULT_FILENAMES: tuple[str, ...] = (
    "model.safetensors",
    "open_clip_model.safetensors",
    "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
)
_CONFIG_PATTERNS: tuple[str, ...] = ("config.json", "open_clip_config.json")
_PATH_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class ResolvedWeights:
    """A resolved weights spec: what kind, which file, and a fingerprint that names it exactly."""

    kind: Literal["random", "file", "hub"]
    spec: str
    path: Path | None
    fingerprint: str


def hf_hub_cache() -> Path:
    """The HF hub cache dir, read from the environment at call time (huggingface_hub reads it at import)."""
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        raw = env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]
    else:
        xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        raw = os.path.join(env.get("HF_HOME") or os.path.join(xdg, "huggingface"), "hub")
    return Path(os.path.expandvars(os.path.expanduser(raw)))


def hf_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) at call time, or huggingface_hub's own flag if set."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    if value.upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered across runs by (path, size, mtime) (`harness.data.hashindex`)."""
    from harness.data.hashindex import file_sha256_cached

    return file_sha256_cached(path)


def _first_present(folder: Path, filenames: Sequence[str]) -> Path | None:
    return next((folder / n for n in filenames if (folder / n).is_file()), None)


# Hub ids that moved: the old id still resolves, to its maintained copy at the pinned revision, with a one-line
# note (once per process). A revision given with the old id is kept: the copy carries the same commits.
HUB_ALIASES: dict[str, str] = {
    # Removed from the hub in 2024; the SD 1.5 weights live on, unchanged, in the community-maintained copy.
    "runwayml/stable-diffusion-v1-5":
        "stable-diffusion-v1-5/stable-diffusion-v1-5@451f4fe16113bff5a5d2269ed5ad43b0592e9a14",
}
_ALIASES_NOTED: set[str] = set()


def _parse_hub_id(spec: str) -> tuple[str, str | None]:
    """'hf-hub:org/name@rev' -> ('org/name', 'rev'); prefix and revision are optional; a moved id (HUB_ALIASES)
    becomes its maintained copy."""
    repo = spec.removeprefix("hf-hub:")
    repo, sep, revision = repo.partition("@")
    rev = revision if sep and revision else None
    if repo in HUB_ALIASES:
        old = repo
        repo, _, pinned = HUB_ALIASES[old].partition("@")
        rev = rev or pinned or None
        if old not in _ALIASES_NOTED:
            _ALIASES_NOTED.add(old)
            warn(f"weights id '{old}' was removed from the Hugging Face hub; using its maintained copy "
                 f"'{repo}{f'@{rev}' if rev else ''}' instead (give that id to silence this note)")
    return repo, rev


def _missing(repo_id: str, revision: str | None, cache: Path, why: str) -> WeightsMissingError:
    rev = f" --revision {revision}" if revision else ""
    fetch = f"`hf download {repo_id}{rev}` where there is network, then copy that HF cache here; or --weights PATH"
    return WeightsMissingError(
        f"weights '{repo_id}'{f'@{revision}' if revision else ''} are not available locally ({why}); "
        f"looked in the Hugging Face cache {cache} (HF_HUB_CACHE / HF_HOME). To fetch them, run "
        f"`hf download {repo_id}{rev}` on a machine with network access and copy its HF cache "
        f"(~/.cache/huggingface/hub) to {cache}, or pass a local file or directory with --weights. "
        f"The harness never falls back to random weights.",
        weights=f"{repo_id}{f'@{revision}' if revision else ''}",
        looked_in=f"{cache} (HF_HUB_CACHE / HF_HOME)", fetch=fetch,
    )


def _resolve_hub(spec: str, filenames: Sequence[str]) -> ResolvedWeights:
    from huggingface_hub import snapshot_download

    repo_id, revision = _parse_hub_id(spec)
    cache = hf_hub_cache()
    snapshot: Path | None = None
    why = "not in the cache"
    try:
        snapshot = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, HFValidationError, ...
        why = f"not in the cache: {type(exc).__name__}"
    weights = _first_present(snapshot, filenames) if snapshot else None
    if weights is None and snapshot is not None:
        why = f"cached snapshot {snapshot} has none of {', '.join(filenames)}"
    if weights is None and not hf_offline():
        # One weight file only (timm repos carry both .safetensors and .bin): try the names in order.
        for name in filenames:
            try:
                snapshot = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache,
                                                  allow_patterns=[name, *_CONFIG_PATTERNS]))
            except Exception as exc:  # no network, unknown repo, gated repo, ...
                why = f"download failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                break
            if (weights := _first_present(snapshot, [name])) is not None:
                break
        else:
            why = f"the repo has none of {', '.join(filenames)}"
    elif weights is None:
        why += "; HF_HUB_OFFLINE is set, so no download was tried"
    if weights is None or snapshot is None:
        raise _missing(repo_id, revision, cache, why)
    weights_format(weights)
    return ResolvedWeights("hub", spec, weights, f"{repo_id}@{snapshot.name}")


# A random init is named by its seed and by how it draws: v2 samples in float64 (harness.numerics.seeded_init),
# so a cache or finished job of a v1 (float32, CPU-dependent) init is never taken for it.
RANDOM_INIT_VERSION = 2


def random_fingerprint(seed: int) -> str:
    """The weights id of a seeded random init, e.g. `random(seed=0,init=v2)`."""
    return f"random(seed={seed},init=v{RANDOM_INIT_VERSION})"


def resolve_weights(spec: str, *, seed: int = 0,
                    filenames: Sequence[str] = DEFAULT_FILENAMES) -> ResolvedWeights:
    """Resolve a weights spec to a file and fingerprint; raise WeightsMissingError if it is not present."""
    if spec == "random":
        return ResolvedWeights("random", spec, None, random_fingerprint(seed))
    local = Path(spec).expanduser()
    if local.is_file():
        weights_format(local)
        return ResolvedWeights("file", spec, local, f"sha256:{file_sha256(local)}")
    if local.is_dir():
        found = _first_present(local, filenames)
        if found is None:
            raise WeightsMissingError(f"weights directory {local} has none of the expected files: "
                                      f"{', '.join(filenames)}")
        weights_format(found)
        return ResolvedWeights("file", spec, found, f"sha256:{file_sha256(found)}")
    if spec.startswith(("/", "./", "../", "~")) or spec.endswith(_PATH_SUFFIXES):
        raise WeightsMissingError(f"weights path {local} does not exist (give an existing file or directory, "
                                  f"a Hugging Face hub id, or 'random')")
    return _resolve_hub(spec, filenames)


_MAX_SAFETENSORS_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save since 1.6
_PICKLE_PROTO = b"\x80"  # the legacy torch.save format starts with a pickle (protocol 2+)


def _safetensors_problem(path: Path, size: int, head: bytes) -> str | None:
    """None when the file starts like a safetensors file (u64 header length, then that much JSON object)."""
    if size < 8:
        return f"{size} bytes, shorter than a safetensors header"
    n = int.from_bytes(head[:8], "little")
    if n > min(size - 8, _MAX_SAFETENSORS_HEADER):
        return f"its header claims {n} bytes but the file has {size}"
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "its header is not JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    return _safetensors_layout_problem(path)


def _safetensors_layout_problem(path: Path) -> str | None:
    """None when safetensors itself accepts the header: known dtypes, shapes that match their byte ranges, and
    ranges that cover the file exactly (a truncated download fails here). Only the header is read (the file is
    memory-mapped, no tensor is loaded), and without torch: planning stays cheap."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            f.metadata()
    except Exception as exc:  # SafetensorError: incomplete metadata, invalid offsets, unknown dtype, ...
        text = " ".join(str(exc).split()).removeprefix("Error while deserializing header: ")
        return text[:200] or type(exc).__name__
    return None


def weights_format(path: Path) -> Literal["safetensors", "torch"]:
    """What a weights file holds, from its first bytes (not its name): safetensors, or a torch checkpoint
    (zip or legacy pickle). Anything else (a text file, an HTML error page, a truncated download) is a
    WeightsError naming the file, found when the weights are resolved, before any model is built."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
        problem = _safetensors_problem(path, size, head)
    except OSError as exc:
        raise WeightsError(f"weights file {path} cannot be read: {exc.strerror or exc}") from None
    if problem is None:
        return "safetensors"
    if path.suffix == ".safetensors":
        raise WeightsError(f"weights file {path} is not a valid safetensors file ({problem}); re-download it "
                           "or give another file with --weights")
    if head.startswith(_ZIP_MAGIC):
        _check_torch_zip(path)
        return "torch"
    if head.startswith(_PICKLE_PROTO):
        return "torch"
    raise WeightsError(f"weights file {path} is neither a safetensors file nor a torch checkpoint (it starts "
                       f"with {head[:8]!r}); give a .safetensors file or a state dict saved with torch.save")


def _check_torch_zip(path: Path) -> None:
    """A zip checkpoint (torch.save since 1.6) must have a readable zip directory holding a `data.pkl`: a
    truncated download fails here, when the weights are resolved, not when the backbone is built. Only the
    directory at the end of the file is read."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise WeightsError(f"weights file {path} is a damaged torch checkpoint (its zip directory cannot be read: "
                           f"{' '.join(str(exc).split())[:120] or type(exc).__name__}; a truncated download?); "
                           "re-download it or give another file with --weights") from None
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        raise WeightsError(f"weights file {path} is a zip file but not a torch checkpoint (no data.pkl among its "
                           f"{len(names)} member(s)); give a .safetensors file or a state dict saved with torch.save")


def _why_refused(exc: Exception) -> str:
    """The informative line of torch's multi-paragraph weights_only refusal (the object it would not load)."""
    text = str(exc)
    if found := re.search(r"GLOBAL ([\w.]+)", text):
        return f"it holds a Python object ({found.group(1)}), not only tensors"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(
        ("Weights only load failed", "Please file an issue", "Check the documentation"))]
    return lines[0][:200] if lines else type(exc).__name__


def load_state_dict(path: Path) -> dict[str, Any]:
    """Tensors only: safetensors, or torch.load(weights_only=True); never arbitrary pickles or remote code.

    The format comes from the file's bytes (`weights_format`); a file that cannot be read as tensors, or a pickle
    torch refuses, is a one-line WeightsError naming the file."""
    path = Path(path)
    fmt = weights_format(path)
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        import pickle

        import torch

        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise WeightsError(f"weights file {path} was refused: {_why_refused(exc)}; the harness loads tensors "
                               "only (never arbitrary pickles): convert it to .safetensors or a plain state "
                               "dict") from None
    except WeightsError:
        raise
    except Exception as exc:  # truncated zip, corrupt pickle, bad safetensors payload, ...
        first = " ".join(str(exc).split())[:200] or "no detail"
        raise WeightsError(f"weights file {path} cannot be read as tensors ({type(exc).__name__}: {first}); "
                           "re-download it or give another file with --weights") from None


def _example(keys: Sequence[str]) -> str:
    return f" (e.g. '{keys[0]}')" if keys else ""


def fit_state_dict(model: Any, state: dict[str, Any], path: Path, what: str = "this architecture") -> None:
    """Load `state` into `model` strictly; a mismatch is ONE line: how many keys are missing, unexpected and of
    another shape, with the first of each (torch's own message lists every key, often 80 lines)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and hasattr(state[k], "shape")
              and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing{_example(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected{_example(unexpected)}")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} shape mismatch{'es' if len(shapes) > 1 else ''} (e.g. '{k}': file "
                         f"{list(state[k].shape)}, model {list(own[k].shape)})")
        raise WeightsError(f"weights {path} do not fit {what}: {', '.join(parts)} of {len(own)} keys; give "
                           "weights of this backbone and variant (--variant, --weights)")
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:  # a non-tensor value under a parameter's name, ...
        first = " ".join(str(exc).split())[:200]
        raise WeightsError(f"weights {path} do not fit {what}: {type(exc).__name__}: {first}") from None


def _folder_fingerprint(folder: Path, include: Sequence[str]) -> str:
    """sha256 over (relative path, file sha256) of the files under `folder` that match `include`."""
    import fnmatch
    import hashlib

    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and any(fnmatch.fnmatch(p.relative_to(folder).as_posix(), pat) for pat in include))
    for path in files:
        h.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return h.hexdigest()


def resolve_model_folder(spec: str, *, seed: int = 0, required: Sequence[str] = ("model_index.json",),
                         include: Sequence[str] = ("*",),
                         allow_patterns: Sequence[str] | None = None) -> ResolvedWeights:
    """Resolve a spec naming a whole model *folder* (diffusers layout, a transformers model dir, ...).

    A multi-component model (a Stable Diffusion pipeline: unet/, vae/, text_encoder/, ...) is loaded from a
    folder rather than from one file, so `path` is the folder: a local directory, or the hub id's cached
    snapshot (offline first, like `resolve_weights`). `required` are relative paths that must exist (a
    half-downloaded snapshot is an error that names the missing file); `include` are the glob patterns of
    the files the model is loaded from, hashed for a local folder's fingerprint (a hub snapshot is named by
    its commit instead); `allow_patterns` limit a download (default: `include`).
    """
    if spec == "random":
        return ResolvedWeights("random", spec, None, random_fingerprint(seed))

    def check(folder: Path) -> str | None:
        missing = [r for r in required if not (folder / r).exists()]
        return f"{folder} lacks {', '.join(missing)}" if missing else None

    local = Path(spec).expanduser()
    if local.is_dir():
        if (why := check(local)) is not None:
            raise WeightsMissingError(f"model folder {why} (expected a complete model folder, a Hugging Face "
                                      f"hub id, or 'random')")
        return ResolvedWeights("file", spec, local, f"sha256:{_folder_fingerprint(local, include)}")
    if local.exists() or spec.startswith(("/", "./", "../", "~")):
        raise WeightsMissingError(f"model folder {local} does not exist or is not a directory (give a model "
                                  f"folder, a Hugging Face hub id, or 'random')")
    from huggingface_hub import snapshot_download

    repo_id, revision = _parse_hub_id(spec)
    cache = hf_hub_cache()
    snapshot: Path | None = None
    why: str | None = "not in the cache"
    try:
        snapshot = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
        why = check(snapshot)
    except Exception as exc:  # LocalEntryNotFoundError, HFValidationError, ...
        why = f"not in the cache: {type(exc).__name__}"
    if why is not None and not hf_offline():
        try:
            snapshot = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache,
                                              allow_patterns=list(allow_patterns or include)))
            why = check(snapshot)
        except Exception as exc:  # no network, unknown repo, gated repo, ...
            why = f"download failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    elif why is not None:
        why += "; HF_HUB_OFFLINE is set, so no download was tried"
    if why is not None or snapshot is None:
        raise _missing(repo_id, revision, cache, why or "not in the cache")
    return ResolvedWeights("hub", spec, snapshot, f"{repo_id}@{snapshot.name}")
