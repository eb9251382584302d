"""The registries, and the built-in entries declared lazily (as data) so that listing imports nothing heavy."""

from __future__ import annotations

from harness.api import Backbone, Dataset, Task
from harness.registry import Registry

BACKBONES: Registry[type[Backbone]] = Registry("backbone", Backbone, "harness.backbones")
TASKS: Registry[type[Task]] = Registry("task", Task, "harness.tasks")
DATASETS: Registry[type[Dataset]] = Registry("dataset", Dataset, "harness.datasets")

register_backbone = BACKBONES.register
register_task = TASKS.register
register_dataset = DATASETS.register

# Built-in backbones: the class lives in a module that imports torch; its variant cards live in
# `backbones.cards`, which does not, so `harness list backbones` can describe them cheaply.
BACKBONES.add_lazy("resnet", "backbones.resnet:ResNetBackbone", cards="backbones.cards:RESNET",
                   description="timm ResNet (ResNet-50 default, ResNet-101; tiny random-init for tests)")

BACKBONES.add_lazy("clip", "backbones.clip:CLIPBackbone", cards="backbones.cards:CLIP",
                   description="open_clip CLIP image tower (ViT-B/16 OpenAI default) + text tower")
BACKBONES.add_lazy("dino", "backbones.dino:DINOBackbone", cards="backbones.cards:DINO",
                   description="timm DINO v1 ViT-B/16 default; DINOv2 ViT-S/B/L/G/14 variants")
BACKBONES.add_lazy("vermouth", "backbones.vermouth.backbone:VermouthBackbone",
                   cards="backbones.vermouth.cards:VERMOUTH",
                   description="Stable Diffusion UNet features + BLIP prompts + U-head + adapted expert")
# Families: `timm:<any timm model>` names a backbone made for that model on first use (never part of `all`).
BACKBONES.add_family("timm", "backbones.timm_family:timm_backbone",
                     description="any timm model by name (`timm:convnext_tiny`, `timm:convnext_tiny.fb_in22k`): "
                                 "global = pre-logits, dense = the last 4 levels of forward_intermediates",
                     features="global; dense where the model has forward_intermediates")
BACKBONES.add_family("open_clip", "backbones.open_clip_family:open_clip_backbone",
                     description="any open_clip model by name (`open_clip:ViT-B-32/laion2b_s34b_b79k`; no tag: "
                                 "--weights required): global = projected image embedding, text tower kept",
                     features="global, text; dense (ViT blocks / ResNet stages) except timm-trunk towers")
BACKBONES.add_family("hf", "backbones.hf_family:hf_backbone",
                     description="any transformers vision encoder by hub id or folder (`hf:facebook/dinov2-small`)",
                     features="global (pooled output, else class token); dense (last hidden state) for patch / "
                              "conv models")
# `in_all=False`: a load-test stand-in, never part of `--backbone all` (harness.plan.planner.resolve_backbones).
BACKBONES.add_lazy("synthetic", "backbones.synthetic:SyntheticBackbone", cards="backbones.cards:SYNTHETIC",
                   in_all=False, description="SYNTHETIC (load tests only): the real feature shapes of sd15, "
                                             "ViT-L/14 and ResNet-50 from a cheap seeded function of the image")

TASKS.add_lazy("fsc", "tasks.fsc.task:FewShotClassification",
               description="few-shot classification, CoOp 11-dataset protocol (linear probe)")

TASKS.add_lazy("sbir", "tasks.sbir.task:ZeroShotSBIR",
               description="zero-shot sketch-based image retrieval (Sketchy / TU-Berlin / QuickDraw)")
TASKS.add_lazy("ovss", "tasks.ovss.task:OpenVocabSegmentation",
               description="open-vocabulary semantic segmentation (train COCO-Stuff, test ADE/PC/VOC)")

_FSC_DATASETS = {
    "mini_coop": "MiniCoOp",
    "imagenet": "ImageNet",
    "caltech101": "Caltech101",
    "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars",
    "oxford_flowers": "OxfordFlowers",
    "food101": "Food101",
    "fgvc_aircraft": "FGVCAircraft",
    "sun397": "SUN397",
    "dtd": "DTD",
    "eurosat": "EuroSAT",
    "ucf101": "UCF101",
}
for _name, _cls in _FSC_DATASETS.items():
    DATASETS.add_lazy(_name, f"tasks.fsc.datasets:{_cls}", task="fsc")

_SBIR_DATASETS = {"mini_sbir": "MiniSBIR", "sketchy_25": "Sketchy25", "sketchy_21": "Sketchy21",
                  "tuberlin_30": "TUBerlin30", "quickdraw_30": "QuickDraw30"}
for _name, _cls in _SBIR_DATASETS.items():
    DATASETS.add_lazy(_name, f"tasks.sbir.datasets:{_cls}", task="sbir")

_OVSS_DATASETS = {"mini_ovss_train": "MiniCocoStuff", "mini_ovss": "MiniADE", "coco_stuff_171": "CocoStuff171",
                  "ade150": "ADE150", "ade847": "ADE847", "pc59": "PascalContext59", "pc459": "PascalContext459",
                  "voc20": "PascalVOC20"}
for _name, _cls in _OVSS_DATASETS.items():
    DATASETS.add_lazy(_name, f"tasks.ovss.datasets:{_cls}", task="ovss")
