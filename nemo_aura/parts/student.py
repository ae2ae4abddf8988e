"""The student: a Hugging Face causal LM, its tokenizer, and peft LoRA on its first K decoder layers."""
from __future__ import annotations

import shutil
import tarfile
import tempfile
import weakref
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from nemo.collections.common.tokenizers import AutoTokenizer
from nemo.collections.speechlm2.parts.pretrained import load_pretrained_hf

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")


def check_llm_dir(path: str) -> Path:
    """A local Hugging Face model directory with a config.json (nothing is fetched from a hub)."""
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise FileNotFoundError(
            f"student.pretrained_path: '{path}' is not a local Hugging Face model directory (no config.json there)"
        )
    return p


def pack_llm_skeleton(model_dir: Path, out_dir: Path) -> Path:
    """Tar the LLM's config, generation config and tokenizer files, but not its weights.

    The skeleton travels inside the ``.nemo`` so the model can be rebuilt anywhere; the weights
    travel in the ``.nemo`` state dict.
    """
    out = out_dir / "llm_skeleton.tar"
    with tarfile.open(out, "w") as tar:
        for f in sorted(model_dir.iterdir()):
            if f.is_file() and not f.name.endswith(WEIGHT_SUFFIXES) and not f.name.endswith(".index.json"):
                tar.add(f, arcname=f.name)
    return out


def unpack_llm_skeleton(tar_path: str, out_dir: Path) -> Path:
    with tarfile.open(tar_path) as tar:
        tar.extractall(out_dir, filter="data")
    return out_dir


def load_tokenizer(model_dir: Path, audio_locator_tag: str) -> AutoTokenizer:
    """NeMo's wrapper of the HF tokenizer, with the audio placeholder as an extra special token."""
    tokenizer = AutoTokenizer(str(model_dir), use_fast=True)
    tokenizer.add_special_tokens({"additional_special_tokens": [audio_locator_tag]})
    return tokenizer


def load_llm(model_dir: Path, pretrained_weights: bool, dtype: str = "float32", skip_init: bool = False) -> nn.Module:
    """The LLM from ``model_dir``; ``skip_init`` leaves a config-built skeleton uninitialised (a state dict follows)."""
    if skip_init and not pretrained_weights:
        from transformers.initialization import no_init_weights

        with no_init_weights():
            llm = load_pretrained_hf(str(model_dir), pretrained_weights=False, dtype=getattr(torch, dtype))
        llm.tie_weights()  # no_init_weights also skips the tying that post_init does
        return llm
    return load_pretrained_hf(str(model_dir), pretrained_weights=pretrained_weights, dtype=getattr(torch, dtype))


def num_decoder_layers(llm: nn.Module) -> int:
    return len(decoder_of(llm).layers)


def decoder_of(llm: nn.Module) -> nn.Module:
    """The decoder stack (the module holding ``layers``), through a peft wrapper if present."""
    base = llm.get_base_model() if isinstance(llm, PeftModel) else llm
    decoder = base.get_decoder()
    if not hasattr(decoder, "layers"):
        raise ValueError(f"{type(base).__name__}: its decoder has no 'layers' list; AuRA needs one")
    return decoder


def install_lora(llm: nn.Module, lora_cfg: DictConfig | dict | None) -> nn.Module:
    """peft LoRA on the decoder layers listed by ``lora.layers`` (0-based; null = all layers).

    ``lora.num_layers: K`` is shorthand for layers ``0..K-1`` (the AuRA default). ``lora.reading_layers``
    (``all`` or a list) puts LoRA on more layers than the distilled K, for the reading fine-tuning;
    they are not distillation targets and do not change K.
    """
    if not lora_cfg:
        return llm
    cfg = OmegaConf.to_container(lora_cfg, resolve=True) if isinstance(lora_cfg, DictConfig) else dict(lora_cfg)
    num_layers = cfg.pop("num_layers", None)
    layers = cfg.pop("layers", None)
    reading = cfg.pop("reading_layers", None)
    depth = num_decoder_layers(llm)
    if num_layers is not None:
        if layers is not None:
            raise ValueError("lora: give either 'num_layers' or 'layers', not both")
        if not 1 <= num_layers <= depth:
            raise ValueError(f"lora.num_layers={num_layers} does not fit the LLM's {depth} decoder layers")
        layers = list(range(num_layers))
    if layers is not None:
        layers = _check_layers(layers, depth, "lora.layers")
        if reading is not None:
            layers = sorted(set(layers) | set(resolve_reading_layers(reading, depth)))
        cfg["layers_to_transform"] = layers
        cfg.setdefault("layers_pattern", "layers")
    return get_peft_model(llm, LoraConfig(**cfg))


