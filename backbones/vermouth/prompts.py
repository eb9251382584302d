"""UNet conditioning: an empty prompt, a fixed prompt, or a BLIP caption, encoded by the SD text encoder.

Class names never enter here: the official FSC/OVSS code conditioned test images on their ground-truth
class (§9 bugs 1-2 of the method report); a prompt here depends on the image alone. BLIP runs as the
official SBIR code meant it (greedy, prefix "a picture of ", max_length 10 counting the prefix, prefix
stripped from the caption) but in eval mode (the official captioner kept dropout on, §9 bug 6). Captions
are cached on disk by captioner fingerprint and image identity, so each image is captioned once ever.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from harness.io import atomic_write_json, canonical_json, sha256_text
from harness.paths import cache_root

if TYPE_CHECKING:  # pragma: no cover
    from transformers import BlipForConditionalGeneration, BlipProcessor, CLIPTextModel, CLIPTokenizer


class TextEncoder:
    """SD's tokenizer + text encoder: texts → `last_hidden_state` [B, T, D], T = the tokenizer's max length."""

    def __init__(self, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, device: torch.device):
        self.tokenizer, self.model, self.device = tokenizer, text_encoder, device
        # A tokenizer folder without tokenizer_config.json reports a huge model_max_length: cap at the model's.
        self.length = min(int(tokenizer.model_max_length), int(text_encoder.config.max_position_embeddings))
        self._memo: dict[str, torch.Tensor] = {}

    def tokens(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts), padding="max_length", max_length=self.length, truncation=True,
                              return_tensors="pt").input_ids

    def encode(self, texts: Sequence[str], memo: bool = False) -> torch.Tensor:
        """Each distinct text of the batch is encoded once; `memo` keeps it for later batches (a constant
        prompt is then one encode in total; per-image captions are not kept, they would only grow)."""
        distinct = list(dict.fromkeys(texts))
        todo = [t for t in distinct if t not in self._memo]
        fresh = dict(zip(todo, self.model(self.tokens(todo).to(self.device)).last_hidden_state, strict=True)) \
            if todo else {}
        if memo:
            self._memo.update(fresh)
        return torch.stack([fresh[t] if t in fresh else self._memo[t] for t in texts])

    def pooled(self, texts: Sequence[str]) -> torch.Tensor:
        """The EOT hidden state after the final norm (CLIP's unprojected pooled output), [N, D]."""
        return self.model(self.tokens(texts).to(self.device)).pooler_output


class CaptionCache:
    """`<root>/<captioner fingerprint>/<image id>.json`, written atomically; unreadable entries are misses."""

    def __init__(self, root: Path, fingerprint: str):
        self.folder = Path(root) / fingerprint

    def get(self, identity: str) -> str | None:
        path = self.folder / f"{identity}.json"
        try:
            caption = json.loads(path.read_text())["caption"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return caption if isinstance(caption, str) else None

    def put(self, identity: str, caption: str, meta: dict[str, Any]) -> None:
        atomic_write_json(self.folder / f"{identity}.json", {"caption": caption, "image_id": identity, **meta})


class BlipCaptioner:
    """Greedy BLIP captions with the method's prefix; the model is built only when a caption is missing.

    `load` returns (model, processor); `weights_fingerprint` names the weights without loading them.
    `hits`/`misses` count cache lookups, so "captioned once across runs" is checkable.
    """

    def __init__(self, load: Any, weights_fingerprint: str, device: torch.device, *, prefix: str = "a picture of ",
                 max_length: int = 10, min_length: int = 5, cache_dir: Path | None = None):
        self._load = load
        self.device = device
        self.settings = {"weights": weights_fingerprint, "prefix": prefix, "max_length": max_length,
                         "min_length": min_length, "decoding": "greedy", "version": 1}
        self.fingerprint = sha256_text(canonical_json(self.settings))[:24]
        self.cache = CaptionCache(cache_dir or cache_root() / "captions", self.fingerprint)
        self.hits = self.misses = 0
        self._model: BlipForConditionalGeneration | None = None
        self._processor: BlipProcessor | None = None

    def captions(self, batch: torch.Tensor, identities: Sequence[str]) -> list[str]:
        """Captions for a batch in [-1, 1] (the images as the backbone sees them)."""
        found = [self.cache.get(i) for i in identities]
        missing = [k for k, c in enumerate(found) if c is None]
        self.hits += len(found) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = self._generate(batch[missing])
            for k, (raw, caption) in zip(missing, fresh, strict=True):
                self.cache.put(identities[k], caption, {"raw": raw, "captioner": self.settings})
                found[k] = caption
        return [c for c in found if c is not None]

    def load(self) -> None:
        """Build or load BLIP now (it is otherwise loaded at the first cache miss)."""
        if self._model is None:
            model, processor = self._load()
            self._model = model.eval().requires_grad_(False).to(self.device)
            self._processor = processor

    def _generate(self, batch: torch.Tensor) -> list[tuple[str, str]]:
        self.load()
        assert self._model is not None and self._processor is not None
        prefix = self.settings["prefix"]
        images = [im for im in ((batch.detach().float().cpu() + 1) / 2).clamp(0, 1)]
        inputs = self._processor(images=images, text=[prefix] * len(images), do_rescale=False, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        out = self._model.generate(**inputs, max_length=self.settings["max_length"],
                                   min_length=self.settings["min_length"], num_beams=1, do_sample=False)
        raws = self._processor.batch_decode(out, skip_special_tokens=True)
        return [(raw, strip_prefix(raw, prefix)) for raw in raws]


def strip_prefix(text: str, prefix: str) -> str:
    """BLIP returns the prefix with the caption; the UNet gets the caption alone (as the official code does)."""
    text, head = " ".join(text.split()), " ".join(prefix.split())
    if head and text.lower().startswith(head.lower()):
        return text[len(head):].strip()
    return text


class PromptSource:
    """`empty` | `fixed:<text>` | `blip`: the prompts and the UNet context for a batch."""

    def __init__(self, spec: str, encoder: TextEncoder, captioner: BlipCaptioner | None = None):
        self.kind, _, fixed = spec.partition(":")
        if self.kind == "blip" and captioner is None:
            raise ValueError("prompt 'blip' needs a captioner")
        self.text = "" if self.kind == "empty" else fixed.strip()
        self.encoder, self.captioner = encoder, captioner

    def prompts(self, batch: torch.Tensor, identities: Sequence[str]) -> list[str]:
        if self.kind == "blip":
            assert self.captioner is not None
            return self.captioner.captions(batch, identities)
        return [self.text] * batch.shape[0]

    def context(self, batch: torch.Tensor, identities: Sequence[str]) -> torch.Tensor:
        return self.encoder.encode(self.prompts(batch, identities), memo=self.kind != "blip")
