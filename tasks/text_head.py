"""The `text-classifier` head (the Vermouth recipe), shared by FSC and SBIR, same budget for every backbone.

A backbone's trainable neck (Vermouth: U-head + expert adapters, fed the frozen dense levels) or, for
a backbone without one, a linear projection of its frozen global features, maps each image into the
text space; logits are cosine similarities to the template-averaged text embeddings of the class names
divided by a temperature (0.2 in the method); cross-entropy; AdamW. Only the neck / projection trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.numerics import seeded_init

Inputs = torch.Tensor | dict[str, torch.Tensor]


def take(inputs: Inputs, index: torch.Tensor) -> Inputs:
    """Rows of a feature tensor, or of every map of a dense dict."""
    if isinstance(inputs, dict):
        return {k: v[index] for k, v in inputs.items()}
    return inputs[index]


def cast(inputs: Inputs, dtype: torch.dtype) -> Inputs:
    """A feature tensor, or every map of a dense dict, in `dtype` (frozen features are stored as float32)."""
    if isinstance(inputs, dict):
        return {k: v.to(dtype) for k, v in inputs.items()}
    return inputs.to(dtype)


def num_rows(inputs: Inputs) -> int:
    return len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)


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


def build_embedder(neck: nn.Module | None, sample: Inputs, text_dim: int) -> nn.Module:
    """The neck (plus a linear map when its width is not the text width), or a linear projection."""
    if neck is None:
        return nn.Linear(sample.shape[1], text_dim)
    with torch.no_grad():
        width = neck(take(sample, torch.arange(min(2, num_rows(sample))))).shape[1]
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


def train_text_classifier(inputs: Inputs, labels: torch.Tensor, class_embeddings: torch.Tensor,
                          neck: nn.Module | None, settings: TrainSettings) -> tuple[CosineTextClassifier, list[float]]:
    """Train with a seeded init and a seeded shuffle; returns the model and the mean loss per epoch."""
    with seeded_init(settings.seed):
        model = CosineTextClassifier(build_embedder(neck, inputs, class_embeddings.shape[1]),
                                     class_embeddings, settings.temperature)
    model = model.to(settings.dtype)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr,
                            weight_decay=settings.weight_decay)
    gen = torch.Generator().manual_seed(settings.seed)
    n = num_rows(inputs)
    history = []
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, settings.batch_size):
            idx = order[start:start + settings.batch_size]
            loss = F.cross_entropy(model(take(inputs, idx)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / n)
    return model.eval(), history


@torch.no_grad()
def predict(model: CosineTextClassifier, inputs: Inputs, batch_size: int = 256) -> torch.Tensor:
    n = num_rows(inputs)
    return torch.cat([model(take(inputs, torch.arange(s, min(s + batch_size, n)))).argmax(1)
                      for s in range(0, n, batch_size)])