def update_lora_config(cfg: DictConfig, merged: bool = False, **changes) -> None:
    """The one place a built model's config changes its ``lora`` section (reading layers added, LoRA merged, a
    bridge's budget spread over all layers): ``changes`` set keys of ``cfg.lora`` (None removes one); ``merged``
    moves the section to ``merged_lora``, so a restore of the merged weights installs no adapters again."""
    with open_dict(cfg):
        for key, value in changes.items():
            if value is None:
                cfg.lora.pop(key, None)
            else:
                cfg.lora[key] = value
        if merged:
            cfg.merged_lora = cfg.lora
            cfg.lora = None


def resolve_reading_layers(reading_layers: str | list[int] | None, depth: int) -> list[int]:
    """``lora.reading_layers`` as 0-based layer indices: ``all`` = every decoder layer, null = none."""
    if reading_layers is None:
        return []
    if isinstance(reading_layers, str):
        if reading_layers != "all":
            raise ValueError(f"lora.reading_layers='{reading_layers}': expected 'all', a list of layer indices or null")
        return list(range(depth))
    return _check_layers(list(reading_layers), depth, "lora.reading_layers")


def _check_layers(layers: list[int], depth: int, key: str) -> list[int]:
    bad = [i for i in layers if not isinstance(i, int) or not 0 <= i < depth]
    if bad:
        raise ValueError(f"{key} {bad} are outside the LLM's decoder layers 0..{depth - 1}")
    return sorted(set(layers))


def add_lora_layers(peft_llm: nn.Module, layers: list[int]) -> list[int]:
    """Put the existing LoRA adapter on more decoder layers of a peft model, keeping the trained weights.

    peft re-creates an adapter on every layer it injects into, so the trained LoRA weights are saved first and
    loaded back; the new layers start at peft's init (B = 0: the model's outputs are unchanged). Returns the
    layers that were added.
    """
    config = peft_llm.peft_config[peft_llm.active_adapter]
    if not config.layers_to_transform:
        return []  # the adapter is on every decoder layer already
    have = list(config.layers_to_transform)
    added = sorted(set(layers) - set(have))
    if not added:
        return []
    trained = {k: v.detach().clone() for k, v in peft_llm.state_dict().items() if "lora_" in k}
    config.layers_to_transform = sorted(set(have) | set(added))
    peft_llm.base_model.inject_adapter(peft_llm.base_model.model, peft_llm.active_adapter)
    result = peft_llm.load_state_dict(trained, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"LoRA weights with no place after adding layers {added}: {result.unexpected_keys[:3]}")
    return added


def lora_depth(lora_cfg: DictConfig | dict | None, llm_depth: int) -> int:
    """K: how many leading decoder layers carry LoRA (the deepest LoRA layer, 1-based)."""
    if not lora_cfg:
        return 0
    if lora_cfg.get("num_layers") is not None:
        return int(lora_cfg["num_layers"])
    layers = lora_cfg.get("layers")
    return llm_depth if layers is None else max(layers) + 1


def new_work_dir(owner: object | None = None) -> Path:
    """A private temporary folder (the LLM skeleton a model saves into its ``.nemo``, or the one a restored model
    unpacked), removed with ``owner``: when it is garbage-collected, or at interpreter exit at the latest."""
    path = Path(tempfile.mkdtemp(prefix="nemo_aura_"))
    if owner is not None:
        weakref.finalize(owner, shutil.rmtree, str(path), ignore_errors=True)
    return path
