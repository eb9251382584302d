"""A tiny Stable Diffusion pipeline folder (+ BLIP in `blip/`) written once per session, with plain
diffusers/transformers calls: the release layout the backbone must read (model_index.json, unet/, vae/,
text_encoder/, tokenizer/ as vocab.json + merges.txt, scheduler/ as SD's PNDM config)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backbones.vermouth.configs import TINY

FOLDER_SEED = 123  # differs from the random-init seed, so a folder load cannot pass by accident


def _clip_vocab() -> tuple[dict[str, int], list[str]]:
    from tokenizers import pre_tokenizers

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
            vocab[ch + suffix] = len(vocab)
    merges = ["p h", "ph o", "pho t", "phot o</w>", "o f</w>"]  # "photo", "of" as single tokens
    for merge in merges:
        vocab["".join(merge.split())] = len(vocab)
    return vocab, merges


def _write_tokenizer(folder: Path) -> int:
    """SD's tokenizer/ layout: vocab.json, merges.txt, tokenizer_config.json (no tokenizer.json)."""
    vocab, merges = _clip_vocab()
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        stale.unlink()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}))
    return len(vocab)


def _write_blip(folder: Path) -> None:
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "picture", "of", "cat", "dog", "on"]
    chars = list("abcdefghijklmnopqrstuvwxyz")
    vocab = {w: i for i, w in enumerate(words + [c for c in chars if c not in words] + [f"##{c}" for c in chars])}
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    config = BlipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 32, "encoder_hidden_size": 32,
                     "bos_token_id": vocab["[DEC]"], "sep_token_id": vocab["[SEP]"], "pad_token_id": 0},
        projection_dim=32)
    torch.manual_seed(FOLDER_SEED)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("sd-tiny")
    vocab, merges = _clip_vocab()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(FOLDER_SEED)
        unet = UNet2DConditionModel(**TINY["unet"])
        vae = AutoencoderKL(**TINY["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), **TINY["text_encoder"]))
    # SD 1.5 ships a PNDM config with the training betas; the backbone reads it as DDPM.
    scheduler = PNDMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges], model_max_length=77)
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    _write_tokenizer(folder / "tokenizer")
    _write_blip(folder / "blip")
    return folder
