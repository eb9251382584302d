"""The same numbers on any x86-64 CPU and thread count: random-init weights, fp64 features, seeded heads.

Other CPUs are emulated on this one, in subprocesses (these variables are read once, at import):
`ATEN_CPU_CAPABILITY` switches torch's vector kernels (and the vectorised float32 random draws),
`OMP_NUM_THREADS` the thread count, `OPENBLAS_CORETYPE` numpy's BLAS kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.numerics import head_dtype, portable_randn, seeded_init, text_precision, to_float32

# Prints one sha256 per tensor group: each tiny backbone's weights, and its fp64 features of fixed inputs.
SCRIPT = r"""
import hashlib, json, sys, torch
from harness.config import BackboneConfig
from harness.run.executor import build_backbone

def digest(tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()

out = {}
for name in ("resnet", "clip", "dino", "vermouth"):
    bb = build_backbone(BackboneConfig(name=name, variant="tiny", weights="random", dtype="fp64"))
    modules = {"model": bb.model} if hasattr(bb, "model") else bb.parts.modules()
    out[name + "/weights"] = digest(v for m in modules.values() for v in m.state_dict().values()
                                    if v.is_floating_point())
    size = bb.card.extra.get("resolution", 64)
    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    feats = bb.image_features(x, kinds=("global", "dense"))
    out[name + "/features"] = digest([feats.global_, *feats.dense.values()])
print(json.dumps(out))
"""

CONFIGS = [
    {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "Haswell"},
    {"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "2", "OPENBLAS_CORETYPE": "SkylakeX"},
]


def digests(env: dict[str, str], tmp: Path) -> dict[str, str]:
    full = {**os.environ, **env, "HARNESS_CACHE": str(tmp / "cache"), "HARNESS_HOME": str(tmp / "home")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=full, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_weights_and_fp64_features_are_identical_across_emulated_cpus(tmp_path):
    runs = [digests(env, tmp_path / str(i)) for i, env in enumerate(CONFIGS)]
    assert len(runs[0]) == 8
    assert runs[0] == runs[1], {k: (runs[0][k][:12], runs[1][k][:12]) for k in runs[0] if runs[0][k] != runs[1][k]}


def test_seeded_init_is_float64_inside_and_leaves_the_callers_state():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    with seeded_init(7):
        assert torch.get_default_dtype() == torch.float64
        a = torch.nn.Linear(4, 3)
    with seeded_init(7):
        b = torch.nn.Linear(4, 3)
    assert torch.get_default_dtype() == torch.float32
    assert torch.equal(torch.rand(1), before)  # the caller's stream did not move
    assert a.weight.dtype == torch.float64 and torch.equal(a.weight, b.weight)
    with seeded_init(7, portable=False):
        assert torch.get_default_dtype() == torch.float32


def test_portable_randn_is_the_float64_draw_rounded():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ref = torch.randn((4, 8), generator=g2, dtype=torch.float64).to(torch.float32)
    assert torch.equal(portable_randn((4, 8), g1), ref)


def test_heads_follow_the_backbones_precision():
    class Config:
        def __init__(self, dtype: str):
            self.dtype = dtype

    class Stub:
        def __init__(self, dtype: str):
            self.config = Config(dtype)

    assert head_dtype(Stub("fp64")) == torch.float64 and text_precision(Stub("fp64")) == "fp64"
    for dtype in ("fp32", "fp16", "bf16"):
        assert head_dtype(Stub(dtype)) == torch.float32 and text_precision(Stub(dtype)) == "fp32"


def test_mini_suite_states_its_precision():
    from harness.plan.suites import load_suite

    assert load_suite("mini").dtype == "fp64"



def test_to_float32_rounds_float64_noise_away_where_plain_rounding_keeps_it():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 10_000, generator=g, dtype=torch.float64)
    x[:, :5_000] *= 1e-9  # small next to the sample's peak, as a conv output near zero is
    noisy = x + torch.randn(x.shape, generator=g, dtype=torch.float64) * 1e-16  # float64-level kernel noise
    assert not torch.equal(x.float(), noisy.float())  # plain rounding shows the noise in the small values
    assert torch.equal(to_float32(x), to_float32(noisy))
    grid = to_float32(x).double()
    assert ((grid - x).abs().amax(dim=1) <= x.abs().amax(dim=1) * 2.0**-23).all()  # 24 bits below the peak
    assert torch.equal(to_float32(x.float()), x.float())  # float32 inputs pass through untouched
