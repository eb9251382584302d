"""The `text-classifier` head (the Vermouth recipe), shared by FSC and SBIR, same budget for every backbone.

A backbone's trainable neck (Vermouth: U-head + expert adapters, fed the frozen dense levels) or, for
a backbone without one, a linear projection of its frozen global features, maps each image into the
text space; logits are cosine similarities to the template-averaged text embeddings of the class names
divided by a temperature (0.2 in the method); cross-entropy; AdamW. Only the neck / projection trains.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.numerics import seeded_init

Inputs = torch.Tensor | dict[str, torch.Tensor]
# A tensor, a dense dict, or a `harness.data.features.FeatureSet` (read mini-batch by mini-batch, never whole).
Source = Any


def take(inputs: Source, index: torch.Tensor) -> Inputs:
    """Rows of a feature tensor, of every map of a dense dict, or of a FeatureSet (read or computed now)."""
    if hasattr(inputs, "rows"):
        return inputs.rows(index)
    if isinstance(inputs, dict):
        return {k: v[index] for k, v in inputs.items()}
    return inputs[index]


def cast(inputs: Inputs, dtype: torch.dtype) -> Inputs:
    """A feature tensor, or every map of a dense dict, in `dtype` (frozen features are stored as float32)."""
    if isinstance(inputs, dict):
        return {k: v.to(dtype) for k, v in inputs.items()}
    return inputs.to(dtype)


def num_rows(inputs: Source) -> int:
    return len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)


def in_batches(inputs: Source, batch_size: int) -> Iterator[Inputs]:
    """Consecutive row batches: a FeatureSet streams them (computing misses through the input pipeline)."""
    if hasattr(inputs, "batches"):
        yield from inputs.batches(batch_size)
        return
    n = num_rows(inputs)
    for s in range(0, n, batch_size):
        yield take(inputs, torch.arange(s, min(s + batch_size, n)))


class CosineTextClassifier(nn.Module):
    """`embed(inputs)` → text space; logits = cos(embedding, class text embedding) / temperature.

    Everything runs in the dtype the module was cast to (float32, or float64 for `fp64` jobs): inputs are cast
    on the way in, and the class embeddings are normalised in that dtype, not before.
    """

    def __init__(self, embed: nn.Module, class_embeddings: torch.Tensor, temperature: float):
        super().__init__()
        self.embed = embed
        self.register_buffer("classes", class_embeddings.float())
        self.temperature = temperature

    def embedding(self, inputs: Inputs) -> torch.Tensor:
        """L2-normalised embeddings of `inputs` in the module's dtype."""
        return F.normalize(self.embed(cast(inputs, self.classes.dtype)), dim=-1)

    def forward(self, inputs: Inputs) -> torch.Tensor:
        return self.embedding(inputs) @ F.normalize(self.classes, dim=-1).T / self.temperature


def build_embedder(neck: nn.Module | None, first: Inputs, text_dim: int) -> nn.Module:
    """The neck (plus a linear map when its width is not the text width), or a linear projection; `first` is a
    batch of a row or two, to read the widths off."""
    if neck is None:
        return nn.Linear(first.shape[1], text_dim)
    with torch.no_grad():
        width = neck(first).shape[1]
    return neck if width == text_dim else nn.Sequential(neck, nn.Linear(width, text_dim))


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    temperature: float
    grad_clip: float
    seed: int
    dtype: torch.dtype = torch.float32  # float64 for `fp64` jobs (harness.numerics.head_dtype)


def train_text_classifier(inputs: Source, labels: torch.Tensor, class_embeddings: torch.Tensor,
                          neck: nn.Module | None, settings: TrainSettings) -> tuple[CosineTextClassifier, list[float]]:
    """Train with a seeded init and a seeded shuffle; returns the model and the mean loss per epoch."""
    first = take(inputs, torch.arange(min(2, num_rows(inputs))))  # read (or computed) outside the seeded init
    with seeded_init(settings.seed):
        model = CosineTextClassifier(build_embedder(neck, first, class_embeddings.shape[1]),
                                     class_embeddings, settings.temperature)
    model = model.to(settings.dtype)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr,
                            weight_decay=settings.weight_decay)
    gen = torch.Generator().manual_seed(settings.seed)
    n = num_rows(inputs)
    # Rows per forward pass: a whole mini-batch unless its features are too big to hold at once (a FeatureSet of
    # sd15 maps at 512 px: 11 rows); then its gradient is accumulated over micro-batches (same loss, same step).
    micro = inputs.rows_per_batch(settings.batch_size) if hasattr(inputs, "rows_per_batch") else settings.batch_size
    history = []
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, settings.batch_size):
            idx = order[start:start + settings.batch_size]
            opt.zero_grad(set_to_none=True)
            if len(idx) <= micro:
                loss = F.cross_entropy(model(take(inputs, idx)), labels[idx])
                loss.backward()
                batch_loss = loss.item()
            else:
                batch_loss = 0.0
                for sub in idx.split(micro):
                    part = F.cross_entropy(model(take(inputs, sub)), labels[sub], reduction="sum") / len(idx)
                    part.backward()
                    batch_loss += part.item()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            opt.step()
            total += batch_loss * len(idx)
        history.append(total / n)
    return model.eval(), history


@torch.no_grad()
def predict(model: CosineTextClassifier, inputs: Source, batch_size: int = 256) -> torch.Tensor:
    """Class predictions, batch by batch: only the predictions are kept."""
    return torch.cat([model(batch).argmax(1) for batch in in_batches(inputs, batch_size)])
