"""Vermouth: frozen Stable Diffusion UNet features (+ BLIP prompts, adapted expert) and a trainable U-head.

One module per job: `cards` (variants, torch-free), `options` (the validated feature/neck config),
`configs` (component configs as data), `components` (load or build the diffusers/transformers parts),
`diffusion` (latents, noise, hooked UNet levels), `prompts` (empty/fixed/BLIP prompts, caption cache),
`expert` (frozen expert taps + trainable adapters), `uhead` (the U-head and its OVSS variant),
`neck` (adapters + head as one trainable module), `backbone` (the harness Backbone).
This package init stays empty so that importing the torch-free cards imports nothing heavy.
"""
