"""Load the frozen parts from a diffusers-layout folder, or build them from `configs` (random, seeded).

Composes diffusers and transformers classes (their `from_pretrained` / config constructors) rather than
re-implementing them. A pipeline folder is the Stable Diffusion release layout (model_index.json, unet/,
vae/, text_encoder/, tokenizer/, scheduler/); BLIP is a transformers model folder of its own (a hub id,
a local folder, or `blip/` inside the pipeline folder, see `backbone.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from backbones.vermouth.configs import BLIP_CHARS, BLIP_WORDS, COMPONENT_CONFIGS
from harness.data.weights import ResolvedWeights, resolve_model_folder
from harness.errors import HarnessError, WeightsMissingError
from harness.io import canonical_json, sha256_text
from harness.numerics import seeded_init

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import BlipForConditionalGeneration, BlipProcessor, CLIPTextModel, CLIPTokenizer

# What a pipeline folder must hold, what identifies it, and what a download fetches (one weight file per
# component: the release also carries .bin, fp16 and non-EMA copies that are never loaded).
SD_REQUIRED = ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
               "tokenizer", "scheduler/scheduler_config.json")
SD_INCLUDE = ("model_index.json", "unet/*", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*")
SD_DOWNLOAD = ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
               "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
               "text_encoder/model.safetensors", "tokenizer/*", "scheduler/*")
BLIP_REQUIRED = ("config.json",)
BLIP_INCLUDE = ("*.json", "*.txt", "*.safetensors", "*.bin")
BLIP_DOWNLOAD = ("*.json", "*.txt", "model.safetensors")


@dataclass
class SDParts:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDPMScheduler

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoder}


def config_fingerprint(arch: str, keys: tuple[str, ...]) -> str:
    """A hash of the component configs `weights: random` builds from: random weights are named by the
    seed *and* the architecture, so editing a tiny config never reuses stale features."""
    cfg = COMPONENT_CONFIGS[arch]
    return f"{arch}:{sha256_text(canonical_json({k: cfg[k] for k in keys}))[:16]}"


SD_KEYS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
BLIP_KEYS = ("blip", "blip_image_size", "blip_vocab")


def _resolve(spec: str, seed: int, arch: str, required: Any, include: Any, allow: Any,
             keys: tuple[str, ...]) -> ResolvedWeights:
    """A folder, hub id or "random" → folder + fingerprint, without loading anything. Random weights are
    named by the seed and the component configs they are built from."""
    resolved = resolve_model_folder(spec, seed=seed, required=required, include=include, allow_patterns=allow)
    if resolved.kind == "random":
        return replace(resolved, fingerprint=f"{resolved.fingerprint}:{config_fingerprint(arch, keys)}")
    return resolved


def resolve_pipeline(spec: str, seed: int, arch: str) -> ResolvedWeights:
    """The SD pipeline (unet, vae, text encoder, tokenizer, scheduler)."""
    return _resolve(spec, seed, arch, SD_REQUIRED, SD_INCLUDE, SD_DOWNLOAD, SD_KEYS)


def resolve_captioner(spec: str, seed: int, arch: str) -> ResolvedWeights:
    """The BLIP captioner."""
    return _resolve(spec, seed, arch, BLIP_REQUIRED, BLIP_INCLUDE, BLIP_DOWNLOAD, BLIP_KEYS)


def _load(what: str, folder: Path, loader: Any) -> Any:
    """Run a from_pretrained call; a missing or unreadable component names the folder and the part."""
    try:
        return loader()
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsMissingError(f"cannot load {what} from {folder}: {' '.join(str(exc).split())[:400]}") from exc


def load_sd(folder: Path) -> SDParts:
    """The five SD parts from a diffusers-layout folder, in fp32 (the caller autocasts), offline.

    The scheduler is always a DDPMScheduler built from the folder's scheduler config: SD 1.x/2.x ship
    PNDM/DDIM configs with the same betas, and only `add_noise` (the training schedule) is used.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    return SDParts(
        unet=_load("unet", folder, lambda: UNet2DConditionModel.from_pretrained(
            folder, subfolder="unet", torch_dtype=torch.float32, local_files_only=True,
            low_cpu_mem_usage=False)),
        vae=_load("vae", folder, lambda: AutoencoderKL.from_pretrained(
            folder, subfolder="vae", torch_dtype=torch.float32, local_files_only=True,
            low_cpu_mem_usage=False)),
        text_encoder=_load("text_encoder", folder, lambda: CLIPTextModel.from_pretrained(
            folder, subfolder="text_encoder", dtype=torch.float32, local_files_only=True)),
        tokenizer=_load("tokenizer", folder, lambda: CLIPTokenizer.from_pretrained(
            folder, subfolder="tokenizer", local_files_only=True)),
        scheduler=_load("scheduler", folder, lambda: DDPMScheduler.from_pretrained(
            folder, subfolder="scheduler", local_files_only=True)),
    )


