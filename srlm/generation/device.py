"""Which accelerator generation runs on, and which weights dtype that implies."""

from __future__ import annotations

import typing

from srlm.config import Dtype
from srlm.errors import ConfigError

DTYPES = typing.get_args(Dtype)  # the choices live on the config field


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def bf16_supported() -> bool:
    """bf16 is only worth using where the hardware computes in it (else it is emulated, and slower than fp32)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    # Same probe vLLM's CPU platform uses: AVX-512 BF16 (or AMX) does bf16 matmuls natively.
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_dtype(dtype: str) -> str:
    """auto → bfloat16 where the hardware supports it, else float32; explicit names pass through."""
    if dtype not in DTYPES:
        raise ConfigError(f"model.dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "auto":
        return "bfloat16" if bf16_supported() else "float32"
    return dtype
