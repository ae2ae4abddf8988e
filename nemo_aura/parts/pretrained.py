"""Pretrained AuRA models, offline: small shipped weights composed with the base LLM that stage 0 builds.

A pretrained model is a directory ``<pretrained dir>/<name>/`` holding

- ``model_config.yaml``: the encoder-free model config; ``pretrained.base_llm`` names the base LLM's directory
  under the models directory (``student.pretrained_path`` is filled in at load time);
- ``model.safetensors``: every tensor that is not a base-LLM weight (patch embedding, LoRA, reading heads, and
  any LLM weight that differs from the base, e.g. after ``merge_lora``);
- ``MODEL_CARD.md``.

``recipes/aura/local/export_pretrained.py`` writes it from a trained ``.nemo``; ``AuRAModel.from_pretrained``
loads it. Locations (each overridable by an argument of ``from_pretrained``):

- pretrained dir: ``$NEMO_AURA_PRETRAINED_DIR``, else ``nemo_aura/assets/pretrained`` (package data);
- models dir (the base LLMs): ``$NEMO_AURA_MODELS_DIR``, else ``./exp/models``, else ``<repository>/exp/models``
  (where ``bash recipes/aura/run.sh --stage 0 --stop-stage 0`` puts them).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

PRETRAINED_ENV = "NEMO_AURA_PRETRAINED_DIR"
MODELS_ENV = "NEMO_AURA_MODELS_DIR"
PACKAGE_PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "assets" / "pretrained"
REPO_ROOT = Path(__file__).resolve().parents[2]
STAGE0_COMMAND = "bash recipes/aura/run.sh --stage 0 --stop-stage 0"
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "model_config.yaml", "model.safetensors", "MODEL_CARD.md"
DECODING_LM_FILE = "char_lm.arpa"  # the character LM of a model whose CTC read is decoded by beam search
EXPORT_COMMAND = "python recipes/aura/local/export_pretrained.py --nemo <trained AuRA .nemo> --llm-dir <base LLM dir>"


@dataclass(frozen=True)
class Entry:
    description: str
    base_llm: str  # directory name of the base LLM under the models dir


MODELS = {
    "aura_smollm2_135m_whisper_base": Entry(
        description=(
            "AuRA on SmolLM2-135M-Instruct (LoRA on decoder layers 1-6) distilled from Whisper-base, the default "
            "recipe's final model (spoken QA and transcription, English, 16 kHz). Encoder-free: patch embedding + "
            "LLM + LoRA; the base LLM is rebuilt offline by `" + STAGE0_COMMAND + "`."
        ),
        base_llm="smollm2-135m-instruct",
    ),
}


def pretrained_root(pretrained_dir: str | Path | None = None) -> Path:
    return Path(pretrained_dir or os.environ.get(PRETRAINED_ENV) or PACKAGE_PRETRAINED_DIR).expanduser()


def available_models(cls) -> list:
    """NeMo ``PretrainedModelInfo`` of the registered models (their ``location`` is the local directory)."""
    from nemo.core.classes.common import PretrainedModelInfo

    from nemo_aura.models.aura_model import AuRAModel

    if not issubclass(AuRAModel, cls):  # e.g. BridgeModel: none of these are bridges
        return []
    return [PretrainedModelInfo(pretrained_model_name=name, description=e.description,
                                location=str(pretrained_root() / name), class_=AuRAModel)
            for name, e in MODELS.items()]


def check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"no pretrained AuRA model named {name!r}; available: {', '.join(sorted(MODELS))} "
                         "(nemo-aura does not download from NGC or the Hugging Face hub; for a local .nemo use "
                         "AuRAModel.restore_from)")


def model_dir(name: str, pretrained_dir: str | Path | None = None) -> Path:
    """The directory of a registered model; a clear error when its files are not in this installation."""
    check_name(name)
    path = pretrained_root(pretrained_dir) / name
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"pretrained model {name!r}: {', '.join(missing)} not found in {path} (set "
                                f"${PRETRAINED_ENV} or pretrained_dir= to another directory); the files are written "
                                f"from a trained model by `{EXPORT_COMMAND} --out {path}`")
    return path


def models_root(models_dir: str | Path | None = None, base_llm: str | None = None) -> Path:
    """Where the base LLMs are: the argument, ``$NEMO_AURA_MODELS_DIR``, ``./exp/models``, ``<repo>/exp/models``
    (the first that holds ``base_llm`` when several are candidates)."""
    given = models_dir or os.environ.get(MODELS_ENV)
    candidates = [Path(given).expanduser()] if given else [Path.cwd() / "exp" / "models", REPO_ROOT / "exp" / "models"]
    for root in candidates:
        if base_llm is None or (root / base_llm / "config.json").is_file():
            return root
    tried = ", ".join(str(c / base_llm) for c in dict.fromkeys(candidates))
    raise FileNotFoundError(
        f"the base LLM {base_llm!r} of this pretrained model is not there (looked in {tried}). Build it offline "
        f"with `{STAGE0_COMMAND}` (from the repository root), or point ${MODELS_ENV} / models_dir= at the "
        "directory that holds it")


# ---------------------------------------------------------------------------------------------- base weights
def base_key(key: str) -> str | None:
    """The Hugging Face name of an AuRA state-dict key if it is a weight of the base LLM (None: LoRA, patch
    embedding, heads...). ``llm.base_model.model.X.base_layer.weight`` (peft) -> ``X.weight``."""
    if not key.startswith("llm.") or "lora_" in key:
        return None
    key = key[len("llm."):]
    key = key[len("base_model.model."):] if key.startswith("base_model.model.") else key
    return key.replace(".base_layer.", ".")


def load_base_weights(llm_dir: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a local HF model directory's ``*.safetensors`` files (memory-mapped)."""
    from safetensors.torch import load_file

    files = sorted(Path(llm_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{llm_dir}: no *.safetensors weights (the base LLM must be a safetensors HF directory)")
    out = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def base_value(key: str, base: dict[str, torch.Tensor], tied: bool) -> torch.Tensor | None:
    """The base LLM's tensor for an AuRA key (``lm_head.weight`` is the input embedding when tied)."""
    name = base_key(key)
    if name is None:
        return None
    if name not in base and tied and name.endswith("lm_head.weight"):
        name = name[: -len("lm_head.weight")] + "model.embed_tokens.weight"
    return base.get(name)


def fingerprint(base: dict[str, torch.Tensor]) -> str:
    """A cheap checksum of base weights: names, shapes, dtypes and a strided sample of every tensor."""
    h = hashlib.sha256()
    for name in sorted(base):
        t = base[name].detach().contiguous().view(-1)
        sample = t[:: max(1, t.numel() // 4096)].float().cpu().numpy().tobytes()
        h.update(f"{name}|{tuple(base[name].shape)}|{base[name].dtype}|".encode() + sample)
    return h.hexdigest()[:32]


def non_base_tensors(state: dict[str, torch.Tensor], base: dict[str, torch.Tensor], tied: bool) -> dict:
    """The tensors of ``state`` a pretrained model must ship: those that are not (exactly) a base-LLM weight."""
    keep = {}
    for key, value in state.items():
        ref = base_value(key, base, tied)
        if ref is None or ref.shape != value.shape or not torch.equal(value, ref.to(value.dtype)):
            keep[key] = value.detach().cpu().contiguous().clone()
    return keep


# ---------------------------------------------------------------------------------------------- loading
def load_config(path: Path, models_dir: str | Path | None) -> tuple[DictConfig, Path]:
    """The model config of a pretrained directory with ``student.pretrained_path`` pointing at its base LLM."""
    cfg = OmegaConf.load(path / CONFIG_FILE)
    base_llm = cfg.get("pretrained", {}).get("base_llm")
    if not base_llm:
        raise ValueError(f"{path / CONFIG_FILE}: no pretrained.base_llm (not written by export_pretrained.py)")
    llm_dir = models_root(models_dir, base_llm) / base_llm
    with open_dict(cfg):
        cfg.student.pretrained_path = str(llm_dir)
        cfg.student.pretrained_weights = True
        beam = (cfg.get("ctc_decoding") or {}).get("beam") or {}
        if beam.get("ngram_lm_model") == DECODING_LM_FILE:  # shipped beside the weights
            cfg.ctc_decoding.beam.ngram_lm_model = str(path / DECODING_LM_FILE)
    return cfg, llm_dir


def compose(cls, cfg: DictConfig, llm_dir: Path, weights: Path, strict: bool = True, trainer=None):
    """Build ``cls(cfg)`` on the base LLM, then put the shipped tensors in; checks that every other tensor of the
    model is a base-LLM weight and that the base LLM is the one the tensors were exported with."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from nemo.utils import logging

    with safe_open(str(weights), framework="pt") as f:
        meta = f.metadata() or {}
    base = load_base_weights(llm_dir)
    expected, found = meta.get("base_llm_fingerprint"), fingerprint(base)
    if expected and expected != found:
        message = (f"the base LLM in {llm_dir} is not the one {weights.parent.name} was exported with (weights "
                   f"fingerprint {found}, expected {expected}): rebuild it with `{STAGE0_COMMAND}`")
        if strict:
            raise ValueError(message + " (strict=False loads it anyway)")
        logging.warning(message)
    model = cls(cfg, trainer=trainer)
    shipped = load_file(str(weights))
    own = model.state_dict()
    unknown = sorted(set(shipped) - set(own))
    if unknown:
        raise ValueError(f"{weights}: tensors this model config has no place for: {unknown[:5]}")
    tied = bool(getattr(model.llm.config, "tie_word_embeddings", False))
    not_base = [k for k in own if k not in shipped and base_value(k, base, tied) is None]
    if not_base:
        raise ValueError(f"{weights}: lacks tensors that are not base-LLM weights: {not_base[:5]}")
    model.load_state_dict(shipped, strict=False)
    return model


def from_pretrained(cls, model_name: str, override_config_path: str | None = None, map_location=None,
                    strict: bool = True, return_config: bool = False, trainer=None, return_model_file: bool = False,
                    models_dir: str | Path | None = None, pretrained_dir: str | Path | None = None):
    """``AuRAModel.from_pretrained``: NeMo's arguments with their meaning (``return_model_file``: the model's
    directory); nothing is downloaded."""
    path = model_dir(model_name, pretrained_dir)
    if return_model_file:
        return str(path)
    cfg, llm_dir = load_config(path, models_dir)
    if override_config_path:
        cfg = OmegaConf.merge(cfg, OmegaConf.load(override_config_path))
    if return_config:
        return cfg
    model = compose(cls, cfg, llm_dir, path / WEIGHTS_FILE, strict=strict, trainer=trainer)
    if map_location is not None:
        model = model.to(map_location)
    return model.eval()
