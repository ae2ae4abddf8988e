"""Helpers to read and cut the layer stacks of Hugging Face and NeMo models."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import Tensor, nn


@contextmanager
def truncated_layers(owner: nn.Module, depth: int, attr: str = "layers") -> Iterator[None]:
    """Run only the first ``depth`` blocks of ``owner.<attr>`` (an ``nn.ModuleList``).

    Decoders and encoders in transformers and NeMo loop over their ``layers`` list; swapping in a
    shorter list skips the blocks whose outputs are not needed (the distillation-only forward).
    """
    full = getattr(owner, attr)
    if depth >= len(full):
        yield
        return
    setattr(owner, attr, nn.ModuleList(list(full)[:depth]))
    try:
        yield
    finally:
        setattr(owner, attr, full)


@contextmanager
def capture_layer_outputs(layers: nn.ModuleList, indices: list[int]) -> Iterator[dict[int, Tensor]]:
    """Record the output of blocks ``indices`` (1-based: block i's output is "layer i").

    The returned dict is filled during the forward inside the ``with`` block.
    """
    captured: dict[int, Tensor] = {}
    handles = []
    for index in sorted(set(indices)):
        if not 1 <= index <= len(layers):
            raise ValueError(f"layer {index} does not exist: the stack has layers 1..{len(layers)}")

        def hook(_module, _inputs, output, index=index):
            captured[index] = output[0] if isinstance(output, (tuple, list)) else output

        handles.append(layers[index - 1].register_forward_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
