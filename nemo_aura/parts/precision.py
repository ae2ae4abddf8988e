"""Training precision: ``trainer.precision: auto`` picks bf16 autocast where the CPU computes bf16 natively.

Forward + backward of the frozen LLM with an adapter ran 2.0-2.5x faster under bf16 autocast than in fp32 on a
2-core AVX-512 BF16 CPU; trainable weights and optimizer state stay fp32 (Lightning's ``bf16-mixed``). Without
native bf16 (no AVX-512 BF16 / AMX) autocast emulates it and is slower, so ``auto`` keeps fp32 there.
"""
from __future__ import annotations

import torch
from nemo.utils import logging


def cpu_has_native_bf16() -> bool:
    """True when oneDNN computes bf16 natively on this CPU (AVX-512 BF16 or AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(torch.backends.mkldnn.is_available() and check is not None and check())
    except RuntimeError:
        return False


def resolve_precision(precision, accelerator: str = "cpu"):
    """``auto`` -> ``bf16-mixed`` (CPU with native bf16, or a GPU that supports bf16) else ``32-true``; other values as given."""
    if str(precision) != "auto":
        return precision
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        chosen = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
    else:
        chosen = "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    logging.info(f"trainer.precision=auto -> {chosen} (CPU capability {torch.backends.cpu.get_cpu_capability()}, "
                 f"native bf16 {cpu_has_native_bf16()})")
    return chosen