def char_clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A real CLIPTokenizer over the 256 byte-level characters (and their end-of-word forms), no merges.

    Offline stand-in for CLIP's 49k BPE vocabulary: same class, same normalisation and special tokens,
    so save_pretrained/from_pretrained and the text encoder see exactly what they would with SD's.
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in alphabet:
            vocab[ch + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def blip_vocab(size: int, specials: dict[str, int]) -> dict[str, int]:
    """A BERT vocabulary of `size` with BLIP's special tokens at their ids, a few words and characters."""
    tokens = [t for t in dict.fromkeys(BLIP_WORDS + BLIP_CHARS + [f"##{c}" for c in BLIP_CHARS]) if t not in specials]
    free = (i for i in range(size) if i not in specials.values())
    vocab = dict(specials)
    for token, idx in zip(tokens, free, strict=False):  # `free` is longer; it goes on below
        vocab[token] = idx
    for idx in free:
        vocab[f"[unused{idx}]"] = idx
    if len(vocab) != size:
        raise HarnessError(f"BLIP vocabulary of size {size} cannot hold {len(specials)} specials and {len(tokens)} "
                           f"tokens")
    return dict(sorted(vocab.items(), key=lambda kv: kv[1]))


def build_sd(arch: str, seed: int) -> SDParts:
    """Random SD parts from `configs[arch]`, seeded, without touching the caller's RNG."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = COMPONENT_CONFIGS[arch]
    tokenizer = char_clip_tokenizer(**cfg["tokenizer"])
    text_cfg = {"vocab_size": len(tokenizer), **cfg["text_encoder"]}
    with seeded_init(seed):
        unet = UNet2DConditionModel(**cfg["unet"])
        vae = AutoencoderKL(**cfg["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    return SDParts(unet=unet.float(), vae=vae.float(), text_encoder=text_encoder.float(), tokenizer=tokenizer,
                   scheduler=DDPMScheduler(**cfg["scheduler"]))


def load_blip(folder: Path) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    from transformers import BlipForConditionalGeneration, BlipProcessor

    folder = Path(folder)
    model = _load("the BLIP captioner", folder, lambda: BlipForConditionalGeneration.from_pretrained(
        folder, dtype=torch.float32, local_files_only=True))
    processor = _load("the BLIP processor", folder, lambda: BlipProcessor.from_pretrained(
        folder, local_files_only=True))
    return model, processor


def build_blip(arch: str, seed: int) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """A random BLIP captioner + processor from `configs[arch]`, seeded."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    cfg = COMPONENT_CONFIGS[arch]
    vocab = blip_vocab(cfg["blip_vocab"]["size"], cfg["blip_vocab"]["specials"])
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]")
    size = cfg["blip_image_size"]
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": size, "width": size}),
                              tokenizer=tokenizer)
    specials = cfg["blip_vocab"]["specials"]
    text_cfg = {**cfg["blip"]["text_config"], "vocab_size": len(vocab), "bos_token_id": specials["[DEC]"],
                "sep_token_id": specials["[SEP]"], "pad_token_id": specials["[PAD]"]}
    blip_cfg = BlipConfig(vision_config={**cfg["blip"]["vision_config"], "image_size": size},
                          text_config=text_cfg,
                          **{k: v for k, v in cfg["blip"].items() if k not in ("vision_config", "text_config")})
    with seeded_init(seed):
        model = BlipForConditionalGeneration(blip_cfg)
    return model.float(), processor
