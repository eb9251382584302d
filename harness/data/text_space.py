"""The shared text space: class-name embeddings that FSC, SBIR and OVSS heads classify against.

One component for every backbone (the method uses the CLIP ViT-L/14 text tower; the `mini` suite its
tiny random twin), named by a spec `<backbone>:<variant>` such as `clip:vit-l-14` or `clip:tiny`.
Embeddings are template-averaged (CLIP's zero-shot recipe) and cached on disk by the text tower's
fingerprint and the exact class names and templates.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence

from harness.catalog import BACKBONES
from harness.config import BackboneConfig
from harness.data.cache import write_cache_file
from harness.errors import ConfigError
from harness.io import canonical_json, sha256_text
from harness.paths import cache_root


def parse_text_space(spec: str) -> tuple[str, str]:
    """`<backbone>:<variant>` (`clip:vit-l-14`) → (backbone, variant); a family member's text tower is named
    whole, its one variant optional: `open_clip:ViT-B-32/openai` or `open_clip:ViT-B-32/openai:default`."""
    prefix, sep, rest = spec.partition(":")
    if sep and rest and prefix in {f.name.rstrip(":") for f in BACKBONES.families()}:
        name, sep2, variant = spec.rpartition(":")
        return (name, variant) if sep2 and ":" in name else (spec, "default")
    if not sep or not prefix or not rest:
        raise ConfigError(f"text_space must look like '<backbone>:<variant>' (e.g. clip:vit-l-14), got '{spec}'")
    return prefix, rest


class TextSpace:
    def __init__(self, spec: str, device: str = "cpu", dtype: str = "fp32"):
        name, variant = parse_text_space(spec)
        self.spec = spec
        self.encoder = BACKBONES.get(name)(BackboneConfig(name=name, variant=variant, device=device, dtype=dtype))
        if not hasattr(self.encoder, "prompt_embeddings"):
            raise ConfigError(f"text_space '{spec}': backbone '{name}' has no text tower")
        self.fingerprint = sha256_text(canonical_json(self.encoder.fingerprint()))
        self.hits = self.misses = 0

    def class_embeddings(self, classnames: Sequence[str], templates: Sequence[str]):  # -> torch.Tensor [C, D]
        """Template-averaged, L2-normalised embeddings of `classnames` (underscores read as spaces)."""
        import torch

        names = [c.replace("_", " ") for c in classnames]
        key = sha256_text(canonical_json({"classes": names, "templates": list(templates)}))
        path = cache_root() / "text" / self.fingerprint[:24] / f"{key[:32]}.pt"
        if path.is_file():
            try:
                emb = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(emb, torch.Tensor) and emb.shape[0] == len(names):
                    self.hits += 1
                    return emb
            except Exception:  # a corrupt entry is recomputed, never used
                pass
        self.misses += 1
        emb = self.encoder.prompt_embeddings(names, list(templates)).float().cpu()
        buf = io.BytesIO()
        torch.save(emb, buf)
        write_cache_file(path, buf.getvalue())
        return emb


@functools.cache
def text_space(spec: str, device: str = "cpu", dtype: str = "fp32") -> TextSpace:
    """One text tower per process, spec and precision (`fp64` for `fp64` jobs: `harness.numerics.text_precision`)."""
    return TextSpace(spec, device, dtype)
