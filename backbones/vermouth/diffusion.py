"""Diffusion features: VAE latent, seeded noise at timestep t, one conditioned UNet pass, hooked levels.

The method's four levels (§2.5, §11.3), low → high resolution:
  L0 = mid_block (latent/8), L1 = up_blocks[0] (latent/4), L2 = up_blocks[1] (latent/2),
  L3 = up_blocks[2] ⊕ up_blocks[3] (latent/1, channel concat).
One UNet pass with the prompt's context: the official code's unconditional CFG pass never reaches the
features, so it is skipped. Noise ε is drawn per image from a seed derived from the image's content and the
config seed, so an image gets the same ε whatever batch it is in (and nothing is drawn inside a
checkpointed region). With `early_exit`, the UNet stops after the last block the selected stages need.
Optional cross-attention maps (§2.6) come from a recording processor on the up blocks' `attn2`: head-mean
softmax over all context tokens, averaged per block and concatenated to the level of that resolution.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from backbones.vermouth.cards import LEVELS
from harness.errors import ConfigError
from harness.numerics import portable_randn

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

# The block whose output closes each level, and the up block whose cross-attention maps join it.
_LEVEL_BLOCK = {"L0": "mid", "L1": "up0", "L2": "up1", "L3": "up3"}
_LEVEL_MAPS = {"L1": 1, "L2": 2, "L3": 3}
_ORDER = ("mid", "up0", "up1", "up2", "up3")


def image_id(image: torch.Tensor) -> str:
    """The identity of one preprocessed image [C, H, W]: sha256 of its fp32 pixel bytes and its shape."""
    data = image.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(repr(tuple(data.shape)).encode())
    h.update(data.numpy().tobytes())
    return h.hexdigest()


def noise_seed(identity: str, seed: int) -> int:
    """A 63-bit generator seed from an image identity and the config seed."""
    return int.from_bytes(hashlib.sha256(f"{identity}:{seed}".encode()).digest()[:8], "big") >> 1


def image_noise(identities: Sequence[str], seed: int, shape: Sequence[int]) -> torch.Tensor:
    """ε for each image, [B, *shape], fp32 on the CPU (the same numbers on every device)."""
    return torch.stack([portable_randn(tuple(shape), torch.Generator().manual_seed(noise_seed(i, seed)))
                        for i in identities])


def level_channels(unet_config: Any, cross_tokens: int = 0, cross_levels: Sequence[str] = ()) -> dict[str, int]:
    """Channels of L0..L3 from a UNet config (+ `cross_tokens` map channels on `cross_levels`)."""
    boc = list(unet_config.block_out_channels)
    rev = boc[::-1]
    channels = {"L0": boc[-1], "L1": rev[0], "L2": rev[1], "L3": rev[2] + rev[3]}
    for level in cross_levels:
        channels[level] += cross_tokens
    return channels


class _StopUNet(Exception):
    """Raised by the hook of the last needed block: the rest of the UNet would be wasted compute."""


class _MapRecorder:
    """An attention processor that records the head-mean cross-attention probabilities, then delegates.

    The output comes from the layer's own processor (SDPA), so features are unchanged by recording.
    """

    def __init__(self, inner: Any, sink: list[torch.Tensor]):
        self.inner = inner
        self.sink = sink

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs: Any):
        if encoder_hidden_states is not None and hidden_states.ndim == 3:
            context = encoder_hidden_states
            if attn.norm_cross:
                context = attn.norm_encoder_hidden_states(context)
            query = attn.head_to_batch_dim(attn.to_q(hidden_states))
            key = attn.head_to_batch_dim(attn.to_k(context))
            probs = attn.get_attention_scores(query, key, None)  # [B*heads, N, T]
            batch = hidden_states.shape[0]
            self.sink.append(probs.view(batch, attn.heads, *probs.shape[1:]).mean(dim=1))
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


class DiffusionFeatures:
    """The frozen SD feature path: `levels(x, context, identities)` → {"L0".."L3": [B, C, h, w]}."""

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: DDPMScheduler, *, t: int,
                 noise: str = "ddpm", stages: Sequence[str] = LEVELS, seed: int = 0,
                 cross_attention: bool = False, cross_attention_l3: bool = False, early_exit: bool = True):
        if len(unet.up_blocks) != 4 or getattr(unet, "mid_block", None) is None:
            raise ConfigError(f"the UNet must have a mid block and 4 up blocks like SD's; it has "
                              f"{len(unet.up_blocks)} up blocks")
        steps = scheduler.config.num_train_timesteps
        if not 0 <= t < steps:
            raise ConfigError(f"vermouth option 't' must be in [0, {steps - 1}], got {t}")
        if noise not in ("ddpm", "none"):
            raise ConfigError(f"vermouth option 'noise' must be 'ddpm' or 'none', got '{noise}'")
        self.unet, self.vae, self.scheduler = unet, vae, scheduler
        self.t, self.noise, self.seed = t, noise, seed
        self.stages = tuple(s for s in LEVELS if s in stages)
        self.map_levels: tuple[str, ...] = ()
        if cross_attention:
            self.map_levels = tuple(s for s in ("L1", "L2", "L3") if s in self.stages
                                    and (s != "L3" or cross_attention_l3))
        self._taps: dict[str, torch.Tensor] = {}
        self._maps: dict[int, list[torch.Tensor]] = {_LEVEL_MAPS[s]: [] for s in self.map_levels}
        needed = [_LEVEL_BLOCK[s] for s in self.stages] + [f"up{_LEVEL_MAPS[s]}" for s in self.map_levels]
        last = max(needed, key=_ORDER.index)
        self._stop_at = last if early_exit and last != "up3" else None
        self._handles = [unet.mid_block.register_forward_hook(self._hook("mid"))]
        self._handles += [block.register_forward_hook(self._hook(f"up{i}")) for i, block in enumerate(unet.up_blocks)]
        for index, sink in self._maps.items():
            for module in unet.up_blocks[index].modules():
                if getattr(module, "is_cross_attention", False) and hasattr(module, "set_processor"):
                    module.set_processor(_MapRecorder(module.get_processor(), sink))

    def _hook(self, name: str):
        def record(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
            self._taps[name] = output
            if name == self._stop_at:
                raise _StopUNet

        return record

    def channels(self, cross_tokens: int) -> dict[str, int]:
        """Channels of the selected levels (maps add `cross_tokens` channels to their levels)."""
        all_channels = level_channels(self.unet.config, cross_tokens, self.map_levels)
        return {s: all_channels[s] for s in self.stages}

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """x in [-1, 1] → posterior mean × the VAE's own scaling factor (0.18215 for SD 1.x/2.x)."""
        return self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor

    def noised(self, z0: torch.Tensor, identities: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, timesteps): DDPM `add_noise` at t with per-image ε, or the clean latent for `noise: none`."""
        timesteps = torch.full((z0.shape[0],), self.t, dtype=torch.long, device=z0.device)
        if self.noise == "none":
            return z0, timesteps
        eps = image_noise(identities, self.seed, z0.shape[1:]).to(z0.device, z0.dtype)
        return self.scheduler.add_noise(z0, eps, timesteps), timesteps

    def levels(self, x: torch.Tensor, context: torch.Tensor, identities: Sequence[str]) -> dict[str, torch.Tensor]:
        """The selected levels for a batch x in [-1, 1] conditioned on `context` [B, T, D]."""
        return self.levels_from_latents(self.latents(x), context, identities)

    def levels_from_latents(self, z0: torch.Tensor, context: torch.Tensor,
                            identities: Sequence[str]) -> dict[str, torch.Tensor]:
        """The UNet half of `levels`, from clean latents (so latents can be timed or cached on their own).

        The latents enter in channels-last layout, whatever their origin: it is the layout a CPU VAE encode
        hands over, and the layout decides the conv kernels, so a latent read back from the cache (a plain
        contiguous tensor) gives bit-for-bit the features of a fresh encode. On CUDA it is the fast layout.
        """
        z0 = z0.contiguous(memory_format=torch.channels_last)
        x_t, timesteps = self.noised(z0, identities)
        self._taps.clear()
        for sink in self._maps.values():
            sink.clear()
        try:
            self.unet(x_t, timesteps, encoder_hidden_states=context.to(x_t.dtype), return_dict=False)
        except _StopUNet:
            pass
        taps = self._taps
        out: dict[str, torch.Tensor] = {}
        for level in self.stages:
            if level == "L3":
                up2, up3 = taps["up2"], taps["up3"]
                if up2.shape[-2:] != up3.shape[-2:]:
                    up2 = F.interpolate(up2, size=up3.shape[-2:], mode="bilinear", align_corners=False)
                out[level] = torch.cat([up2, up3], dim=1)
            else:
                out[level] = taps[_LEVEL_BLOCK[level]]
            if level in self.map_levels:
                out[level] = torch.cat([out[level], self._map(_LEVEL_MAPS[level], out[level])], dim=1)
        self._taps.clear()
        for sink in self._maps.values():
            sink.clear()
        return out

    def _map(self, index: int, level: torch.Tensor) -> torch.Tensor:
        """Block `index`'s recorded maps averaged over its layers, as [B, T, h, w] at the level's size."""
        maps = torch.stack(self._maps[index]).mean(dim=0)  # [B, N, T]
        batch, n, tokens = maps.shape
        # up_blocks[i] attends at the resolution of up_blocks[i-1]'s output, which the level keeps.
        prev = self._taps[f"up{index - 1}"]
        h, w = prev.shape[-2:]
        if h * w != n:
            raise ConfigError(f"cross-attention maps of up_blocks[{index}] have {n} positions, not {h}x{w}")
        maps = maps.transpose(1, 2).reshape(batch, tokens, h, w)
        if maps.shape[-2:] != level.shape[-2:]:
            maps = F.interpolate(maps, size=level.shape[-2:], mode="bilinear", align_corners=False)
        return maps.to(level.dtype)
