"""GGUF causal LM (e.g. SmolLM2-135M-Instruct, Q4_1) -> a plain Hugging Face model directory.

transformers dequantizes GGUF through the ``gguf`` package (~15 s for 135M); saving the result once as
a plain directory makes later loads take ~2 s and keeps the tokenizer's chat template.
"""
from __future__ import annotations

from pathlib import Path


def convert_gguf_llm(gguf_path: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file '{gguf_path}' does not exist")
    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=getattr(torch, dtype), **kwargs)
    # The weights are dequantized now: drop the quantization bookkeeping so the directory loads as plain HF.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
