"""A trained AuRA model's lifecycle outside training: the encoder-free export, LoRA merge, HF export, and loading a
Lightning checkpoint without unpickling it. ``AuRAModel`` exposes each as a method."""
from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from nemo_aura.parts.restore import check_aura_target
from nemo_aura.parts.student import update_lora_config

if TYPE_CHECKING:
    from nemo_aura.models.aura_model import AuRAModel

FROZEN_OMITTED = "aura_frozen_weights_omitted"  # training checkpoints: the frozen parameters left out of state_dict


def export_encoder_free(model: "AuRAModel", path: str) -> str:
    """Write a ``.nemo`` with patch embedding + LLM + LoRA only: no teacher, no distillation head.

    Restoring it needs no teacher. Its loss is the LM loss (``loss.lm_weight`` becomes 1 if it was 0), or with
    ``reading.span: vocab`` the CTC loss of the head it keeps.
    """
    cfg = copy.deepcopy(model._cfg)
    with open_dict(cfg):
        cfg.teacher = None
        cfg.distillation = None
        if model.reading_span == "vocab":  # it reads through its CTC head, which only CTC trains
            cfg.loss = {"distill_weight": 0.0, "lm_weight": 0.0, "ctc_weight": model.ctc_weight or 1.0}
            if model.ctc_vocabulary == "characters":  # the kind of head it keeps (a token head sizes itself on load)
                cfg.loss.update(ctc_vocabulary="characters", ctc_upsample=model.ctc_head.upsample)
        else:
            cfg.loss = {"distill_weight": 0.0, "lm_weight": model.lm_weight or 1.0}
    ctc_head = model.ctc_head if model.reading_span == "vocab" else None
    with swapped(model, cfg, teacher=None, distillation=None, ctc_head=ctc_head):
        model.save_to(path)
    return path


def merge_lora(model: "AuRAModel") -> "AuRAModel":
    """Fold LoRA into the base LLM weights (peft ``merge_and_unload``): same outputs, no adapter layers.

    The config records it (``lora: null``, ``merged_lora: <old lora config>``) so a saved merged model
    restores without installing LoRA again.
    """
    from peft import PeftModel

    if not isinstance(model.llm, PeftModel):
        raise ValueError("this model has no LoRA adapters to merge (already merged, or trained without LoRA)")
    if model.has_reader:
        raise ValueError("this model carries a text reader (a second adapter, active only while it answers a "
                         "transcript); merged weights would give every text prompt the reader: keep the adapters")
    if model.audio_span.lora_scope == "audio":
        raise ValueError("audio_span.lora: audio applies LoRA to the audio positions only, which merged weights "
                         "cannot express; keep the adapters (generation cost is the same, see README)")
    model.llm = model.llm.merge_and_unload()
    with open_dict(model._cfg):
        if model._cfg.get("distillation") and model._cfg.distillation.get("num_student_layers") is None:
            # the default layer map follows the LoRA depth K, which `lora: null` would make 0: pin it
            model._cfg.distillation.num_student_layers = model.lora_depth
    update_lora_config(model._cfg, merged=True)
    return model


def save_hf(model: "AuRAModel", out_dir: str) -> Path:
    """The (merged) LLM as a plain HF directory + ``patch_embedding.pt`` and its config, for other runtimes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    llm = model.llm.get_base_model() if hasattr(model.llm, "get_base_model") else model.llm
    llm.save_pretrained(out)
    model.tokenizer.tokenizer.save_pretrained(out)
    torch.save(model.patch_embedding.state_dict(), out / "patch_embedding.pt")
    OmegaConf.save(model.cfg, out / "aura_config.yaml")
    return out


def load_checkpoint(cls: type, path: str, map_location: str = "cpu") -> "AuRAModel":
    """A model from a Lightning/exp_manager ``.ckpt``: the config from its hyper-parameters, all weights
    (frozen LLM included) from its state dict. Needs the LLM directory named in the config for the
    architecture and tokenizer (a ``.nemo`` carries them itself)."""
    from nemo.core.classes.common import _get_allowed_target_class

    ckpt = load_checkpoint_file(path, map_location)
    if "hyper_parameters" not in ckpt or "cfg" not in ckpt["hyper_parameters"]:
        raise ValueError(f"{path}: not an AuRA training checkpoint (no hyper_parameters.cfg)")
    cfg = OmegaConf.create(ckpt["hyper_parameters"]["cfg"])
    check_aura_target(path, cfg.get("target"), cls)
    omitted = set(ckpt.get(FROZEN_OMITTED) or [])
    with open_dict(cfg):
        cfg.pop("train_ds", None)
        cfg.pop("validation_ds", None)
        if not omitted:
            cfg.student.pretrained_weights = False  # the checkpoint holds them
        if cfg.student.get("skeleton") and not Path(str(cfg.student.skeleton)).is_file():
            cfg.student.pop("skeleton")
    model_cls = _get_allowed_target_class(cfg.target) if cfg.get("target") else cls
    model = model_cls(cfg)
    if omitted:  # a training checkpoint: the frozen weights come from the config's LLM / teacher, as at resume
        model.on_load_checkpoint(ckpt)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model


@contextmanager
def swapped(model: "AuRAModel", cfg: DictConfig, **modules):
    """``model`` with another config and some modules swapped in (while it is saved), then put back."""
    saved_cfg, saved = model._cfg, {k: getattr(model, k) for k in modules}
    model._cfg = cfg
    for k, v in modules.items():
        setattr(model, k, v)
    try:
        yield
    finally:
        model._cfg = saved_cfg
        for k, v in saved.items():
            setattr(model, k, v)


def load_checkpoint_file(path: str, map_location: str = "cpu") -> dict:
    """A Lightning checkpoint read with ``torch.load(weights_only=True)``: tensors, containers and the OmegaConf
    types its config is stored as; anything else a pickle names is refused instead of run. (Lightning's own
    ``load_from_checkpoint`` unpickles everything: trusted files only.)"""
    import pickle
    import typing
    from collections import defaultdict

    from omegaconf import nodes
    from omegaconf.base import ContainerMetadata, Metadata

    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    allowed = [DictConfig, ListConfig, ContainerMetadata, Metadata, nodes.AnyNode, nodes.StringNode, nodes.IntegerNode,
               nodes.FloatNode, nodes.BooleanNode, typing.Any, dict, list, int, defaultdict]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: not loaded: it holds objects other than weights and configs, which nemo-aura does "
                         f"not unpickle ({str(e).splitlines()[0][:300]})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
