"""A plain diffusers path to Vermouth's features, written here without the harness's extraction code.

The reference the harness is measured against (issue 8): one image at a time, the BLIP caption generated
again for every image, the SD text encoder run per image, the VAE posterior mean, DDPM noise at t, and a
*full* UNet forward with forward hooks on the mid block and the up blocks. The weights are the tiny
variant's, built from the same component configs and seed (`build_sd` / `build_blip`: only the seeded
construction is shared, not the feature path). Features: the levels L0..L3 and their concatenated GAP.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from backbones.vermouth.components import build_blip, build_sd

_LEVEL_BLOCK = {"L0": "mid", "L1": "up0", "L2": "up1"}


def _noise_seed(image: torch.Tensor, seed: int) -> int:
    """Per-image ε seed from the image's fp32 pixels and the config seed (the method's reproducible noise)."""
    data = image.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(repr(tuple(data.shape)).encode())
    h.update(data.numpy().tobytes())
    return int.from_bytes(hashlib.sha256(f"{h.hexdigest()}:{seed}".encode()).digest()[:8], "big") >> 1


def _strip_prefix(text: str, prefix: str) -> str:
    text, head = " ".join(text.split()), " ".join(prefix.split())
    return text[len(head):].strip() if head and text.lower().startswith(head.lower()) else text


class ReferenceVermouth:
    def __init__(self, arch: str = "tiny", seed: int = 0, t: int = 200,
                 stages: Sequence[str] = ("L0", "L1", "L2", "L3"), prompt: str = "blip",
                 prefix: str = "a picture of ", max_length: int = 10, min_length: int = 5):
        parts = build_sd(arch, seed)
        self.unet = parts.unet.eval().requires_grad_(False)
        self.vae = parts.vae.eval().requires_grad_(False)
        self.text_encoder = parts.text_encoder.eval().requires_grad_(False)
        self.tokenizer, self.scheduler = parts.tokenizer, parts.scheduler
        self.blip, self.processor = (None, None)
        if prompt == "blip":
            blip, self.processor = build_blip(arch, seed)
            self.blip = blip.eval().requires_grad_(False)
        self.seed, self.t, self.stages, self.prompt = seed, t, tuple(stages), prompt
        self.prefix, self.max_length, self.min_length = prefix, max_length, min_length
        self.taps: dict[str, torch.Tensor] = {}
        self.unet.mid_block.register_forward_hook(self._hook("mid"))
        for i, block in enumerate(self.unet.up_blocks):
            block.register_forward_hook(self._hook(f"up{i}"))

    def _hook(self, name: str):
        def record(module, args, output):
            self.taps[name] = output

        return record

    def caption(self, x: torch.Tensor) -> str:
        """Greedy BLIP caption of one image x [1, 3, H, W] in [-1, 1], the prefix stripped."""
        image = ((x[0] + 1) / 2).clamp(0, 1)
        inputs = self.processor(images=[image], text=[self.prefix], do_rescale=False, return_tensors="pt")
        out = self.blip.generate(**inputs, max_length=self.max_length, min_length=self.min_length, num_beams=1,
                                 do_sample=False)
        return _strip_prefix(self.processor.batch_decode(out, skip_special_tokens=True)[0], self.prefix)

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One image x [1, 3, H, W] in [-1, 1] → (global [1, D], {level: [1, C, h, w]})."""
        text = self.caption(x) if self.prompt == "blip" else ""
        length = min(int(self.tokenizer.model_max_length), int(self.text_encoder.config.max_position_embeddings))
        ids = self.tokenizer([text], padding="max_length", max_length=length, truncation=True,
                             return_tensors="pt").input_ids
        context = self.text_encoder(ids).last_hidden_state
        z0 = self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor
        eps = torch.randn(tuple(z0.shape[1:]), generator=torch.Generator().manual_seed(_noise_seed(x[0], self.seed)))
        timesteps = torch.full((1,), self.t, dtype=torch.long)
        x_t = self.scheduler.add_noise(z0, eps[None], timesteps)
        self.taps.clear()
        self.unet(x_t, timesteps, encoder_hidden_states=context, return_dict=False)  # the full UNet
        levels = {}
        for level in self.stages:
            if level == "L3":
                up2, up3 = self.taps["up2"], self.taps["up3"]
                if up2.shape[-2:] != up3.shape[-2:]:
                    up2 = F.interpolate(up2, size=up3.shape[-2:], mode="bilinear", align_corners=False)
                levels[level] = torch.cat([up2, up3], dim=1)
            else:
                levels[level] = self.taps[_LEVEL_BLOCK[level]]
        self.taps.clear()
        glob = torch.cat([v.mean(dim=(2, 3)) for v in levels.values()], dim=1)
        return glob, levels

    def extract(self, images: torch.Tensor) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """Batch size 1, every image from scratch (caption included)."""
        return [self.features(images[i:i + 1]) for i in range(images.shape[0])]
