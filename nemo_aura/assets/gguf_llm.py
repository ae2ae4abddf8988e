"""GGUF causal LM (e.g. SmolLM2-135M-Instruct, Q4_1) -> a plain Hugging Face model directory.

transformers dequantizes GGUF through the ``gguf`` package (~15 s for 135M); saving the result once as a
plain directory makes later loads take ~2 s. The tokenizer (with its ChatML chat template and special
tokens) is read from the same file and saved beside the weights.
"""
from __future__ import annotations

from pathlib import Path


def convert_gguf_llm(gguf_path: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Dequantize ``gguf_path`` into ``out_dir`` (config, ``model.safetensors`` in ``dtype``, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file '{gguf_path}' does not exist")
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise ValueError(f"dtype {dtype!r} is not a torch floating-point dtype")
    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch_dtype, **kwargs)
    # The weights are plain tensors now: without the quantization bookkeeping the directory loads as plain HF
    # (and is not dequantized again on every load).
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions:
        tokenizer.model_max_length = max_positions
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
