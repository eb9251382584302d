"""Numbers that do not depend on the machine: seeded initialisation and the precision heads train in.

Two things make float32 results differ between x86-64 CPUs and thread counts, and the `mini` suite (CI's
baseline) must not:
- **Random draws.** torch's float32 `normal_`/`randn` take a vectorised (AVX2/AVX-512) path whose last bits
  differ from the scalar path (`ATEN_CPU_CAPABILITY=default`), so a float32 random init or noise draw is not
  the same on every CPU. Float64 draws take one scalar path everywhere; rounded to float32 they are.
  `seeded_init` builds modules that way.
- **Kernels.** Convolutions, matmuls and reductions sum in an order that depends on the vector width and
  the threads. In float64 those differences sit ~1e-16 below the value, far under float32's rounding
  step, so a suite that runs backbones and heads in `fp64` (`dtype: fp64` in its YAML) rounds them away
  when features are stored as float32. `head_dtype` says which precision a job's heads use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch


@contextlib.contextmanager
def seeded_init(seed: int, portable: bool = True) -> Iterator[None]:
    """Build modules under `seed` with float64 as the default dtype; the caller's RNG and dtype are untouched.

    Modules built inside come out float64: cast them (`.float()`, `.to(dtype)`) to the precision they run in.
    `portable=False` (weights that are loaded over the init anyway) keeps float32, so buffers a library
    computes at build time stay exactly its own.
    """
    import torch

    previous = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if portable:
            torch.set_default_dtype(torch.float64)
        try:
            yield
        finally:
            torch.set_default_dtype(previous)


def portable_randn(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """`torch.randn` drawn in float64 and rounded to float32: the same values on every CPU."""
    import torch

    return torch.randn(shape, generator=generator, dtype=torch.float64).float()


def text_precision(backbone: Any) -> str:
    """The precision of a job's text space and heads: `fp64` when its backbone computes in `fp64`, else `fp32`
    (fp16/bf16 autocast is a backbone's speed choice; heads keep training in float32)."""
    return "fp64" if getattr(backbone.config, "dtype", "fp32") == "fp64" else "fp32"


def to_float32(t: torch.Tensor) -> torch.Tensor:
    """A backbone output as float32; float64 ones rounded onto a per-sample grid first.

    Plain float64 → float32 rounding keeps float64's noise wherever a value is small next to the terms it was
    summed from (a conv output near zero carries an absolute error of ~1e-16 × its terms, and float32 resolves
    small values finely enough to show it). So each sample (row of dim 0) is rounded to multiples of
    2^(e-24), where 2^e bounds its largest magnitude: 24 bits below the sample's peak, as a block floating
    point. Every step is exact (frexp, powers of two, round), the result fits float32 exactly, and a value
    lands on another grid point only when the float64 noise crosses a midpoint (~1e-9 per element).
    """
    import torch

    if t.dtype != torch.float64:
        return t.float()
    flat = t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(1, -1)
    _, exponent = torch.frexp(flat.abs().amax(dim=1, keepdim=True))
    quantum = torch.ldexp(torch.ones_like(flat[:, :1]), exponent - 24)
    return (torch.round(flat / quantum) * quantum).reshape(t.shape).float()


def head_dtype(backbone: Any) -> torch.dtype:
    """The torch dtype heads and necks train in (`text_precision`)."""
    import torch

    return torch.float64 if text_precision(backbone) == "fp64" else torch.float32
