"""The reader: a text-QA LoRA adapter that a ``reading.span: vocab`` model answers its CTC transcript with.

With ``reading.span: vocab`` the LLM reads the CTC head's text, so what answers a spoken question is a *text* reader.
The raw instruct LLM is a poor one (long sentences, the wrong person's fact in a multi-fact context); a reader
fine-tuned on the model's own transcripts of the QA training questions (``recipes/aura/local/finetune_text_qa.py
--questions-from-asr``) answers them. Attached as a second peft adapter named ``reader``, it lives inside the
``.nemo`` on the same base weights: one LLM in memory, no second model. It is active only while a spoken question's
transcript is answered; text-only prompts still see the base LLM, so text ability is kept by construction.

The reader may adapt any decoder layers, those of the reading LoRA included: the two adapters are never active at
once (the read runs with the audio adapter, gated to the audio positions; the answer with the reader alone). Measured
2026-12-05 on the default preset, a reader kept to the layers above K (``--lora-layers 6-``) answered
worse than one on every layer: F1 0.533 / 0.317 / 0.132 against 0.700 / 0.417 / 0.211 (multi-fact, names heard /
never heard; closed-book), ``recipes/aura/results/default/hearing_reader_above_k/``.

A reader directory is what peft's ``save_pretrained`` writes (``adapter_config.json`` +
``adapter_model.safetensors``; pickled ``.bin`` weights are refused) plus ``reader.json`` from finetune_text_qa.py:
its prompt templates (the question text in ``{audio}``'s place) and what it was trained on.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch import nn

READER_ADAPTER = "reader"
READER_INFO = "reader.json"  # templates + training summary, written by finetune_text_qa.py beside the adapter


def load_reader_dir(path: str | Path) -> tuple[dict, dict, dict]:
    """(LoRA config as a dict, adapter weights, reader.json) of a reader directory; every problem is an error
    naming the file and what was expected."""
    from safetensors.torch import load_file

    path = Path(path)
    config_file, weights_file, info_file = path / "adapter_config.json", path / "adapter_model.safetensors", path / READER_INFO
    if not path.is_dir():
        raise FileNotFoundError(f"reader: '{path}' is not a directory (expected a peft adapter saved by "
                                "finetune_text_qa.py: adapter_config.json + adapter_model.safetensors + reader.json)")
    for f in (config_file, weights_file, info_file):
        if not f.is_file():
            pickled = " (pickled adapter_model.bin weights are not loaded: save them as safetensors)" \
                if f is weights_file and (path / "adapter_model.bin").exists() else ""
            raise FileNotFoundError(f"reader: '{f}' is missing{pickled}")
    config, info = _read_json(config_file), _read_json(info_file)
    if config.get("peft_type") != "LORA":
        raise ValueError(f"reader: {config_file}: peft_type {config.get('peft_type')!r}, expected 'LORA'")
    templates = info.get("templates") or {}
    for name in ("qa", "qa_context"):
        if "{audio}" not in str(templates.get(name, "")):
            raise ValueError(f"reader: {info_file}: templates.{name} must be a prompt with an {{audio}} slot for the "
                             f"transcript, got {templates.get(name)!r}")
    return config, load_file(str(weights_file)), info


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"reader: {path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"reader: {path}: expected a JSON object, got {type(data).__name__}")
    return data


def reader_lora_config(cfg: DictConfig | dict):
    """The peft ``LoraConfig`` of ``cfg.reader.lora`` (what ``adapter_config.json`` held, inference mode)."""
    from peft import LoraConfig

    lora = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    known = set(LoraConfig.__dataclass_fields__)
    config = LoraConfig(**{k: v for k, v in lora.items() if k in known})
    config.inference_mode = True
    return config


def add_reader_adapter(peft_llm: nn.Module, lora: dict, weights: dict | None = None) -> None:
    """Add the ``reader`` adapter to a peft LLM (frozen; inactive until ``reader_active``), with ``weights`` if given
    (restoring a ``.nemo``: its state dict brings them)."""
    from peft.utils import set_peft_model_state_dict

    # peft's add_adapter re-applies the active adapter's trainability (an inference-mode config freezes it): what
    # trained before trains after, and the reader never does
    trains = {name for name, p in peft_llm.named_parameters() if p.requires_grad}
    peft_llm.add_adapter(READER_ADAPTER, reader_lora_config(lora))
    if weights is not None:
        result = set_peft_model_state_dict(peft_llm, weights, adapter_name=READER_ADAPTER)
        missing = [k for k in result.missing_keys if f".{READER_ADAPTER}." in k]
        if result.unexpected_keys or missing:
            raise ValueError(f"reader: the adapter's weights do not fit this LLM (unexpected {result.unexpected_keys[:3]}, "
                             f"missing {missing[:3]})")
    for name, param in peft_llm.named_parameters():
        param.requires_grad_(name in trains and f".{READER_ADAPTER}." not in name)
    # peft makes a freshly added adapter's layers carry it as their active one only where no other adapter was
    # active; make sure none answers with it until asked
    for module in _tuner_layers(peft_llm):
        module._active_adapter = [a for a in _active(module) if a != READER_ADAPTER] or ["default"]


@contextmanager
def reader_active(peft_llm: nn.Module):
    """Within the block every adapter layer answers with the reader alone (the reading LoRA is off). Sets peft's
    per-layer active adapter directly: ``set_adapter`` would also flip ``requires_grad``."""
    layers = _tuner_layers(peft_llm)
    saved = [module._active_adapter for module in layers]
    for module in layers:
        module._active_adapter = [READER_ADAPTER]
    try:
        yield
    finally:
        for module, active in zip(layers, saved):
            module._active_adapter = active


def _tuner_layers(peft_llm: nn.Module) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in peft_llm.modules() if isinstance(m, BaseTunerLayer)]


def _active(module) -> list[str]:
    active = module._active_adapter
    return [active] if isinstance(active, str) else list(active)
