"""The optional kernels a training run uses: each where it is installed and can run, never required, and said
once at the run's start. Liger's layer kernels (liger-kernel: RMSNorm, SwiGLU, RoPE; triton, so CUDA GPUs
only), and for WRPO's packed layout a varlen FlashAttention kernel (flash-attn's where installed, else
torch's; CUDA and half precision only), without which packed rows attend through SDPA over padded units."""

from __future__ import annotations

import importlib.util

LIGER_INSTALLED = importlib.util.find_spec("liger_kernel") is not None


def liger_by_default(installed: bool, cuda: bool) -> bool:
    """use_liger_kernel left unset: on where liger-kernel is installed and a CUDA GPU trains."""
    return installed and cuda


def liger_said(on: bool, installed: bool, cuda: bool) -> str:
    if on:
        return "Liger's kernels on"
    if not installed:
        return "Liger's kernels off (pip install 'wrpo[gpu]' for them)"
    return "Liger's kernels off" + ("" if cuda else " (installed; they need a CUDA GPU)")


def packed_attention_said(kernel, cuda: bool, half: bool) -> str:
    """What packed rows attend through: `kernel` (wrpo.training.packing.INSTALLED_VARLEN) where it runs."""
    if kernel is not None and cuda and half:
        return f"packed attention through {kernel.name}"
    reason = ("no varlen kernel installed" if kernel is None else "it needs a CUDA GPU" if not cuda
              else "it needs bf16 or fp16")
    return f"packed attention through SDPA over padded units ({reason})"


def speedups_said(config) -> str:
    """The line a run starts with."""
    import torch

    cuda = torch.cuda.is_available() and not config.use_cpu
    parts = [liger_said(config.use_liger_kernel, LIGER_INSTALLED, cuda)]
    if getattr(config, "padding_free", False):
        from wrpo.training.packing import INSTALLED_VARLEN

        half = bool(config.bf16 or config.fp16 or config.model_dtype != "float32")
        parts.append(packed_attention_said(INSTALLED_VARLEN, cuda, half))
    return "kernels: " + "; ".join(parts)
